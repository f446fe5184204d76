//! Nothing acknowledged is ever lost: the real binary is killed with SIGKILL at random
//! moments while peers send over mutual TLS, restarted each time, and at the end every
//! message that got its 250 must have reached the internal server.
//!
//! The CI run is short (3 kills, 300 acknowledged messages). `CRASH_TEST_FULL=1` runs
//! 25 kills and 5000 messages (`CRASH_TEST_KILLS` / `CRASH_TEST_MESSAGES` override).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The internal server: counts every Message-ID it is given.

type Seen = Arc<Mutex<HashMap<String, usize>>>;

async fn sink(listener: TcpListener, seen: Seen) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let _ = sink_session(stream, seen).await;
        });
    }
}

async fn sink_session(stream: TcpStream, seen: Seen) -> std::io::Result<()> {
    let mut s = BufStream::new(stream);
    s.write_all(b"220 sink ESMTP\r\n").await?;
    s.flush().await?;
    loop {
        let mut line = Vec::new();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let upper = String::from_utf8_lossy(&line)
            .trim_end()
            .to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        } else if upper == "DATA" {
            s.write_all(b"354 go\r\n").await?;
            s.flush().await?;
            let mut id = None;
            loop {
                let mut l = Vec::new();
                if s.read_until(b'\n', &mut l).await? == 0 {
                    // Cut mid-message: nothing was delivered.
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                if id.is_none() && l.starts_with(b"Message-ID: ") {
                    id = Some(String::from_utf8_lossy(&l[12..]).trim().to_string());
                }
            }
            if let Some(id) = id {
                *seen.lock().unwrap().entry(id).or_default() += 1;
            }
            b"250 2.0.0 ok\r\n"
        } else if upper == "QUIT" {
            s.write_all(b"221 bye\r\n").await?;
            s.flush().await?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        s.write_all(reply).await?;
        s.flush().await?;
    }
}

// ---------------------------------------------------------------------------------------
// Peers: mTLS clients with peer-a's certificate.

fn client_tls() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(repo("certs-test/anchors.pem")).expect("anchors") {
        roots.add(c.expect("anchor")).expect("add anchor");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(repo("certs-test/peer-a-chain.pem"))
            .expect("chain")
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(repo("certs-test/peer-a.key")).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client cert");
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>) -> std::io::Result<u16> {
    loop {
        let mut l = Vec::new();
        if s.read_until(b'\n', &mut l).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if l.len() < 4 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        if l[3] != b'-' {
            return String::from_utf8_lossy(&l[..3])
                .parse()
                .map_err(|_| std::io::ErrorKind::InvalidData.into());
        }
    }
}

async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
    line: &[u8],
) -> std::io::Result<u16> {
    s.write_all(line).await?;
    s.flush().await?;
    reply(s).await
}

fn bad(code: u16) -> std::io::Error {
    std::io::Error::other(format!("unexpected reply {code}"))
}

/// One session: sends messages until the connection breaks or `stop`; pushes the
/// Message-ID of each message answered 250.
async fn peer_session(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    client: usize,
    counter: &AtomicUsize,
    acked: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = BufStream::new(tcp);
    if reply(&mut s).await? != 220 {
        return Err(bad(0));
    }
    if cmd(&mut s, b"EHLO smtp.peer-a.test.mssante.fr\r\n").await? != 250 {
        return Err(bad(1));
    }
    if cmd(&mut s, b"STARTTLS\r\n").await? != 220 {
        return Err(bad(2));
    }
    let name = ServerName::try_from("smtp.gateway.test.mssante.fr").expect("name");
    let t = tls.connect(name, s.into_inner()).await?;
    let mut s = BufStream::new(t);
    if cmd(&mut s, b"EHLO smtp.peer-a.test.mssante.fr\r\n").await? != 250 {
        return Err(bad(3));
    }
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "<crash-{client}-{n}-{:08x}@peer-a.test.mssante.fr>",
            rand_u32()
        );
        let code = cmd(&mut s, b"MAIL FROM:<x@peer-a.test.mssante.fr>\r\n").await?;
        if code != 250 {
            return Err(bad(code));
        }
        let code = cmd(&mut s, b"RCPT TO:<y@gateway.test.mssante.fr>\r\n").await?;
        if code != 250 {
            return Err(bad(code));
        }
        if cmd(&mut s, b"DATA\r\n").await? != 354 {
            return Err(bad(354));
        }
        let mut body = format!("Message-ID: {id}\r\nSubject: crash test {n}\r\n\r\n");
        for i in 0..(n % 50) {
            body.push_str(&format!(
                "line {i} of a message that must survive SIGKILL\r\n"
            ));
        }
        body.push_str(".\r\n");
        let code = cmd(&mut s, body.as_bytes()).await?;
        if code == 250 {
            acked.lock().unwrap().push(id);
        } else {
            return Err(bad(code));
        }
    }
    let _ = cmd(&mut s, b"QUIT\r\n").await;
    Ok(())
}

fn rand_u32() -> u32 {
    rand::random()
}

// ---------------------------------------------------------------------------------------

fn write_config(dir: &Path, inbound: SocketAddr, internal: SocketAddr) -> std::path::PathBuf {
    let text = format!(
        r#"
espace = "test"
local_domains = ["gateway.test.mssante.fr"]
[tls]
certificate = "{cert}"
key = "{key}"
anchors = ["{anchors}"]
intermediates = ["{inter}"]
crls = ["{crl}"]
[inbound]
listen = "{inbound}"
max_connections_per_ip = 100
[spool]
dir = "{spool}"
[log]
level = "warn"
[whitelist]
cache = "{wl}"
fetch = false
signer_cn = "alb.test.mssante.fr"
signer_o = "TEST SIGNATAIRE LISTE BLANCHE"
[policy]
ehlo_check = "enforce"
[relay]
internal = "{internal}"
internal_concurrency = 4
retry_first = "200ms"
retry_max = "1s"
"#,
        cert = repo("certs-test/gateway-chain.pem"),
        key = repo("certs-test/gateway.key"),
        anchors = repo("certs-test/anchors.pem"),
        inter = repo("certs-test/intermediate-ca.pem"),
        crl = repo("certs-test/intermediate-ca.crl.pem"),
        wl = repo("certs-test/whitelist.xml"),
        spool = dir.join("spool").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn start_gateway(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the gateway")
}

async fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_survives_kill_after_250() {
    let full = std::env::var("CRASH_TEST_FULL").is_ok_and(|v| v == "1");
    let kills = env_num("CRASH_TEST_KILLS", if full { 25 } else { 3 });
    let target = env_num("CRASH_TEST_MESSAGES", if full { 5000 } else { 300 });
    let clients = 8;

    let dir = tempfile::tempdir().expect("tempdir");
    let sink_listener = TcpListener::bind("127.0.0.1:0").await.expect("sink");
    let internal = sink_listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    tokio::spawn(sink(sink_listener, Arc::clone(&seen)));
    let inbound = free_port().await;
    let config = write_config(dir.path(), inbound, internal);
    let log = dir.path().join("gateway.log");
    let mut gateway = start_gateway(&config, &log);
    wait_listening(inbound).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let tls = client_tls();
    let mut peers = Vec::new();
    for client in 0..clients {
        let (acked, stop, counter, tls) = (
            Arc::clone(&acked),
            Arc::clone(&stop),
            Arc::clone(&counter),
            tls.clone(),
        );
        peers.push(tokio::spawn(async move {
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if peer_session(inbound, &tls, client, &counter, &acked, &stop)
                    .await
                    .is_err()
                {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            errors
        }));
    }

    let started = Instant::now();
    for k in 0..kills {
        let goal = (k + 1) * target / (kills + 1);
        while acked.lock().unwrap().len() < goal {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                started.elapsed() < Duration::from_secs(if full { 1800 } else { 120 }),
                "too slow: {} acknowledged",
                acked.lock().unwrap().len()
            );
        }
        // A random moment: peers are mid-transaction, the relay mid-delivery.
        tokio::time::sleep(Duration::from_millis(u64::from(rand_u32() % 150))).await;
        gateway.kill().expect("SIGKILL");
        gateway.wait().expect("reap");
        gateway = start_gateway(&config, &log);
        wait_listening(inbound).await;
    }
    while acked.lock().unwrap().len() < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut session_errors = 0;
    for p in peers {
        session_errors += p.await.expect("peer task");
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len(), "Message-IDs are unique");

    // Let the last gateway drain the queue.
    let drain_start = Instant::now();
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 || drain_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = gateway.kill();
    let _ = gateway.wait();

    let seen = seen.lock().unwrap();
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let extra_copies: usize = seen.values().map(|n| n.saturating_sub(1)).sum();
    let unacked_delivered = seen.keys().filter(|k| !acked_set.contains(k)).count();
    let quarantined = std::fs::read_dir(dir.path().join("spool/quarantine"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!(
        "crash test: {kills} SIGKILLs in {:.1}s; {} messages acknowledged (250), {} lost, \
         {} delivered more than once ({} extra copies), {} delivered without a 250 seen by \
         the client (killed between fsync and reply), {} torn files quarantined, {} peer \
         sessions cut",
        started.elapsed().as_secs_f64(),
        acked.len(),
        lost.len(),
        duplicates,
        extra_copies,
        unacked_delivered,
        quarantined,
        session_errors,
    );
    if !lost.is_empty() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{} acknowledged messages lost, e.g. {:?}\nlog tail:\n{}",
            lost.len(),
            &lost[..lost.len().min(5)],
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}
