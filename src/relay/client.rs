//! A small SMTP/LMTP client with one result per recipient: the internal relay uses it for
//! the internal server, the outbound relay for peer operators (STARTTLS required, the peer
//! certificate kept for the checks that follow the handshake).
//!
//! Why not mail-send: its `send()` stops at the first refused recipient and hides the
//! per-recipient replies we need for partial delivery, LMTP's per-recipient replies after
//! the body are not exposed, and it rewrites nothing we need but builds its own DATA
//! framing. Driving MAIL/RCPT/DATA (or BDAT) over tokio is a few hundred lines, keeps the
//! bytes of the message under our control (dot-stuffing, one added `Received:`) and adds
//! no dependency.

use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Longest reply line we accept from the server.
const MAX_LINE: usize = 8192;
/// Most lines in one reply.
const MAX_REPLY_LINES: usize = 200;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of every line, joined by a space.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
    /// The enhanced status code (`x.y.z`) at the start of the text, or one derived from
    /// the basic code.
    pub fn status(&self) -> String {
        let first = self.text.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = first.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && matches!(parts[0], "2" | "4" | "5")
        {
            return first.to_string();
        }
        format!("{}.0.0", self.code / 100)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Client failures that end the session.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or was lost.
    #[error("connection to the SMTP server: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server said something that is not SMTP.
    #[error("protocol error from the SMTP server: {0}")]
    Protocol(String),
    /// The server refused the session (greeting, EHLO, STARTTLS or AUTH).
    #[error("the SMTP server refused the session: {0}")]
    Refused(Reply),
    /// TLS was required but the server does not offer STARTTLS: nothing is sent in
    /// plaintext.
    #[error("the SMTP server does not offer STARTTLS, which is required")]
    StartTlsUnavailable,
    /// The TLS handshake after STARTTLS failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// What the server offers after EHLO/LHLO.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Its name (first word of the EHLO reply).
    pub name: String,
    /// PIPELINING: MAIL and RCPT replies are read in one batch.
    pub pipelining: bool,
    /// CHUNKING: BDAT, no dot-stuffing.
    pub chunking: bool,
    /// 8BITMIME.
    pub eight_bit: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// STARTTLS.
    pub starttls: bool,
}

/// How to reach and greet the server.
#[derive(Clone)]
pub struct ClientOptions {
    /// The server.
    pub addr: std::net::SocketAddr,
    /// LHLO and per-recipient replies after the body.
    pub lmtp: bool,
    /// Our name in EHLO.
    pub helo: String,
    /// STARTTLS with this connector and expected server name.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// AUTH PLAIN user and password.
    pub auth: Option<(String, String)>,
    /// Longest wait for any reply.
    pub timeout: Duration,
    /// Longest wait for the TCP connection to be established.
    pub connect_timeout: Duration,
}

/// One open session to the internal server.
pub struct Client {
    stream: BufStream<Box<dyn Io>>,
    /// What the server offered.
    pub caps: Capabilities,
    lmtp: bool,
    timeout: Duration,
    /// TLS version and cipher, when STARTTLS was used.
    pub tls: Option<String>,
    /// The certificate chain the server presented at STARTTLS (leaf first), for the
    /// caller's trust decision: the handshake itself may accept any chain.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// When this session last finished a transaction (for the pool's idle timeout).
    pub last_used: Instant,
    /// The connection broke after some replies were read: it must not be reused.
    broken: bool,
}

/// One message to send.
pub struct Transaction<'a> {
    /// The reverse path (empty for `<>`).
    pub mail_from: &'a str,
    /// Declared BODY=8BITMIME.
    pub eight_bit: bool,
    /// Declared SMTPUTF8.
    pub smtputf8: bool,
    /// The recipients to try.
    pub recipients: &'a [String],
    /// Bytes sent before the body (our `Received:` header).
    pub prefix: &'a [u8],
    /// The message exactly as received.
    pub body: &'a [u8],
}

impl Client {
    /// Connects, reads the greeting, says EHLO/LHLO, upgrades with STARTTLS and
    /// authenticates as configured.
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let tcp = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(opts.addr))
            .await
            .map_err(|_| ClientError::Timeout(opts.connect_timeout))??;
        let _ = tcp.set_nodelay(true);
        let boxed: Box<dyn Io> = Box::new(tcp);
        let mut c = Client {
            stream: BufStream::new(boxed),
            caps: Capabilities::default(),
            lmtp: opts.lmtp,
            timeout: opts.timeout,
            tls: None,
            peer_certificates: Vec::new(),
            last_used: Instant::now(),
            broken: false,
        };
        let greeting = c.read_reply().await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused(greeting));
        }
        c.hello(&opts.helo).await?;
        if let Some((connector, name)) = &opts.tls {
            if !c.caps.starttls {
                return Err(ClientError::StartTlsUnavailable);
            }
            let r = c.command(b"STARTTLS\r\n").await?;
            if r.code != 220 {
                return Err(ClientError::Refused(r));
            }
            // Anything the server sent after its 220 is dropped with the plaintext buffer
            // below: only bytes read through TLS are trusted.
            let plain = std::mem::replace(
                &mut c.stream,
                BufStream::new(Box::new(tokio::io::duplex(1).0)),
            )
            .into_inner();
            let tls = tokio::time::timeout(opts.timeout, connector.connect(name.clone(), plain))
                .await
                .map_err(|_| ClientError::Timeout(opts.timeout))?
                .map_err(ClientError::Handshake)?;
            let (_, conn) = tls.get_ref();
            c.peer_certificates = conn
                .peer_certificates()
                .map(|chain| chain.iter().map(|cert| cert.clone().into_owned()).collect())
                .unwrap_or_default();
            c.tls = Some(format!(
                "{} {}",
                conn.protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown"),
                conn.negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .unwrap_or("unknown")
            ));
            c.stream = BufStream::new(Box::new(tls));
            c.hello(&opts.helo).await?;
        }
        if let Some((user, password)) = &opts.auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            let r = c
                .command(format!("AUTH PLAIN {token}\r\n").as_bytes())
                .await?;
            if r.code != 235 {
                return Err(ClientError::Refused(r));
            }
        }
        Ok(c)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.write(&[format!("{verb} {helo}\r\n").as_bytes()])
            .await?;
        let (code, lines) = self.read_lines().await?;
        if code != 250 {
            return Err(ClientError::Refused(Reply {
                code,
                text: lines.join(" "),
            }));
        }
        self.caps = capabilities(&lines);
        Ok(())
    }

    /// Whether the session broke and must be dropped rather than pooled.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Resets the session before it is reused.
    pub async fn rset(&mut self) -> Result<(), ClientError> {
        let r = self.command(b"RSET\r\n").await?;
        if r.is_positive() {
            Ok(())
        } else {
            Err(ClientError::Refused(r))
        }
    }

    /// Says QUIT and closes, best effort.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            self.stream.write_all(b"QUIT\r\n").await?;
            self.stream.flush().await?;
            let _ = self.read_reply().await;
            self.stream.shutdown().await
        })
        .await;
    }

    /// Sends one message; returns the reply that decided each recipient's fate, in the
    /// order of `t.recipients`. An `Err` means the session broke: nothing is known about
    /// recipients whose reply was not read and the session must be dropped.
    pub async fn send(&mut self, t: &Transaction<'_>) -> Result<Vec<Reply>, ClientError> {
        let mut mail = format!("MAIL FROM:<{}>", t.mail_from);
        if t.eight_bit && self.caps.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if t.smtputf8 && self.caps.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let mut rcpt_lines = Vec::with_capacity(t.recipients.len());
        for r in t.recipients {
            rcpt_lines.push(format!("RCPT TO:<{r}>\r\n"));
        }
        let (mail_reply, rcpt_replies) = if self.caps.pipelining {
            let mut batch: Vec<&[u8]> = vec![mail.as_bytes()];
            batch.extend(rcpt_lines.iter().map(|l| l.as_bytes()));
            self.write(&batch).await?;
            let m = self.read_reply().await?;
            let mut rr = Vec::with_capacity(rcpt_lines.len());
            for _ in &rcpt_lines {
                rr.push(self.read_reply().await?);
            }
            (m, rr)
        } else {
            let m = self.command(mail.as_bytes()).await?;
            let mut rr = Vec::with_capacity(rcpt_lines.len());
            if m.is_positive() {
                for l in &rcpt_lines {
                    rr.push(self.command(l.as_bytes()).await?);
                }
            }
            (m, rr)
        };
        if !mail_reply.is_positive() {
            self.rset().await?;
            return Ok(vec![mail_reply; t.recipients.len()]);
        }
        let accepted: Vec<usize> = rcpt_replies
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_positive())
            .map(|(i, _)| i)
            .collect();
        let mut results = rcpt_replies;
        if accepted.is_empty() {
            self.rset().await?;
            return Ok(results);
        }
        if self.caps.chunking {
            let len = t.prefix.len() + t.body.len();
            let command = format!("BDAT {len} LAST\r\n");
            self.write(&[command.as_bytes(), t.prefix, t.body]).await?;
        } else {
            let r = self.command(b"DATA\r\n").await?;
            if r.code != 354 {
                for &i in &accepted {
                    results[i] = r.clone();
                }
                self.rset().await?;
                return Ok(results);
            }
            let mut bol = true;
            let mut out = Vec::with_capacity(t.prefix.len() + t.body.len() + 1024);
            dot_stuff(&mut out, t.prefix, &mut bol);
            dot_stuff(&mut out, t.body, &mut bol);
            if !bol {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            self.write(&[&out]).await?;
        }
        if self.lmtp {
            for (k, &i) in accepted.iter().enumerate() {
                match self.read_reply().await {
                    Ok(r) => results[i] = r,
                    Err(e) => {
                        // The recipients already answered keep their reply (a 250 there
                        // means delivered: sending again would duplicate); the rest are
                        // retried, and this session is not reused.
                        self.broken = true;
                        for &j in &accepted[k..] {
                            results[j] = Reply {
                                code: 451,
                                text: format!(
                                    "4.4.2 connection lost before this recipient's reply: {e}"
                                ),
                            };
                        }
                        break;
                    }
                }
            }
        } else {
            let r = self.read_reply().await?;
            for &i in &accepted {
                results[i] = r.clone();
            }
        }
        self.last_used = Instant::now();
        Ok(results)
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, ClientError> {
        self.write(&[line]).await?;
        self.read_reply().await
    }

    /// Writes and flushes `parts`, within the reply timeout plus one second per MiB: a
    /// server that stops reading must not hold a delivery worker (and its message) forever.
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), ClientError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let limit = self.timeout + Duration::from_secs((len / (1024 * 1024)) as u64);
        let stream = &mut self.stream;
        tokio::time::timeout(limit, async {
            for p in parts {
                stream.write_all(p).await?;
            }
            stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))??;
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let (code, lines) = self.read_lines().await?;
        Ok(Reply {
            code,
            text: lines.join(" "),
        })
    }

    async fn read_lines(&mut self) -> Result<(u16, Vec<String>), ClientError> {
        tokio::time::timeout(self.timeout, self.read_lines_inner())
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn read_lines_inner(&mut self) -> Result<(u16, Vec<String>), ClientError> {
        let mut texts = Vec::new();
        let mut line = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            line.clear();
            let read = (&mut self.stream)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 {
                return Err(ClientError::Io(std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )));
            }
            let l = String::from_utf8_lossy(&line);
            let l = l.trim_end_matches(['\r', '\n']);
            let code = l
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| ClientError::Protocol(format!("not a reply: {l:?}")))?;
            let sep = l.as_bytes().get(3).copied().unwrap_or(b' ');
            texts.push(l.get(4..).unwrap_or("").to_string());
            if sep != b'-' {
                return Ok((code, texts));
            }
        }
        Err(ClientError::Protocol("reply with too many lines".into()))
    }
}

/// Reads the capabilities out of the lines of an EHLO/LHLO reply.
fn capabilities(lines: &[String]) -> Capabilities {
    let mut caps = Capabilities {
        name: lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("")
            .to_string(),
        ..Capabilities::default()
    };
    for l in lines.iter().skip(1) {
        let kw = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match kw.as_str() {
            "PIPELINING" => caps.pipelining = true,
            "CHUNKING" => caps.chunking = true,
            "8BITMIME" => caps.eight_bit = true,
            "SMTPUTF8" => caps.smtputf8 = true,
            "STARTTLS" => caps.starttls = true,
            _ => {}
        }
    }
    caps
}

/// Copies `data` into `out` doubling every `.` that starts a line (RFC 5321 §4.5.2);
/// `bol` carries "at the beginning of a line" across calls.
pub fn dot_stuff(out: &mut Vec<u8>, data: &[u8], bol: &mut bool) {
    let mut rest = data;
    while !rest.is_empty() {
        if *bol && rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..=i]);
                rest = &rest[i + 1..];
                *bol = true;
            }
            None => {
                out.extend_from_slice(rest);
                *bol = false;
                rest = &[];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dots_are_doubled_across_chunks() {
        let mut out = Vec::new();
        let mut bol = true;
        dot_stuff(&mut out, b".a\r\nb.\r\n", &mut bol);
        dot_stuff(&mut out, b"..c\r\n.", &mut bol);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n..");
        assert!(!bol);
    }

    #[test]
    fn enhanced_status_is_read_or_derived() {
        let r = Reply {
            code: 550,
            text: "5.1.1 no such user".into(),
        };
        assert_eq!(r.status(), "5.1.1");
        let r = Reply {
            code: 451,
            text: "try later".into(),
        };
        assert_eq!(r.status(), "4.0.0");
    }
}
