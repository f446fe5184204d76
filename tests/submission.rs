//! The submission listener, where our internal mail server hands over mail for other
//! operators: only allowed addresses, only our senders, only recipients of the espace.

mod common;

use common::{Client, ReplyCheck, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};

fn with_submission(allow: &'static [&'static str]) -> impl FnOnce(&mut toml::Table) {
    move |t| {
        let mut s = toml::Table::new();
        s.insert("listen".into(), "127.0.0.1:0".into());
        s.insert(
            "allow".into(),
            toml::Value::Array(allow.iter().map(|a| (*a).into()).collect()),
        );
        t.insert("submission".into(), s.into());
    }
}

async fn submit(gw: &TestGateway) -> Client {
    let addr = gw.gateway().submission_addr.expect("submission listener");
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.send("EHLO mail.internal.example").await;
    c.expect_code(250).await;
    c
}

#[tokio::test]
async fn internal_mail_to_a_listed_operator_is_accepted_and_spooled_as_outbound() {
    let gw = TestGateway::start_with(with_submission(&["127.0.0.0/8"])).await;
    let mut c = submit(&gw).await;
    c.send_message(
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[
            "colleague@peer-a.test.mssante.fr",
            &format!("nurse@{LOCAL_DOMAIN}"),
        ],
        b"Subject: patient\r\n\r\ncompte rendu\r\n",
    )
    .await;
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].envelope.direction,
        mssante_gateway::spool::Direction::Outbound
    );
    assert_eq!(gw.metrics.messages_received_total.get(&["outbound"]), 1);
}

#[tokio::test]
async fn recipients_outside_the_whitelist_never_leave_the_espace() {
    let gw = TestGateway::start_with(with_submission(&["127.0.0.1"])).await;
    let mut c = submit(&gw).await;
    c.send(&format!("MAIL FROM:<a@{LOCAL_DOMAIN}>")).await;
    c.expect(250, "2.1.0").await;
    for rcpt in ["x@gmail.com", "x@not-listed.mssante.fr"] {
        c.send(&format!("RCPT TO:<{rcpt}>")).await;
        c.expect(550, "5.7.1").await;
    }
    assert_eq!(gw.rejections("rcpt", "recipient_domain_not_listed"), 2);
}

#[tokio::test]
async fn senders_outside_our_domains_are_refused() {
    let gw = TestGateway::start_with(with_submission(&["127.0.0.1"])).await;
    let mut c = submit(&gw).await;
    c.send("MAIL FROM:<spoof@peer-a.test.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    assert_eq!(gw.rejections("mail", "sender_not_local"), 1);
    // Our server's own bounces have the null reverse path.
    c.send("MAIL FROM:<>").await;
    c.expect(250, "2.1.0").await;
}

#[tokio::test]
async fn addresses_outside_the_allow_list_are_turned_away() {
    let gw = TestGateway::start_with(with_submission(&["127.0.0.2/32"])).await;
    let addr = gw.gateway().submission_addr.expect("submission listener");
    let mut c = Client::connect(addr).await;
    c.expect(554, "5.7.1").await;
    c.expect_eof().await;
    assert_eq!(gw.connections_refused("submission", "not_allowed"), 1);
    let mut ok = Client::connect_from("127.0.0.2".parse().expect("ip"), addr).await;
    tokio::time::timeout(IO_TIMEOUT, ok.expect_code(220))
        .await
        .expect("greeting");
}

#[tokio::test]
async fn a_looping_message_from_the_internal_server_is_refused() {
    let gw = TestGateway::start_with(with_submission(&["127.0.0.0/8"])).await;
    let mut c = submit(&gw).await;
    let r = c
        .try_message(
            &format!("dr.house@{LOCAL_DOMAIN}"),
            &["colleague@peer-a.test.mssante.fr"],
            &common::message_with_received(51),
        )
        .await;
    r.assert_is(554, "5.4.6");
    assert_eq!(gw.rejections("data", "mail_loop"), 1);
    assert!(gw.spooled_messages().is_empty());
}

/// Behind a balancer that sends the PROXY protocol, the allow-list judges the client the
/// header names, not the balancer.
#[tokio::test]
async fn the_allow_list_applies_to_the_client_behind_a_trusted_balancer() {
    let gw = TestGateway::start_with(|t| {
        with_submission(&["192.0.2.0/24"])(t);
        let mut proxy = toml::Table::new();
        proxy.insert(
            "trusted".into(),
            toml::Value::Array(vec!["127.0.0.1".into()]),
        );
        t["submission"]
            .as_table_mut()
            .expect("[submission]")
            .insert("proxy_protocol".into(), proxy.into());
    })
    .await;
    let addr = gw.gateway().submission_addr.expect("submission listener");
    let mut inside = Client::connect(addr).await;
    inside
        .send_raw(b"PROXY TCP4 192.0.2.5 127.0.0.1 40000 2587\r\n")
        .await;
    inside.expect_code(220).await;
    inside.send("QUIT").await;
    inside.expect(221, "2.0.0").await;
    let mut outside = Client::connect(addr).await;
    outside
        .send_raw(b"PROXY TCP4 203.0.113.5 127.0.0.1 40000 2587\r\n")
        .await;
    outside.expect(554, "5.7.1").await;
    outside.expect_eof().await;
    assert_eq!(gw.connections_refused("submission", "not_allowed"), 1);
}
