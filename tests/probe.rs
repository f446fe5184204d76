//! `probe` against a second local instance: a gateway started in this process plays the
//! peer operator of gateway.test.mssante.fr, a loopback DNS server publishes its MX, and
//! the probe runs as the operator peer-a (certificate `peer-a-chain.pem`).

mod common;
#[path = "common/dns_server.rs"]
mod dns_server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use common::{base_config, certs_dir, TestGateway, LOCAL_DOMAIN};
use dns_server::{DnsServer, RecordSpec};
use mssante_gateway::config::Config;
use mssante_gateway::tools::identity_checks::Status;
use mssante_gateway::tools::probe::{self, Report};

const MX_HOST: &str = "smtp.gateway.test.mssante.fr";
const TO: &str = "bob@gateway.test.mssante.fr";

/// The configuration of peer-a's gateway, asking `dns` for MX records.
fn peer_a_config(dir: &Path, dns: SocketAddr) -> Config {
    let mut t = base_config(&dir.join("spool"));
    let certs = certs_dir();
    t.insert(
        "local_domains".into(),
        toml::Value::Array(vec!["peer-a.test.mssante.fr".into()]),
    );
    let tls = t["tls"].as_table_mut().expect("[tls]");
    tls.insert(
        "certificate".into(),
        certs.join("peer-a-chain.pem").display().to_string().into(),
    );
    tls.insert(
        "key".into(),
        certs.join("peer-a.key").display().to_string().into(),
    );
    let mut dns_table = toml::Table::new();
    dns_table.insert(
        "name_servers".into(),
        toml::Value::Array(vec![dns.to_string().into()]),
    );
    dns_table.insert("timeout".into(), "2s".into());
    t.insert("dns".into(), dns_table.into());
    let text = toml::to_string(&t).expect("serialise");
    let path = dir.join("peer-a.toml");
    std::fs::write(&path, &text).expect("write config");
    Config::from_toml(&path, &text).unwrap_or_else(|e| panic!("peer-a configuration: {e}"))
}

async fn run_probe(peer: &TestGateway, mx: &str, send: bool) -> Report {
    run_probe_with_zone(
        peer,
        &[
            (LOCAL_DOMAIN, RecordSpec::mx(10, mx)),
            (mx, RecordSpec::A(Ipv4Addr::LOCALHOST)),
        ],
        send,
    )
    .await
}

async fn run_probe_with_zone(
    peer: &TestGateway,
    zone: &[(&str, RecordSpec)],
    send: bool,
) -> Report {
    let dns = DnsServer::start(zone);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = peer_a_config(dir.path(), dns.addr);
    let mut options = probe::Options::new(TO);
    options.port = peer.addr.port();
    options.send = send;
    options.timeout = common::IO_TIMEOUT;
    probe::run(&config, &options).await
}

fn step<'a>(report: &'a Report, name: &str) -> &'a probe::Step {
    report
        .steps_named(name)
        .into_iter()
        .last()
        .unwrap_or_else(|| panic!("no step {name}:\n{}", report.to_text()))
}

#[tokio::test]
async fn every_step_passes_against_a_conforming_peer() {
    let peer = TestGateway::start().await;
    let report = run_probe(&peer, MX_HOST, false).await;
    let text = report.to_text();
    assert_eq!(report.status, Status::Pass, "{text}");
    assert_eq!(report.exit_code(), 0);
    for name in [
        "whitelist",
        "mx",
        "address",
        "connect",
        "greeting",
        "ehlo",
        "starttls",
        "tls",
        "chain",
        "mx_cn",
        "whitelist_dn",
        "ehlo_tls",
        "mail",
        "rcpt",
        "rset",
        "quit",
    ] {
        assert_eq!(step(&report, name).status, Status::Pass, "{name}:\n{text}");
    }
    assert_eq!(report.from, "postmaster@peer-a.test.mssante.fr");
    assert!(step(&report, "whitelist")
        .message
        .contains("CN=smtp.gateway.test.mssante.fr"));
    assert!(step(&report, "mx")
        .message
        .contains("10 smtp.gateway.test.mssante.fr"));
    assert!(step(&report, "ehlo").message.contains("STARTTLS"), "{text}");
    assert!(step(&report, "tls").message.contains("TLS"), "{text}");
    let rcpt = step(&report, "rcpt");
    assert!(rcpt
        .transcript
        .iter()
        .any(|l| l == &format!("C: RCPT TO:<{TO}>")));
    assert!(rcpt.transcript.iter().any(|l| l.starts_with("S: 250")));
    // Without --send nothing is delivered.
    assert!(peer.spooled_messages().is_empty());
    assert!(report.steps_named("data").is_empty());
}

#[tokio::test]
async fn send_delivers_a_test_message_into_the_peer_spool() {
    let peer = TestGateway::start().await;
    let report = run_probe(&peer, MX_HOST, true).await;
    let text = report.to_text();
    assert_eq!(report.status, Status::Pass, "{text}");
    assert_eq!(step(&report, "data").status, Status::Pass, "{text}");
    let spooled = peer.spooled_messages();
    assert_eq!(spooled.len(), 1, "{text}");
    let m = &spooled[0];
    assert_eq!(m.envelope.mail_from, "postmaster@peer-a.test.mssante.fr");
    assert_eq!(m.envelope.recipients[0].address, TO);
    assert_eq!(
        m.envelope
            .peer_dn
            .as_deref()
            .map(|d| d.contains("smtp.peer-a.test.mssante.fr")),
        Some(true)
    );
    let body = String::from_utf8_lossy(&m.body);
    assert!(
        body.contains("Subject: Test mssante-gateway probe\r\n"),
        "{body}"
    );
    assert!(body.contains("\r\nDate: "), "{body}");
    assert!(body.contains("\r\nMessage-ID: <"), "{body}");
}

#[tokio::test]
async fn an_mx_host_that_is_not_the_certificate_cn_fails() {
    let peer = TestGateway::start().await;
    let report = run_probe(&peer, "mx.other.test.mssante.fr", true).await;
    let text = report.to_text();
    assert_eq!(report.status, Status::Fail, "{text}");
    assert_eq!(report.exit_code(), 2);
    let cn = step(&report, "mx_cn");
    assert_eq!(cn.status, Status::Fail, "{text}");
    assert!(cn.message.contains("names_match"), "{text}");
    assert!(cn.message.contains("mx.other.test.mssante.fr"), "{text}");
    // The chain itself is fine; the test message is not sent to a mismatching host.
    assert_eq!(step(&report, "chain").status, Status::Pass, "{text}");
    assert!(report.steps_named("data").is_empty(), "{text}");
    assert!(peer.spooled_messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_first_mx_is_a_warning_when_the_next_one_works() {
    let peer = TestGateway::start().await;
    let down = "down.gateway.test.mssante.fr";
    let report = run_probe_with_zone(
        &peer,
        &[
            (LOCAL_DOMAIN, RecordSpec::mx(10, down)),
            (LOCAL_DOMAIN, RecordSpec::mx(20, MX_HOST)),
            // Nothing listens on 127.0.0.2: the connection is refused.
            (down, RecordSpec::A(Ipv4Addr::new(127, 0, 0, 2))),
            (MX_HOST, RecordSpec::A(Ipv4Addr::LOCALHOST)),
        ],
        true,
    )
    .await;
    let text = report.to_text();
    assert_eq!(report.status, Status::Warn, "{text}");
    assert_eq!(report.exit_code(), 1);
    let connects = report.steps_named("connect");
    assert_eq!(connects.len(), 2, "{text}");
    assert_eq!(connects[0].host.as_deref(), Some(down));
    assert_eq!(connects[0].status, Status::Warn, "{text}");
    assert_eq!(connects[1].host.as_deref(), Some(MX_HOST));
    assert_eq!(connects[1].status, Status::Pass, "{text}");
    assert_eq!(step(&report, "data").status, Status::Pass, "{text}");
    assert_eq!(peer.spooled_messages().len(), 1);
}

#[tokio::test]
async fn an_unlisted_domain_and_a_missing_mx_fail() {
    let peer = TestGateway::start().await;
    let dns = DnsServer::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = peer_a_config(dir.path(), dns.addr);
    let mut options = probe::Options::new("x@unknown.test.mssante.fr");
    options.port = peer.addr.port();
    let report = probe::run(&config, &options).await;
    let text = report.to_text();
    assert_eq!(report.status, Status::Fail, "{text}");
    assert_eq!(step(&report, "whitelist").status, Status::Fail, "{text}");
    assert_eq!(step(&report, "mx").status, Status::Fail, "{text}");
    assert!(
        step(&report, "mx").message.contains("dns_nxdomain"),
        "{text}"
    );
}

#[tokio::test]
async fn the_command_prints_the_transcript_and_exits_with_the_verdict() {
    let peer = TestGateway::start().await;
    let dns = DnsServer::start(&[
        (LOCAL_DOMAIN, RecordSpec::mx(10, MX_HOST)),
        (MX_HOST, RecordSpec::A(Ipv4Addr::LOCALHOST)),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    // The configuration's own name server is silent: --nameserver replaces it.
    let config = peer_a_config(dir.path(), "127.0.0.1:9".parse().expect("address"));
    let port = peer.addr.port().to_string();
    let ns = dns.addr.to_string();
    let config_path = config.path.display().to_string();
    let run = |json: bool| {
        let mut args = vec![
            "probe",
            "--to",
            TO,
            "--config",
            &config_path,
            "--nameserver",
            &ns,
            "--port",
            &port,
        ];
        if json {
            args.push("--json");
        }
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
            .args(args)
            .output()
    };
    let out = tokio::time::timeout(common::IO_TIMEOUT * 3, run(false))
        .await
        .expect("probe finishes")
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS  mx_cn"), "{stdout}");
    assert!(stdout.contains("C: STARTTLS"), "{stdout}");
    assert!(stdout.contains("verdict: pass"), "{stdout}");
    let out = tokio::time::timeout(common::IO_TIMEOUT * 3, run(true))
        .await
        .expect("probe finishes")
        .expect("run probe");
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json["status"], "pass");
    assert!(json["steps"].as_array().is_some_and(|s| s.len() >= 16));
}
