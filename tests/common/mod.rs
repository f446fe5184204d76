//! Test harness shared by the integration tests: an in-process gateway on a loopback port
//! with a temporary spool, and an SMTP client speaking over real sockets, in plaintext or
//! after STARTTLS with one of the test PKI's certificates.
//!
//! Every network wait is bounded by [`IO_TIMEOUT`], so a gateway that stops answering
//! fails the test instead of hanging it.

// Each test crate uses a different subset of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

pub mod forge;
pub mod json_log;
pub mod sink;

use mssante_gateway::config::Config;
use mssante_gateway::gateway::Gateway;
use mssante_gateway::metrics::Metrics;
use mssante_gateway::smtp::client::ReplyReader;
pub use mssante_gateway::smtp::Reply;
use mssante_gateway::spool::{read_message, Spool, StoredMessage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Longest any single network step of a test may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The domain the test gateway receives for.
pub const LOCAL_DOMAIN: &str = "gateway.test.mssante.fr";

/// The name in the gateway's certificate, which the client checks.
pub const SERVER_NAME: &str = "smtp.gateway.test.mssante.fr";

/// The repository's test PKI.
pub fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-test")
}

/// Logs of the gateway go to the test's captured output; `RUST_LOG` sets the level.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A configuration as the operator would write it, pointing at the test PKI and at
/// `spool_dir`; tests alter it before the gateway starts.
pub fn base_config(spool_dir: &Path) -> toml::Table {
    let certs = certs_dir();
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let text = format!(
        r#"
espace = "test"
local_domains = ["{LOCAL_DOMAIN}"]

[tls]
certificate = "{cert}"
key = "{key}"
anchors = ["{anchors}"]
intermediates = ["{intermediates}"]
crls = ["{crls}"]

[inbound]
listen = "127.0.0.1:0"
max_connections = 100
max_connections_per_ip = 50
handshake_timeout = "10s"
command_timeout = "30s"
data_timeout = "30s"
max_message_size = 1048576
max_recipients = 100
max_errors = 10

[spool]
dir = "{spool}"

[whitelist]
cache = "{whitelist}"
fetch = false
signer_cn = "alb.test.mssante.fr"
signer_o = "TEST SIGNATAIRE LISTE BLANCHE"
"#,
        cert = path("gateway-chain.pem"),
        key = path("gateway.key"),
        anchors = path("anchors.pem"),
        intermediates = path("intermediate-ca.pem"),
        crls = path("intermediate-ca.crl.pem"),
        spool = spool_dir.to_string_lossy(),
        whitelist = path("whitelist.xml"),
    );
    toml::from_str(&text).expect("the base configuration is valid TOML")
}

/// Waits until `done`, failing the test after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`wait_for`], for a condition that must itself wait (a connection, an HTTP call).
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One step of a transcript: a command and the reply it must get.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The command, without CRLF.
    pub send: &'a str,
    pub code: u16,
    pub enhanced: &'a str,
}

/// A [`Step`].
pub const fn step<'a>(send: &'a str, code: u16, enhanced: &'a str) -> Step<'a> {
    Step {
        send,
        code,
        enhanced,
    }
}

/// A message that went through `hops` MTAs: that many `Received:` headers.
pub fn message_with_received(hops: usize) -> Vec<u8> {
    let mut m = String::new();
    for i in (0..hops).rev() {
        m.push_str(&format!(
            "Received: from hop{i}.example ([192.0.2.{}])\r\n\tby hop{}.example with ESMTP id {i};\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\n",
            i % 250 + 1,
            i + 1
        ));
    }
    m.push_str("Subject: hops\r\nMessage-ID: <hops@gateway.test.mssante.fr>\r\n\r\nbody\r\n");
    m.into_bytes()
}

/// Sets `key` of `[section]` (created when missing) in a configuration table.
pub fn set(config: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    config
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("a section is a table")
        .insert(key.to_string(), value.into());
}

/// Adds the sections and keys of `text` (TOML) to `config`, key by key.
pub fn merge(config: &mut toml::Table, text: &str) {
    let extra: toml::Table = toml::from_str(text).expect("valid TOML");
    for (section, value) in extra {
        match value {
            toml::Value::Table(keys) => {
                for (key, v) in keys {
                    set(config, &section, &key, v);
                }
            }
            v => {
                config.insert(section, v);
            }
        }
    }
}

/// Writes `config` as `dir/gateway.toml`; its path.
pub fn write_config(dir: &Path, config: &toml::Table) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(config).expect("TOML")).expect("write config");
    path
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A temporary directory the postfix user can enter (it delivers below it), and the
/// Postfix instance's directory in it.
pub fn postfix_workdir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let postfix = dir.path().join("postfix");
    (dir, postfix)
}

/// A change to the `[inbound]` section, for [`TestGateway::start_with`].
pub fn inbound(key: &'static str, value: impl Into<toml::Value>) -> impl FnOnce(&mut toml::Table) {
    let value = value.into();
    move |t| {
        t["inbound"]
            .as_table_mut()
            .expect("[inbound] is a table")
            .insert(key.to_string(), value);
    }
}

/// A gateway running in this process, with its own temporary directory.
pub struct TestGateway {
    /// Where the inbound listener accepts connections.
    pub addr: SocketAddr,
    /// The gateway's metrics; they stay readable after shutdown.
    pub metrics: Arc<Metrics>,
    gateway: Option<Gateway>,
    spool_dir: PathBuf,
    /// Holds the configuration and the spool; removed when the test ends.
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// A gateway with the base configuration.
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose configuration `change` has altered.
    pub async fn start_with(change: impl FnOnce(&mut toml::Table)) -> TestGateway {
        init_tracing();
        let dir = tempfile::tempdir().expect("temporary directory");
        let spool_dir = dir.path().join("spool");
        let mut table = base_config(&spool_dir);
        change(&mut table);
        let text = toml::to_string(&table).expect("configuration serialises");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write the configuration");
        let config = Config::from_toml(&path, &text)
            .unwrap_or_else(|e| panic!("test configuration refused:\n{e}"));
        let gateway = Gateway::start(&config).await.expect("gateway starts");
        TestGateway {
            addr: gateway.inbound_addr,
            metrics: Arc::clone(&gateway.metrics),
            gateway: Some(gateway),
            spool_dir,
            _dir: dir,
        }
    }

    /// Reloads the running gateway (as SIGHUP does) with the base configuration altered by
    /// `change`; returns the reload's notes.
    pub fn reload_with(&self, change: impl FnOnce(&mut toml::Table)) -> Vec<String> {
        let mut table = base_config(&self.spool_dir);
        change(&mut table);
        let text = toml::to_string(&table).expect("configuration serialises");
        let path = self._dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write the configuration");
        // As SIGHUP does: the file is read again, the report written to the spool.
        let report = self.gateway().reload_from(&path);
        assert!(report.applied, "reloaded configuration refused: {report:?}");
        report.restart_needed
    }

    /// Complete messages: `<spool>/queue/<id>`.
    pub fn queue_dir(&self) -> PathBuf {
        self.spool_dir.join("queue")
    }

    /// Messages being written: `<spool>/tmp/<id>`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.spool_dir.join("tmp")
    }

    /// Every message in the queue, parsed (a torn one fails the test), oldest first.
    pub fn spooled_messages(&self) -> Vec<StoredMessage> {
        queued_ids(&self.spool_dir)
            .iter()
            .map(|id| queued_message(&self.spool_dir, id))
            .collect()
    }

    /// Names of the files left in the spool's `tmp/`.
    pub fn tmp_files(&self) -> Vec<String> {
        list_dir(&self.tmp_dir())
    }

    /// `mssante_rejections_total{stage, reason}`.
    pub fn rejections(&self, stage: &str, reason: &str) -> u64 {
        self.metrics.rejections_total.get(&[stage, reason])
    }

    /// Connections refused at accept on `listener` (`inbound`, `submission`) for `reason`.
    pub fn connections_refused(&self, listener: &str, reason: &str) -> u64 {
        self.metrics
            .connections_refused_total
            .get(&[listener, reason])
    }

    /// A new inbound connection must be turned away at once with `421 4.7.0`, counted
    /// under `reason`.
    pub async fn assert_connection_refused(&self, reason: &str) {
        let before = self.connections_refused("inbound", reason);
        let mut c = Client::connect(self.addr).await;
        c.expect(421, "4.7.0").await;
        c.expect_eof().await;
        assert_eq!(
            self.connections_refused("inbound", reason),
            before + 1,
            "refusal {reason} not counted"
        );
    }

    /// `mssante_tls_handshake_failures_total`, all reasons together.
    pub fn handshake_failures(&self) -> u64 {
        sum_counter(
            &self.metrics.render(),
            "mssante_tls_handshake_failures_total",
        )
    }

    /// Connects a plaintext client and reads the greeting.
    pub async fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.expect_code(220).await;
        c
    }

    /// A client from `peer` (a test PKI name, or `None` for no certificate) after
    /// EHLO, STARTTLS and the second EHLO: ready for MAIL.
    pub async fn established(&self, peer: Option<&str>) -> Client {
        let mut c = self.connect().await;
        c.ehlo().await;
        c.starttls(peer).await;
        c.ehlo().await;
        c
    }

    /// Proves the gateway still serves: peer-a delivers a message and it reaches the
    /// spool.
    pub async fn assert_still_serving(&self) {
        self.still_serving(self.connect().await).await
    }

    /// As [`Self::assert_still_serving`], through a balancer that first sends `header`
    /// (PROXY protocol).
    pub async fn assert_still_serving_through(&self, header: &[u8]) {
        let mut c = Client::connect(self.addr).await;
        c.send_raw(header).await;
        c.expect_code(220).await;
        self.still_serving(c).await
    }

    async fn still_serving(&self, mut c: Client) {
        let before = queued_ids(&self.spool_dir).len();
        c.ehlo().await;
        c.starttls(Some("peer-a")).await;
        c.ehlo().await;
        c.send_message(
            "a@peer-a.test.mssante.fr",
            &[&format!("still-serving@{LOCAL_DOMAIN}")],
            b"Subject: still serving\r\n\r\nok\r\n",
        )
        .await;
        c.quit().await;
        assert_eq!(queued_ids(&self.spool_dir).len(), before + 1);
    }

    /// Stops the gateway as `serve` does on SIGTERM and waits until every session is
    /// closed; the metrics are final afterwards.
    pub async fn shutdown(&mut self) {
        let gateway = self.gateway.take().expect("gateway already stopped");
        tokio::time::timeout(IO_TIMEOUT, gateway.shutdown())
            .await
            .expect("gateway shuts down in time");
    }

    /// The gateway, while it runs.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway stopped")
    }

    /// The running gateway, to drive it (a drain).
    pub fn gateway_mut(&mut self) -> &mut Gateway {
        self.gateway.as_mut().expect("gateway stopped")
    }

    /// Takes the gateway out, to drive its shutdown from a separate task.
    pub fn take_gateway(&mut self) -> Gateway {
        self.gateway.take().expect("gateway already stopped")
    }
}

/// The ids queued in the spool at `spool_dir` (files and log), as `queue list` sees them,
/// oldest first.
pub fn queued_ids(spool_dir: &Path) -> Vec<String> {
    Spool::open(spool_dir)
        .and_then(|s| s.list())
        .unwrap_or_else(|e| panic!("list the spool: {e}"))
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// The queued message `id` of the spool at `spool_dir`, parsed (a torn one fails the test).
pub fn queued_message(spool_dir: &Path, id: &str) -> StoredMessage {
    let spool = Spool::open(spool_dir).unwrap_or_else(|e| panic!("open the spool: {e}"));
    read_message(&spool, id)
        .unwrap_or_else(|e| panic!("read {id}: {e}"))
        .unwrap_or_else(|e| panic!("spooled message {id}: {e}"))
}

fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Sums every series of a counter in a Prometheus text exposition.
fn sum_counter(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Checks on a reply received from the gateway.
pub trait ReplyCheck {
    /// Fails the test unless the reply is `code` with the enhanced code `enhanced`.
    fn assert_is(&self, code: u16, enhanced: &str);
    /// Whether a line of a multi-line reply (EHLO) is exactly `keyword` or starts with
    /// it followed by a space.
    fn has_keyword(&self, keyword: &str) -> bool;
}

impl ReplyCheck for Reply {
    fn assert_is(&self, code: u16, enhanced: &str) {
        assert_eq!(
            (self.code, self.enhanced.map(|e| e.to_string())),
            (code, Some(enhanced.to_string())),
            "unexpected reply {self:?}"
        );
    }

    fn has_keyword(&self, keyword: &str) -> bool {
        self.lines.iter().any(|l| {
            l.eq_ignore_ascii_case(keyword)
                || l.to_ascii_uppercase()
                    .starts_with(&format!("{} ", keyword.to_ascii_uppercase()))
        })
    }
}

/// Bytes in and out of the client, before and after STARTTLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the TLS handshake owns the socket.
    Upgrading,
}

impl Transport {
    fn io(&mut self) -> &mut (dyn Io + Send) {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.as_mut(),
            Transport::Upgrading => panic!("the connection was lost during STARTTLS"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// An SMTP client over a real loopback socket.
pub struct Client {
    transport: Transport,
    /// Received bytes, read strictly (CRLF only, one code per reply): the gateway's
    /// replies are under test.
    reader: ReplyReader,
    /// Socket reads done so far, to see whether pipelined replies came in one read.
    pub reads: usize,
}

impl Client {
    /// Connects in plaintext; the greeting is left unread.
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client::from_stream(stream)
    }

    /// Connects from the local address `from` (another loopback address, to look like
    /// another peer).
    pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client address");
        let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        Client {
            transport: Transport::Plain(stream),
            reader: ReplyReader::strict(),
            reads: 0,
        }
    }

    /// Sends one command; CRLF is appended.
    pub async fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await;
    }

    /// Sends bytes exactly as given, in one write.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let io = self.transport.io();
        tokio::time::timeout(IO_TIMEOUT, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .expect("write timed out")
        .expect("write");
    }

    /// Reads more bytes; `false` at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let io = self.transport.io();
        let n = match tokio::time::timeout(IO_TIMEOUT, io.read(&mut chunk))
            .await
            .expect("no reply from the gateway in time")
        {
            Ok(n) => n,
            // A TLS connection cut without close_notify (a session aborted at shutdown)
            // is an end of stream too.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => panic!("read: {e}"),
        };
        self.reads += 1;
        self.reader.feed(&chunk[..n]);
        n > 0
    }

    /// A complete reply from the buffer, if one is there.
    fn take_reply(&mut self) -> Option<Reply> {
        match self.reader.next_reply() {
            Ok(reply) => reply,
            Err(e) => panic!(
                "malformed reply from the gateway: {e}; received {:?}",
                String::from_utf8_lossy(self.reader.pending())
            ),
        }
    }

    /// The next reply, however many lines and reads it takes.
    pub async fn read_reply(&mut self) -> Reply {
        loop {
            if let Some(r) = self.take_reply() {
                return r;
            }
            if !self.fill().await {
                panic!(
                    "connection closed before a complete reply; received {:?}",
                    String::from_utf8_lossy(self.reader.pending())
                );
            }
        }
    }

    /// Reads a reply and checks its code and enhanced code.
    pub async fn expect(&mut self, code: u16, enhanced: &str) -> Reply {
        let r = self.read_reply().await;
        r.assert_is(code, enhanced);
        r
    }

    /// Reads a reply and checks its code and enhanced code, naming `case` on failure.
    pub async fn expect_for(
        &mut self,
        code: u16,
        enhanced: &str,
        case: &impl std::fmt::Debug,
    ) -> Reply {
        let r = self.read_reply().await;
        assert_eq!(
            (r.code, r.enhanced.map(|e| e.to_string())),
            (code, Some(enhanced.to_string())),
            "{case:?}: unexpected reply {r:?}"
        );
        r
    }

    /// On a greeted connection: EHLO, STARTTLS as `peer` (see [`Client::starttls`]) and
    /// EHLO again; ready for MAIL.
    pub async fn establish(&mut self, peer: Option<&str>) {
        self.ehlo().await;
        self.starttls(peer).await;
        self.ehlo().await;
    }

    /// Runs a transcript: sends each step's command and checks its reply.
    pub async fn exchange(&mut self, steps: &[Step<'_>]) {
        for step in steps {
            self.send(step.send).await;
            self.expect_for(step.code, step.enhanced, step).await;
        }
    }

    /// MAIL, each RCPT and DATA, all accepted; the body is the caller's to send.
    pub async fn begin_data(&mut self, from: &str, to: &[&str]) {
        self.send(&format!("MAIL FROM:<{from}>")).await;
        self.expect(250, "2.1.0").await;
        for rcpt in to {
            self.send(&format!("RCPT TO:<{rcpt}>")).await;
            self.expect(250, "2.1.5").await;
        }
        self.send("DATA").await;
        self.expect(354, "2.0.0").await;
    }

    /// Reads a reply and checks its code only (greeting, EHLO).
    pub async fn expect_code(&mut self, code: u16) -> Reply {
        let r = self.read_reply().await;
        assert_eq!(r.code, code, "unexpected reply {r:?}");
        r
    }

    /// Fails unless the gateway closes the connection with nothing more to say.
    pub async fn expect_eof(&mut self) {
        assert!(
            self.reader.pending().is_empty(),
            "unread data before close: {:?}",
            String::from_utf8_lossy(self.reader.pending())
        );
        let more = self.fill().await;
        assert!(
            !more,
            "expected the connection to be closed, received {:?}",
            String::from_utf8_lossy(self.reader.pending())
        );
    }

    /// Everything the gateway sends until it closes the connection.
    pub async fn read_until_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        self.reader.take_pending()
    }

    /// EHLO, expecting 250; returns the reply (its lines are the extensions).
    pub async fn ehlo(&mut self) -> Reply {
        self.send("EHLO smtp.peer-a.test.mssante.fr").await;
        self.expect_code(250).await
    }

    /// STARTTLS and the handshake, presenting `certs-test/<peer>-chain.pem` and
    /// `<peer>.key` (no certificate for `None`), trusting only `anchors.pem`.
    pub async fn starttls(&mut self, peer: Option<&str>) {
        self.send("STARTTLS").await;
        self.expect(220, "2.0.0").await;
        self.handshake(peer).await;
    }

    /// On a greeted connection: EHLO `helo`, STARTTLS presenting `identity` (chain, key),
    /// EHLO `helo` again; for certificates a test issues itself.
    pub async fn starttls_as(
        &mut self,
        helo: &str,
        identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) {
        self.send(&format!("EHLO {helo}")).await;
        self.expect_code(250).await;
        self.send("STARTTLS").await;
        self.expect(220, "2.0.0").await;
        self.handshake_using(client_tls_config_with(
            Some(identity),
            rustls::DEFAULT_VERSIONS,
        ))
        .await;
        self.send(&format!("EHLO {helo}")).await;
        self.expect_code(250).await;
    }

    /// The TLS handshake alone, on a connection whose STARTTLS was answered 220.
    pub async fn handshake(&mut self, peer: Option<&str>) {
        self.handshake_with(peer, rustls::DEFAULT_VERSIONS).await;
    }

    /// The TLS handshake offering only `versions`.
    pub async fn handshake_with(
        &mut self,
        peer: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) {
        self.handshake_using(client_tls_config(peer, versions))
            .await;
    }

    /// The TLS handshake with a given client configuration (whose session cache lets a
    /// later connection resume).
    pub async fn handshake_using(&mut self, config: Arc<rustls::ClientConfig>) {
        assert!(
            self.reader.pending().is_empty(),
            "unread plaintext before TLS"
        );
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Upgrading)
        else {
            panic!("STARTTLS on a connection that is not plaintext");
        };
        let connector = TlsConnector::from(config);
        let name = ServerName::try_from(SERVER_NAME).expect("valid server name");
        let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        self.transport = Transport::Tls(Box::new(tls));
    }

    /// Whether the TLS session was resumed rather than fully negotiated.
    pub fn tls_resumed(&self) -> bool {
        match &self.transport {
            Transport::Tls(tls) => {
                tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            }
            _ => false,
        }
    }

    /// MAIL, RCPT for each recipient, DATA and `body` (which must end with CRLF and is
    /// dot-stuffed here), expecting success at each step; returns the final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        let r = self.try_message(from, to, body).await;
        r.assert_is(250, "2.0.0");
        r
    }

    /// MAIL, RCPT (accepted), DATA and `body`; the reply to the end of data, whatever it is.
    pub async fn try_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        self.begin_data(from, to).await;
        let mut wire = dot_stuff(body);
        wire.extend_from_slice(b".\r\n");
        self.send_raw(&wire).await;
        self.read_reply().await
    }

    /// The plaintext socket, to run a TLS handshake of the test's own (after a 220 to
    /// STARTTLS, with nothing left unread).
    pub fn into_plain(self) -> TcpStream {
        assert!(self.reader.pending().is_empty(), "unread bytes before TLS");
        match self.transport {
            Transport::Plain(tcp) => tcp,
            _ => panic!("not a plaintext connection"),
        }
    }

    /// QUIT, 221 and the close.
    pub async fn quit(&mut self) {
        self.send("QUIT").await;
        self.expect(221, "2.0.0").await;
        self.expect_eof().await;
    }
}

/// RFC 5321 §4.5.2 transparency: a line starting with `.` gets another.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// A client configuration that checks the gateway's certificate against the test anchors
/// and presents `peer`'s certificate, if any.
pub fn client_tls_config(
    peer: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let certs = certs_dir();
    let identity = peer.map(|name| {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.join(format!("{name}-chain.pem")))
                .expect("peer chain")
                .collect::<Result<_, _>>()
                .expect("peer chain certificates");
        let key =
            PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).expect("peer key");
        (chain, key)
    });
    client_tls_config_with(identity, versions)
}

/// A client identity (chain, key) from PEM text.
pub fn identity_from_pem(
    chain: &str,
    key: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate chain PEM");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("private key PEM");
    (chain, key)
}

/// A TLS client configuration trusting the test PKI's anchors and presenting `identity`
/// (chain, key) when given: for certificates a test issues itself.
pub fn client_tls_config_with(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = certs_dir();
    let mut roots = rustls::RootCertStore::empty();
    for anchor in CertificateDer::pem_file_iter(certs.join("anchors.pem")).expect("anchors.pem") {
        roots
            .add(anchor.expect("anchor certificate"))
            .expect("usable anchor");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("server verifier");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_webpki_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
    };
    Arc::new(config)
}

/// GET `path` on the gateway's HTTP endpoint (`/metrics`, `/readyz`...): (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut out = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// A throw-away Postfix instance run by one of the scripts of tests/interop/ (as root,
/// with Debian's postfix package), stopped when dropped.
pub struct Postfix {
    script: String,
    /// The instance's directory (configuration, queue, log).
    pub dir: PathBuf,
}

impl Postfix {
    /// Runs `tests/interop/<script> start DIR PORT`.
    pub fn start(script: &str, dir: &Path, port: u16) -> Postfix {
        let script = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
        let started = std::process::Command::new("sh")
            .arg(&script)
            .arg("start")
            .arg(dir)
            .arg(port.to_string())
            .status()
            .expect("run the Postfix script");
        assert!(started.success(), "Postfix starts ({script})");
        Postfix {
            script,
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}
