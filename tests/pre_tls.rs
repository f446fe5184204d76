//! The budget of connections that have not yet shown a verified client certificate: a
//! crowd of idle or trickling connections holds at most `inbound.max_pre_tls_connections`
//! places, each for at most `inbound.tls_deadline` in all, and authenticated sessions keep
//! their slots.

mod common;

use std::time::Duration;

use common::{inbound, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn refused(gw: &TestGateway, reason: &str) -> u64 {
    gw.connections_refused("inbound", reason)
}

/// Reads until the server closes the connection; returns what it said meanwhile.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(IO_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {IO_TIMEOUT:?}: {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
}

#[tokio::test]
async fn idle_connections_before_tls_cannot_take_the_slots_of_authenticated_peers() {
    let gw = TestGateway::start_with(|t| {
        inbound("max_connections", 20)(t);
        inbound("max_connections_per_ip", 100)(t);
        inbound("max_connection_rate_per_ip", 0)(t);
        inbound("tls_deadline", "2s")(t);
    })
    .await;
    // An authenticated session, in the middle of a transaction.
    let mut session = gw.established(Some("peer-a")).await;
    session
        .send("MAIL FROM:<alice@peer-a.test.mssante.fr>")
        .await;
    session.expect(250, "2.1.0").await;

    // 15 idle connections: half of max_connections (10) get a greeting, the rest 421.
    let mut idle = Vec::new();
    let mut greeted = 0;
    for _ in 0..15 {
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let mut buf = [0u8; 128];
        let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("220") {
            greeted += 1;
        } else {
            assert!(text.starts_with("421 4.7.0"), "{text}");
        }
        idle.push(s);
    }
    assert_eq!(greeted, 10);
    assert_eq!(refused(&gw, "pre_tls_budget"), 5);

    // The authenticated session was never at risk: it finishes its message.
    session.send(&format!("RCPT TO:<bob@{LOCAL_DOMAIN}>")).await;
    session.expect(250, "2.1.5").await;
    session.send("DATA").await;
    session.expect_code(354).await;
    session.send_raw(b"Subject: kept\r\n\r\nok\r\n.\r\n").await;
    session.expect(250, "2.0.0").await;

    // The idle ones are cut at the TLS deadline, and a new peer gets in.
    for s in &mut idle {
        read_until_closed(s).await;
    }
    assert!(gw.rejections("connection", "tls_deadline") >= 10);
    let mut c = gw.established(Some("peer-a")).await;
    c.send_message(
        "alice@peer-a.test.mssante.fr",
        &[&format!("bob@{LOCAL_DOMAIN}")],
        b"Subject: after\r\n\r\nok\r\n",
    )
    .await;
}

#[tokio::test]
async fn a_client_trickling_bytes_is_cut_at_the_tls_deadline() {
    let gw = TestGateway::start_with(|t| {
        inbound("tls_deadline", "1s")(t);
        inbound("command_timeout", "5m")(t);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    // One byte every 200 ms: each read is far inside command_timeout.
    let trickle = async {
        for b in b"EHLO slow.example\r\n".iter().cycle() {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    let said = read_until_closed(&mut s).await;
    assert!(said.contains("421"), "closed with a 421: {said:?}");
    assert_eq!(gw.rejections("connection", "tls_deadline"), 1);
    // A real peer is served.
    let mut c = gw.established(Some("peer-a")).await;
    c.send_message(
        "alice@peer-a.test.mssante.fr",
        &[&format!("bob@{LOCAL_DOMAIN}")],
        b"Subject: ok\r\n\r\nok\r\n",
    )
    .await;
}
