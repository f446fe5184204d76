//! A mail loop between two gateways, each the other's internal server: the message goes
//! round until it carries `limits.max_received_headers` Received headers, then it is
//! bounced with one DSN (RFC 5321 §6.3); the DSN, looping in turn, is dropped without
//! another (it comes from `<>`). Nothing waits for the expiry.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, set, Client, TestGateway, LOCAL_DOMAIN};

/// A gateway whose submission listener is on `own` and whose internal server is the
/// other gateway's submission listener on `other`.
async fn looping_gateway(own: u16, other: u16) -> TestGateway {
    TestGateway::start_with(move |t| {
        set(t, "submission", "listen", format!("127.0.0.1:{own}"));
        set(
            t,
            "submission",
            "allow",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        );
        set(t, "relay", "internal", format!("127.0.0.1:{other}"));
        set(t, "relay", "retry_first", "200ms");
        set(t, "relay", "retry_max", "1s");
        // No name server answers: nothing leaves for another operator.
        set(
            t,
            "dns",
            "name_servers",
            toml::Value::Array(vec!["127.0.0.1:9".into()]),
        );
        set(t, "limits", "max_received_headers", 20);
    })
    .await
}

/// DSNs of `action` a gateway wrote.
fn dsns(gw: &TestGateway, action: &str) -> u64 {
    gw.metrics.dsn_generated_total.get(&[action])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_between_two_gateways_ends_in_one_dsn() {
    let (port_a, port_b) = (free_port(), free_port());
    let a = looping_gateway(port_a, port_b).await;
    let b = looping_gateway(port_b, port_a).await;

    let mut c = Client::connect(a.gateway().submission_addr.expect("submission")).await;
    c.expect_code(220).await;
    c.send("EHLO mail.internal.example").await;
    c.expect_code(250).await;
    c.send_message(
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&format!("nurse@{LOCAL_DOMAIN}")],
        b"Message-ID: <loop@gateway.test.mssante.fr>\r\nSubject: loop\r\n\r\nround and round\r\n",
    )
    .await;
    c.quit().await;

    // Both queues empty: the message and its DSN are gone, long before any expiry.
    let start = Instant::now();
    loop {
        let dsns: u64 = [&a, &b].iter().map(|g| dsns(g, "failed")).sum();
        if dsns >= 1 && a.spooled_messages().is_empty() && b.spooled_messages().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the loop did not end: {} + {} queued",
            a.spooled_messages().len(),
            b.spooled_messages().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let anything in flight settle, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = |f: fn(&TestGateway) -> u64| f(&a) + f(&b);
    assert_eq!(
        total(|g| dsns(g, "failed")),
        1,
        "one DSN for the looping message, none for the looping DSN"
    );
    assert_eq!(
        total(|g| g.rejections("relay", "mail_loop")),
        2,
        "the message, then its DSN, stopped as loops"
    );
    assert!(a.spooled_messages().is_empty() && b.spooled_messages().is_empty());
}
