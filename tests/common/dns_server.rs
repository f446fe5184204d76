//! A small authoritative DNS server on loopback, for tests that resolve peer operators'
//! domains without the Internet: it serves a fixed zone over UDP and TCP on one random port
//! of 127.0.0.1, and counts the queries it receives (to see what a cache spared).
//!
//! Use it from a test crate with `#[path = "common/dns_server.rs"] mod dns_server;` and
//! point the gateway's `[dns] name_servers` at [`DnsServer::addr`]:
//!
//! ```ignore
//! let dns = DnsServer::start(&[
//!     ("peer-b.test.mssante.fr", RecordSpec::mx(10, "smtp.peer-b.test.mssante.fr")),
//!     ("smtp.peer-b.test.mssante.fr", RecordSpec::A(Ipv4Addr::LOCALHOST)),
//! ]);
//! ```
//!
//! Names outside the zone get NXDOMAIN; names in it without records of the asked type get
//! an empty NOERROR answer; both carry an SOA, so resolvers cache them like real negative
//! answers. It must be started inside a tokio runtime; its tasks end when it is dropped.

// Each test crate uses a different subset of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// TTL of every record unless [`DnsServer::start_with_ttl`] says otherwise.
pub const DEFAULT_TTL: u32 = 300;

/// What a zone entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSpec {
    /// An MX record: preference and mail host.
    Mx(u16, String),
    /// The null MX of RFC 7505 (`0 .`): the domain accepts no mail.
    NullMx,
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias to another name (followed within the zone).
    Cname(String),
    /// A text record (SPF and the like): makes a name exist without mail or address
    /// records.
    Txt(String),
    /// A reverse-zone name (PTR), for names such as `1.0.0.127.in-addr.arpa`.
    Ptr(String),
    /// Every query for this name is answered SERVFAIL.
    ServFail,
}

impl RecordSpec {
    /// An MX record.
    pub fn mx(preference: u16, exchange: &str) -> Self {
        RecordSpec::Mx(preference, exchange.to_string())
    }

    fn record_type(&self) -> Option<RecordType> {
        match self {
            RecordSpec::Mx(..) | RecordSpec::NullMx => Some(RecordType::MX),
            RecordSpec::A(_) => Some(RecordType::A),
            RecordSpec::Aaaa(_) => Some(RecordType::AAAA),
            RecordSpec::Cname(_) => Some(RecordType::CNAME),
            RecordSpec::Txt(_) => Some(RecordType::TXT),
            RecordSpec::Ptr(_) => Some(RecordType::PTR),
            RecordSpec::ServFail => None,
        }
    }

    fn rdata(&self) -> Option<RData> {
        Some(match self {
            RecordSpec::Mx(preference, exchange) => {
                RData::MX(MX::new(*preference, absolute(exchange)?))
            }
            RecordSpec::NullMx => RData::MX(MX::new(0, Name::root())),
            RecordSpec::A(ip) => RData::A(A(*ip)),
            RecordSpec::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            RecordSpec::Cname(target) => RData::CNAME(CNAME(absolute(target)?)),
            RecordSpec::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
            RecordSpec::Ptr(target) => RData::PTR(PTR(absolute(target)?)),
            RecordSpec::ServFail => return None,
        })
    }
}

/// One query received: the name (lower case, without the final dot) and the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenQuery {
    pub name: String,
    pub record_type: RecordType,
}

struct Zone {
    /// (lower-case name without final dot, record).
    entries: Vec<(String, RecordSpec)>,
    ttl: u32,
    /// A silent server receives and counts queries but never answers.
    silent: bool,
    seen: Mutex<Vec<SeenQuery>>,
}

/// A running server; dropping it stops it.
pub struct DnsServer {
    /// The address (UDP and TCP) to use as name server.
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` with [`DEFAULT_TTL`].
    pub fn start(zone: &[(&str, RecordSpec)]) -> DnsServer {
        Self::start_with_ttl(zone, DEFAULT_TTL)
    }

    /// Serves `zone`, every record and negative answer with the TTL `ttl` (seconds).
    pub fn start_with_ttl(zone: &[(&str, RecordSpec)], ttl: u32) -> DnsServer {
        Self::spawn(Zone {
            entries: zone
                .iter()
                .map(|(name, spec)| (normalise(name), spec.clone()))
                .collect(),
            ttl,
            silent: false,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// A name server that receives queries and never answers: resolvers time out.
    pub fn silent() -> DnsServer {
        Self::spawn(Zone {
            entries: Vec::new(),
            ttl: DEFAULT_TTL,
            silent: true,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<SeenQuery> {
        self.zone
            .seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// How many queries for `name` and `record_type` were received.
    pub fn query_count(&self, name: &str, record_type: RecordType) -> usize {
        let name = normalise(name);
        self.queries()
            .iter()
            .filter(|q| q.name == name && q.record_type == record_type)
            .count()
    }

    fn spawn(zone: Zone) -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("UDP socket address");
        let zone = Arc::new(zone);
        let udp_task = tokio::spawn(serve_udp(udp, zone.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, zone.clone()));
        DnsServer {
            addr,
            zone,
            tasks: vec![udp_task, tcp_task],
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket and a TCP listener on the same random loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let addr = udp.local_addr().expect("UDP socket address");
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            udp.set_nonblocking(true).expect("non-blocking UDP");
            tcp.set_nonblocking(true).expect("non-blocking TCP");
            return (
                UdpSocket::from_std(udp).expect("tokio UDP socket"),
                TcpListener::from_std(tcp).expect("tokio TCP listener"),
            );
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&zone, &buf[..len]) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(stream, zone.clone()));
    }
}

/// RFC 1035 §4.2.2: each message is preceded by its length on two bytes.
async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut request = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(reply) = answer(&zone, &request) else {
            continue;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The encoded reply to `request`, or `None` to stay silent.
fn answer(zone: &Zone, request: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = request.queries.first()?.clone();
    let name = normalise(&query.name().to_ascii());
    let record_type = query.query_type();
    if let Ok(mut seen) = zone.seen.lock() {
        seen.push(SeenQuery {
            name: name.clone(),
            record_type,
        });
    }
    if zone.silent {
        return None;
    }

    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(query.clone());

    let mut owner = name;
    // Follow CNAMEs inside the zone, a few steps at most.
    for _ in 0..8 {
        let records: Vec<&RecordSpec> = zone
            .entries
            .iter()
            .filter(|(n, _)| *n == owner)
            .map(|(_, spec)| spec)
            .collect();
        if records.contains(&&RecordSpec::ServFail) {
            reply.metadata.response_code = ResponseCode::ServFail;
            return reply.to_vec().ok();
        }
        if records.is_empty() {
            if reply.answers.is_empty() {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            break;
        }
        let owner_name = absolute(&owner)?;
        let mut alias = None;
        for spec in records {
            let matches = spec.record_type() == Some(record_type);
            if matches || spec.record_type() == Some(RecordType::CNAME) {
                reply.add_answer(Record::from_rdata(
                    owner_name.clone(),
                    zone.ttl,
                    spec.rdata()?,
                ));
            }
            if let (RecordSpec::Cname(target), false) = (spec, matches) {
                alias = Some(normalise(target));
            }
        }
        match alias {
            Some(target) => owner = target,
            None => break,
        }
    }
    if !reply.answers.iter().any(|r| r.record_type() == record_type) {
        // A negative answer carries the SOA whose minimum sets how long it may be cached
        // (RFC 2308).
        let soa = SOA::new(
            absolute("ns.dns-server.test")?,
            absolute("hostmaster.dns-server.test")?,
            1,
            3600,
            600,
            86400,
            zone.ttl,
        );
        reply.add_authority(Record::from_rdata(Name::root(), zone.ttl, RData::SOA(soa)));
    }
    reply.to_vec().ok()
}

/// Lower case, without the final dot.
fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn absolute(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}
