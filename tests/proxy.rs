//! PROXY protocol on the inbound listener: a trusted balancer's header names the client
//! that every check and log uses; a header from anyone else, or none from a balancer,
//! closes the connection.
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::sink::{Sink, SinkOpts};
use common::{Client, TestGateway, LOCAL_DOMAIN};

const SENDER: &str = "alice@peer-a.test.mssante.fr";
/// The balancer, as the tests' connections come from it.
const BALANCER: &str = "127.0.0.1";

fn trusting(trusted: &'static [&'static str]) -> impl FnOnce(&mut toml::Table) {
    move |t| {
        let inbound = t["inbound"].as_table_mut().expect("[inbound]");
        let mut proxy = toml::Table::new();
        let list: Vec<toml::Value> = trusted.iter().map(|s| (*s).into()).collect();
        proxy.insert("trusted".into(), list.into());
        inbound.insert("proxy_protocol".into(), proxy.into());
    }
}

fn v1(client: &str, port: u16) -> String {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 25\r\n")
}

fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

/// Connects through "the balancer", sends `header`, and reads the greeting.
async fn through_balancer(gw: &TestGateway, header: &[u8]) -> Client {
    let mut c = Client::connect_from(BALANCER.parse().unwrap(), gw.addr).await;
    c.send_raw(header).await;
    c.expect_code(220).await;
    c
}

async fn deliver(c: &mut Client, subject: &str) {
    c.ehlo().await;
    c.starttls(Some("peer-a")).await;
    c.ehlo().await;
    c.send_message(
        SENDER,
        &[&format!("bob@{LOCAL_DOMAIN}")],
        format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
    )
    .await;
    c.quit().await;
}

#[tokio::test]
async fn the_client_a_trusted_balancer_names_is_the_one_recorded_and_relayed() {
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let internal = sink.addr;
    let gw = TestGateway::start_with(|t| {
        trusting(&[BALANCER])(t);
        let mut r = toml::Table::new();
        r.insert("internal".into(), internal.to_string().into());
        t.insert("relay".into(), r.into());
    })
    .await;
    let mut c = through_balancer(&gw, v1("192.0.2.7", 40123).as_bytes()).await;
    deliver(&mut c, "v1").await;
    let mut c = through_balancer(&gw, &v2([198, 51, 100, 9], 40999)).await;
    deliver(&mut c, "v2").await;
    common::wait_for(
        "both messages at the internal server",
        Duration::from_secs(10),
        || sink.delivered().len() == 2,
    )
    .await;
    let texts: Vec<String> = sink
        .delivered()
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    let v1_text = texts
        .iter()
        .find(|t| t.contains("Subject: v1"))
        .expect("v1");
    let v2_text = texts
        .iter()
        .find(|t| t.contains("Subject: v2"))
        .expect("v2");
    assert!(
        v1_text.contains("[192.0.2.7]"),
        "Received names the client:\n{v1_text}"
    );
    assert!(
        v2_text.contains("[198.51.100.9]"),
        "Received names the client:\n{v2_text}"
    );
    for t in &texts {
        assert!(
            !t.contains("[127.0.0.1]"),
            "the balancer is not the client:\n{t}"
        );
    }
}

#[tokio::test]
async fn per_ip_limits_apply_to_the_clients_behind_the_balancer() {
    let gw = TestGateway::start_with(|t| {
        trusting(&[BALANCER])(t);
        t["inbound"]
            .as_table_mut()
            .expect("[inbound]")
            .insert("max_connections_per_ip".into(), 1.into());
    })
    .await;
    // Two clients behind one balancer address: both served.
    let _a = through_balancer(&gw, v1("192.0.2.7", 40001).as_bytes()).await;
    let _b = through_balancer(&gw, v1("192.0.2.8", 40002).as_bytes()).await;
    // A second connection of the first client: over its own limit.
    let before = gw.connections_refused("inbound", "max_connections_per_ip");
    let mut again = Client::connect_from(BALANCER.parse().unwrap(), gw.addr).await;
    again.send_raw(v1("192.0.2.7", 40003).as_bytes()).await;
    again.expect(421, "4.7.0").await;
    again.expect_eof().await;
    assert_eq!(
        gw.connections_refused("inbound", "max_connections_per_ip"),
        before + 1
    );
}

#[tokio::test]
async fn a_balancer_health_check_is_served_as_the_balancer() {
    let gw = TestGateway::start_with(trusting(&[BALANCER])).await;
    // v1 UNKNOWN and v2 LOCAL name no client.
    let mut c = through_balancer(&gw, b"PROXY UNKNOWN\r\n").await;
    c.send("QUIT").await;
    c.expect(221, "2.0.0").await;
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut c = through_balancer(&gw, &local).await;
    c.send("QUIT").await;
    c.expect(221, "2.0.0").await;
}

/// A v2 header for a UNIX-socket client (family AF_UNIX, 216 bytes of addresses) names
/// no IP address: the connection is served as the balancer's, as a health check is.
#[tokio::test]
async fn a_v2_header_for_a_unix_socket_client_is_served_as_the_balancer() {
    let gw = TestGateway::start_with(trusting(&[BALANCER])).await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x31]);
    header.extend_from_slice(&216u16.to_be_bytes());
    let mut path = [0u8; 108];
    path[..14].copy_from_slice(b"/run/haproxy.s");
    header.extend_from_slice(&path);
    header.extend_from_slice(&path);
    let mut c = through_balancer(&gw, &header).await;
    deliver(&mut c, "over a unix socket").await;
    let spooled = gw.spooled_messages();
    assert_eq!(spooled.len(), 1);
    assert!(
        spooled[0].envelope.peer_addr.starts_with(BALANCER),
        "{:?}",
        spooled[0].envelope.peer_addr
    );
}

/// Connections from a balancer hold their place among `inbound.max_connections` while
/// the gateway waits for their header: a balancer that opens many and sends nothing
/// cannot take more than the limit.
#[tokio::test]
async fn connections_waiting_for_their_header_count_against_max_connections() {
    let gw = TestGateway::start_with(|t| {
        trusting(&[BALANCER])(t);
        common::set(t, "inbound", "max_connections", 2);
        common::set(t, "inbound", "handshake_timeout", "30s");
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(Client::connect_from(BALANCER.parse().unwrap(), gw.addr).await);
    }
    let mut third = Client::connect_from(BALANCER.parse().unwrap(), gw.addr).await;
    third.expect(421, "4.7.0").await;
    assert_eq!(gw.connections_refused("inbound", "max_connections"), 1);
    // One place freed: the next balancer connection is read and served.
    drop(silent.pop());
    common::wait_for_async("a free place", Duration::from_secs(10), || async {
        let mut c = Client::connect_from(BALANCER.parse().unwrap(), gw.addr).await;
        c.send_raw(v1("192.0.2.7", 4000).as_bytes()).await;
        c.read_reply().await.code == 220
    })
    .await;
}

/// Sends `bytes` from the balancer's address: the gateway must close the connection
/// without sending anything (a reset counts: it closes with our bytes unread).
async fn closed_without_a_word(gw: &TestGateway, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(BALANCER.parse().unwrap(), 0))
        .expect("bind");
    let mut stream = socket.connect(gw.addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("closed within 10 s");
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(
        got.is_empty(),
        "no greeting: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// What a trusted balancer's connection must start with; each case is closed without a
/// greeting and counted under its reason.
#[tokio::test]
async fn a_trusted_balancer_without_a_valid_header_is_closed() {
    let gw = TestGateway::start_with(|t| {
        trusting(&[BALANCER])(t);
        t["inbound"]
            .as_table_mut()
            .expect("[inbound]")
            .insert("handshake_timeout".into(), "1s".into());
    })
    .await;
    let cases: &[(&[u8], &str)] = &[
        (b"EHLO client.example\r\n", "proxy_missing"),
        (
            b"PROXY TCP4 192.0.2.777 127.0.0.1 1 25\r\n",
            "proxy_invalid",
        ),
        (
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\r\nEHLO early\r\n",
            "proxy_invalid",
        ),
        (b"PROXY TCP4 192.0.2.7 127.0", "proxy_timeout"),
        (b"", "proxy_timeout"),
        (&[b'P'; 5000], "proxy_missing"),
    ];
    for (bytes, reason) in cases {
        let before = gw.connections_refused("inbound", reason);
        closed_without_a_word(&gw, bytes).await;
        assert_eq!(
            gw.connections_refused("inbound", reason),
            before + 1,
            "{:?} counted as {reason}",
            String::from_utf8_lossy(bytes)
        );
    }
    // An oversized v2 header: its length field says 4,000 bytes, more than we read.
    let mut big = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    big.extend_from_slice(&[0x21, 0x11]);
    big.extend_from_slice(&8000u16.to_be_bytes());
    big.extend_from_slice(&[0u8; 5000]);
    let before = gw.connections_refused("inbound", "proxy_invalid");
    closed_without_a_word(&gw, &big).await;
    assert_eq!(
        gw.connections_refused("inbound", "proxy_invalid"),
        before + 1
    );
    gw.assert_still_serving_through(v1("192.0.2.50", 4000).as_bytes())
        .await;
}

#[tokio::test]
async fn a_header_from_an_untrusted_address_is_refused() {
    // The balancer is 127.0.0.2; the client connects from 127.0.0.1 and claims another
    // address.
    let gw = TestGateway::start_with(trusting(&["127.0.0.2/32"])).await;
    for header in [
        v1("192.0.2.7", 40123).into_bytes(),
        v2([192, 0, 2, 7], 40123),
    ] {
        let before = gw.connections_refused("inbound", "proxy_untrusted");
        let mut c = Client::connect(gw.addr).await;
        c.send_raw(&header).await;
        c.expect_code(220).await;
        c.expect_eof().await;
        assert_eq!(
            gw.connections_refused("inbound", "proxy_untrusted"),
            before + 1
        );
    }
    // Without any trusted balancer, the same.
    let plain = TestGateway::start().await;
    let mut c = Client::connect(plain.addr).await;
    c.send_raw(v1("192.0.2.7", 40123).as_bytes()).await;
    c.expect_code(220).await;
    c.expect_eof().await;
    assert_eq!(plain.connections_refused("inbound", "proxy_untrusted"), 1);
    // The trusted balancer's own connections still work, and a second header inside a
    // proxied connection is refused like any other.
    let from: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = Client::connect_from(from, gw.addr).await;
    c.send_raw(v1("192.0.2.9", 1).as_bytes()).await;
    c.expect_code(220).await;
    c.send_raw(v1("192.0.2.10", 2).as_bytes()).await;
    c.expect_eof().await;
}

#[test]
fn a_range_that_trusts_everyone_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut table = common::base_config(&dir.path().join("spool"));
    trusting(&["0.0.0.0/0"])(&mut table);
    let text = toml::to_string(&table).expect("toml");
    let path = dir.path().join("gateway.toml");
    let e = match mssante_gateway::config::Config::from_toml(&path, &text) {
        Ok(_) => panic!("a range trusting everyone was accepted"),
        Err(e) => e,
    };
    let e = e.to_string();
    assert!(e.contains("inbound.proxy_protocol.trusted"), "{e}");
    assert!(e.contains("trusts every address"), "{e}");
}
