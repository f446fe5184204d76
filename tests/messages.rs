//! The messages the gateway writes itself, against golden files under
//! `tests/fixtures/golden/`: a failure DSN returning headers only (RET=HDRS), a delay DSN
//! returning the whole message (RET=FULL), and an automatic answer. Each is compared byte
//! for byte (the automatic answer's random Message-ID aside) and read back by mail-parser,
//! field by field. `UPDATE_GOLDEN=1 cargo test --test messages` rewrites the files after a
//! deliberate change; review the diff.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mail_parser::{MessageParser, MimeHeaders};
use mssante_gateway::autoreply::{reply_for, Decision, ReplyState, Settings};
use mssante_gateway::relay::dsn::{build, Action, RecipientReport, Report};
use mssante_gateway::spool::{Envelope, Recipient, StoredMessage};
use time::OffsetDateTime;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

/// Compares `bytes` with the golden file, or writes it with `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("directory")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write golden file");
    }
    let expected = std::fs::read(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&expected),
        "{name} differs from its golden file"
    );
}

fn original(ret_full: Option<bool>) -> StoredMessage {
    StoredMessage {
        id: "0000000000100000001".into(),
        envelope: Envelope {
            direction: Default::default(),
            received_at: "2026-03-04T05:06:07Z".into(),
            peer_addr: "192.0.2.1:40000".into(),
            helo: "smtp.peer-a.test.mssante.fr".into(),
            peer_dn: None,
            peer_cn: None,
            peer_ptr: None,
            tls: None,
            mail_from: "alice@peer-a.test.mssante.fr".into(),
            envid: Some("ENV-42".into()),
            ret_full,
            body_8bitmime: true,
            smtputf8: false,
            recipients: Vec::new(),
        },
        body: "Message-ID: <m1@peer-a.test.mssante.fr>\r\nSubject: compte rendu\r\nFrom: <alice@peer-a.test.mssante.fr>\r\n\r\nrésumé: données de santé\r\n"
            .as_bytes()
            .to_vec(),
        rest: None,
    }
}

fn recipient(action: Action, status: &str, diagnostic: &str) -> RecipientReport {
    RecipientReport {
        recipient: Recipient {
            address: "bob@gateway.test.mssante.fr".into(),
            notify: 0,
            orcpt: Some("rfc822;Bob@gateway.test.mssante.fr".into()),
        },
        action,
        status: status.into(),
        diagnostic: Some(diagnostic.into()),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_772_600_000).expect("a date")
}

fn dsn(o: &StoredMessage, r: RecipientReport, until: Option<OffsetDateTime>) -> Vec<u8> {
    let (envelope, bytes) = build(&Report {
        reporting_mta: "smtp.gateway.test.mssante.fr",
        remote_mta: Some("mail.internal.example"),
        original: o,
        recipients: vec![r],
        will_retry_until: until,
        now: now(),
    })
    .expect("a DSN");
    assert_eq!(envelope.mail_from, "", "from <>");
    assert_eq!(envelope.recipients[0].address, o.envelope.mail_from);
    bytes
}

/// The delivery-status part's fields, by name.
fn status_fields(m: &mail_parser::Message<'_>) -> String {
    let p = &m.parts[2];
    let ct = p.content_type().expect("content type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("message", Some("delivery-status"))
    );
    String::from_utf8_lossy(&m.raw_message()[p.offset_body as usize..p.offset_end as usize])
        .into_owned()
}

#[test]
fn failure_dsn_with_headers_only() {
    let o = original(None);
    let bytes = dsn(
        &o,
        recipient(Action::Failed, "5.1.1", "550 5.1.1 no such user"),
        None,
    );
    check_golden("dsn-failed-hdrs.eml", &bytes);
    let m = MessageParser::new().parse(&bytes).expect("parses");
    assert_eq!(m.subject(), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(
        m.from().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("MAILER-DAEMON@smtp.gateway.test.mssante.fr")
    );
    assert_eq!(
        m.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let ct = m.content_type().expect("content type");
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let fields = status_fields(&m);
    for f in [
        "Original-Envelope-Id: ENV-42",
        "Final-Recipient: rfc822;bob@gateway.test.mssante.fr",
        "Original-Recipient: rfc822;Bob@gateway.test.mssante.fr",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mail.internal.example",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user",
    ] {
        assert!(fields.contains(f), "{f} missing from\n{fields}");
    }
    let headers = &m.parts[3];
    assert_eq!(
        headers.content_type().and_then(|c| c.subtype()),
        Some("rfc822-headers")
    );
    assert!(
        !String::from_utf8_lossy(&bytes).contains("données"),
        "no body line without RET=FULL"
    );
}

#[test]
fn delay_dsn_with_the_whole_message() {
    let o = original(Some(true));
    let until = now() + time::Duration::days(5);
    let bytes = dsn(
        &o,
        recipient(
            Action::Delayed,
            "4.4.1",
            "451 4.4.1 internal server unreachable",
        ),
        Some(until),
    );
    check_golden("dsn-delayed-full.eml", &bytes);
    let m = MessageParser::new().parse(&bytes).expect("parses");
    assert_eq!(m.subject(), Some("Delayed Mail (still being retried)"));
    let fields = status_fields(&m);
    assert!(fields.contains("Action: delayed"), "{fields}");
    assert!(fields.contains("Will-Retry-Until: "), "{fields}");
    let returned = m.parts[3]
        .message()
        .expect("message/rfc822 parsed as a message");
    assert_eq!(returned.subject(), Some("compte rendu"));
    assert_eq!(
        returned.body_text(0).as_deref(),
        Some("résumé: données de santé\r\n")
    );
}

#[test]
fn automatic_answer() {
    let settings = Settings {
        address: "reponse-automatique@gateway.test.mssante.fr".into(),
        window: Duration::from_secs(86_400),
        hostname: "smtp.gateway.test.mssante.fr".into(),
    };
    let mut o = original(None);
    o.envelope.recipients = vec![Recipient {
        address: settings.address.clone(),
        notify: 0,
        orcpt: None,
    }];
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_600_000);
    let Decision::Reply { envelope, message } =
        reply_for(&settings, &o.envelope, &o.body, at, &ReplyState::default())
    else {
        panic!("an answer is due");
    };
    assert_eq!(envelope.mail_from, "");
    // The Message-ID carries a random part.
    let text = String::from_utf8(message.clone()).expect("7-bit");
    let stable: String = text
        .split_inclusive("\r\n")
        .map(|l| {
            if l.starts_with("Message-ID: ") {
                "Message-ID: <random.autoreply@smtp.gateway.test.mssante.fr>\r\n"
            } else {
                l
            }
        })
        .collect();
    check_golden("autoreply.eml", stable.as_bytes());
    let m = MessageParser::new().parse(&message).expect("parses");
    assert_eq!(m.subject(), Some("Réponse automatique: compte rendu"));
    assert_eq!(
        m.to().and_then(|t| t.first()).and_then(|a| a.address()),
        Some("alice@peer-a.test.mssante.fr")
    );
    assert_eq!(m.in_reply_to().as_text(), Some("m1@peer-a.test.mssante.fr"));
    assert_eq!(
        m.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let body = m.body_text(0).expect("text");
    assert!(body.contains("réponse automatique"), "{body}");
}
