//! An mTLS SMTP load generator (`mssante-loadgen`), and the bare limits it is compared
//! with: a TLS accept loop without SMTP, and the spool's fsync sequence alone.
//!
//! Postfix's `smtp-source` has no TLS, and our peers only speak ESMTP with STARTTLS and a
//! client certificate: this client does exactly that, N connections in parallel, M
//! messages per connection, and reports messages/s, handshakes/s and the accept latency
//! (end of DATA → 250), which is the cost of the spool's fsync as the peer sees it.
//!
//! Every run is bounded in messages and in time: it stops by itself.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use mssante_gateway::client::{ClientError, Connection};
use mssante_gateway::smtp::client::rcpt_command;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A certificate, key or anchor file is unusable.
    #[error("{path}: {what}")]
    Pki {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The target is not a loopback address and `allow_remote` was not given.
    #[error("target {0} is not a loopback address; pass --allow-remote to load another host")]
    NotLoopback(SocketAddr),
    /// A size or distribution could not be read.
    #[error("bad size {0:?}: expected e.g. 1k, 100k, 10m or 1k:80,100k:19,10m:1")]
    BadSize(String),
    /// The server name is not a valid DNS name.
    #[error("bad server name {0:?}")]
    BadServerName(String),
}

/// Message sizes: one fixed size, or weighted choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// `(bytes, weight)` pairs; weights are relative.
    pub choices: Vec<(usize, u32)>,
}

impl Sizes {
    /// One fixed size.
    pub fn fixed(bytes: usize) -> Sizes {
        Sizes {
            choices: vec![(bytes, 1)],
        }
    }

    /// Parses `1k`, `100k`, `10m`, `512` (bytes; k and m are powers of 1024), or a
    /// distribution `1k:80,100k:19,10m:1`.
    pub fn parse(text: &str) -> Result<Sizes, LoadError> {
        let bad = || LoadError::BadSize(text.to_string());
        let mut choices = Vec::new();
        for part in text.split(',') {
            let (size, weight) = match part.split_once(':') {
                Some((s, w)) => (s, w.trim().parse::<u32>().map_err(|_| bad())?),
                None => (part, 1),
            };
            choices.push((parse_size(size).ok_or_else(bad)?, weight));
        }
        if choices.iter().all(|(_, w)| *w == 0) {
            return Err(bad());
        }
        Ok(Sizes { choices })
    }

    fn pick(&self, rng: &mut impl Rng) -> usize {
        let total: u32 = self.choices.iter().map(|(_, w)| w).sum();
        let mut n = rng.random_range(0..total);
        for (i, (_, w)) in self.choices.iter().enumerate() {
            if n < *w {
                return i;
            }
            n -= w;
        }
        self.choices.len() - 1
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = match t.strip_suffix(['k', 'm']) {
        Some(d) if t.ends_with('k') => (d, 1024),
        Some(d) => (d, 1024 * 1024),
        None => (t.as_str(), 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// EHLO, STARTTLS, EHLO, then messages (the peer operator's path).
    Smtp,
    /// A TLS handshake right after connecting, then close: against a bare TLS server
    /// (`tls-server`), the handshake limit without SMTP.
    PlainTlsOnly,
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
    pub target: SocketAddr,
    /// The name checked in the server's certificate (and sent as SNI).
    pub server_name: String,
    /// Our client certificate chain (PEM).
    pub client_chain: PathBuf,
    /// Its key (PEM).
    pub client_key: PathBuf,
    /// The anchors the server's certificate must chain to (PEM).
    pub anchors: PathBuf,
    /// Connections kept open in parallel.
    pub connections: usize,
    /// Messages sent on each connection before QUIT (1: one handshake per message).
    pub messages_per_connection: usize,
    /// Message sizes.
    pub sizes: Sizes,
    /// MAIL, RCPT and DATA in one write (RFC 2920) rather than one round trip each.
    pub pipelining: bool,
    /// Stop after this many messages (or handshakes in plain TLS mode).
    pub total: u64,
    /// Stop starting new messages after this long.
    pub duration: Duration,
    /// Start at most this many messages (or handshakes) per second, spread evenly, for
    /// latency at a given load; `None`: as fast as the server answers (saturation).
    pub rate: Option<f64>,
    /// Longest wait for any single reply or handshake.
    pub io_timeout: Duration,
    /// Offer TLS session resumption (off: every handshake is a full one, as a peer's
    /// first connection of the day).
    pub resumption: bool,
    /// SMTP or bare TLS handshakes.
    pub mode: Mode,
    /// EHLO name.
    pub ehlo: String,
    /// Reverse path.
    pub mail_from: String,
    /// Recipient.
    pub rcpt_to: String,
    /// Allow a target that is not a loopback address.
    pub allow_remote: bool,
}

impl LoadConfig {
    /// The defaults of the test PKI in `certs`: peer A sending to the test gateway.
    pub fn test_peer(target: SocketAddr, certs: &Path) -> LoadConfig {
        LoadConfig {
            target,
            server_name: "smtp.gateway.test.mssante.fr".into(),
            client_chain: certs.join("peer-a-chain.pem"),
            client_key: certs.join("peer-a.key"),
            anchors: certs.join("anchors.pem"),
            connections: 1,
            messages_per_connection: 1,
            sizes: Sizes::fixed(1024),
            pipelining: true,
            total: 100,
            duration: Duration::from_secs(10),
            rate: None,
            io_timeout: Duration::from_secs(30),
            resumption: false,
            mode: Mode::Smtp,
            ehlo: "smtp.peer-a.test.mssante.fr".into(),
            mail_from: "x@peer-a.test.mssante.fr".into(),
            rcpt_to: "y@gateway.test.mssante.fr".into(),
            allow_remote: false,
        }
    }
}

/// Latency quantiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn from_micros(mut v: Vec<u32>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_unstable();
        let q = |p: f64| {
            let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            f64::from(v[i]) / 1000.0
        };
        Latency {
            count: v.len() as u64,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: f64::from(v[v.len() - 1]) / 1000.0,
        }
    }
}

/// The outcome of a run. Counts add up: every message started is either `messages_ok`
/// or `messages_failed`, and `errors` holds one entry per failed message plus one per
/// connection that failed before its first transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// SMTP or bare TLS.
    pub mode: Mode,
    /// Connections in parallel.
    pub connections: usize,
    /// Messages per connection.
    pub messages_per_connection: usize,
    /// Pipelining used.
    pub pipelining: bool,
    /// The sizes asked for, as `(bytes, weight)`.
    pub sizes: Vec<(usize, u32)>,
    /// Wall time from the first connect to the last reply.
    pub elapsed_s: f64,
    /// Messages answered 250 after DATA.
    pub messages_ok: u64,
    /// Messages started (MAIL sent) that did not end with a 250.
    pub messages_failed: u64,
    /// Body bytes of the accepted messages.
    pub bytes_ok: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// Connections that failed before their first transaction.
    pub connection_errors: u64,
    /// `messages_ok / elapsed_s`.
    pub messages_per_s: f64,
    /// `handshakes / elapsed_s`.
    pub handshakes_per_s: f64,
    /// `bytes_ok / elapsed_s`, in MiB/s.
    pub mib_per_s: f64,
    /// End of DATA written → 250 read.
    pub accept_latency: Latency,
    /// Errors by reply code (`451`, `550`...) or by kind (`io`, `timeout`, `tls`,
    /// `closed`).
    pub errors: BTreeMap<String, u64>,
    /// The first error, in words, to tell what went wrong.
    pub first_error: Option<String>,
}

impl Report {
    /// The report as a few lines of text.
    pub fn text(&self) -> String {
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|(s, w)| format!("{}:{w}", human_size(*s)))
            .collect();
        let l = &self.accept_latency;
        let mut out = format!(
            "mode {:?}, {} connections x {} msg/conn, sizes {}, pipelining {}\n\
             elapsed {:.2} s: {} messages ok ({:.1}/s, {:.1} MiB/s), {} failed, {} handshakes ({:.1}/s), {} connection errors\n\
             accept latency (end of DATA -> 250), {} samples: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            self.mode,
            self.connections,
            self.messages_per_connection,
            sizes.join(","),
            if self.pipelining { "on" } else { "off" },
            self.elapsed_s,
            self.messages_ok,
            self.messages_per_s,
            self.mib_per_s,
            self.messages_failed,
            self.handshakes,
            self.handshakes_per_s,
            self.connection_errors,
            l.count,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
        );
        if self.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out.push_str(&format!(
                "errors: {} (first: {})\n",
                e.join(", "),
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        out
    }
}

fn human_size(n: usize) -> String {
    if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
        format!("{}m", n / (1024 * 1024))
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{}k", n / 1024)
    } else {
        n.to_string()
    }
}

/// A client TLS configuration presenting `chain`/`key` and trusting only `anchors`.
pub fn client_tls(
    chain: &Path,
    key: &Path,
    anchors: &Path,
    resumption: bool,
) -> Result<Arc<rustls::ClientConfig>, LoadError> {
    let pki = |path: &Path, what: String| LoadError::Pki {
        path: path.to_path_buf(),
        what,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for anchor in CertificateDer::pem_file_iter(anchors).map_err(|e| pki(anchors, e.to_string()))? {
        let anchor = anchor.map_err(|e| pki(anchors, e.to_string()))?;
        roots.add(anchor).map_err(|e| pki(anchors, e.to_string()))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| pki(anchors, e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .map_err(|e| pki(chain, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pki(chain, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pki(key, e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pki(chain, e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key_der)
        .map_err(|e| pki(key, e.to_string()))?;
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// What every connection task shares.
struct Shared {
    cfg: LoadConfig,
    tls: TlsConnector,
    name: ServerName<'static>,
    /// One pre-built wire body (dot-stuffed, ending with CRLF.CRLF) per size choice.
    bodies: Vec<Arc<Vec<u8>>>,
    /// Messages (or handshakes) claimed so far, to stop at `total`.
    claimed: AtomicU64,
    start: Instant,
    deadline: Instant,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    ok: u64,
    failed: u64,
    bytes: u64,
    handshakes: u64,
    connection_errors: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl Shared {
    /// What the connections of a run share; refuses a target off loopback unless allowed.
    fn new(cfg: LoadConfig, bodies: Vec<Arc<Vec<u8>>>) -> Result<Shared, LoadError> {
        if !cfg.allow_remote && !cfg.target.ip().is_loopback() {
            return Err(LoadError::NotLoopback(cfg.target));
        }
        let tls = client_tls(
            &cfg.client_chain,
            &cfg.client_key,
            &cfg.anchors,
            cfg.resumption,
        )?;
        let name = ServerName::try_from(cfg.server_name.clone())
            .map_err(|_| LoadError::BadServerName(cfg.server_name.clone()))?;
        let start = Instant::now();
        Ok(Shared {
            tls: TlsConnector::from(tls),
            name,
            bodies,
            claimed: AtomicU64::new(0),
            start,
            deadline: start + cfg.duration,
            stats: Mutex::new(Stats::default()),
            cfg,
        })
    }

    /// Takes one unit of work, unless the run is over.
    /// With a `rate`, waits for the unit's slot in the schedule first.
    async fn claim(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        let k = self.claimed.fetch_add(1, Ordering::Relaxed);
        if k >= self.cfg.total {
            return false;
        }
        if let Some(rate) = self.cfg.rate {
            let slot = self.start + Duration::from_secs_f64(k as f64 / rate);
            if slot >= self.deadline {
                return false;
            }
            tokio::time::sleep_until(slot.into()).await;
        }
        true
    }

    fn give_back(&self) {
        self.claimed.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a step failed, as the label counted in the report.
#[derive(Debug)]
enum Failure {
    Reply(u16),
    Io(io::Error),
    Timeout,
    Tls(io::Error),
    Closed,
}

impl Failure {
    fn label(&self) -> String {
        match self {
            Failure::Reply(code) => code.to_string(),
            Failure::Io(_) => "io".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Tls(_) => "tls".into(),
            Failure::Closed => "closed".into(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Failure::Reply(code) => format!("unexpected reply {code}"),
            Failure::Io(e) => format!("I/O error: {e}"),
            Failure::Timeout => "no answer within the I/O timeout".into(),
            Failure::Tls(e) => format!("TLS handshake failed: {e}"),
            Failure::Closed => "connection closed by the server".into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Refused(reply) => Failure::Reply(reply.code),
            ClientError::Timeout(_) => Failure::Timeout,
            ClientError::Handshake(e) => Failure::Tls(e),
            ClientError::Closed => Failure::Closed,
            ClientError::Io(e) => Failure::Io(e),
            e @ (ClientError::Protocol(_) | ClientError::StartTlsUnavailable) => {
                Failure::Io(io::Error::other(e.to_string()))
            }
        }
    }
}

impl Stats {
    fn error(&mut self, f: &Failure) {
        *self.errors.entry(f.label()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(f.detail());
        }
    }
}

/// Builds a message body of about `size` bytes on the wire (headers, 76-character lines),
/// dot-stuffed and terminated by `CRLF.CRLF`.
pub fn wire_body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(
        b"From: <x@peer-a.test.mssante.fr>\r\nTo: <y@gateway.test.mssante.fr>\r\nSubject: load\r\n\r\n",
    );
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-+=\r\n";
    while out.len() < size {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Runs the load described by `cfg` until `total` messages (or handshakes) are done or
/// `duration` has passed, and reports.
pub async fn run(cfg: LoadConfig) -> Result<Report, LoadError> {
    let bodies = cfg
        .sizes
        .choices
        .iter()
        .map(|(s, _)| Arc::new(wire_body(*s)))
        .collect();
    let shared = Arc::new(Shared::new(cfg, bodies)?);
    let start = shared.start;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..shared.cfg.connections.max(1) {
        tasks.spawn(worker(Arc::clone(&shared)));
    }
    // In-flight work finishes within a few I/O timeouts of the deadline at worst; past
    // that the run is cut short rather than left hanging.
    let hard_stop = shared.cfg.duration + shared.cfg.io_timeout * 4;
    let _ = tokio::time::timeout(hard_stop, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let elapsed = start.elapsed().as_secs_f64();
    let cfg = &shared.cfg;
    let mut stats = std::mem::take(&mut *shared.stats.lock().unwrap_or_else(|e| e.into_inner()));
    let per_s = |n: u64| {
        if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        }
    };
    Ok(Report {
        mode: cfg.mode,
        connections: cfg.connections,
        messages_per_connection: cfg.messages_per_connection,
        pipelining: cfg.pipelining,
        sizes: cfg.sizes.choices.clone(),
        elapsed_s: elapsed,
        messages_ok: stats.ok,
        messages_failed: stats.failed,
        bytes_ok: stats.bytes,
        handshakes: stats.handshakes,
        connection_errors: stats.connection_errors,
        messages_per_s: per_s(stats.ok),
        handshakes_per_s: per_s(stats.handshakes),
        mib_per_s: per_s(stats.bytes) / (1024.0 * 1024.0),
        accept_latency: Latency::from_micros(std::mem::take(&mut stats.latencies_us)),
        errors: stats.errors,
        first_error: stats.first_error,
    })
}

/// One connection slot: opens connections one after the other until the run is over.
async fn worker(shared: Arc<Shared>) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    while shared.claim().await {
        let outcome = match shared.cfg.mode {
            Mode::PlainTlsOnly => handshake_only(&shared).await,
            Mode::Smtp => smtp_connection(&shared, &mut rng).await,
        };
        if let Err(f) = outcome {
            {
                let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.connection_errors += 1;
                s.error(&f);
            }
            // A refusing server must not turn the run into a busy loop.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn connect(shared: &Shared) -> Result<TcpStream, Failure> {
    let tcp = timed(shared, TcpStream::connect(shared.cfg.target))
        .await?
        .map_err(Failure::Io)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn timed<F: std::future::Future>(shared: &Shared, f: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(shared.cfg.io_timeout, f)
        .await
        .map_err(|_| Failure::Timeout)
}

/// Connect, full handshake, close_notify: the unit of the bare TLS limit.
async fn handshake_only(shared: &Shared) -> Result<(), Failure> {
    let tcp = connect(shared).await?;
    let mut tls = timed(shared, shared.tls.connect(shared.name.clone(), tcp))
        .await?
        .map_err(Failure::Tls)?;
    shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .handshakes += 1;
    let _ = timed(shared, tls.shutdown()).await;
    Ok(())
}

/// Greeting, EHLO, STARTTLS with the client certificate, EHLO: a session ready for
/// messages.
async fn open_session(shared: &Shared) -> Result<Connection, Failure> {
    let mut c = Connection::over(connect(shared).await?, shared.cfg.io_timeout);
    c.expect(220).await?;
    c.hello(false, &shared.cfg.ehlo).await?;
    c.write(&[b"STARTTLS\r\n"]).await?;
    c.expect(220).await?;
    c.upgrade(&shared.tls, shared.name.clone()).await?;
    shared
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .handshakes += 1;
    c.hello(false, &shared.cfg.ehlo).await?;
    Ok(c)
}

/// One SMTP connection: a session, up to `messages_per_connection` messages (the first
/// one already claimed by the caller), QUIT.
async fn smtp_connection(shared: &Shared, rng: &mut impl Rng) -> Result<(), Failure> {
    let mut c = match open_session(shared).await {
        Ok(c) => c,
        Err(e) => {
            shared.give_back();
            return Err(e);
        }
    };
    let mut sent = 0;
    loop {
        let choice = shared.cfg.sizes.pick(rng);
        let body = &shared.bodies[choice];
        match transaction(shared, &mut c, body).await {
            Ok(latency) => {
                let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.ok += 1;
                s.bytes += body.len() as u64;
                s.latencies_us
                    .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Err(f) => {
                let mut s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.failed += 1;
                s.error(&f);
                // The session's state is unknown after a failure: start a new one.
                return Ok(());
            }
        }
        sent += 1;
        if sent >= shared.cfg.messages_per_connection || !shared.claim().await {
            break;
        }
    }
    c.quit().await;
    Ok(())
}

/// MAIL, RCPT, DATA (one write when pipelining), the body, and the final reply; returns
/// the time from the body's last byte written to the 250.
async fn transaction(
    shared: &Shared,
    c: &mut Connection,
    body: &[u8],
) -> Result<Duration, Failure> {
    let cfg = &shared.cfg;
    let mail = format!("MAIL FROM:<{}> SIZE={}\r\n", cfg.mail_from, body.len());
    let rcpt = rcpt_command(&cfg.rcpt_to);
    if cfg.pipelining {
        c.write(&[mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"])
            .await?;
        c.expect(250).await?;
        c.expect(250).await?;
        c.expect(354).await?;
    } else {
        for (command, code) in [
            (mail.as_bytes(), 250),
            (rcpt.as_bytes(), 250),
            (b"DATA\r\n".as_slice(), 354),
        ] {
            c.write(&[command]).await?;
            c.expect(code).await?;
        }
    }
    c.write(&[body]).await?;
    let sent = Instant::now();
    c.expect(250).await?;
    Ok(sent.elapsed())
}

/// Memory held by idle sessions: what [`idle_sessions`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Sessions opened (STARTTLS and EHLO done) and held at the time of the second reading.
    pub sessions: u64,
    /// Sessions that failed to open.
    pub failed: u64,
    /// The server's resident set before, in KiB (`VmRSS` of `/proc/PID/status`).
    pub rss_before_kib: u64,
    /// The same with the sessions open.
    pub rss_after_kib: u64,
    /// `(after - before) / sessions`.
    pub kib_per_session: f64,
}

/// Reads `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS line"))
}

/// Opens `cfg.total` sessions (greeting, EHLO, STARTTLS with the client certificate,
/// EHLO) and keeps them idle, reading the server's RSS (process `pid`) before and once
/// all are open; then closes them.
pub async fn idle_sessions(cfg: LoadConfig, pid: u32) -> Result<IdleReport, LoadError> {
    let shared = Arc::new(Shared::new(cfg, Vec::new())?);
    let before = rss_kib(pid).unwrap_or(0);
    let want = shared.cfg.total as usize;
    // Opened a few at a time: a burst of a thousand handshakes would only measure the
    // listen backlog.
    let parallel = shared.cfg.connections.max(1);
    let mut held = Vec::with_capacity(want);
    let mut failed = 0u64;
    let mut opening = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() + (failed as usize) < want && Instant::now() < shared.deadline {
        while opening.len() < parallel && started < want {
            started += 1;
            let s = Arc::clone(&shared);
            opening.spawn(async move { open_idle(&s).await });
        }
        match opening.join_next().await {
            Some(Ok(Ok(w))) => held.push(w),
            Some(_) => failed += 1,
            None => break,
        }
    }
    opening.abort_all();
    // Let the server settle (buffers of the last handshakes released).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid).unwrap_or(0);
    let sessions = held.len() as u64;
    drop(held);
    Ok(IdleReport {
        sessions,
        failed,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_session: if sessions > 0 {
            after.saturating_sub(before) as f64 / sessions as f64
        } else {
            0.0
        },
    })
}

async fn open_idle(shared: &Shared) -> Result<Connection, Failure> {
    open_session(shared).await
}
