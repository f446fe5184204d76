//! Delivery to the internal server, against a real SMTP sink on loopback: what arrives is
//! byte for byte what was accepted plus one `Received:` header; refusals, outages and
//! torn spool files end the way an operator expects.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::sink::{server_tls, Sink, SinkOpts};
use mssante_gateway::config::Config;
use mssante_gateway::gateway::Gateway;
use mssante_gateway::spool::{Envelope, Recipient, Spool};

// ---------------------------------------------------------------------------------------
// The gateway under test.

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn config(dir: &Path, internal: SocketAddr) -> Config {
    config_with(dir, internal, "")
}

/// The test configuration with the `extra` keys added to its `[relay]` section.
fn config_with(dir: &Path, internal: SocketAddr, extra: &str) -> Config {
    let mut config = common::base_config(&dir.join("spool"));
    // No name server answers here: DSNs to remote senders stay queued for the outbound
    // relay (tests/outbound.rs covers that delivery).
    common::merge(
        &mut config,
        &format!(
            r#"
[dns]
name_servers = ["127.0.0.1:9"]
timeout = "1s"
attempts = 1
[relay]
internal = "{internal}"
internal_concurrency = 2
idle_timeout = "5s"
timeout = "10s"
retry_first = "300ms"
retry_max = "1s"
expiry = "1h"
"#
        ),
    );
    common::merge(&mut config, &format!("[relay]\n{extra}"));
    Config::load(&common::write_config(dir, &config)).expect("valid config")
}

fn envelope(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        direction: Default::default(),
        received_at: "2026-03-04T05:06:07Z".into(),
        peer_addr: "127.0.0.9:40001".into(),
        helo: "smtp.peer-a.test.mssante.fr".into(),
        peer_dn: Some("CN=smtp.peer-a.test.mssante.fr,OU=1750000020,O=CH PEER A,C=FR".into()),
        peer_cn: Some("smtp.peer-a.test.mssante.fr".into()),
        peer_ptr: None,
        tls: Some(mssante_gateway::spool::SessionTls {
            version: "TLSv1_3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        }),
        mail_from: from.into(),
        envid: Some("ENVID-7".into()),
        ret_full: None,
        body_8bitmime: true,
        smtputf8: false,
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: (*r).into(),
                notify: 0,
                orcpt: Some((*r).to_string()),
            })
            .collect(),
    }
}

/// A body with 8-bit bytes, leading dots, a lone "." line and every byte value but CR/LF.
fn tricky_body(tag: &str) -> Vec<u8> {
    let mut b = format!(
        "Message-ID: <{tag}@peer-a.test.mssante.fr>\r\nSubject: =?utf-8?q?compte_rendu?=\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice("résumé médical, ñ, 漢字\r\n".as_bytes());
    b.extend_from_slice(b".leading dot\r\n..two dots\r\n.\r\n");
    for chunk in (1u8..=255)
        .filter(|c| *c != b'\r' && *c != b'\n')
        .collect::<Vec<_>>()
        .chunks(60)
    {
        b.extend_from_slice(chunk);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"end\r\n");
    b
}

async fn commit(spool: &Spool, env: &Envelope, body: &[u8]) -> String {
    let mut m = spool.create(env).await.expect("create");
    m.write(body).await.expect("write");
    m.commit().await.expect("commit")
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn queue_files(dir: &Path) -> Vec<String> {
    common::queued_ids(&dir.join("spool"))
}

/// Splits off the one header the gateway adds; the rest must be the accepted bytes.
fn strip_received(data: &[u8]) -> (&str, &[u8]) {
    assert!(data.starts_with(b"Received: from "), "starts with Received");
    // The header ends at the first CRLF not followed by a folding tab.
    let mut i = 0;
    loop {
        let nl = memchr(&data[i..]).expect("header end") + i;
        if data.get(nl + 1) != Some(&b'\t') {
            let header = std::str::from_utf8(&data[..nl + 1]).expect("ascii header");
            return (header, &data[nl + 1..]);
        }
        i = nl + 1;
    }
}

fn memchr(d: &[u8]) -> Option<usize> {
    d.iter().position(|b| *b == b'\n')
}

// ---------------------------------------------------------------------------------------

async fn delivers_identical_bytes(chunking: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::esmtp(chunking)).await;
    sink.refuse(
        "nobody@gateway.test.mssante.fr",
        "550 5.1.1 no such user",
        None,
    );
    let gw = Gateway::start(&config(dir.path(), sink.addr))
        .await
        .expect("gateway starts");
    let body = tricky_body("identical");
    let rcpts = [
        "alice@gateway.test.mssante.fr",
        "nobody@gateway.test.mssante.fr",
        "bob@gateway.test.mssante.fr",
    ];
    let id = commit(
        &gw.spool,
        &envelope("x@peer-a.test.mssante.fr", &rcpts),
        &body,
    )
    .await;
    wait_for("delivery", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    let got = sink.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "x@peer-a.test.mssante.fr");
    assert_eq!(
        got[0].rcpts,
        vec![
            "alice@gateway.test.mssante.fr",
            "bob@gateway.test.mssante.fr"
        ]
    );
    let (received, rest) = strip_received(&got[0].data);
    assert_eq!(
        rest,
        &body[..],
        "bytes after the Received header are untouched"
    );
    assert!(!rest.starts_with(b"Received:"), "exactly one header added");
    // RFC 5321 §4.4: EHLO name and IP (no reverse lookup was made, so no name in the
    // parentheses), TLS and the certificate's CN, by, with ESMTPS, id; two recipients, so
    // no `for`; the acceptance date.
    assert_eq!(
        received,
        format!(
            "Received: from smtp.peer-a.test.mssante.fr ([127.0.0.9])\r\n\
             \t(using TLSv1_3 with cipher TLS13_AES_256_GCM_SHA384; peer CN=smtp.peer-a.test.mssante.fr)\r\n\
             \tby smtp.gateway.test.mssante.fr (mssante-gateway) with ESMTPS id {id};\r\n\
             \tWed, 04 Mar 2026 05:06:07 +0000\r\n"
        )
    );
    let parsed = mail_parser::MessageParser::new()
        .parse(&got[0].data)
        .expect("parses");
    let r = parsed
        .received()
        .expect("a Received header mail-parser reads");
    assert_eq!(
        r.from().map(|h| h.to_string()).as_deref(),
        Some("smtp.peer-a.test.mssante.fr")
    );
    assert_eq!(
        r.from_ip().map(|ip| ip.to_string()).as_deref(),
        Some("127.0.0.9")
    );
    assert_eq!(
        r.by().map(|h| h.to_string()).as_deref(),
        Some("smtp.gateway.test.mssante.fr")
    );
    assert_eq!(r.id(), Some(id.as_str()));
    // The refused recipient is bounced: the original leaves the queue and a DSN to the
    // (remote) sender waits there for the outbound relay.
    wait_for("bounce", Duration::from_secs(10), || {
        !queue_files(dir.path()).contains(&id) && queue_files(dir.path()).len() == 1
    })
    .await;
    let dsn_id = queue_files(dir.path()).remove(0);
    let dsn = common::queued_message(&dir.path().join("spool"), &dsn_id);
    assert_eq!(dsn.envelope.mail_from, "");
    assert_eq!(
        dsn.envelope.recipients[0].address,
        "x@peer-a.test.mssante.fr"
    );
    let text = String::from_utf8_lossy(&dsn.body);
    assert!(text.contains("Final-Recipient: rfc822;nobody@gateway.test.mssante.fr\r\n"));
    assert!(text.contains("Status: 5.1.1\r\n"));
    assert!(text.contains("Original-Envelope-Id: ENVID-7\r\n"));
    assert!(text.contains("Message-ID: <identical@peer-a.test.mssante.fr>"));
    assert!(
        !text.contains("alice@"),
        "delivered recipients are not reported"
    );
    let m = gw.metrics.render();
    assert!(m.contains("mssante_messages_relayed_total{direction=\"inbound\"} 1"));
    // The message, the DSN and the message's completion went through the log (the
    // counters follow at the relay loop's next turn).
    wait_for("log counters", Duration::from_secs(5), || {
        gw.metrics.spool_log_records_total.get() >= 3
    })
    .await;
    let syncs = gw.metrics.spool_log_syncs_total.get();
    assert!(syncs >= 1 && syncs <= gw.metrics.spool_log_records_total.get());
    assert!(m.contains("mssante_messages_bounced_total{direction=\"inbound\"} 1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn messages_arrive_identical_over_data_with_dot_stuffing() {
    delivers_identical_bytes(false).await;
}

#[tokio::test]
async fn messages_arrive_identical_over_bdat() {
    delivers_identical_bytes(true).await;
}

#[tokio::test]
async fn a_large_message_is_streamed_from_its_file_identical_over_data_and_bdat() {
    // Larger than what the spool loads into memory: sent a piece at a time from its
    // file, with lines that need dot-stuffing on both sides of the pieces' boundaries.
    let mut body = tricky_body("large");
    let mut n = 0;
    while body.len() <= 3 * mssante_gateway::spool::HEAD {
        body.extend_from_slice(format!(".line {n} {}\r\n", "x".repeat(n % 97)).as_bytes());
        n += 1;
    }
    for chunking in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = Sink::start("127.0.0.1:0", SinkOpts::esmtp(chunking)).await;
        let gw = Gateway::start(&config(dir.path(), sink.addr))
            .await
            .expect("gateway starts");
        let env = envelope(
            "x@peer-a.test.mssante.fr",
            &["alice@gateway.test.mssante.fr"],
        );
        commit(&gw.spool, &env, &body).await;
        wait_for("delivery", Duration::from_secs(10), || {
            !sink.delivered().is_empty()
        })
        .await;
        let got = sink.delivered();
        let (_, rest) = strip_received(&got[0].data);
        assert!(rest == &body[..], "chunking {chunking}: bytes differ");
        wait_for("queue empty", Duration::from_secs(5), || {
            queue_files(dir.path()).is_empty()
        })
        .await;
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn unreachable_server_defers_then_delivers_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Take a free port, then close it: the internal server is down.
    let addr = Sink::start("127.0.0.1:0", SinkOpts::plain()).await.down();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gw = Gateway::start(&config(dir.path(), addr))
        .await
        .expect("gateway starts");
    let body = tricky_body("outage");
    let id = commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["alice@gateway.test.mssante.fr"],
        ),
        &body,
    )
    .await;
    let state = dir.path().join(format!("spool/state/{id}.json"));
    let deferred = || gw.metrics.messages_deferred_total.get(&["inbound"]);
    wait_for("two failed attempts", Duration::from_secs(10), || {
        deferred() >= 2
    })
    .await;
    assert!(queue_files(dir.path()).contains(&id), "still queued");
    assert_eq!(gw.metrics.relay_internal_down.get(), 1, "marked down");
    // Waiting for the internal server says nothing about the message: no state file (two
    // fsyncs per message for as long as the outage lasts).
    assert!(!state.exists(), "no state written for an outage");
    let sink = Sink::start(&addr.to_string(), SinkOpts::plain()).await;
    wait_for("delivery after the outage", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    wait_for("queue empty", Duration::from_secs(5), || {
        queue_files(dir.path()).is_empty()
    })
    .await;
    let got = sink.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(strip_received(&got[0].data).1, &body[..]);
    assert_eq!(gw.metrics.relay_internal_down.get(), 0, "back up");
    assert!(gw
        .metrics
        .render()
        .contains("mssante_messages_deferred_total{direction=\"inbound\"}"));
    gw.shutdown().await;
}

#[tokio::test]
async fn messages_waiting_for_the_internal_server_go_as_soon_as_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = Sink::start("127.0.0.1:0", SinkOpts::plain()).await.down();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Retries an hour apart: without the server's return making them due, the messages
    // that met the outage would wait that long.
    let cfg = config_with(dir.path(), addr, "retry_first = \"1h\"\nretry_max = \"1h\"");
    let gw = Gateway::start(&cfg).await.expect("gateway starts");
    let env = envelope(
        "x@peer-a.test.mssante.fr",
        &["alice@gateway.test.mssante.fr"],
    );
    for (n, tag) in ["outage-1", "outage-2", "outage-3"].into_iter().enumerate() {
        commit(&gw.spool, &env, &tricky_body(tag)).await;
        wait_for("a failed attempt", Duration::from_secs(10), || {
            gw.metrics.messages_deferred_total.get(&["inbound"]) > n as u64
        })
        .await;
    }
    let sink = Sink::start(&addr.to_string(), SinkOpts::plain()).await;
    // Nothing new arrives: the relay's own probe finds the server back, and the three
    // messages that waited go at once (within the probe interval, not the hour).
    let back = Instant::now();
    wait_for("every message delivered", Duration::from_secs(10), || {
        sink.delivered().len() == 3
    })
    .await;
    assert!(back.elapsed() < Duration::from_secs(8));
    wait_for("queue empty", Duration::from_secs(5), || {
        queue_files(dir.path()).is_empty()
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn temporary_refusal_retries_only_the_refused_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    sink.refuse(
        "bob@gateway.test.mssante.fr",
        "451 4.2.0 mailbox busy",
        Some(1),
    );
    let gw = Gateway::start(&config(dir.path(), sink.addr))
        .await
        .expect("gateway starts");
    let body = tricky_body("partial");
    commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &[
                "alice@gateway.test.mssante.fr",
                "bob@gateway.test.mssante.fr",
            ],
        ),
        &body,
    )
    .await;
    wait_for("two deliveries", Duration::from_secs(10), || {
        sink.delivered().len() == 2
    })
    .await;
    wait_for("queue empty", Duration::from_secs(5), || {
        queue_files(dir.path()).is_empty()
    })
    .await;
    let got = sink.delivered();
    assert_eq!(got[0].rcpts, vec!["alice@gateway.test.mssante.fr"]);
    assert_eq!(got[1].rcpts, vec!["bob@gateway.test.mssante.fr"]);
    for d in &got {
        assert_eq!(strip_received(&d.data).1, &body[..]);
    }
    // Sessions are reused: one connection served both attempts.
    assert_eq!(sink.state().sessions, 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn permanent_failure_of_a_local_sender_returns_a_dsn_through_the_internal_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    sink.refuse(
        "gone@gateway.test.mssante.fr",
        "550 5.1.1 user unknown",
        None,
    );
    let gw = Gateway::start(&config(dir.path(), sink.addr))
        .await
        .expect("gateway starts");
    let body = tricky_body("bounce");
    let mut env = envelope(
        "doctor@gateway.test.mssante.fr",
        &["gone@gateway.test.mssante.fr"],
    );
    env.ret_full = Some(true);
    commit(&gw.spool, &env, &body).await;
    wait_for("the DSN", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    let got = sink.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "", "DSNs are sent from <>");
    assert_eq!(got[0].rcpts, vec!["doctor@gateway.test.mssante.fr"]);
    let (_, dsn) = strip_received(&got[0].data);
    let text = String::from_utf8_lossy(dsn);
    for needle in [
        "Content-Type: multipart/report; report-type=\"delivery-status\";",
        "Action: failed\r\n",
        "Status: 5.1.1\r\n",
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n",
        "Original-Recipient: rfc822;gone@gateway.test.mssante.fr\r\n",
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nMessage-ID: <bounce@peer-a.test.mssante.fr>",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    // RET=FULL: the whole original, 8-bit bytes included, is inside.
    assert!(memmem(dsn, &body));
    wait_for("queue empty", Duration::from_secs(5), || {
        queue_files(dir.path()).is_empty()
    })
    .await;
    gw.shutdown().await;
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn torn_spool_file_and_damaged_log_record_are_quarantined_and_never_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let cfg = config(dir.path(), sink.addr);
    let to = ["alice@gateway.test.mssante.fr"];
    // Before the gateway runs: a complete message in the log and one after it whose
    // record is damaged (a disk fault: the bytes are there but do not check); a large
    // message (a file of its own) cut short (a crash or a disk fault after the rename);
    // a tmp/ leftover that was never acknowledged.
    let (good, torn) = {
        let spool = Spool::open(&cfg.spool_dir).expect("spool");
        let env = envelope("x@peer-a.test.mssante.fr", &to);
        let good = commit(&spool, &env, &tricky_body("good")).await;
        commit(&spool, &env, &tricky_body("damaged")).await;
        let mut large = tricky_body("torn");
        large.resize(400 * 1024, b'x');
        let torn = commit(&spool, &env, &large).await;
        let path = cfg.spool_dir.join("queue").join(&torn);
        let bytes = std::fs::read(&path).expect("the large message is a file of its own");
        std::fs::write(&path, &bytes[..bytes.len() - 30]).expect("truncate");
        let segment = std::fs::read_dir(cfg.spool_dir.join("log"))
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .next()
            .expect("a log segment");
        let mut log = std::fs::read(&segment).expect("read the segment");
        let at = log.len() - 40;
        log[at] ^= 0x20;
        std::fs::write(&segment, &log).expect("damage the last record");
        std::fs::write(
            cfg.spool_dir.join("tmp/0000000000000000000"),
            b"MSSPOOL1\npartial",
        )
        .expect("tmp leftover");
        (good, torn)
    };
    let gw = Gateway::start(&cfg).await.expect("gateway starts");
    wait_for("the good message", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    wait_for("queue empty", Duration::from_secs(5), || {
        queue_files(dir.path()).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.delivered();
    assert_eq!(got.len(), 1, "only the complete message is delivered");
    assert!(memmem(&got[0].data, b"<good@peer-a.test.mssante.fr>"));
    assert!(cfg.spool_dir.join("quarantine").join(&torn).is_file());
    assert!(!cfg.spool_dir.join("queue").join(&good).exists());
    let quarantined: Vec<String> = std::fs::read_dir(cfg.spool_dir.join("quarantine"))
        .expect("quarantine")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let tail = quarantined
        .iter()
        .find(|n| n.contains(".log@"))
        .unwrap_or_else(|| panic!("no log tail quarantined: {quarantined:?}"));
    let kept = std::fs::read(cfg.spool_dir.join("quarantine").join(tail)).expect("tail");
    assert!(memmem(&kept, b"<damaged@peer-a.test.mssante.fr>"));
    assert!(std::fs::read_dir(cfg.spool_dir.join("tmp"))
        .expect("tmp")
        .next()
        .is_none());
    assert!(gw
        .metrics
        .render()
        .contains("mssante_spool_quarantined_total 2"));
    gw.shutdown().await;
}

fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mssante-gateway"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run the binary");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn queue_commands_list_show_retry_and_delete_on_a_stopped_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "127.0.0.1:9".parse().expect("addr"));
    let spool = Spool::open(&cfg.spool_dir).expect("spool");
    let mut env = envelope(
        "x@peer-a.test.mssante.fr",
        &["alice@gateway.test.mssante.fr"],
    );
    env.recipients[0].notify = smtp_proto::RCPT_NOTIFY_SUCCESS | smtp_proto::RCPT_NOTIFY_DELAY;
    let id = commit(&spool, &env, &tricky_body("cli")).await;
    let mut state = spool.state(&id).await.expect("state");
    state.next_due_unix_ms = u64::MAX / 2;
    spool
        .defer(
            &id,
            state,
            "421 4.3.0 try later",
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .await
        .expect("defer");
    let (ok, out) = cli(&cfg.path, &["list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&id) && out.contains("421 4.3.0 try later"),
        "{out}"
    );
    assert!(out.contains("1 message(s)"), "{out}");
    let (ok, out) = cli(&cfg.path, &["show", &id]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Message-ID: <cli@peer-a.test.mssante.fr>"),
        "{out}"
    );
    assert!(out.contains("attempts:   1"), "{out}");
    assert!(
        out.contains("notify=SUCCESS,DELAY "),
        "NOTIFY in words: {out}"
    );
    assert!(out.contains("subject:    compte rendu\n"), "decoded: {out}");
    let (ok, out) = cli(&cfg.path, &["retry", &id]);
    assert!(ok, "{out}");
    assert_eq!(spool.state(&id).await.expect("state").next_due_unix_ms, 0);
    let (ok, out) = cli(&cfg.path, &["show", "../../etc/passwd"]);
    assert!(!ok && out.contains("not a queue id"), "{out}");
    let (ok, out) = cli(&cfg.path, &["delete", &id]);
    assert!(ok, "{out}");
    assert!(queue_files(dir.path()).is_empty());
    for command in ["delete", "show", "retry"] {
        let (ok, out) = cli(&cfg.path, &[command, &id]);
        assert!(!ok, "{command} of a deleted id fails");
        assert!(
            out.contains(&format!("{id} is not in the queue")) && !out.contains("I/O error"),
            "{command}: {out}"
        );
    }
}

#[tokio::test]
async fn notify_success_and_delay_produce_one_report_each() {
    use smtp_proto::{RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_SUCCESS};
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    sink.refuse("busy@gateway.test.mssante.fr", "451 4.2.1 busy", Some(2));
    let gw = Gateway::start(&config(dir.path(), sink.addr))
        .await
        .expect("gateway starts");
    let mut env = envelope(
        "doctor@gateway.test.mssante.fr",
        &["ok@gateway.test.mssante.fr", "busy@gateway.test.mssante.fr"],
    );
    env.recipients[0].notify = RCPT_NOTIFY_SUCCESS;
    env.recipients[1].notify = RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE;
    commit(&gw.spool, &env, &tricky_body("notify")).await;
    wait_for("everything delivered", Duration::from_secs(15), || {
        sink.delivered().len() >= 4 && queue_files(dir.path()).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.delivered();
    let dsns: Vec<String> = got
        .iter()
        .filter(|d| d.mail_from.is_empty())
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    assert_eq!(got.len(), 4, "two originals and two reports");
    assert_eq!(dsns.len(), 2);
    let success = dsns
        .iter()
        .find(|t| t.contains("Action: relayed"))
        .expect("a success report");
    assert!(success.contains("Final-Recipient: rfc822;ok@gateway.test.mssante.fr"));
    let delay = dsns
        .iter()
        .find(|t| t.contains("Action: delayed"))
        .expect("a delay report");
    assert!(delay.contains("Final-Recipient: rfc822;busy@gateway.test.mssante.fr"));
    assert!(delay.contains("Status: 4.2.1"));
    assert!(delay.contains("Will-Retry-Until: "));
    gw.shutdown().await;
}

#[tokio::test]
async fn lmtp_replies_read_before_a_broken_connection_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOpts {
            lmtp: true,
            ..SinkOpts::default()
        },
    )
    .await;
    // The first delivery breaks right after the reply for ok@; the retry succeeds.
    sink.state()
        .data_replies
        .insert("late@gateway.test.mssante.fr".into(), "DROP".into());
    let gw = Gateway::start(&config_with(dir.path(), sink.addr, "protocol = \"lmtp\""))
        .await
        .expect("gateway starts");
    let id = commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["ok@gateway.test.mssante.fr", "late@gateway.test.mssante.fr"],
        ),
        &tricky_body("lmtp-drop"),
    )
    .await;
    wait_for("the first attempt", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    sink.state().data_replies.clear();
    wait_for("delivery of the rest", Duration::from_secs(10), || {
        !queue_files(dir.path()).contains(&id)
    })
    .await;
    // ok@ got the message once: the retry was only for late@.
    let got = sink.delivered();
    let ok_copies = got
        .iter()
        .filter(|d| d.rcpts.contains(&"ok@gateway.test.mssante.fr".to_string()))
        .count();
    assert_eq!(
        ok_copies,
        1,
        "{:?}",
        got.iter().map(|d| &d.rcpts).collect::<Vec<_>>()
    );
    assert!(got
        .iter()
        .any(|d| d.rcpts == vec!["late@gateway.test.mssante.fr".to_string()]));
    gw.shutdown().await;
}

#[tokio::test]
async fn lmtp_per_recipient_replies_after_the_body_are_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOpts {
            lmtp: true,
            ..SinkOpts::default()
        },
    )
    .await;
    sink.state().data_replies.insert(
        "full@gateway.test.mssante.fr".into(),
        "552 5.2.2 mailbox full".into(),
    );
    let gw = Gateway::start(&config_with(dir.path(), sink.addr, "protocol = \"lmtp\""))
        .await
        .expect("gateway starts");
    let body = tricky_body("lmtp");
    let id = commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["ok@gateway.test.mssante.fr", "full@gateway.test.mssante.fr"],
        ),
        &body,
    )
    .await;
    wait_for(
        "bounce of the full mailbox",
        Duration::from_secs(10),
        || {
            let q = queue_files(dir.path());
            !q.contains(&id) && q.len() == 1
        },
    )
    .await;
    let got = sink.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["ok@gateway.test.mssante.fr"]);
    assert_eq!(strip_received(&got[0].data).1, &body[..]);
    let dsn_id = queue_files(dir.path()).remove(0);
    let text =
        String::from_utf8_lossy(&common::queued_message(&dir.path().join("spool"), &dsn_id).body)
            .into_owned();
    assert!(text.contains("Final-Recipient: rfc822;full@gateway.test.mssante.fr\r\n"));
    assert!(text.contains("Status: 5.2.2\r\n"));
    assert!(!text.contains("Final-Recipient: rfc822;ok@"));
    gw.shutdown().await;
}

#[tokio::test]
async fn starttls_and_auth_to_the_internal_server() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = base64::engine::general_purpose::STANDARD.encode("\0relay\0s3cret");
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOpts {
            tls: Some(server_tls("gateway")),
            auth: Some(token),
            ..SinkOpts::default()
        },
    )
    .await;
    let extra = format!(
        "starttls = true\ntls_ca = \"{}\"\ntls_server_name = \"smtp.gateway.test.mssante.fr\"\nauth_user = \"relay\"\nauth_password = \"s3cret\"",
        repo("certs-test/anchors.pem")
    );
    let gw = Gateway::start(&config_with(dir.path(), sink.addr, &extra))
        .await
        .expect("gateway starts");
    let body = tricky_body("tls");
    commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["alice@gateway.test.mssante.fr"],
        ),
        &body,
    )
    .await;
    wait_for("delivery over TLS", Duration::from_secs(10), || {
        !sink.delivered().is_empty()
    })
    .await;
    let got = sink.delivered();
    assert!(got[0].tls, "delivered inside TLS");
    assert_eq!(strip_received(&got[0].data).1, &body[..]);
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_internal_credentials_keep_the_message_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOpts {
            auth: Some("something-else".into()),
            ..SinkOpts::default()
        },
    )
    .await;
    let gw = Gateway::start(&config_with(
        dir.path(),
        sink.addr,
        "auth_user = \"relay\"\nauth_password = \"wrong\"",
    ))
    .await
    .expect("gateway starts");
    let id = commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["alice@gateway.test.mssante.fr"],
        ),
        &tricky_body("auth"),
    )
    .await;
    let state = dir.path().join(format!("spool/state/{id}.json"));
    wait_for("a deferral", Duration::from_secs(10), || state.exists()).await;
    let text = std::fs::read_to_string(&state).expect("state");
    assert!(text.contains("535 5.7.8"), "{text}");
    assert!(sink.delivered().is_empty());
    assert_eq!(
        queue_files(dir.path()),
        vec![id],
        "no bounce for our own misconfiguration"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn message_undelivered_past_expiry_is_bounced_with_status_4_4_7() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = Sink::start("127.0.0.1:0", SinkOpts::plain()).await.down();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The test config's expiry is 1h; a later `expiry` key would be a duplicate, so this
    // test writes its own shorter schedule through the same template.
    let cfg = {
        let c = config(dir.path(), addr);
        let text = std::fs::read_to_string(&c.path)
            .expect("config text")
            .replace("expiry = \"1h\"", "expiry = \"1s\"");
        std::fs::write(&c.path, text).expect("rewrite");
        Config::load(&c.path).expect("valid")
    };
    let gw = Gateway::start(&cfg).await.expect("gateway starts");
    let id = commit(
        &gw.spool,
        &envelope(
            "x@peer-a.test.mssante.fr",
            &["alice@gateway.test.mssante.fr"],
        ),
        &tricky_body("expiry"),
    )
    .await;
    wait_for("expiry", Duration::from_secs(10), || {
        let q = queue_files(dir.path());
        !q.contains(&id) && q.len() == 1
    })
    .await;
    let dsn_id = queue_files(dir.path()).remove(0);
    let text =
        String::from_utf8_lossy(&common::queued_message(&dir.path().join("spool"), &dsn_id).body)
            .into_owned();
    assert!(text.contains("Action: failed\r\n"), "{text}");
    assert!(text.contains("Status: 4.4.7\r\n"), "{text}");
    assert!(text.contains("delivery time expired"), "{text}");
    gw.shutdown().await;
}
