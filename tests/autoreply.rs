//! The auto-reply mailbox end to end: a peer operator (peer-a, mutual TLS) writes to the
//! address declared in `[operator] auto_reply`; the gateway answers it itself, from `<>`,
//! once per sender and window, never to automatic mail, and never hands that recipient
//! to the internal server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sink::{Sink, SinkOpts};
use common::{TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};
use mssante_gateway::metrics::labels;
use mssante_gateway::spool::{Direction, StoredMessage};

const AUTO_REPLY: &str = "reponse-automatique@gateway.test.mssante.fr";
const ALICE: &str = "alice@peer-a.test.mssante.fr";

/// The recipients of each message the internal server got.
fn internal_rcpts(sink: &Sink) -> Vec<Vec<String>> {
    sink.delivered().into_iter().map(|d| d.rcpts).collect()
}

/// The test gateway relaying to `sink`, with the `[operator]` section of
/// `config/local.toml` (auto-reply mailbox in gateway.test.mssante.fr).
async fn gateway(sink: &Sink) -> TestGateway {
    let local =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"))
            .expect("read config/local.toml");
    let local: toml::Table = toml::from_str(&local).expect("config/local.toml is TOML");
    let operator = local["operator"].clone();
    assert_eq!(operator["auto_reply"].as_str(), Some(AUTO_REPLY));
    let internal = sink.addr.to_string();
    TestGateway::start_with(move |t| {
        t.insert("operator".into(), operator);
        let mut relay = toml::Table::new();
        relay.insert("internal".into(), internal.into());
        t.insert("relay".into(), relay.into());
        // No name server answers: answers to the peer operator stay queued, where the
        // test looks at them, instead of leaving through the outbound relay.
        let mut dns = toml::Table::new();
        dns.insert(
            "name_servers".into(),
            toml::Value::Array(vec!["127.0.0.1:9".into()]),
        );
        dns.insert("timeout".into(), "200ms".into());
        dns.insert("attempts".into(), 1.into());
        t.insert("dns".into(), dns.into());
    })
    .await
}

/// Sends one message from peer-a.
async fn send(gw: &TestGateway, from: &str, to: &[&str], headers: &str) {
    let mut c = gw.established(Some("peer-a")).await;
    let body = format!(
        "From: <{from}>\r\nTo: <{AUTO_REPLY}>\r\nSubject: Test de la boite\r\nMessage-ID: <{}@peer-a.test.mssante.fr>\r\n{headers}\r\nBonjour\r\n",
        rand_id()
    );
    c.send_message(from, to, body.as_bytes()).await;
    c.quit().await;
}

fn rand_id() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

fn autoreplies(gw: &TestGateway, outcome: &str) -> u64 {
    gw.metrics.autoreplies_total.get(&[outcome])
}

/// Waits until the auto-responder has decided `n` times in all.
async fn wait_for_decisions(gw: &TestGateway, n: u64) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let total: u64 = labels::AUTOREPLIES
            .series()
            .iter()
            .map(|outcome| gw.metrics.autoreplies_total.get(outcome))
            .sum();
        if total >= n {
            assert_eq!(total, n, "more decisions than messages sent");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the auto-responder decided {total} times, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Answers waiting in the queue: from `<>`, outbound.
fn answers(gw: &TestGateway) -> Vec<StoredMessage> {
    gw.spooled_messages()
        .into_iter()
        .filter(|m| m.envelope.mail_from.is_empty() && m.envelope.direction == Direction::Outbound)
        .collect()
}

#[tokio::test]
async fn answers_the_sender_once_and_never_delivers_the_mailbox() {
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let gw = gateway(&sink).await;
    let bob = format!("bob@{LOCAL_DOMAIN}");
    send(&gw, ALICE, &[AUTO_REPLY, &bob], "").await;
    wait_for_decisions(&gw, 1).await;
    assert_eq!(autoreplies(&gw, "sent"), 1);

    let replies = answers(&gw);
    assert_eq!(replies.len(), 1, "one answer queued");
    let reply = &replies[0];
    let rcpts: Vec<&str> = reply
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, [ALICE]);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(
        text.contains(&format!("From: <{AUTO_REPLY}>\r\n")),
        "{text}"
    );
    assert!(text.contains(&format!("To: <{ALICE}>\r\n")), "{text}");
    let parsed = mail_parser::MessageParser::new()
        .parse(&reply.body)
        .expect("the answer parses");
    assert_eq!(
        parsed.subject(),
        Some("Réponse automatique: Test de la boite"),
        "{text}"
    );
    let original = parsed.in_reply_to().as_text().expect("In-Reply-To");
    assert!(original.ends_with("@peer-a.test.mssante.fr"), "{text}");
    assert_eq!(parsed.references().as_text(), Some(original), "{text}");
    assert!(text.contains("Auto-Submitted: auto-replied\r\n"), "{text}");

    // Remembered across restarts, in the spool directory.
    let saved = gw
        .queue_dir()
        .parent()
        .map(|spool| spool.join("autoreply.json"))
        .expect("spool directory");
    let saved = std::fs::read_to_string(saved).expect("auto-reply state saved");
    assert!(saved.contains(ALICE), "{saved}");

    // bob reaches the internal server, the auto-reply mailbox does not.
    let deadline = Instant::now() + IO_TIMEOUT;
    while internal_rcpts(&sink).is_empty() {
        assert!(
            Instant::now() < deadline,
            "bob's copy never reached the sink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(internal_rcpts(&sink), vec![vec![bob.clone()]]);

    // A second message within the window: no second answer.
    send(&gw, ALICE, &[AUTO_REPLY], "").await;
    wait_for_decisions(&gw, 2).await;
    assert_eq!(autoreplies(&gw, "suppressed_already_replied"), 1);
    assert_eq!(answers(&gw).len(), 1);
    // The original messages are done: only the answer (waiting for the outbound relay)
    // is left in the queue.
    let deadline = Instant::now() + IO_TIMEOUT;
    while gw.spooled_messages().len() > 1 {
        assert!(Instant::now() < deadline, "original messages left queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(internal_rcpts(&sink), vec![vec![bob]]);
}

#[tokio::test]
async fn never_answers_bounces_or_automatic_mail() {
    let sink = Sink::start("127.0.0.1:0", SinkOpts::plain()).await;
    let gw = gateway(&sink).await;
    send(&gw, "", &[AUTO_REPLY], "").await;
    send(
        &gw,
        "carol@peer-a.test.mssante.fr",
        &[AUTO_REPLY],
        "Auto-Submitted: auto-replied\r\n",
    )
    .await;
    send(
        &gw,
        "dave@peer-a.test.mssante.fr",
        &[AUTO_REPLY],
        "Precedence: bulk\r\n",
    )
    .await;
    wait_for_decisions(&gw, 3).await;
    assert_eq!(autoreplies(&gw, "suppressed_null_sender"), 1);
    assert_eq!(autoreplies(&gw, "suppressed_auto_submitted"), 1);
    assert_eq!(autoreplies(&gw, "suppressed_precedence"), 1);
    assert_eq!(autoreplies(&gw, "sent"), 0);
    let deadline = Instant::now() + IO_TIMEOUT;
    while !gw.spooled_messages().is_empty() {
        assert!(Instant::now() < deadline, "messages left queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answers(&gw).is_empty());
    assert!(
        internal_rcpts(&sink).is_empty(),
        "{:?}",
        internal_rcpts(&sink)
    );
}
