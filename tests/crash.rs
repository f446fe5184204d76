//! Nothing acknowledged is ever lost: the real binary is killed with SIGKILL at random
//! moments while peers send over mutual TLS, restarted each time, and at the end every
//! message that got its 250 must have reached the internal server.
//!
//! The CI run is short (3 kills, 300 acknowledged messages). `CRASH_TEST_FULL=1` runs
//! 25 kills and 5000 messages (`CRASH_TEST_KILLS` / `CRASH_TEST_MESSAGES` override).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::{Sink, SinkOpts};
use common::{client_tls_config, Reply, IO_TIMEOUT, SERVER_NAME};
use mssante_gateway::client::{ClientError, Connection};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Peers: mTLS clients with peer-a's certificate, on the library's SMTP client.

/// Fails unless `reply` has `code`.
fn want(reply: Reply, code: u16) -> Result<(), ClientError> {
    if reply.code == code {
        Ok(())
    } else {
        Err(ClientError::Refused(reply))
    }
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
) -> Result<(), ClientError> {
    let mut c = Connection::open(addr, IO_TIMEOUT, IO_TIMEOUT).await?;
    c.expect(220).await?;
    c.hello(false, "smtp.peer-a.test.mssante.fr").await?;
    want(c.command("STARTTLS").await?, 220)?;
    let name = ServerName::try_from(SERVER_NAME).expect("name");
    c.upgrade(tls, name).await?;
    c.hello(false, "smtp.peer-a.test.mssante.fr").await?;
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "<crash-{client}-{n}-{:08x}@peer-a.test.mssante.fr>",
            rand_u32()
        );
        want(
            c.command("MAIL FROM:<x@peer-a.test.mssante.fr>").await?,
            250,
        )?;
        want(c.command("RCPT TO:<y@gateway.test.mssante.fr>").await?, 250)?;
        want(c.command("DATA").await?, 354)?;
        let mut body = format!("Message-ID: {id}\r\nSubject: crash test {n}\r\n\r\n");
        for i in 0..(n % 50) {
            body.push_str(&format!(
                "line {i} of a message that must survive SIGKILL\r\n"
            ));
        }
        body.push_str(".\r\n");
        c.write(&[body.as_bytes()]).await?;
        want(c.read_reply().await?, 250)?;
        acked.lock().unwrap().push(id);
    }
    c.quit().await;
    Ok(())
}

fn rand_u32() -> u32 {
    rand::random()
}

// ---------------------------------------------------------------------------------------

fn write_config(dir: &Path, inbound: SocketAddr, internal: SocketAddr) -> std::path::PathBuf {
    let mut config = common::base_config(&dir.join("spool"));
    let extra: toml::Table = toml::from_str(&format!(
        r#"
[log]
level = "warn"
[policy]
ehlo_check = "enforce"
[relay]
internal = "{internal}"
internal_concurrency = 4
retry_first = "200ms"
retry_max = "1s"
"#
    ))
    .expect("valid TOML");
    config.extend(extra);
    let section = config["inbound"].as_table_mut().expect("[inbound]");
    section.insert("listen".into(), inbound.to_string().into());
    section.insert("max_connections_per_ip".into(), 100.into());
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(&config).expect("TOML")).expect("config");
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
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let internal = sink.addr;
    let inbound = free_port().await;
    let config = write_config(dir.path(), inbound, internal);
    let log = dir.path().join("gateway.log");
    let mut gateway = start_gateway(&config, &log);
    wait_listening(inbound).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let tls = tokio_rustls::TlsConnector::from(client_tls_config(
        Some("peer-a"),
        rustls::DEFAULT_VERSIONS,
    ));
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
            let seen = sink.message_ids();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 || drain_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = gateway.kill();
    let _ = gateway.wait();

    let seen = sink.message_ids();
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
