//! Two gateways behind HAProxy (TCP mode, `send-proxy-v2`), as an operator runs a fleet:
//! load from several client addresses spread over both, one gateway SIGKILLed mid-load
//! and restarted; every acknowledged message reaches the internal server, `Received:`
//! names the real clients, and per-IP limits apply to them, not to the balancer.
//!
//! Needs Debian's haproxy package (scripts/test.sh installs it, as root).
mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::{Sink, SinkOpts};
use common::{Client, LOCAL_DOMAIN};

/// The HAProxy address the gateways trust.
const BALANCER: &str = "127.0.0.1";

/// A gateway process on `port`, with its own spool under `dir`.
struct Gateway {
    config: PathBuf,
    child: Child,
}

impl Gateway {
    fn config(dir: &Path, port: u16, internal: SocketAddr) -> PathBuf {
        let mut t = common::base_config(&dir.join("spool"));
        common::set(&mut t, "inbound", "listen", format!("127.0.0.1:{port}"));
        common::set(&mut t, "inbound", "max_connections_per_ip", 2);
        common::set(&mut t, "inbound", "max_connection_rate_per_ip", 0);
        let inbound = t["inbound"].as_table_mut().expect("[inbound]");
        let mut proxy = toml::Table::new();
        proxy.insert(
            "trusted".into(),
            toml::Value::Array(vec![format!("{BALANCER}/32").into()]),
        );
        inbound.insert("proxy_protocol".into(), proxy.into());
        common::set(&mut t, "relay", "internal", internal.to_string());
        common::set(&mut t, "relay", "retry_first", "1s");
        common::set(&mut t, "log", "level", "warn");
        common::write_config(dir, &t)
    }

    fn start(config: &Path) -> Gateway {
        let child = Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a gateway");
        Gateway {
            config: config.to_path_buf(),
            child,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// HAProxy in front of `servers`, killed when dropped.
struct HaProxy(Child);

impl HaProxy {
    fn start(dir: &Path, port: u16, servers: &[u16]) -> HaProxy {
        let mut cfg = format!(
            "global\n    maxconn 4000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             frontend smtp\n    bind 127.0.0.1:{port}\n    default_backend gateways\n\
             backend gateways\n    balance roundrobin\n"
        );
        for (i, p) in servers.iter().enumerate() {
            cfg.push_str(&format!(
                "    server gw{i} {BALANCER}:{p} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy.cfg: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        HaProxy(child)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn listening(addr: SocketAddr) {
    common::wait_for_async(
        &format!("{addr} to listen"),
        Duration::from_secs(20),
        || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
}

/// One connection from `from` through the balancer: up to `n` messages, each id recorded
/// as soon as its 250 arrives. A connection cut by the kill panics inside its task; what
/// was acknowledged before stays recorded.
async fn one_connection(
    from: IpAddr,
    balancer: SocketAddr,
    n: usize,
    tag: String,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let mut c = Client::connect_from(from, balancer).await;
    c.expect_code(220).await;
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    for k in 0..n {
        let id = format!("<{tag}-{k}@peer-a.test.mssante.fr>");
        let body = format!("Message-ID: {id}\r\nSubject: fleet\r\n\r\nbody\r\n");
        let reply = c
            .try_message(
                "alice@peer-a.test.mssante.fr",
                &[&format!("bob@{LOCAL_DOMAIN}")],
                body.as_bytes(),
            )
            .await;
        if reply.code == 250 {
            acked.lock().expect("lock").push(id);
        }
    }
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_behind_haproxy_lose_nothing_when_one_is_killed() {
    assert!(
        Path::new("/usr/sbin/haproxy").exists(),
        "Debian's haproxy package is missing: scripts/test.sh installs it (as root)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let ports = [common::free_port(), common::free_port()];
    let mut gateways = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let d = dir.path().join(format!("gw{i}"));
        std::fs::create_dir_all(&d).expect("dir");
        gateways.push(Gateway::start(&Gateway::config(&d, *port, sink.addr)));
    }
    for port in ports {
        listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
    }
    let front = common::free_port();
    let _haproxy = HaProxy::start(dir.path(), front, &ports);
    let balancer = SocketAddr::from(([127, 0, 0, 1], front));
    listening(balancer).await;

    // Per-IP limits apply to the client, not to the balancer: 5 connections at once
    // from one client, spread over two gateways allowing 2 each, cannot all be served,
    // while another client still is.
    let crowd: IpAddr = "127.0.0.99".parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..5 {
        let mut c = Client::connect_from(crowd, balancer).await;
        let r = c.read_reply().await;
        match r.code {
            220 => held.push(c),
            421 => refused += 1,
            other => panic!("unexpected greeting {other}: {r:?}"),
        }
    }
    assert!(refused >= 1, "5 connections from one client all served");
    assert!(held.len() <= 4, "{} held", held.len());
    let mut other = Client::connect_from("127.0.0.98".parse().unwrap(), balancer).await;
    other.expect_code(220).await;
    drop(held);
    drop(other);

    // Load from 8 client addresses for 6 s; gateway 0 is killed after 2 s and restarted
    // a second later.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for i in 0..8u8 {
        let from = IpAddr::from([127, 0, 0, 10 + i]);
        let acked = Arc::clone(&acked);
        clients.push(tokio::spawn(async move {
            let mut round = 0;
            while Instant::now() < deadline {
                let tag = format!("c{i}-r{round}");
                round += 1;
                let task =
                    tokio::spawn(one_connection(from, balancer, 10, tag, Arc::clone(&acked)));
                // A connection cut by the kill ends in a panic of its task: next round.
                let _ = task.await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let config = gateways[0].config.clone();
    gateways[0].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateways[0] = Gateway::start(&config);
    for c in clients {
        c.await.expect("client loop");
    }
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 100,
        "too little load to mean anything: {}",
        acked.len()
    );

    // Every acknowledged message reaches the internal server (the restarted gateway
    // recovers its spool and relays what it had acknowledged).
    let wanted: HashSet<String> = acked.iter().cloned().collect();
    common::wait_for(
        "every acknowledged message delivered",
        Duration::from_secs(60),
        || {
            let got = sink.message_ids();
            wanted.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let delivered = sink.delivered();
    let mut clients_seen = HashSet::new();
    for d in &delivered {
        let text = String::from_utf8_lossy(&d.data);
        let received = text.lines().next().unwrap_or_default().to_string()
            + text.lines().nth(1).unwrap_or_default();
        assert!(
            !received.contains(&format!("[{BALANCER}]")),
            "the balancer is not the client: {received}"
        );
        for i in 0..8 {
            if received.contains(&format!("[127.0.0.{}]", 10 + i)) {
                clients_seen.insert(i);
            }
        }
    }
    assert_eq!(clients_seen.len(), 8, "Received: names each client");
    let duplicates = delivered.len() - sink.message_ids().len();
    eprintln!(
        "fleet: {} acknowledged, {} delivered, {} delivered twice or more (allowed)",
        acked.len(),
        delivered.len(),
        duplicates
    );
}
