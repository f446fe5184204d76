//! The JSON log, as an operator's log pipeline reads it: every decision the gateway makes
//! (a connection, a certificate, a sender, a recipient, a message, a delivery, a DSN, a
//! reload, the liste blanche) is one line whose fields keep their types, and each line is
//! checked against `docs/log-schema.json`, which describes every kind of decision. The
//! gateway runs in this process with the JSON format the `serve` command installs.

mod common;
#[path = "common/dns_server.rs"]
mod dns_server;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::json_log::{self, Captured};
use common::sink::{Sink, SinkOpts};
use common::{Client, TestGateway, LOCAL_DOMAIN};
use dns_server::{DnsServer, RecordSpec};

const PEER_A: &str = "peer-a.test.mssante.fr";
const MX_A: &str = "smtp.peer-a.test.mssante.fr";
const PEER_B: &str = "peer-b.test.mssante.fr";
const MX_B: &str = "smtp.peer-b.test.mssante.fr";

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(20), &mut f).await;
}

#[tokio::test]
async fn every_decision_is_a_typed_json_line_that_matches_the_schema() {
    let (log, _logging) = Captured::install();
    let internal = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let peer = Sink::start("127.0.0.1:0", SinkOpts::peer("peer-a")).await;
    // peer-b's MX answers on 127.0.0.2, where nothing listens: deliveries there defer.
    let dns = DnsServer::start(&[
        (PEER_A, RecordSpec::mx(10, MX_A)),
        (MX_A, RecordSpec::A(Ipv4Addr::LOCALHOST)),
        (PEER_B, RecordSpec::mx(10, MX_B)),
        (MX_B, RecordSpec::A(Ipv4Addr::new(127, 0, 0, 2))),
    ]);
    let extra = format!(
        r#"
[submission]
listen = "127.0.0.1:0"
allow = ["127.0.0.0/8"]

[relay]
internal = "{internal}"
retry_first = "1h"
retry_max = "1h"

[dns]
name_servers = ["{dns}"]
timeout = "2s"

[outbound]
port = {port}
connect_timeout = "1s"
"#,
        internal = internal.addr,
        dns = dns.addr,
        port = peer.addr.port(),
    );
    let extra: toml::Table = toml::from_str(&extra).expect("valid TOML");
    let gw = TestGateway::start_with(move |t| t.extend(extra)).await;

    // Inbound, from peer A: a refused command, a sender, recipients, a message, a refused
    // sender, a loop.
    let mut c = gw.established(Some("peer-a")).await;
    c.send("LHLO smtp.peer-a.test.mssante.fr").await;
    c.expect_code(502).await;
    let r = c
        .send_message(
            &format!("a@{PEER_A}"),
            &[&format!("bob@{LOCAL_DOMAIN}")],
            b"Subject: one\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    c.send(&format!("MAIL FROM:<a@{PEER_A}>")).await;
    c.expect_code(250).await;
    c.send(&format!("RCPT TO:<x@{PEER_B}>")).await;
    c.expect_code(550).await;
    c.send("RSET").await;
    c.expect_code(250).await;
    c.send(&format!("MAIL FROM:<a@{PEER_B}>")).await;
    c.expect_code(550).await;
    let r = c
        .try_message(
            &format!("a@{PEER_A}"),
            &[&format!("bob@{LOCAL_DOMAIN}")],
            &common::message_with_received(60),
        )
        .await;
    assert_eq!(r.code, 554, "{r:?}");
    c.quit().await;
    // A refused client certificate.
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.starttls(Some("peer-revoked")).await;
    c.send("QUIT").await;
    let _ = c.read_reply().await;

    // Outbound: one delivered, one deferred, one bounced (and its DSN).
    let addr = gw.gateway().submission_addr.expect("submission listener");
    let mut c = Client::connect(addr).await;
    c.expect_code(220).await;
    c.send("EHLO mail.internal.example").await;
    c.expect_code(250).await;
    for to in [
        format!("colleague@{PEER_A}"),
        format!("colleague@{PEER_B}"),
        "colleague@cert-valide-audit.test.mssante.fr".to_owned(),
    ] {
        let r = c
            .send_message(
                &format!("dr.house@{LOCAL_DOMAIN}"),
                &[&to],
                b"Subject: s\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(r.code, 250, "{to}: {r:?}");
    }
    c.quit().await;
    wait_for("the delivery to peer A and the DSN", || {
        !peer.delivered().is_empty() && internal.delivered().len() >= 2
    })
    .await;

    // A reload with a change that needs a restart, a connection over its new limit, and
    // a reload of a file that does not load.
    let _held = gw.connect().await;
    gw.reload_with(|t| {
        common::set(t, "inbound", "max_connections_per_ip", 1);
        common::set(t, "inbound", "max_connections", 7);
    });
    gw.assert_connection_refused("max_connections_per_ip").await;
    let refused = gw
        .gateway()
        .reload_from(std::path::Path::new("/nonexistent/gateway.toml"));
    assert!(
        !refused.applied && !refused.problems.is_empty(),
        "{refused:?}"
    );
    // The session lines end when the sessions do.
    drop(_held);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = log.lines();
    let seen = json_log::check(&lines);
    let missing: Vec<String> = json_log::kinds()
        .into_iter()
        .filter(|k| !seen.contains(k) && !json_log::ELSEWHERE.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "no line of these kinds: {missing:?}\n{}",
        lines.join("\n")
    );
}

/// The schema's stages are those the refusal counter knows, no more, no fewer.
#[test]
fn the_schema_names_the_stages_of_the_code() {
    let schema = json_log::schema();
    let in_schema: std::collections::BTreeSet<&str> = schema["properties"]["stage"]["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    let in_code: std::collections::BTreeSet<&str> = mssante_gateway::metrics::labels::REJECTIONS
        .series()
        .into_iter()
        .map(|s| s[0])
        .collect();
    assert_eq!(in_schema, in_code);
}

/// The schema is not a check that cannot fail: a line of each kind with one field of the
/// wrong type or missing is refused.
#[test]
fn the_schema_refuses_what_a_debug_formatter_would_write() {
    let schema = json_log::schema();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
    let good = serde_json::json!({
        "timestamp": "2026-12-05T16:17:59.910370Z", "level": "INFO",
        "message": "message accepted and spooled", "stage": "data", "verdict": "accept",
        "queue_id": "1A246FF826498DC34F4", "size": 19, "mail_from": "a@peer-a.test.mssante.fr",
        "rcpts": ["bob@gateway.test.mssante.fr"], "peer_dn": "CN=smtp.peer-a.test.mssante.fr,C=FR",
        "target": "mssante_gateway::inbound::connection",
        "span": { "name": "session", "peer": "127.0.0.1:35392", "session": "64ff-0" }
    });
    assert!(validator.is_valid(&good), "the sample is valid");
    let spoiled: [(&str, serde_json::Value); 7] = [
        (
            "rcpts",
            serde_json::json!("[\"bob@gateway.test.mssante.fr\"]"),
        ),
        (
            "peer_dn",
            serde_json::json!("Some(\"CN=smtp.peer-a.test.mssante.fr\")"),
        ),
        ("size", serde_json::json!("19")),
        ("peer_dn", serde_json::json!(null)),
        ("verdict", serde_json::json!("reject")),
        ("timestamp", serde_json::json!("2026-12-05 16:17:59")),
        ("queue_id", serde_json::json!("../../etc/passwd")),
    ];
    for (key, value) in spoiled {
        let mut bad = good.clone();
        bad[key] = value.clone();
        assert!(!validator.is_valid(&bad), "{key} = {value} passed");
    }
    for key in ["queue_id", "rcpts", "span"] {
        let mut bad = good.clone();
        bad.as_object_mut().expect("object").remove(key);
        assert!(!validator.is_valid(&bad), "without {key} passed");
    }
}

/// What the configuration's filter lets through: the gateway's records at `log.level`,
/// the libraries' at `log.dependencies` (off unless asked for).
fn passed_by(change: impl FnOnce(&mut toml::Table)) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut table = common::base_config(&dir.path().join("spool"));
    change(&mut table);
    let text = toml::to_string(&table).expect("serialises");
    let path = dir.path().join("gateway.toml");
    let config = mssante_gateway::config::Config::from_toml(&path, &text).expect("valid");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = mssante_gateway::logging::json_subscriber(
        tracing_subscriber::EnvFilter::new(&config.log_level),
        move || writer.clone(),
    );
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(target: "rustls::common_state", "a library's error");
        tracing::warn!(target: "hickory_proto::udp", "a library's warning");
        tracing::info!(target: "mssante_gateway::inbound", "our info");
        tracing::debug!(target: "mssante_gateway::inbound", "our debug");
    });
    captured
        .lines()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v["message"].as_str().expect("message").to_owned()
        })
        .collect()
}

#[test]
fn the_libraries_are_quiet_unless_asked_for() {
    assert_eq!(passed_by(|_| {}), ["our info"]);
    assert_eq!(
        passed_by(|t| common::set(t, "log", "dependencies", "warn")),
        ["a library's error", "a library's warning", "our info"]
    );
    assert_eq!(
        passed_by(|t| common::set(t, "log", "level", "debug")),
        ["our info", "our debug"]
    );
    // A filter of its own is taken as it is.
    assert_eq!(
        passed_by(|t| common::set(t, "log", "level", "rustls=error,mssante_gateway=warn")),
        ["a library's error"]
    );
}

#[test]
fn a_log_level_that_is_not_one_is_refused_by_name() {
    for (key, value) in [
        ("level", "verbose"),
        ("dependencies", "loud"),
        ("level", "x=y=z,"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut table = common::base_config(&dir.path().join("spool"));
        common::set(&mut table, "log", key, value);
        let text = toml::to_string(&table).expect("serialises");
        let errors = mssante_gateway::config::Config::from_toml(&dir.path().join("g.toml"), &text)
            .expect_err("refused");
        assert_eq!(errors.0.len(), 1, "one problem: {errors}");
        assert_eq!(errors.0[0].key, format!("log.{key}"), "{errors}");
        assert!(errors.0[0].message.contains(value), "{errors}");
    }
}
