//! The tests' one SMTP server: the internal server the gateway relays to, or a peer
//! operator's MX it delivers to. ESMTP or LMTP, CHUNKING or not, STARTTLS with a server
//! certificate of the test PKI (asking, not requiring, a client certificate), AUTH PLAIN,
//! and scripted refusals; it records what it was given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::certs_dir;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub mail_from: String,
    /// The recipients it was accepted for.
    pub rcpts: Vec<String>,
    /// The message, dot-stuffing undone.
    pub data: Vec<u8>,
    /// Whether the session was under TLS.
    pub tls: bool,
    /// CN of the client certificate the sender presented, if any.
    pub client_cn: Option<String>,
}

impl Delivered {
    /// The value of the message's first `Message-ID:` header.
    pub fn message_id(&self) -> Option<String> {
        self.data
            .split(|&b| b == b'\n')
            .take_while(|l| *l != b"\r" && !l.is_empty())
            .find_map(|l| l.strip_prefix(b"Message-ID: "))
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }
}

/// How the sink behaves.
#[derive(Clone)]
pub struct SinkOpts {
    /// Its name, in the greeting and the EHLO reply.
    pub name: &'static str,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
    /// Speak LMTP: LHLO, one reply per accepted recipient after the body.
    pub lmtp: bool,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Require AUTH PLAIN with this base64 token before MAIL.
    pub auth: Option<String>,
}

impl Default for SinkOpts {
    fn default() -> Self {
        SinkOpts {
            name: "sink.internal",
            chunking: false,
            lmtp: false,
            tls: None,
            auth: None,
        }
    }
}

impl SinkOpts {
    /// ESMTP, no TLS, no CHUNKING.
    pub fn plain() -> Self {
        Self::default()
    }

    /// ESMTP with CHUNKING.
    pub fn chunking() -> Self {
        Self::esmtp(true)
    }

    /// ESMTP, offering CHUNKING or not.
    pub fn esmtp(chunking: bool) -> Self {
        SinkOpts {
            chunking,
            ..Self::default()
        }
    }

    /// A peer operator's MX presenting `certs-test/<name>-chain.pem` at STARTTLS.
    pub fn peer(name: &str) -> Self {
        SinkOpts {
            name: "peer",
            tls: Some(server_tls(name)),
            ..Self::default()
        }
    }
}

/// A server configuration presenting `<name>-chain.pem`, asking (not requiring) a client
/// certificate chained to the test anchors.
pub fn server_tls(name: &str) -> tokio_rustls::TlsAcceptor {
    let certs = certs_dir();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join(format!("{name}-chain.pem")))
            .expect("chain")
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("anchors.pem")).expect("anchors") {
        roots.add(c.expect("anchor")).expect("add anchor");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server cert");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[derive(Default)]
pub struct SinkState {
    pub delivered: Vec<Delivered>,
    /// Reply for RCPT to this address instead of 250 (e.g. "550 5.1.1 no such user"),
    /// used `n` times when `Some(n)`, always when `None`.
    pub rcpt_replies: HashMap<String, (String, Option<usize>)>,
    /// LMTP: reply for this recipient after the body instead of 250; `DROP` cuts the
    /// connection before that reply.
    pub data_replies: HashMap<String, String>,
    /// MAIL commands received, under TLS or not: a peer that must not get the message
    /// must see none.
    pub mail_commands: usize,
    /// Connections accepted.
    pub sessions: usize,
}

/// A running sink; stops listening when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Listens on `addr` (`127.0.0.1:0` for any port).
    pub async fn start(addr: &str, opts: SinkOpts) -> Sink {
        let listener = TcpListener::bind(addr).await.expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(SinkState::default()));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Replies to pipelined commands go out as separate writes: with Nagle's
                // algorithm each one after the first would wait for the client's delayed
                // ACK (40 ms), which made the sink, not the gateway, the relay's limit.
                let _ = stream.set_nodelay(true);
                lock(&st).sessions += 1;
                conns.spawn(serve(stream, Arc::clone(&st), opts.clone()));
                // Finished sessions are reaped as new ones come.
                while conns.try_join_next().is_some() {}
            }
        });
        Sink { addr, state, task }
    }

    /// The state, to script replies or read counters.
    pub fn state(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.state)
    }

    /// Refuses RCPT for `rcpt` with `reply`, `times` times (always when `None`).
    pub fn refuse(&self, rcpt: &str, reply: &str, times: Option<usize>) {
        self.state()
            .rcpt_replies
            .insert(rcpt.to_string(), (reply.to_string(), times));
    }

    /// What was delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.state().delivered.clone()
    }

    /// How many times each Message-ID was delivered.
    pub fn message_ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for d in &self.state().delivered {
            if let Some(id) = d.message_id() {
                *ids.entry(id).or_default() += 1;
            }
        }
        ids
    }

    /// MAIL commands received so far.
    pub fn mail_commands(&self) -> usize {
        self.state().mail_commands
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.state().sessions
    }

    /// Stops listening and cuts every session; the address it listened on.
    pub fn down(self) -> SocketAddr {
        self.addr
    }
}

fn lock(st: &Mutex<SinkState>) -> MutexGuard<'_, SinkState> {
    st.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(stream: TcpStream, st: Arc<Mutex<SinkState>>, opts: SinkOpts) {
    let mut s = BufStream::new(stream);
    if let Ok(true) = session(&mut s, &st, &opts, None).await {
        let Some(acceptor) = &opts.tls else { return };
        let Ok(tls) = acceptor.accept(s.into_inner()).await else {
            return;
        };
        let client_cn = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| mssante_gateway::trust::parse_identity(c).ok())
            .and_then(|id| id.cn);
        let mut s = BufStream::new(tls);
        let _ = session(&mut s, &st, &opts, Some(client_cn)).await;
    }
}

/// Serves commands; true when the client asked for STARTTLS (220 written). `tls` is
/// `Some(client CN)` under TLS.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
    st: &Arc<Mutex<SinkState>>,
    opts: &SinkOpts,
    tls: Option<Option<String>>,
) -> std::io::Result<bool> {
    let name = opts.name;
    if tls.is_none() {
        s.write_all(format!("220 {name} ESMTP\r\n").as_bytes())
            .await?;
        s.flush().await?;
    }
    let offer_tls = opts.tls.is_some() && tls.is_none();
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut authed = opts.auth.is_none();
    loop {
        let mut line = Vec::new();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Ok(false);
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = l.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            assert_eq!(upper.starts_with("LHLO"), opts.lmtp, "greeting verb");
            let mut r = format!("250-{name}\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
            if opts.chunking {
                r.push_str("250-CHUNKING\r\n");
            }
            if offer_tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if opts.auth.is_some() {
                r.push_str("250-AUTH PLAIN\r\n");
            }
            r.push_str("250 SIZE 100000000\r\n");
            r
        } else if upper == "STARTTLS" && offer_tls {
            s.write_all(b"220 2.0.0 go ahead\r\n").await?;
            s.flush().await?;
            return Ok(true);
        } else if upper.starts_with("AUTH PLAIN ") {
            if Some(&l[11..]) == opts.auth.as_deref() {
                authed = true;
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            lock(st).mail_commands += 1;
            if authed {
                from = between(&l, '<', '>');
                rcpts.clear();
                "250 2.1.0 ok\r\n".into()
            } else {
                "530 5.7.0 authentication required\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let r = between(&l, '<', '>');
            let mut g = lock(st);
            let refusal = match g.rcpt_replies.get_mut(&r) {
                Some((reply, Some(n))) if *n > 0 => {
                    *n -= 1;
                    Some(reply.clone())
                }
                Some((_, Some(_))) => None,
                Some((reply, None)) => Some(reply.clone()),
                None => None,
            };
            match refusal {
                Some(reply) => format!("{reply}\r\n"),
                None => {
                    rcpts.push(r);
                    "250 2.1.5 ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            s.write_all(b"354 go ahead\r\n").await?;
            s.flush().await?;
            let mut data = Vec::new();
            loop {
                let mut dl = Vec::new();
                if s.read_until(b'\n', &mut dl).await? == 0 {
                    // Cut mid-message: nothing was delivered.
                    return Ok(false);
                }
                if dl == b".\r\n" {
                    break;
                }
                // Undo dot-stuffing.
                if dl.starts_with(b"..") {
                    dl.remove(0);
                }
                data.extend_from_slice(&dl);
            }
            end_of_data(st, opts, &from, &mut rcpts, data, tls.clone())
        } else if upper.starts_with("BDAT ") {
            let mut words = l.split_whitespace().skip(1);
            let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
            assert!(last, "the gateway sends one BDAT LAST chunk");
            let mut data = vec![0u8; n];
            s.read_exact(&mut data).await?;
            end_of_data(st, opts, &from, &mut rcpts, data, tls.clone())
        } else if upper == "RSET" {
            rcpts.clear();
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            s.write_all(b"221 bye\r\n").await?;
            s.flush().await?;
            return Ok(false);
        } else if upper == "NOOP" {
            "250 ok\r\n".into()
        } else {
            "500 5.5.1 unknown\r\n".into()
        };
        if let Some(before) = reply.strip_suffix("DROP") {
            s.write_all(before.as_bytes()).await?;
            s.flush().await?;
            return Ok(false);
        }
        s.write_all(reply.as_bytes()).await?;
        s.flush().await?;
    }
}

/// Records a message and builds the reply (LMTP: one line per accepted recipient).
fn end_of_data(
    st: &Arc<Mutex<SinkState>>,
    opts: &SinkOpts,
    from: &str,
    rcpts: &mut Vec<String>,
    data: Vec<u8>,
    tls: Option<Option<String>>,
) -> String {
    let mut g = lock(st);
    let all = std::mem::take(rcpts);
    let delivered = |rcpts: Vec<String>, data: Vec<u8>| Delivered {
        mail_from: from.to_string(),
        rcpts,
        data,
        tls: tls.is_some(),
        client_cn: tls.clone().flatten(),
    };
    if !opts.lmtp {
        g.delivered.push(delivered(all, data));
        return "250 2.0.0 queued\r\n".into();
    }
    let mut reply = String::new();
    let mut ok = Vec::new();
    for r in &all {
        match g.data_replies.get(r) {
            // The connection breaks before this recipient's reply.
            Some(refusal) if refusal == "DROP" => {
                reply.push_str("DROP");
                break;
            }
            Some(refusal) => reply.push_str(&format!("{refusal}\r\n")),
            None => {
                ok.push(r.clone());
                reply.push_str("250 2.0.0 delivered\r\n");
            }
        }
    }
    if !ok.is_empty() {
        g.delivered.push(delivered(ok, data));
    }
    reply
}

fn between(l: &str, a: char, b: char) -> String {
    let start = l.find(a).map_or(0, |i| i + 1);
    let end = l[start..].find(b).map_or(l.len(), |i| start + i);
    l[start..end].to_string()
}
