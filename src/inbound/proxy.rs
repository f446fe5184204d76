//! The PROXY protocol header (v1 text, v2 binary) that a load balancer such as HAProxy
//! (`send-proxy`, `send-proxy-v2`) writes before the client's bytes, naming the client.
//!
//! Only connections from `proxy_protocol.trusted` addresses are read for one; a header
//! from anyone else is refused by [`looks_like_a_header`] at the session's first read.
//! Parsing is the `ppp` crate's.
use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::labels;

/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest header read: a v1 header is at most 107 bytes; v2 headers from
/// balancers carry a few TLVs (ALPN, authority, TLS details), far under this.
const MAX_HEADER: usize = 4096;

/// Why a connection from a trusted balancer was closed before SMTP; each is a `reason`
/// label of `mssante_connections_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRefusal {
    /// The first bytes are not a PROXY header (the balancer does not send one).
    #[error("no PROXY protocol header from a trusted balancer")]
    Missing,
    /// A header that does not parse, is too long, or is followed by client bytes sent
    /// before our greeting.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within the handshake timeout")]
    Timeout,
}

impl HeaderRefusal {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            HeaderRefusal::Missing => labels::PROXY_MISSING,
            HeaderRefusal::Invalid(_) => labels::PROXY_INVALID,
            HeaderRefusal::Timeout => labels::PROXY_TIMEOUT,
        }
    }
}

/// Whether `bytes`, the first a client sent, are a PROXY header's start (v1 `PROXY `, or
/// v2's signature as far as `CR LF CR LF NUL`, which no SMTP client sends): how a header
/// from an address that is not trusted is recognised.
pub fn looks_like_a_header(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PROXY ") || bytes.starts_with(V2_SIGNATURE.get(..5).unwrap_or_default())
}

/// Whether `bytes` could still become a header with more bytes.
fn may_be_a_header(bytes: &[u8]) -> bool {
    let prefix = |p: &[u8]| {
        let n = bytes.len().min(p.len());
        n > 0 && bytes.get(..n) == p.get(..n)
    };
    prefix(b"PROXY ") || prefix(V2_SIGNATURE)
}

/// Reads the header a trusted balancer sends first, within `limit`. `Ok(Some(addr))`: the
/// client's address; `Ok(None)`: a header that names no client (v1 `UNKNOWN`, v2 `LOCAL`
/// such as a health check, or a non-IP family), so the balancer's own address stands.
///
/// Nothing past the header is read unless the client sent it before our greeting, which
/// SMTP forbids: such bytes make the header [`HeaderRefusal::Invalid`].
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<Option<SocketAddr>, HeaderRefusal> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(HeaderRefusal::Timeout),
            Ok(Err(e)) => return Err(HeaderRefusal::Invalid(format!("read failed: {e}"))),
            Ok(Ok(0)) if buf.is_empty() => return Err(HeaderRefusal::Missing),
            Ok(Ok(0)) => {
                return Err(HeaderRefusal::Invalid(
                    "connection closed inside the header".into(),
                ))
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if !may_be_a_header(&buf) {
            return Err(HeaderRefusal::Missing);
        }
        if let Some(parsed) = parse(&buf)? {
            return Ok(parsed);
        }
        if buf.len() > MAX_HEADER {
            return Err(HeaderRefusal::Invalid(format!(
                "longer than {MAX_HEADER} bytes"
            )));
        }
    }
}

/// `Ok(None)`: incomplete, read more; `Ok(Some(client))`: a whole header, exactly `buf`.
#[allow(clippy::type_complexity)]
fn parse(buf: &[u8]) -> Result<Option<Option<SocketAddr>>, HeaderRefusal> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(None);
    }
    let (len, client) = match result {
        HeaderResult::V1(Ok(header)) => {
            let client = match header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            (header.header.len(), client)
        }
        HeaderResult::V2(Ok(header)) => {
            let client = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, _) => None,
            };
            (header.len(), client)
        }
        HeaderResult::V1(Err(e)) => return Err(HeaderRefusal::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(HeaderRefusal::Invalid(e.to_string())),
    };
    if buf.len() > len {
        return Err(HeaderRefusal::Invalid(format!(
            "{} bytes from the client before our greeting",
            buf.len() - len
        )));
    }
    Ok(Some(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn reads_the_client_of_v1_and_v2_headers() {
        let client: SocketAddr = "192.0.2.7:40123".parse().unwrap();
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\r\n"),
            Ok(Some(Some(client)))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40123 25\r\n"),
            Ok(Some(Some("[2001:db8::7]:40123".parse().unwrap())))
        );
        let mut addresses = vec![192, 0, 2, 7, 198, 51, 100, 1];
        addresses.extend_from_slice(&40123u16.to_be_bytes());
        addresses.extend_from_slice(&25u16.to_be_bytes());
        assert_eq!(parse(&v2(1, 0x11, &addresses)), Ok(Some(Some(client))));
        // With a TLV after the addresses (here a NOOP): still the client.
        let mut with_tlv = addresses.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 2, 0, 0]);
        assert_eq!(parse(&v2(1, 0x11, &with_tlv)), Ok(Some(Some(client))));
    }

    #[test]
    fn a_health_check_or_unknown_family_names_no_client() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some(None)));
        assert_eq!(parse(&v2(0, 0x00, &[])), Ok(Some(None)), "LOCAL");
    }

    #[test]
    fn partial_headers_wait_and_bad_ones_are_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51"), Ok(None));
        assert_eq!(parse(&V2_SIGNATURE[..7]), Ok(None));
        for bad in [
            &b"PROXY TCP4 192.0.2.777 198.51.100.1 40123 25\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 25\r\n",
            b"PROXY TCP9 192.0.2.7 198.51.100.1 40123 25\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 40123 25\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderRefusal::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Version 3, and an IPv4 family with too few address bytes.
        let mut v3 = v2(1, 0x11, &[0; 12]);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Err(HeaderRefusal::Invalid(_))));
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Err(HeaderRefusal::Invalid(_))
        ));
    }

    #[test]
    fn client_bytes_after_the_header_are_refused() {
        assert!(matches!(
            parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40123 25\r\nEHLO x\r\n"),
            Err(HeaderRefusal::Invalid(_))
        ));
    }

    #[test]
    fn recognises_the_start_of_a_header() {
        assert!(looks_like_a_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_a_header(&V2_SIGNATURE[..5]));
        assert!(looks_like_a_header(V2_SIGNATURE));
        // An SMTP client's first bytes, even odd ones, are not taken for a header.
        for smtp in [
            &b"EHLO mx.example\r\n"[..],
            b"\r\nEHLO x\r\n",
            b"\r\n\r\n",
            b"PROXYMAIL",
            b"",
        ] {
            assert!(!looks_like_a_header(smtp), "{smtp:?}");
        }
        // While reading a trusted balancer's header, a prefix may still become one.
        assert!(may_be_a_header(b"PRO"));
        assert!(may_be_a_header(b"\r\n"));
        assert!(!may_be_a_header(b"EHLO"));
    }
}
