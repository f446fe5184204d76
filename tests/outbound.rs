//! Delivery to other operators: our users' mail enters through the submission listener and
//! leaves for peer operators run by the test (small SMTP servers with STARTTLS and the test
//! PKI's certificates), found through a loopback DNS server. Each refusal path of the
//! server checks ends deferred, with nothing sent to an untrusted peer.

mod common;
#[path = "common/dns_server.rs"]
mod dns_server;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::sink::{Sink, SinkOpts};
use common::{Client, TestGateway, LOCAL_DOMAIN};
use dns_server::{DnsServer, RecordSpec};

// ---------------------------------------------------------------------------------------
// The gateway and its world.

const PEER_A: &str = "peer-a.test.mssante.fr";
const MX_A: &str = "smtp.peer-a.test.mssante.fr";
const MX_B: &str = "smtp.peer-b.test.mssante.fr";

/// A gateway whose internal server is `internal`, whose DNS is `dns`, delivering to peers
/// on `port`, with a short retry schedule.
async fn gateway(internal: SocketAddr, dns: &DnsServer, port: u16) -> TestGateway {
    gateway_with(internal, dns, port, |_| {}).await
}

/// [`gateway`], with `change` applied last.
async fn gateway_with(
    internal: SocketAddr,
    dns: &DnsServer,
    port: u16,
    change: impl FnOnce(&mut toml::Table),
) -> TestGateway {
    let extra = format!(
        r#"
[submission]
listen = "127.0.0.1:0"
allow = ["127.0.0.0/8"]

[relay]
internal = "{internal}"
timeout = "10s"
retry_first = "300ms"
retry_max = "1s"
expiry = "1h"

[dns]
name_servers = ["{dns}"]
timeout = "2s"

[outbound]
port = {port}
connect_timeout = "2s"
timeout = "10s"
"#,
        dns = dns.addr,
    );
    let extra: toml::Table = toml::from_str(&extra).expect("valid TOML");
    TestGateway::start_with(move |t| {
        for (k, v) in extra {
            t.insert(k, v);
        }
        change(t);
    })
    .await
}

async fn submit(gw: &TestGateway, from: &str, to: &[&str], body: &[u8]) {
    let addr = gw.gateway().submission_addr.expect("submission listener");
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.send("EHLO mail.internal.example").await;
    c.expect_code(250).await;
    let r = c.send_message(from, to, body).await;
    assert_eq!(r.code, 250, "submission accepted: {r:?}");
    c.quit().await;
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn failures(gw: &TestGateway, reason: &str) -> u64 {
    gw.metrics.outbound_failures_total.get(&[reason])
}

fn outbound_counter(c: &mssante_gateway::metrics::ListedCounter) -> u64 {
    c.get(&["outbound"])
}

/// Splits off the one header the gateway adds; the rest must be the submitted bytes.
fn strip_received(data: &[u8]) -> (&str, &[u8]) {
    assert!(data.starts_with(b"Received: from "), "starts with Received");
    let mut i = 0;
    loop {
        let nl = data[i..]
            .iter()
            .position(|b| *b == b'\n')
            .expect("header end")
            + i;
        if data.get(nl + 1) != Some(&b'\t') {
            let header = std::str::from_utf8(&data[..nl + 1]).expect("ascii header");
            return (header, &data[nl + 1..]);
        }
        i = nl + 1;
    }
}

fn body(tag: &str) -> Vec<u8> {
    let mut b = format!(
        "Message-ID: <{tag}@{LOCAL_DOMAIN}>\r\nDate: Wed, 04 Mar 2026 05:06:07 +0100\r\nFrom: <dr.house@{LOCAL_DOMAIN}>\r\nSubject: compte rendu\r\nX-MSS-CODECDA: 11490-0\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice("résumé médical\r\n.leading dot\r\n..two dots\r\nend\r\n".as_bytes());
    b
}

/// The zone every test starts from: peer-a's domain served by `MX_A` on 127.0.0.1.
fn zone_a() -> Vec<(&'static str, RecordSpec)> {
    vec![
        (PEER_A, RecordSpec::mx(10, MX_A)),
        (MX_A, RecordSpec::A(Ipv4Addr::LOCALHOST)),
        (MX_B, RecordSpec::A(Ipv4Addr::LOCALHOST)),
    ]
}

/// One test's world: an internal sink, a DNS server, a peer on 127.0.0.1 presenting
/// `cert` (STARTTLS offered when `cert` is given), and the gateway.
struct World {
    internal: Sink,
    peer: Sink,
    _dns: DnsServer,
    gw: TestGateway,
}

async fn world(zone: &[(&str, RecordSpec)], cert: Option<&str>) -> World {
    let internal = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let peer = Sink::start(
        "127.0.0.1:0",
        cert.map_or_else(SinkOpts::plain, SinkOpts::peer),
    )
    .await;
    let dns = DnsServer::start(zone);
    let gw = gateway(internal.addr, &dns, peer.addr.port()).await;
    World {
        internal,
        peer,
        _dns: dns,
        gw,
    }
}

/// Submits one message to `colleague@peer-a` and waits until an attempt was deferred for
/// `reason`; then checks that the peer never saw MAIL FROM and the message is still queued.
async fn assert_deferred_untrusted(w: &World, reason: &str) {
    submit(
        &w.gw,
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&format!("colleague@{PEER_A}")],
        &body(reason),
    )
    .await;
    wait_for(reason, || {
        failures(&w.gw, reason) >= 1 && outbound_counter(&w.gw.metrics.messages_deferred_total) >= 1
    })
    .await;
    assert!(w.peer.sessions() >= 1, "the peer was contacted");
    assert_eq!(
        w.peer.mail_commands(),
        0,
        "nothing sent to an untrusted peer"
    );
    assert!(w.peer.delivered().is_empty());
    assert_eq!(w.gw.spooled_messages().len(), 1, "the message stays queued");
    assert_eq!(outbound_counter(&w.gw.metrics.messages_bounced_total), 0);
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn our_users_mail_reaches_a_listed_peer_identical_with_our_client_certificate() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let b = body("happy");
    let local = format!("nurse@{LOCAL_DOMAIN}");
    let remote = format!("colleague@{PEER_A}");
    let remote2 = format!("secretary@{PEER_A}");
    submit(
        &w.gw,
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&remote, &local, &remote2],
        &b,
    )
    .await;
    wait_for("delivery to the peer and the internal server", || {
        !w.peer.delivered().is_empty() && !w.internal.delivered().is_empty()
    })
    .await;
    let got = w.peer.delivered();
    assert_eq!(got.len(), 1, "one transaction for the domain");
    assert_eq!(got[0].mail_from, format!("dr.house@{LOCAL_DOMAIN}"));
    assert_eq!(got[0].rcpts, vec![remote.clone(), remote2.clone()]);
    assert_eq!(
        got[0].client_cn.as_deref(),
        Some("smtp.gateway.test.mssante.fr")
    );
    let (received, rest) = strip_received(&got[0].data);
    assert_eq!(
        rest,
        &b[..],
        "bytes after the Received header are untouched"
    );
    assert!(received.contains("by smtp.gateway.test.mssante.fr (mssante-gateway)"));
    let internal = w.internal.delivered();
    assert_eq!(internal[0].rcpts, vec![local]);
    wait_for("queue empty", || w.gw.spooled_messages().is_empty()).await;
    assert_eq!(outbound_counter(&w.gw.metrics.messages_relayed_total), 1);
    assert_eq!(outbound_counter(&w.gw.metrics.messages_deferred_total), 0);
}

#[tokio::test]
async fn when_the_first_mx_is_down_the_second_takes_the_mail() {
    let mut zone = zone_a();
    zone[0] = (PEER_A, RecordSpec::mx(10, "down.peer-a.test.mssante.fr"));
    zone.push((PEER_A, RecordSpec::mx(20, MX_A)));
    // Nothing listens on 127.0.0.3: the connection is refused at once.
    zone.push((
        "down.peer-a.test.mssante.fr",
        RecordSpec::A(Ipv4Addr::new(127, 0, 0, 3)),
    ));
    let w = world(&zone, Some("peer-a")).await;
    submit(
        &w.gw,
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&format!("colleague@{PEER_A}")],
        &body("second-mx"),
    )
    .await;
    wait_for("delivery", || !w.peer.delivered().is_empty()).await;
    assert_eq!(failures(&w.gw, "connect_failed"), 1);
    assert_eq!(outbound_counter(&w.gw.metrics.messages_deferred_total), 0);
}

#[tokio::test]
async fn a_server_certificate_naming_another_host_than_the_mx_is_not_trusted() {
    // The MX named for peer-a answers with peer-b's (valid, listed) certificate.
    let w = world(&zone_a(), Some("peer-b")).await;
    assert_deferred_untrusted(&w, "mx_cn_mismatch").await;
}

#[tokio::test]
async fn a_server_whose_dn_is_listed_for_another_domain_does_not_get_the_mail() {
    // peer-a's domain points at peer-b's host, whose certificate matches the MX name but
    // whose DN the liste blanche lists for peer-b's domain only.
    let mut zone = zone_a();
    zone[0] = (PEER_A, RecordSpec::mx(10, MX_B));
    let w = world(&zone, Some("peer-b")).await;
    assert_deferred_untrusted(&w, "recipient_dn_mismatch").await;
}

#[tokio::test]
async fn a_server_certificate_from_a_foreign_ca_is_not_trusted() {
    let w = world(&zone_a(), Some("peer-foreign")).await;
    assert_deferred_untrusted(&w, "server_cert_untrusted").await;
}

#[tokio::test]
async fn an_expired_server_certificate_is_not_trusted() {
    let w = world(&zone_a(), Some("peer-expired")).await;
    assert_deferred_untrusted(&w, "server_cert_expired").await;
}

#[tokio::test]
async fn a_revoked_server_certificate_is_not_trusted() {
    let w = world(&zone_a(), Some("peer-revoked")).await;
    assert_deferred_untrusted(&w, "server_cert_revoked").await;
}

#[tokio::test]
async fn a_server_certificate_not_yet_valid_is_not_trusted() {
    let w = world(&zone_a(), Some("peer-not-yet-valid")).await;
    assert_deferred_untrusted(&w, "server_cert_not_yet_valid").await;
}

#[tokio::test]
async fn a_peer_without_starttls_never_gets_mail_in_plaintext() {
    let w = world(&zone_a(), None).await;
    assert_deferred_untrusted(&w, "starttls_unavailable").await;
}

#[tokio::test]
async fn a_recipient_domain_outside_the_whitelist_is_refused_at_rcpt() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let addr = w.gw.gateway().submission_addr.expect("submission listener");
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.send("EHLO mail.internal.example").await;
    c.expect_code(250).await;
    c.send(&format!("MAIL FROM:<dr.house@{LOCAL_DOMAIN}>"))
        .await;
    c.expect(250, "2.1.0").await;
    c.send("RCPT TO:<someone@not-listed.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    assert_eq!(w.gw.rejections("rcpt", "recipient_domain_not_listed"), 1);
    assert!(w.gw.spooled_messages().is_empty());
}

#[tokio::test]
async fn a_temporary_refusal_is_retried_on_the_schedule_and_then_delivered() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let rcpt = format!("colleague@{PEER_A}");
    w.peer.refuse(&rcpt, "451 4.2.1 mailbox busy", Some(1));
    submit(
        &w.gw,
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&rcpt],
        &body("retry"),
    )
    .await;
    wait_for("delivery after a retry", || !w.peer.delivered().is_empty()).await;
    assert_eq!(outbound_counter(&w.gw.metrics.messages_deferred_total), 1);
    assert_eq!(w.peer.delivered()[0].rcpts, vec![rcpt]);
    wait_for("queue empty", || w.gw.spooled_messages().is_empty()).await;
}

#[tokio::test]
async fn a_permanent_refusal_sends_a_dsn_to_our_sender_through_the_internal_server() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let bad = format!("nobody@{PEER_A}");
    let good = format!("colleague@{PEER_A}");
    w.peer.refuse(&bad, "550 5.1.1 no such user", None);
    let sender = format!("dr.house@{LOCAL_DOMAIN}");
    submit(&w.gw, &sender, &[&bad, &good], &body("dsn")).await;
    wait_for("the DSN at the internal server", || {
        !w.internal.delivered().is_empty()
    })
    .await;
    let dsn = &w.internal.delivered()[0];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpts, vec![sender]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822;{bad}\r\n")),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1\r\n"), "{text}");
    assert!(!text.contains(&format!("Final-Recipient: rfc822;{good}")));
    assert_eq!(w.peer.delivered()[0].rcpts, vec![good]);
    assert_eq!(outbound_counter(&w.gw.metrics.messages_bounced_total), 1);
    wait_for("queue empty", || w.gw.spooled_messages().is_empty()).await;
}

#[tokio::test]
async fn a_dsn_to_a_peer_operators_sender_goes_out_to_that_peer() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let missing = format!("nobody@{LOCAL_DOMAIN}");
    w.internal.refuse(&missing, "550 5.1.1 no such user", None);
    let mut c = w.gw.established(Some("peer-a")).await;
    let sender = format!("dr.who@{PEER_A}");
    c.send_message(&sender, &[&missing], &body("dsn-out")).await;
    c.quit().await;
    wait_for("the DSN at the peer", || !w.peer.delivered().is_empty()).await;
    let dsn = &w.peer.delivered()[0];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpts, vec![sender]);
    assert_eq!(
        dsn.client_cn.as_deref(),
        Some("smtp.gateway.test.mssante.fr")
    );
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822;{missing}\r\n")),
        "{text}"
    );
    wait_for("queue empty", || w.gw.spooled_messages().is_empty()).await;
}

#[test]
fn the_outbound_section_is_checked_key_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let with = |extra: &str| {
        let mut t = common::base_config(&dir.path().join("spool"));
        let extra: toml::Table = toml::from_str(extra).expect("valid TOML");
        t.extend(extra);
        toml::to_string(&t).expect("serialises")
    };
    let c = mssante_gateway::config::Config::from_toml(&path, &with("")).expect("defaults");
    assert_eq!(c.outbound.port, 25);
    assert_eq!(c.outbound.concurrency_per_domain, 2);
    assert_eq!(c.outbound.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.outbound.helo, c.hostname);
    let errors =
        mssante_gateway::config::Config::from_toml(&path, &with("[outbound]\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
    assert!(errors.contains("outbound.bogus"), "{errors}");
    let errors = mssante_gateway::config::Config::from_toml(
        &path,
        &with("[outbound]\nconcurrency_per_domain = 0\nconnect_timeout = \"soon\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("outbound.concurrency_per_domain"),
        "{errors}"
    );
    assert!(errors.contains("outbound.connect_timeout"), "{errors}");
}

#[tokio::test]
async fn a_listed_domain_that_does_not_exist_in_dns_is_bounced_with_5_1_2() {
    // peer-b's domain is on the liste blanche but absent from the zone: NXDOMAIN.
    let w = world(&zone_a(), Some("peer-a")).await;
    let sender = format!("dr.house@{LOCAL_DOMAIN}");
    let rcpt = "colleague@peer-b.test.mssante.fr";
    submit(&w.gw, &sender, &[rcpt], &body("nxdomain")).await;
    wait_for("the DSN at the internal server", || {
        !w.internal.delivered().is_empty()
    })
    .await;
    let dsn = &w.internal.delivered()[0];
    assert_eq!(dsn.rcpts, vec![sender]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("Status: 5.1.2\r\n"), "{text}");
    assert_eq!(failures(&w.gw, "dns_nxdomain"), 1);
    assert_eq!(w.peer.sessions(), 0);
    wait_for("queue empty", || w.gw.spooled_messages().is_empty()).await;
}

/// Interoperability with Postfix as the receiving operator, which requires our client
/// certificate (`smtpd_tls_req_ccert = yes`). Debian's postfix package is installed by
/// scripts/test.sh (as root).
#[tokio::test]
async fn postfix_as_the_receiving_operator() {
    assert!(
        std::path::Path::new("/usr/sbin/postfix").exists(),
        "Debian's postfix package is missing: scripts/test.sh installs it (as root)"
    );
    let port = common::free_port();
    let (_dir, pf_dir) = common::postfix_workdir();
    let _postfix = common::Postfix::start("postfix-peer.sh", &pf_dir, port);
    let internal = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let dns = DnsServer::start(&zone_a());
    let gw = gateway(internal.addr, &dns, port).await;
    let b = body("postfix");
    submit(
        &gw,
        &format!("dr.house@{LOCAL_DOMAIN}"),
        &[&format!("colleague@{PEER_A}")],
        &b,
    )
    .await;
    let inbox = pf_dir.join("mail/inbox/new");
    wait_for("a message in Postfix's Maildir", || {
        std::fs::read_dir(&inbox).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    let file = std::fs::read_dir(&inbox)
        .expect("inbox")
        .next()
        .expect("one file")
        .expect("entry")
        .path();
    // Postfix stores LF line ends; compare without CR.
    let got = String::from_utf8_lossy(&std::fs::read(file).expect("read")).replace('\r', "");
    let sent = String::from_utf8_lossy(&b).replace('\r', "");
    assert!(got.ends_with(&sent), "body intact:\n{got}");
    assert!(
        got.contains("Client CN \"smtp.gateway.test.mssante.fr\""),
        "Postfix saw and verified our client certificate:\n{got}"
    );
    assert!(got.contains("by smtp.gateway.test.mssante.fr (mssante-gateway)"));
    wait_for("queue empty", || gw.spooled_messages().is_empty()).await;
    assert_eq!(outbound_counter(&gw.metrics.messages_relayed_total), 1);
}

#[tokio::test]
async fn consecutive_messages_to_one_peer_share_a_session() {
    let w = world(&zone_a(), Some("peer-a")).await;
    let from = format!("dr.house@{LOCAL_DOMAIN}");
    for (i, rcpt) in ["colleague", "secretary"].iter().enumerate() {
        submit(&w.gw, &from, &[&format!("{rcpt}@{PEER_A}")], &body(rcpt)).await;
        wait_for("delivery", || w.peer.delivered().len() == i + 1).await;
    }
    assert_eq!(
        w.peer.sessions(),
        1,
        "the second message reused the session"
    );
    assert_eq!(outbound_counter(&w.gw.metrics.messages_relayed_total), 2);
}

#[tokio::test]
async fn nothing_leaves_while_our_liste_blanche_is_stale() {
    // No list could ever be loaded: no cache, and the download fails at once.
    let internal = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let peer = Sink::start("127.0.0.1:0", SinkOpts::peer("peer-a")).await;
    let dns = DnsServer::start(&zone_a());
    let gw = gateway_with(internal.addr, &dns, peer.addr.port(), |t| {
        let w = t["whitelist"].as_table_mut().expect("[whitelist]");
        w.insert("fetch".into(), true.into());
        w.insert("url".into(), "https://127.0.0.1:1/liste.xml".into());
        w.insert("cache".into(), "no-such-cache.xml".into());
    })
    .await;
    // The submission listener refuses RCPT meanwhile, so the message is one spooled
    // earlier, when the list was fresh.
    let envelope = mssante_gateway::spool::Envelope {
        direction: mssante_gateway::spool::Direction::Outbound,
        received_at: "2026-03-04T05:06:07Z".into(),
        peer_addr: "127.0.0.1:40000".into(),
        helo: "mail.internal.example".into(),
        peer_dn: None,
        peer_cn: None,
        peer_ptr: None,
        tls: None,
        mail_from: format!("dr.house@{LOCAL_DOMAIN}"),
        envid: None,
        ret_full: None,
        body_8bitmime: false,
        smtputf8: false,
        recipients: vec![mssante_gateway::spool::Recipient {
            address: format!("colleague@{PEER_A}"),
            notify: 0,
            orcpt: None,
        }],
    };
    let spool = &gw.gateway().spool;
    let mut m = spool.create(&envelope).await.expect("create");
    m.write(&body("stale")).await.expect("write");
    m.commit().await.expect("commit");
    wait_for("a deferral for the stale list", || {
        failures(&gw, "whitelist_stale") >= 1
            && outbound_counter(&gw.metrics.messages_deferred_total) >= 1
    })
    .await;
    assert_eq!(peer.sessions(), 0, "no peer contacted");
    assert_eq!(gw.spooled_messages().len(), 1);
}
