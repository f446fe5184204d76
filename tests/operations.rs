//! What a sysadmin relies on: metrics that count exactly what happened, a `/metrics`
//! exposition Prometheus accepts, health endpoints, and a SIGHUP that changes the
//! certificate for new connections while an open session carries on.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sink::{Sink, SinkOpts};
use common::{
    certs_dir, client_tls_config, http_get, Client, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN,
};
use mssante_gateway::metrics::labels;

/// The value of the series `name{labels}` (labels as written by the exposition, sorted).
fn value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn with_metrics(t: &mut toml::Table) {
    let mut m = toml::Table::new();
    m.insert("listen".into(), "127.0.0.1:0".into());
    t.insert("metrics".into(), m.into());
}

async fn tls_peer(gw: &TestGateway) -> Client {
    gw.established(Some("peer-a")).await
}

#[tokio::test]
async fn counters_move_by_exactly_what_happened() {
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let internal = sink.addr;
    let gw = TestGateway::start_with(move |t| {
        with_metrics(t);
        let mut relay = toml::Table::new();
        relay.insert("internal".into(), internal.to_string().into());
        t.insert("relay".into(), relay.into());
    })
    .await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, before) = http_get(addr, "/metrics").await;

    // 3 messages accepted over 2 TLS connections.
    let rcpt = format!("bob@{LOCAL_DOMAIN}");
    let mut c = tls_peer(&gw).await;
    for _ in 0..2 {
        c.send_message(
            "a@peer-a.test.mssante.fr",
            &[&rcpt],
            b"Subject: 1\r\n\r\nx\r\n",
        )
        .await;
    }
    c.quit().await;
    let mut c = tls_peer(&gw).await;
    c.send_message(
        "a@peer-a.test.mssante.fr",
        &[&rcpt],
        b"Subject: 2\r\n\r\nyy\r\n",
    )
    .await;
    // 2 relay attempts and 1 sender for another operator's domain on the same connection.
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    c.expect(250, "2.1.0").await;
    for _ in 0..2 {
        c.send("RCPT TO:<x@elsewhere.example>").await;
        c.expect(550, "5.7.1").await;
    }
    c.send("RSET").await;
    c.expect(250, "2.0.0").await;
    c.send("MAIL FROM:<a@peer-b.test.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    c.quit().await;
    // 1 plaintext MAIL, on a third connection.
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    c.expect(530, "5.7.0").await;
    c.quit().await;

    // The 3 accepted messages are relayed to the internal server.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while sink.delivered().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "messages not relayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while gw.metrics.messages_relayed_total.get(&["inbound"]) < 3 {
        assert!(std::time::Instant::now() < deadline, "relays not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (_, after) = http_get(addr, "/metrics").await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        delta("mssante_messages_relayed_total{direction=\"inbound\"}"),
        3.0
    );
    assert_eq!(
        delta("mssante_messages_bounced_total{direction=\"inbound\"}"),
        0.0
    );
    assert_eq!(
        delta("mssante_messages_received_total{direction=\"inbound\"}"),
        3.0
    );
    assert_eq!(delta("mssante_message_size_bytes_count"), 3.0);
    assert_eq!(
        delta("mssante_delivery_latency_seconds_count{direction=\"inbound\"}"),
        3.0
    );
    assert_eq!(
        delta("mssante_delivery_latency_seconds_count{direction=\"outbound\"}"),
        0.0
    );
    assert_eq!(
        delta("mssante_accept_latency_seconds_count{direction=\"inbound\"}"),
        3.0
    );
    assert_eq!(
        delta("mssante_rejections_total{reason=\"relay_denied\",stage=\"rcpt\"}"),
        2.0
    );
    assert_eq!(
        delta("mssante_rejections_total{reason=\"sender_dn_mismatch\",stage=\"mail\"}"),
        1.0
    );
    assert_eq!(
        delta("mssante_rejections_total{reason=\"tls_required\",stage=\"mail\"}"),
        1.0
    );
    assert_eq!(
        delta("mssante_connections_total{listener=\"inbound\"}"),
        3.0
    );
    let handshakes: f64 = after
        .lines()
        .filter(|l| l.starts_with("mssante_tls_handshakes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(handshakes, 2.0);
    assert_eq!(value(&after, "mssante_whitelist_entries"), 10.0);
}

#[tokio::test]
async fn health_and_readiness_endpoints_answer() {
    let gw = TestGateway::start_with(with_metrics).await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    assert!(http_get(addr, "/healthz").await.0.contains("200"));
    assert!(http_get(addr, "/readyz").await.0.contains("200"));
    assert!(http_get(addr, "/nothing").await.0.contains("404"));
}

/// `promtool check metrics` (Debian's prometheus package) accepts the exposition.
#[tokio::test]
async fn the_exposition_passes_promtool() {
    let gw = TestGateway::start_with(with_metrics).await;
    let mut c = tls_peer(&gw).await;
    c.send_message(
        "a@peer-a.test.mssante.fr",
        &[&format!("bob@{LOCAL_DOMAIN}")],
        b"Subject: 1\r\n\r\nx\r\n",
    )
    .await;
    c.quit().await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, body) = http_get(addr, "/metrics").await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test.sh (Debian package prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a configuration for the real binary into `dir` using `cert` as our certificate.
fn write_config(dir: &Path, cert: &str, port: u16) -> std::path::PathBuf {
    write_config_logging(dir, cert, port, "warn")
}

/// [`write_config`] with the log filter `log_level`.
fn write_config_logging(dir: &Path, cert: &str, port: u16, log_level: &str) -> std::path::PathBuf {
    let certs = certs_dir();
    let p = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let mut config = common::base_config(&dir.join("spool"));
    common::set(
        &mut config,
        "tls",
        "certificate",
        p(&format!("{cert}-chain.pem")),
    );
    common::set(&mut config, "tls", "key", p(&format!("{cert}.key")));
    common::set(
        &mut config,
        "inbound",
        "listen",
        format!("127.0.0.1:{port}"),
    );
    common::set(&mut config, "log", "level", log_level);
    common::write_config(dir, &config)
}

/// The CN of the certificate the gateway presents to a new connection.
async fn presented_cn(addr: SocketAddr, server_name: &'static str) -> String {
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.ehlo().await;
    c.send("STARTTLS").await;
    c.expect(220, "2.0.0").await;
    let tcp = c.into_plain();
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(
        Some("peer-a"),
        rustls::DEFAULT_VERSIONS,
    ));
    let name = rustls_pki_types::ServerName::try_from(server_name).expect("name");
    let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone();
    mssante_gateway::trust::verify::parse_identity(&cert)
        .expect("parse")
        .cn
        .unwrap_or_default()
}

#[tokio::test]
async fn sighup_changes_the_certificate_for_new_connections_while_a_session_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let config = write_config(dir.path(), "gateway", port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A session opened with the old certificate, left in the middle of a transaction.
    let mut open = Client::connect(addr).await;
    open.expect_code(220).await;
    open.ehlo().await;
    open.starttls(Some("peer-a")).await;
    open.ehlo().await;
    open.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    open.expect(250, "2.1.0").await;
    assert_eq!(
        presented_cn(addr, "smtp.gateway.test.mssante.fr").await,
        "smtp.gateway.test.mssante.fr"
    );

    // The operator installs a new certificate and sends SIGHUP.
    write_config(dir.path(), "peer-b", port);
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        // New connections get the new certificate once the reload is applied.
        if let Ok(Ok(cn)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::spawn(presented_cn(addr, "smtp.peer-b.test.mssante.fr")),
        )
        .await
        {
            assert_eq!(cn, "smtp.peer-b.test.mssante.fr");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The open session carries on and delivers.
    open.send(&format!("RCPT TO:<bob@{LOCAL_DOMAIN}>")).await;
    open.expect(250, "2.1.5").await;
    open.send("DATA").await;
    open.expect(354, "2.0.0").await;
    open.send_raw(b"Subject: across a reload\r\n\r\nstill here\r\n.\r\n")
        .await;
    open.expect(250, "2.0.0").await;
    open.quit().await;

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "gateway exits 0 on SIGTERM: {status}");
}

/// The alert rules shipped in deploy/ load in Prometheus and their unit tests pass.
#[test]
fn the_alert_rules_pass_promtool() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&root)
            .output()
            .expect("promtool is installed by scripts/test.sh (Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A CA-issued certificate whose CN carries CR, LF and NUL cannot forge a log line: the
/// real binary's log escapes every control character of a record.
#[tokio::test]
async fn control_characters_from_a_certificate_never_forge_a_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let config = write_config_logging(dir.path(), "gateway", port, "info");
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let forged = "2030-01-01T00:00:00.000000Z  INFO mssante_gateway: sender accepted";
    let cn = format!("evil.test\r\n{forged}\u{0}");
    let (chain, key) =
        mssante_gateway::tools::test_pki::issue_peer_a_variant(&certs_dir(), &cn, &[])
            .expect("issue");
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.starttls_as("evil.test", common::identity_from_pem(&chain, &key))
        .await;
    c.send("MAIL FROM:<a@peer-a.test.mssante.fr>").await;
    let reply = c.read_reply().await;
    assert_eq!(reply.code, 550, "{reply:?}");
    c.send("QUIT").await;
    let _ = c.read_reply().await;

    // Give the log a moment, then stop the gateway and read what it wrote.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains("evil.test\\r\\n2030-01-01"),
        "the CN is logged, escaped:\n{text}"
    );
    for line in text.lines() {
        assert!(!line.starts_with("2030-01-01"), "forged line: {line:?}");
        assert!(
            !line.contains('\u{0}') && !line.contains('\r'),
            "raw control character: {line:?}"
        );
    }
}

/// Three messages accepted while the internal server is down (deferred for an hour).
async fn three_deferred(
    internal_port: u16,
    drain_deadline: &'static str,
) -> (TestGateway, SocketAddr) {
    let gw = TestGateway::start_with(move |t| {
        with_metrics(t);
        let mut relay = toml::Table::new();
        relay.insert(
            "internal".into(),
            format!("127.0.0.1:{internal_port}").into(),
        );
        relay.insert("retry_first".into(), "1h".into());
        relay.insert("drain_deadline".into(), drain_deadline.into());
        t.insert("relay".into(), relay.into());
    })
    .await;
    send_from_peer_a(tls_peer(&gw).await, 3).await;
    let metrics = gw.gateway().metrics_addr.expect("metrics endpoint");
    common::wait_for("three deferrals", IO_TIMEOUT, || {
        gw.metrics.messages_deferred_total.get(&["inbound"]) >= 3
    })
    .await;
    (gw, metrics)
}

#[tokio::test]
async fn a_drain_closes_the_listeners_turns_not_ready_and_delivers_the_queue() {
    let internal_port = common::free_port();
    let (mut gw, metrics) = three_deferred(internal_port, "60s").await;
    assert!(http_get(metrics, "/readyz").await.0.contains("200"));
    let inbound = gw.addr;
    // The internal server comes back; the drain must deliver all three before it ends.
    let sink = Sink::start(&format!("127.0.0.1:{internal_port}"), SinkOpts::plain()).await;
    let watch = async {
        // While draining: not ready, and no new connection.
        common::wait_for_async("/readyz to turn not ready", IO_TIMEOUT, || async {
            http_get(metrics, "/readyz").await.0.contains("503")
        })
        .await;
        common::wait_for_async("the listener to close", IO_TIMEOUT, || async {
            tokio::net::TcpStream::connect(inbound).await.is_err()
        })
        .await;
    };
    let (report, ()) = tokio::join!(gw.gateway_mut().drain(), watch);
    assert_eq!(report.remaining, 0, "{report:?}");
    assert!(!report.deadline_reached);
    assert_eq!(sink.delivered().len(), 3);
    assert!(gw.spooled_messages().is_empty());
}

#[tokio::test]
async fn a_drain_past_its_deadline_leaves_the_queue_in_the_spool() {
    let (mut gw, _) = three_deferred(common::free_port(), "2s").await;
    let report = gw.gateway_mut().drain().await;
    assert_eq!(report.remaining, 3, "{report:?}");
    assert!(report.deadline_reached);
    assert!(report.elapsed >= Duration::from_secs(2));
    assert_eq!(gw.spooled_messages().len(), 3, "nothing lost");
}

/// A `serve` process on a configuration in `dir` relaying to `internal`, with `change`
/// made to it; once it listens: the process, its configuration file, its inbound address.
async fn serve_process(
    dir: &Path,
    internal: SocketAddr,
    change: impl FnOnce(&mut toml::Table),
) -> (std::process::Child, std::path::PathBuf, SocketAddr) {
    let port = common::free_port();
    let mut table = {
        let config = write_config(dir, "gateway", port);
        let text = std::fs::read_to_string(&config).expect("config");
        toml::from_str::<toml::Table>(&text).expect("toml")
    };
    common::set(&mut table, "relay", "internal", internal.to_string());
    change(&mut table);
    let config = common::write_config(dir, &table);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = spawn_serve(&config, addr, Stdio::null()).await;
    (child, config, addr)
}

/// `mssante-gateway serve --config CONFIG`, its log to `stderr`, once it listens on `addr`.
async fn spawn_serve(config: &Path, addr: SocketAddr, stderr: Stdio) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the gateway");
    common::wait_for_async("the gateway to listen", IO_TIMEOUT, || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    child
}

/// A `serve` process holding two messages its internal server (down) could not take.
async fn serving_two_deferred(
    dir: &Path,
    drain_deadline: &'static str,
) -> (std::process::Child, std::path::PathBuf, u16) {
    let internal_port = common::free_port();
    let internal: SocketAddr = format!("127.0.0.1:{internal_port}").parse().expect("addr");
    let (child, config, addr) = serve_process(dir, internal, |t| {
        common::set(t, "relay", "retry_first", "1h");
        common::set(t, "relay", "drain_deadline", drain_deadline);
    })
    .await;
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    send_from_peer_a(c, 2).await;
    (child, config, internal_port)
}

/// Sends `n` messages for bob on `c` (established as peer-a), then QUIT.
async fn send_from_peer_a(mut c: Client, n: usize) {
    for i in 0..n {
        c.send_message(
            "a@peer-a.test.mssante.fr",
            &[&format!("bob@{LOCAL_DOMAIN}")],
            format!("Subject: message {i}\r\n\r\nx\r\n").as_bytes(),
        )
        .await;
    }
    c.quit().await;
}

/// Runs `mssante-gateway drain --config CONFIG`: exit status, stdout, stderr.
async fn drain_command(config: &Path) -> (std::process::ExitStatus, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
            .args(["drain", "--config"])
            .arg(config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("drain ends within a minute")
    .expect("run drain");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mssante-gateway drain` against a running `serve`: the process delivers its queue and
/// exits 0, and the command says so with exit code 0.
#[tokio::test]
async fn the_drain_command_empties_the_queue_of_a_running_gateway_then_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, config, internal_port) = serving_two_deferred(dir.path(), "60s").await;
    let sink = Sink::start(&format!("127.0.0.1:{internal_port}"), SinkOpts::plain()).await;
    let (status, stdout, stderr) = drain_command(&config).await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("drain signalled to process"), "{stdout}");
    assert!(stdout.contains("the queue is empty"), "{stdout}");
    assert_eq!(sink.delivered().len(), 2);
    let status = child.wait().expect("the gateway exits");
    assert!(status.success(), "{status}");
}

/// Without `[relay]` there is nothing to deliver to: a drain closes the listeners and
/// stops the gateway at once, the messages stay in its spool, and the command says where
/// they are (exit 1), rather than waiting for a deadline that cannot help.
#[tokio::test]
async fn a_drain_without_a_relay_stops_at_once_and_names_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = write_config(dir.path(), "gateway", port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = spawn_serve(&config, addr, Stdio::null()).await;
    let pid_file = dir.path().join("spool").join("mssante-gateway.pid");
    common::wait_for("the pid file", IO_TIMEOUT, || pid_file.exists()).await;
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    send_from_peer_a(c, 2).await;
    let started = std::time::Instant::now();
    let (status, stdout, stderr) = drain_command(&config).await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("no [relay]"), "{stdout}");
    assert!(stderr.contains("2 message(s) left in"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no deadline to wait for"
    );
    assert!(child.wait().expect("the gateway exits").success());
    assert_eq!(common::queued_ids(&dir.path().join("spool")).len(), 2);
}

/// Runs `mssante-gateway queue ARGS --config CONFIG`.
fn queue_command(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run queue")
}

/// When the drain deadline passes first, the gateway still stops cleanly, the messages
/// stay in its spool and the command says where they are, with exit code 1; `queue
/// export` then moves them (refused while the gateway ran) and `queue import` hands them
/// to another running gateway, which delivers each once.
#[tokio::test]
async fn a_stranded_queue_moves_to_another_gateway_with_export_and_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, config, _) = serving_two_deferred(dir.path(), "1s").await;
    let moving = dir.path().join("moving");
    let out = queue_command(&config, &["export", &moving.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "export refused while serving");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Drain it first"));

    let (status, stdout, stderr) = drain_command(&config).await;
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 message(s) left in"), "{stderr}");
    assert!(stderr.contains("queue export"), "{stderr}");
    let status = child.wait().expect("the gateway exits");
    assert!(status.success(), "{status}");
    assert_eq!(common::queued_ids(&dir.path().join("spool")).len(), 2);

    let out = queue_command(&config, &["export", &moving.to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 message(s) moved"), "{text}");
    assert!(common::queued_ids(&dir.path().join("spool")).is_empty());

    // Another gateway, its internal server up.
    let other = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let (mut b, other_config, _) = serve_process(other.path(), sink.addr, |_| {}).await;
    let out = queue_command(&other_config, &["import", &moving.to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 message(s) moved"), "{text}");
    // Picked up at the running gateway's next spool refresh (15 s).
    common::wait_for(
        "the imported messages delivered",
        Duration::from_secs(40),
        || sink.delivered().len() >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.delivered().len(), 2, "each once");
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    assert!(b.wait().expect("exit").success());
    assert!(common::queued_ids(&other.path().join("spool")).is_empty());
}

/// Under systemd (`Type=notify`): `READY=1` once serving, `WATCHDOG=1` at half the
/// watchdog interval, `STOPPING=1` on SIGTERM.
#[tokio::test]
async fn systemd_is_told_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let port = common::free_port();
    let config = write_config(dir.path(), "gateway", port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let mut seen = String::new();
    let next = || {
        let socket = &socket;
        async move {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(IO_TIMEOUT, socket.recv(&mut buf))
                .await
                .expect("a notification in time")
                .expect("recv");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    while !seen.contains("READY=1") {
        seen.push_str(&next().await);
    }
    // Ready means serving.
    let mut c = Client::connect(format!("127.0.0.1:{port}").parse().expect("addr")).await;
    c.expect_code(220).await;
    c.quit().await;
    let mut watchdogs = 0;
    while watchdogs < 2 {
        if next().await.contains("WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut rest = String::new();
    while !rest.contains("STOPPING=1") {
        rest.push_str(&next().await);
    }
    assert!(child.wait().expect("exit").success());
}

/// The systemd unit is one systemd accepts.
#[test]
fn the_systemd_unit_verifies() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: scripts/test.sh installs Debian's systemd package (as root)"
    );
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/mssante-gateway.service");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr);
    // The binary it names is not installed here; anything else is a finding.
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("/usr/local/bin/mssante-gateway") && !l.trim().is_empty())
        .collect();
    assert!(findings.is_empty(), "systemd-analyze verify:\n{text}");
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    for line in ["Type=notify", "WatchdogSec=", "LimitCORE=0"] {
        assert!(unit_text.contains(line), "{line} in the unit");
    }
}

/// A series an alert watches for its first event exists at 0 from start-up: one that
/// appeared only at its first increment, with value 1, would leave `increase()` at 0 and
/// the alert silent (MssanteReloadRefused, MssanteSpoolErrors).
#[tokio::test]
async fn first_event_series_are_exported_at_zero_from_start_up() {
    let gw = TestGateway::start_with(with_metrics).await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, text) = http_get(addr, "/metrics").await;
    for series in [
        "mssante_reloads_total{outcome=\"invalid\"} 0",
        "mssante_reloads_total{outcome=\"applied\"} 0",
        "mssante_rejections_total{reason=\"spool_error\",stage=\"data\"} 0",
        "mssante_messages_bounced_total{direction=\"inbound\"} 0",
        "mssante_messages_deferred_total{direction=\"outbound\"} 0",
        "mssante_connections_refused_total{listener=\"inbound\",reason=\"proxy_untrusted\"} 0",
        "mssante_dsn_generated_total{action=\"failed\"} 0",
    ] {
        assert!(text.contains(series), "{series} missing at start-up");
    }
}

/// Not only those: every series of `metrics::labels` exists at 0 from start-up, so that a
/// query or a new alert on any reason sees its first event.
#[tokio::test]
async fn every_listed_series_is_exported_at_zero_from_start_up() {
    let gw = TestGateway::start_with(with_metrics).await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, text) = http_get(addr, "/metrics").await;
    let mut checked = 0;
    for family in labels::FAMILIES {
        for values in family.series() {
            // As the exposition writes them: label names in order.
            let mut pairs: Vec<(&str, &str)> = family.labels.iter().copied().zip(values).collect();
            pairs.sort();
            let labels: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let series = format!("{}{{{}}} 0", family.name, labels.join(","));
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing at start-up"
            );
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} series checked");
    // Every family of src/metrics.rs is there, but the CRL timestamps, known only once a
    // CRL is downloaded: the TLS handshakes by the suites we offer, for instance.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"))
        .expect("src/metrics.rs");
    let families: std::collections::BTreeSet<&str> = source
        .match_indices("\"mssante_")
        .filter_map(|(at, _)| source[at + 1..].split('"').next())
        .filter(|name| !name.contains(' '))
        .collect();
    assert!(families.len() > 30, "{families:?}");
    for family in families {
        if family != "mssante_crl_update_timestamp_seconds" {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} absent from a fresh exposition"
            );
        }
    }
    assert!(
        text.contains("mssante_tls_handshakes_total{cipher=\"TLS13_AES_256_GCM_SHA384\",version=\"TLSv1_3\"} 0"),
        "{text}"
    );
    // The latencies by direction too, so that their families are visible.
    for direction in labels::DIRECTIONS {
        for histogram in ["accept", "delivery"] {
            let series =
                format!("mssante_{histogram}_latency_seconds_count{{direction=\"{direction}\"}} 0");
            assert!(text.lines().any(|l| l == series), "{series} missing");
        }
    }
}

/// SIGTERM during a drain stops the gateway at once, cleanly, with the undelivered queue
/// kept in its spool.
#[tokio::test]
async fn sigterm_during_a_drain_stops_cleanly_and_keeps_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _, _) = serving_two_deferred(dir.path(), "10m").await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .expect("kill")
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert_eq!(common::queued_ids(&dir.path().join("spool")).len(), 2);
}

/// A reload applies the per-address limits to the next connection and names each setting
/// it cannot apply, rather than changing nothing silently.
#[tokio::test]
async fn a_reload_applies_per_address_limits_and_names_what_needs_a_restart() {
    let gw = TestGateway::start().await;
    let _held = [gw.connect().await, gw.connect().await];
    let notes = gw.reload_with(|t| {
        common::set(t, "inbound", "max_connections_per_ip", 1);
        common::set(t, "inbound", "max_connections", 7);
        common::set(t, "relay", "internal", "127.0.0.1:2526");
    });
    let text = notes.join("\n");
    assert!(
        text.contains("inbound.max_connections changed from 100 to 7 but a restart is needed"),
        "{text}"
    );
    assert!(
        text.contains("[relay] changed but a restart is needed"),
        "{text}"
    );
    assert!(
        !text.contains("max_connections_per_ip"),
        "applied, not noted: {text}"
    );
    // Two connections are open from this address: over the new limit of one.
    gw.assert_connection_refused("max_connections_per_ip").await;
}

/// `mssante-gateway reload` prints what the running gateway did with the file: each
/// changed setting that waits for a restart, exit 0; and the problems of a configuration
/// the gateway refused, exit 1.
#[tokio::test]
async fn the_reload_command_prints_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let internal = common::free_port();
    let internal: SocketAddr = format!("127.0.0.1:{internal}").parse().expect("addr");
    let (mut child, config, _) = serve_process(dir.path(), internal, |_| {}).await;
    let pid_file = dir.path().join("spool").join("mssante-gateway.pid");
    common::wait_for("the pid file", IO_TIMEOUT, || pid_file.exists()).await;
    let reload = || {
        Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
            .args(["reload", "--config"])
            .arg(&config)
            .output()
            .expect("run reload")
    };
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("toml");
    common::set(&mut table, "inbound", "max_connections", 7);
    common::set(&mut table, "inbound", "max_connections_per_ip", 3);
    common::write_config(dir.path(), &table);
    let out = reload();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("configuration reloaded by process"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "needs a restart: inbound.max_connections changed from 100 to 7 but a restart is needed"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("max_connections_per_ip"),
        "applied: {stdout}"
    );
    // A second reload of the same file reports the same pending restart, not a stale
    // report: the gateway answers each signal.
    let out = reload();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("needs a restart: inbound.max_connections")
    );
    // A key the gateway cannot use: the command finds it first and does not signal.
    let key = dir.path().join("broken.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    common::set(&mut table, "tls", "key", key.to_string_lossy().into_owned());
    common::write_config(dir.path(), &table);
    let sequence = |text: &str| -> u64 {
        serde_json::from_str::<serde_json::Value>(text).expect("report")["sequence"]
            .as_u64()
            .expect("a sequence")
    };
    let report = dir.path().join("spool").join("reload.json");
    let before = sequence(&std::fs::read_to_string(&report).expect("report"));
    let out = reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("tls.key"), "{stderr}");
    assert!(stderr.contains("was not signalled"), "{stderr}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sequence(&std::fs::read_to_string(&report).expect("report")),
        before,
        "no reload happened"
    );
    assert!(child.try_wait().expect("wait").is_none(), "still serving");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// What `openssl x509 -noout FLAGS` prints for `certs-test/<name>.pem`, after the `=`.
fn openssl_field(name: &str, flags: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout"])
        .args(flags)
        .arg("-in")
        .arg(certs_dir().join(format!("{name}.pem")))
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// A refused client certificate is logged with its subject, issuer, serial and SHA-256
/// fingerprint, as typed JSON strings that match what openssl prints for the file; every
/// session ends with one `session closed` line whose fields are typed.
#[tokio::test]
async fn a_refused_client_certificate_is_logged_so_the_operator_can_find_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = write_config_logging(dir.path(), "gateway", port, "info");
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("toml");
    common::set(&mut table, "log", "format", "json");
    let config = common::write_config(dir.path(), &table);
    let log_path = dir.path().join("gateway.log");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = spawn_serve(&config, addr, log.into()).await;
    let refused = ["peer-revoked", "peer-expired", "peer-foreign"];
    for peer in refused {
        let mut c = Client::connect(addr).await;
        c.expect_code(220).await;
        c.ehlo().await;
        c.starttls(Some(peer)).await;
        c.send("QUIT").await;
        let _ = c.read_reply().await;
    }
    // And one session that delivers a message.
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    send_from_peer_a(c, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("log");
    let all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // One `session closed` line per session, its fields typed.
    let closed: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["message"] == "session closed")
        .collect();
    // (Plus the connections that only waited for the listener.)
    assert!(closed.len() > refused.len(), "{text}");
    for e in &closed {
        assert!(e["duration_ms"].is_u64() && e["bytes_in"].is_u64(), "{e}");
        assert!(e["outcome"].is_string() && e["messages"].is_u64(), "{e}");
        assert!(
            e["span"]["session"].is_string() && e["span"]["peer"].is_string(),
            "{e}"
        );
    }
    let delivering = closed
        .iter()
        .find(|e| e["messages"] == 1)
        .unwrap_or_else(|| panic!("no session with one message:\n{text}"));
    assert_eq!(delivering["outcome"], "closed", "{delivering}");
    assert!(delivering["peer_dn"]
        .as_str()
        .is_some_and(|dn| dn.contains("CN=smtp.peer-a.test.mssante.fr")));
    assert!(delivering["tls_version"].is_string(), "{delivering}");
    let events: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["message"] == "TLS established; client certificate not acceptable")
        .collect();
    assert_eq!(events.len(), refused.len(), "{text}");
    for peer in refused {
        let fingerprint = openssl_field(peer, &["-fingerprint", "-sha256"]);
        let event = events
            .iter()
            .find(|e| e["peer_sha256"] == fingerprint.as_str())
            .unwrap_or_else(|| panic!("{peer}: no event with fingerprint {fingerprint}:\n{text}"));
        assert_eq!(
            event["peer_serial"].as_str(),
            Some(openssl_field(peer, &["-serial"]).as_str()),
            "{event}"
        );
        let subject = event["peer_subject"].as_str().expect("a string");
        assert!(
            subject.contains(&format!("CN=smtp.{peer}.test.mssante.fr")),
            "{subject}"
        );
        assert!(
            event["peer_issuer"]
                .as_str()
                .is_some_and(|s| s.contains("CN=")),
            "{event}"
        );
        assert!(event["reason"].is_string(), "{event}");
    }
}

/// A fixed liste blanche (`whitelist.fetch = false`) never goes stale: however old its
/// file, the age gauge the staleness alerts watch stays 0.
#[tokio::test]
async fn a_fixed_liste_blanche_reports_no_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("whitelist.xml");
    std::fs::copy(certs_dir().join("whitelist.xml"), &list).expect("copy the list");
    let touched = Command::new("touch")
        .args(["-d", "30 days ago"])
        .arg(&list)
        .status()
        .expect("touch");
    assert!(touched.success());
    let path = list.to_string_lossy().into_owned();
    let gw = TestGateway::start_with(move |t| {
        with_metrics(t);
        common::set(t, "whitelist", "cache", path);
    })
    .await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(value(&text, "mssante_whitelist_age_seconds"), 0.0, "{text}");
    assert!(value(&text, "mssante_whitelist_entries") > 0.0);
}

/// The labels that name a CA use one text form (RFC 4514, as in the logs): the CRL
/// series name each issuing CA exactly as the expiry series does, so the two can be
/// joined in a query or a dashboard.
#[tokio::test]
async fn a_ca_has_one_name_in_every_metric_label() {
    let gw = TestGateway::start_with(with_metrics).await;
    let addr = gw.gateway().metrics_addr.expect("metrics endpoint");
    let (_, text) = http_get(addr, "/metrics").await;
    let labels = |family: &str, label: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter_map(|l| {
                let start = l.find(&format!("{label}=\""))? + label.len() + 2;
                let end = start + l[start..].find('"')?;
                Some(l[start..end].to_owned())
            })
            .collect()
    };
    let crl = labels("mssante_crl_present", "issuer");
    let expiry = labels("mssante_certificate_expiry_timestamp_seconds", "subject");
    assert!(!crl.is_empty(), "{text}");
    for issuer in &crl {
        assert!(issuer.starts_with("CN="), "RFC 4514 order: {issuer}");
        assert!(
            !issuer.contains(", "),
            "no space after the separator: {issuer}"
        );
        assert!(expiry.contains(issuer), "{issuer} not among {expiry:?}");
    }
}
