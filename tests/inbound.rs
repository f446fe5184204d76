//! The inbound listener as a peer operator sees it: real sockets, real TLS, the test PKI.
//!
//! Each hostile case checks the exact reply and enhanced code, the refusal counted in the
//! metrics, and that the gateway then still accepts a message from a valid peer.

mod common;

use common::{inbound, step, Client, ReplyCheck, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};

const SENDER: &str = "alice@peer-a.test.mssante.fr";
const MAIL: &str = "MAIL FROM:<alice@peer-a.test.mssante.fr>";
const RCPT_BOB: &str = "RCPT TO:<bob@gateway.test.mssante.fr>";

fn rcpt(local: &str) -> String {
    format!("{local}@{LOCAL_DOMAIN}")
}

fn rcpt_to(local: &str) -> String {
    format!("RCPT TO:<{}>", rcpt(local))
}

#[tokio::test]
async fn delivers_a_message_from_a_valid_peer_to_the_spool() {
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;

    let ehlo = c.ehlo().await;
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "SMTPUTF8",
        "DSN",
        "STARTTLS",
    ] {
        assert!(
            ehlo.has_keyword(ext),
            "EHLO before TLS lacks {ext}: {ehlo:?}"
        );
    }
    assert!(ehlo.has_keyword("SIZE 1048576"), "{ehlo:?}");

    c.starttls(Some("peer-a")).await;
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS offered twice: {ehlo:?}"
    );
    assert!(ehlo.has_keyword("PIPELINING") && ehlo.has_keyword("CHUNKING"));

    let body = "From: Alice <alice@peer-a.test.mssante.fr>\r\n\
                To: Bob <bob@gateway.test.mssante.fr>\r\n\
                Subject: Compte rendu\r\n\
                X-MSS-CODECDA: 11488-4\r\n\
                \r\n\
                Résultat d'analyse en pièce jointe.\r\n\
                .a line that starts with a dot\r\n\
                ..and one with two\r\n\
                .\tdot then tab\r\n";
    c.send(&format!("MAIL FROM:<{SENDER}> BODY=8BITMIME")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}> NOTIFY=SUCCESS,FAILURE", rcpt("bob")))
        .await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
    let mut wire = common::dot_stuff(body.as_bytes());
    wire.extend_from_slice(b".\r\n");
    c.send_raw(&wire).await;
    let done = c.expect(250, "2.0.0").await;
    c.quit().await;

    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert!(done.lines[0].contains(&m.id), "queue id in {done:?}");
    assert_eq!(
        m.body,
        body.as_bytes(),
        "stored bytes differ from those sent"
    );
    let env = &m.envelope;
    assert_eq!(env.mail_from, SENDER);
    assert_eq!(env.helo, "smtp.peer-a.test.mssante.fr");
    assert!(env.body_8bitmime);
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address, rcpt("bob"));
    assert_ne!(env.recipients[0].notify, 0, "NOTIFY lost");
    let dn = env.peer_dn.as_deref().expect("peer DN recorded");
    assert!(dn.starts_with("CN=smtp.peer-a.test.mssante.fr,"), "{dn}");
    assert!(
        env.tls
            .as_ref()
            .is_some_and(|t| t.version.starts_with("TLSv1")),
        "{:?}",
        env.tls
    );
    assert_eq!(env.peer_cn.as_deref(), Some("smtp.peer-a.test.mssante.fr"));
    assert!(gw.tmp_files().is_empty());
    assert_eq!(gw.metrics.messages_received_total.get(&["inbound"]), 1);
}

#[tokio::test]
async fn refuses_mail_before_starttls() {
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.exchange(&[step(MAIL, 530, "5.7.0")]).await;
    assert_eq!(gw.rejections("mail", "tls_required"), 1);
    gw.assert_still_serving().await;
}

/// A peer whose STARTTLS session carries no valid client certificate.
#[derive(Debug)]
struct CertRefusal {
    /// The test PKI certificate presented; `None`: none at all.
    peer: Option<&'static str>,
    code: u16,
    enhanced: &'static str,
    /// Counted under `mssante_rejections_total{stage="mail", reason}`.
    reason: &'static str,
}

const CERT_REFUSALS: &[CertRefusal] = &[
    CertRefusal {
        peer: None,
        code: 530,
        enhanced: "5.7.1",
        reason: "client_cert_missing",
    },
    CertRefusal {
        peer: Some("peer-foreign"),
        code: 550,
        enhanced: "5.7.1",
        reason: "client_cert_untrusted",
    },
    CertRefusal {
        peer: Some("peer-expired"),
        code: 550,
        enhanced: "5.7.1",
        reason: "client_cert_expired",
    },
    CertRefusal {
        peer: Some("peer-not-yet-valid"),
        code: 550,
        enhanced: "5.7.1",
        reason: "client_cert_not_yet_valid",
    },
    CertRefusal {
        peer: Some("peer-revoked"),
        code: 550,
        enhanced: "5.7.1",
        reason: "client_cert_revoked",
    },
    CertRefusal {
        peer: Some("peer-server-only"),
        code: 550,
        enhanced: "5.7.1",
        reason: "client_cert_wrong_usage",
    },
];

/// Each case, on a gateway of its own, is refused at MAIL and counted; no transaction is
/// opened; the gateway still serves a valid peer.
#[tokio::test]
async fn refuses_peers_without_a_valid_client_certificate_at_mail() {
    for case in CERT_REFUSALS {
        let gw = TestGateway::start().await;
        let mut c = gw.established(case.peer).await;
        c.send(&format!("MAIL FROM:<{SENDER}>")).await;
        let r = c.expect_for(case.code, case.enhanced, case).await;
        assert_eq!(gw.rejections("mail", case.reason), 1, "{case:?}: {r:?}");
        // No transaction was opened: RCPT is out of sequence.
        c.exchange(&[step(RCPT_BOB, 503, "5.5.1")]).await;
        gw.assert_still_serving().await;
        assert_eq!(
            gw.spooled_messages().len(),
            1,
            "{case:?}: only the valid peer's message"
        );
    }
}

/// A command refused on an established session and counted, after which the session
/// and the gateway go on.
#[derive(Debug)]
struct CommandRefusal {
    /// Sent as it is (CRLF included).
    wire: Vec<u8>,
    code: u16,
    enhanced: &'static str,
    /// Counted under `mssante_rejections_total{stage, reason}`.
    stage: &'static str,
    reason: &'static str,
}

fn command_refusals() -> Vec<CommandRefusal> {
    let refusal = |wire: &[u8], code, enhanced, stage, reason| CommandRefusal {
        wire: wire.to_vec(),
        code,
        enhanced,
        stage,
        reason,
    };
    vec![
        // Over 4096 bytes: the rest of the long line is skipped, not taken as a command.
        refusal(
            format!(
                "MAIL FROM:<{}@peer-a.test.mssante.fr>\r\n",
                "a".repeat(4100)
            )
            .as_bytes(),
            500,
            "5.5.2",
            "command",
            "line_too_long",
        ),
        refusal(
            b"XYZZY plugh\r\n",
            500,
            "5.5.1",
            "command",
            "unknown_command",
        ),
        refusal(
            format!("{RCPT_BOB}\r\n").as_bytes(),
            503,
            "5.5.1",
            "rcpt",
            "bad_sequence",
        ),
        refusal(
            b"MAIL FROM:<alice\0@peer-a.test.mssante.fr>\r\n",
            500,
            "5.5.2",
            "command",
            "nul_byte",
        ),
        refusal(b"STARTTLS\r\n", 503, "5.5.1", "starttls", "bad_sequence"),
    ]
}

/// Each case, on a gateway of its own: the exact reply, the refusal counted, then the
/// session in sync (NOOP answered) and still able to deliver.
#[tokio::test]
async fn refuses_bad_commands_and_carries_on() {
    for case in command_refusals() {
        let gw = TestGateway::start().await;
        let mut c = gw.established(Some("peer-a")).await;
        c.send_raw(&case.wire).await;
        c.expect_for(case.code, case.enhanced, &case).await;
        assert_eq!(gw.rejections(case.stage, case.reason), 1, "{case:?}");
        c.exchange(&[step("NOOP", 250, "2.0.0")]).await;
        c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
            .await;
        gw.assert_still_serving().await;
    }
}

#[tokio::test]
async fn refuses_data_before_rcpt() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    // No transaction at all: out of sequence.
    c.exchange(&[step("DATA", 503, "5.5.1")]).await;
    assert_eq!(gw.rejections("data", "bad_sequence"), 1);
    // MAIL accepted but no recipient: RFC 5321 §3.3 allows 503 or 554 "no valid
    // recipients"; the gateway says the latter, which tells the peer more.
    c.exchange(&[step(MAIL, 250, "2.1.0"), step("DATA", 554, "5.5.1")])
        .await;
    assert_eq!(gw.rejections("data", "bad_sequence"), 2);
    // No 354 was sent, so nothing that follows is taken as a body.
    c.exchange(&[step("NOOP", 250, "2.0.0")]).await;
    assert!(gw.tmp_files().is_empty());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_declared_size_over_the_limit() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.exchange(&[step(&format!("{MAIL} SIZE=1048577"), 552, "5.3.4")])
        .await;
    assert_eq!(gw.rejections("mail", "message_too_large"), 1);
    c.exchange(&[step(&format!("{MAIL} SIZE=1048576"), 250, "2.1.0")])
        .await;
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_data_stream_over_the_limit_and_keeps_nothing() {
    let gw = TestGateway::start_with(inbound("max_message_size", 1024)).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..100 {
        body.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    body.extend_from_slice(b".\r\n");
    c.send_raw(&body).await;
    c.expect(552, "5.3.4").await;
    assert_eq!(gw.rejections("data", "message_too_large"), 1);
    assert!(gw.spooled_messages().is_empty());
    assert!(
        gw.tmp_files().is_empty(),
        "left in tmp: {:?}",
        gw.tmp_files()
    );
    // The transaction is over.
    c.exchange(&[step(RCPT_BOB, 503, "5.5.1")]).await;
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn defers_recipients_over_the_limit() {
    let gw = TestGateway::start_with(inbound("max_recipients", 2)).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.exchange(&[
        step(MAIL, 250, "2.1.0"),
        step(&rcpt_to("r1"), 250, "2.1.5"),
        step(&rcpt_to("r2"), 250, "2.1.5"),
        step(&rcpt_to("r3"), 452, "4.5.3"),
    ])
    .await;
    assert_eq!(gw.rejections("rcpt", "too_many_recipients"), 1);
    // The message still goes to the recipients accepted.
    c.exchange(&[step("DATA", 354, "2.0.0")]).await;
    c.send_raw(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    c.expect(250, "2.0.0").await;
    let stored = gw.spooled_messages();
    let to: Vec<&str> = stored[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(to, [rcpt("r1"), rcpt("r2")]);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn recipient_limit_applies_per_message_not_per_connection() {
    let gw = TestGateway::start_with(inbound("max_recipients", 2)).await;
    let mut c = gw.established(Some("peer-a")).await;
    let two = [rcpt("r1"), rcpt("r2")];
    let two: Vec<&str> = two.iter().map(String::as_str).collect();
    c.send_message(SENDER, &two, b"Subject: 1\r\n\r\n1\r\n")
        .await;
    c.send_message(SENDER, &two, b"Subject: 2\r\n\r\n2\r\n")
        .await;
    // An abandoned transaction does not use up the next one's allowance either.
    c.exchange(&[
        step(MAIL, 250, "2.1.0"),
        step(&rcpt_to("r1"), 250, "2.1.5"),
        step("RSET", 250, "2.0.0"),
    ])
    .await;
    c.send_message(SENDER, &two, b"Subject: 3\r\n\r\n3\r\n")
        .await;
    // A refused recipient does not count towards the limit.
    c.exchange(&[
        step(MAIL, 250, "2.1.0"),
        step("RCPT TO:<x@elsewhere.mssante.fr>", 550, "5.7.1"),
        step(&rcpt_to("r1"), 250, "2.1.5"),
        step(&rcpt_to("r2"), 250, "2.1.5"),
        step(&rcpt_to("r3"), 452, "4.5.3"),
    ])
    .await;
    assert_eq!(gw.rejections("rcpt", "too_many_recipients"), 1);
    assert_eq!(gw.spooled_messages().len(), 3);
    gw.assert_still_serving().await;
}

/// Sends a DATA body that `body` makes invalid, then a line that would be a command if
/// the body had ended early, then the real end of data.
async fn assert_bare_newline_refused(body: &[u8]) {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    c.send_raw(body).await;
    // Smuggling attempt: only valid if the bare line ending above ended the message.
    c.send_raw(b"MAIL FROM:<smuggled@evil.example>\r\n").await;
    c.send_raw(b".\r\n").await;
    // The first reply after 354 is the verdict on the whole body: nothing in it was run
    // as a command.
    let case = String::from_utf8_lossy(body);
    c.expect_for(550, "5.6.0", &case).await;
    c.exchange(&[step("NOOP", 250, "2.0.0")]).await;
    assert_eq!(gw.rejections("data", "bare_newline"), 1, "{case:?}");
    assert!(gw.spooled_messages().is_empty(), "{case:?}");
    assert!(gw.tmp_files().is_empty(), "{case:?}");
    gw.assert_still_serving().await;
}

/// Bodies with a bare line ending, each followed by a would-be end of data that must not
/// end it: LF . LF, CR . CR, CRLF . LF, LF . CRLF.
const BARE_NEWLINE_BODIES: &[&[u8]] = &[
    b"Subject: x\r\n\r\nhello\n.\n",
    b"Subject: x\r\n\r\nhello\r.\r",
    b"Subject: x\r\n\r\nhello\r\n.\n",
    b"Subject: x\r\n\r\nhello\n.\r\n",
];

#[tokio::test]
async fn refuses_bare_newlines_in_data_and_none_ends_it() {
    for body in BARE_NEWLINE_BODIES {
        assert_bare_newline_refused(body).await;
    }
}

#[tokio::test]
async fn ignores_plaintext_pipelined_after_starttls() {
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    // A man in the middle could append these to the client's STARTTLS (CVE-2011-0411).
    c.send_raw(b"STARTTLS\r\nEHLO injected.example\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await;
    c.expect(220, "2.0.0").await;
    c.handshake(Some("peer-a")).await;
    // The first reply inside TLS answers this NOOP: nothing was answered for the
    // injected commands.
    c.send("NOOP").await;
    let r = c.expect(250, "2.0.0").await;
    assert_eq!(r.to_string(), "250 2.0.0 OK");
    // The injected EHLO did not count: TLS starts the session over.
    c.exchange(&[step(MAIL, 503, "5.5.1")]).await;
    assert_eq!(gw.rejections("mail", "bad_sequence"), 1);
    c.ehlo().await;
    c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
    let stored = gw.spooled_messages();
    assert_eq!(stored[0].envelope.mail_from, SENDER);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn closes_after_ten_consecutive_errors() {
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    for _ in 0..9 {
        c.send("XYZZY").await;
        c.expect(500, "5.5.1").await;
    }
    c.send("XYZZY").await;
    c.expect(500, "5.5.1").await;
    c.expect(421, "4.7.0").await;
    c.expect_eof().await;
    assert_eq!(gw.rejections("command", "unknown_command"), 10);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn closes_idle_session_after_command_timeout() {
    let gw = TestGateway::start_with(inbound("command_timeout", "1s")).await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.expect(421, "4.4.2").await;
    c.expect_eof().await;
    assert_eq!(gw.rejections("connection", "timeout"), 1);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn closes_connection_when_starttls_is_followed_by_garbage() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.send("STARTTLS").await;
    c.expect(220, "2.0.0").await;
    c.send_raw(b"EHLO this is not a TLS ClientHello\r\n").await;
    // At most a TLS alert record (content type 21) comes back, never an SMTP reply.
    let last_words = c.read_until_eof().await;
    assert!(
        last_words.is_empty() || last_words[0] == 21,
        "{last_words:?}"
    );
    gw.assert_still_serving().await;
    // Once stopped, every session has ended and counted what happened to it.
    gw.shutdown().await;
    assert_eq!(gw.handshake_failures(), 1, "{}", gw.metrics.render());
    assert_eq!(gw.metrics.tls_handshake_failures_total.get(&["not_tls"]), 1);
}

#[tokio::test]
async fn answers_pipelined_batch_in_order() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    let batch = format!(
        "MAIL FROM:<{SENDER}>\r\nRCPT TO:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        rcpt("bob"),
        rcpt("carol")
    );
    let reads_before = c.reads;
    c.send_raw(batch.as_bytes()).await;
    c.expect(250, "2.1.0").await;
    c.expect(250, "2.1.5").await;
    c.expect(250, "2.1.5").await;
    c.expect(354, "2.0.0").await;
    let reads = c.reads - reads_before;
    if reads > 1 {
        // One write for the batch is what the gateway does; the network may still split
        // it, so this is reported rather than failed.
        eprintln!("the 4 pipelined replies took {reads} reads");
    }
    c.send_raw(b"Subject: pipelined\r\n\r\nbody\r\n.\r\n").await;
    c.expect(250, "2.0.0").await;
    let stored = gw.spooled_messages();
    assert_eq!(stored[0].envelope.recipients.len(), 2);
    assert_eq!(stored[0].body, b"Subject: pipelined\r\n\r\nbody\r\n");
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn accepts_message_sent_with_bdat() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.exchange(&[step(MAIL, 250, "2.1.0"), step(RCPT_BOB, 250, "2.1.5")])
        .await;
    // BDAT carries bytes as they are: no dot-stuffing, a lone "." line is content.
    let first = b"Subject: chunked\r\n\r\n.\r\n".as_slice();
    let last = b"..second chunk\r\n".as_slice();
    let mut wire = format!("BDAT {}\r\n", first.len()).into_bytes();
    wire.extend_from_slice(first);
    c.send_raw(&wire).await;
    c.expect(250, "2.0.0").await;
    let mut wire = format!("BDAT {} LAST\r\n", last.len()).into_bytes();
    wire.extend_from_slice(last);
    c.send_raw(&wire).await;
    c.expect(250, "2.0.0").await;
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, [first, last].concat());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_relay_to_a_foreign_domain() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.exchange(&[
        step(MAIL, 250, "2.1.0"),
        step("RCPT TO:<victim@elsewhere.mssante.fr>", 550, "5.7.1"),
    ])
    .await;
    assert_eq!(gw.rejections("rcpt", "relay_denied"), 1);
    gw.assert_still_serving().await;
}

/// A connection limit of `[inbound]`, set to `allowed`: that many connections are opened
/// first (kept open when `held`, closed at once otherwise), and the next is refused.
#[derive(Debug)]
struct ConnectionLimit {
    key: &'static str,
    allowed: i64,
    held: bool,
    /// Counted under `mssante_connections_refused_total{listener="inbound", reason}`.
    reason: &'static str,
    /// Another local address, whose connection is served: the limit is per address.
    other_address: Option<&'static str>,
}

const CONNECTION_LIMITS: &[ConnectionLimit] = &[
    ConnectionLimit {
        key: "max_connections_per_ip",
        allowed: 2,
        held: true,
        reason: "max_connections_per_ip",
        other_address: Some("127.0.0.2"),
    },
    // Two in a row are the burst allowed; they are closed at once and do not hold slots.
    ConnectionLimit {
        key: "max_connection_rate_per_ip",
        allowed: 2,
        held: false,
        reason: "connection_rate",
        other_address: Some("127.0.0.3"),
    },
    ConnectionLimit {
        key: "max_connections",
        allowed: 1,
        held: true,
        reason: "max_connections",
        other_address: None,
    },
];

/// Each case, on a gateway of its own: the connection over the limit gets 421 4.7.0 and
/// is closed, counted; those within it are served, and so is another address when the
/// limit is per address.
#[tokio::test]
async fn refuses_connections_over_each_limit() {
    for case in CONNECTION_LIMITS {
        let gw = TestGateway::start_with(inbound(case.key, case.allowed)).await;
        let mut open = Vec::new();
        for _ in 0..case.allowed {
            let mut c = gw.connect().await;
            if case.held {
                open.push(c);
            } else {
                c.quit().await;
            }
        }
        gw.assert_connection_refused(case.reason).await;
        assert_eq!(
            gw.connections_refused("inbound", case.reason),
            1,
            "{case:?}"
        );
        if let Some(first) = open.first_mut() {
            first.establish(Some("peer-a")).await;
            first
                .send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
                .await;
        }
        if let Some(other) = case.other_address {
            let other = other.parse().expect("an address");
            let mut c = Client::connect_from(other, gw.addr).await;
            c.expect_code(220).await;
            c.quit().await;
        }
    }
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_to_come_back_later() {
    let mut gw = TestGateway::start().await;
    let mut tls = gw.established(Some("peer-a")).await;
    let mut plain = gw.connect().await;
    let stop = tokio::spawn(gw.take_gateway().shutdown());
    tls.expect(421, "4.3.2").await;
    tls.expect_eof().await;
    plain.expect(421, "4.3.2").await;
    plain.expect_eof().await;
    tokio::time::timeout(IO_TIMEOUT, stop)
        .await
        .expect("shutdown finishes once sessions are closed")
        .expect("shutdown task");
    assert_eq!(gw.metrics.connections_open.get(), 0);
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn shutdown_lets_a_message_in_data_finish() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    c.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n")
        .await;

    // An idle witness session receives its 421 once the shutdown is under way.
    let mut witness = gw.connect().await;
    let stop = tokio::spawn(gw.take_gateway().shutdown());
    witness.expect(421, "4.3.2").await;

    c.send_raw(b"second half\r\n.\r\n").await;
    c.expect(250, "2.0.0").await;
    c.expect(421, "4.3.2").await;
    c.expect_eof().await;
    tokio::time::timeout(IO_TIMEOUT, stop)
        .await
        .expect("shutdown finishes once sessions are closed")
        .expect("shutdown task");
    assert_eq!(gw.metrics.connections_open.get(), 0);
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].body,
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

#[tokio::test]
async fn peer_vanishing_in_the_middle_of_data_leaves_nothing_behind() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    c.send_raw(b"Subject: cut short\r\n\r\npartial").await;
    drop(c);
    gw.assert_still_serving().await;
    // Once stopped, every session has ended and cleaned up after itself.
    gw.shutdown().await;
    assert!(
        gw.tmp_files().is_empty(),
        "left in tmp: {:?}",
        gw.tmp_files()
    );
    assert_eq!(gw.spooled_messages().len(), 1, "only the complete message");
}

#[tokio::test]
async fn peer_that_stops_reading_is_disconnected_after_the_timeout() {
    let mut gw = TestGateway::start_with(|t| {
        inbound("command_timeout", "1s")(t);
        // The NOOPs must not hit the idle-command limit first.
        inbound("max_idle_commands", 100_000_000)(t);
    })
    .await;
    // A small receive window so that the gateway's replies back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let mut tcp = tokio::time::timeout(IO_TIMEOUT, socket.connect(gw.addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    // Pipelined commands whose replies are never read: the gateway's writes block once
    // the socket buffers are full. The flood itself stops when the gateway stops
    // reading or closes; how far it got does not matter.
    let flood = "NOOP\r\n".repeat(4_000_000);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::io::AsyncWriteExt::write_all(&mut tcp, flood.as_bytes()),
    )
    .await;
    // The blocked session must give up on its own: graceful shutdown waits for it.
    gw.shutdown().await;
    assert_eq!(gw.rejections("connection", "write_timeout"), 1);
    drop(tcp);
}

#[tokio::test]
async fn accepts_a_peer_limited_to_tls_1_2() {
    // TLS 1.2 with ECDHE-RSA-AES-GCM is the MSSanté baseline; 1.3 is not known to be
    // supported by every operator.
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.send("STARTTLS").await;
    c.expect(220, "2.0.0").await;
    c.handshake_with(Some("peer-a"), &[&rustls::version::TLS12])
        .await;
    c.ehlo().await;
    c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
    let stored = gw.spooled_messages();
    let tls = stored[0].envelope.tls.as_ref().expect("TLS recorded");
    assert_eq!(tls.version, "TLSv1_2");
    assert!(tls.cipher.starts_with("TLS_ECDHE_RSA_WITH_AES_"), "{tls:?}");
    assert!(stored[0].envelope.peer_dn.is_some());
}

#[tokio::test]
async fn resumed_tls_session_still_authenticates_the_peer() {
    // Peers cache TLS sessions: a resumed handshake carries no certificate exchange, yet
    // the gateway must still know, and check, who the peer is.
    let gw = TestGateway::start().await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = common::client_tls_config(Some("peer-a"), versions);
        let mut resumed = false;
        for _ in 0..2 {
            let mut c = gw.connect().await;
            c.ehlo().await;
            c.send("STARTTLS").await;
            c.expect(220, "2.0.0").await;
            c.handshake_using(std::sync::Arc::clone(&config)).await;
            resumed = c.tls_resumed();
            c.ehlo().await;
            c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
                .await;
            c.quit().await;
        }
        assert!(resumed, "the second session was not resumed ({versions:?})");
    }
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 4);
    for m in &stored {
        let dn = m.envelope.peer_dn.as_deref().unwrap_or_default();
        assert!(dn.starts_with("CN=smtp.peer-a.test.mssante.fr,"), "{dn}");
    }
}

#[tokio::test]
async fn resumed_tls_session_of_a_revoked_peer_is_still_refused() {
    let gw = TestGateway::start().await;
    let config = common::client_tls_config(Some("peer-revoked"), rustls::DEFAULT_VERSIONS);
    for round in 0..2 {
        let mut c = gw.connect().await;
        c.ehlo().await;
        c.send("STARTTLS").await;
        c.expect(220, "2.0.0").await;
        c.handshake_using(std::sync::Arc::clone(&config)).await;
        assert_eq!(c.tls_resumed(), round == 1);
        c.ehlo().await;
        c.exchange(&[step(MAIL, 550, "5.7.1")]).await;
        c.quit().await;
    }
    assert_eq!(gw.rejections("mail", "client_cert_revoked"), 2);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn closes_idle_body_after_the_data_timeout_and_keeps_nothing() {
    let mut gw = TestGateway::start_with(inbound("data_timeout", "1s")).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    c.send_raw(b"Subject: stalled\r\n\r\nand then nothing")
        .await;
    c.expect(421, "4.4.2").await;
    c.expect_eof().await;
    gw.assert_still_serving().await;
    gw.shutdown().await;
    assert_eq!(gw.rejections("connection", "timeout"), 1);
    assert!(
        gw.tmp_files().is_empty(),
        "left in tmp: {:?}",
        gw.tmp_files()
    );
    assert_eq!(gw.spooled_messages().len(), 1, "only the complete message");
}

#[tokio::test]
async fn refusals_after_tls_count_towards_the_error_limit() {
    let gw = TestGateway::start_with(inbound("max_errors", 3)).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.exchange(&[
        step(MAIL, 250, "2.1.0"),
        step("RCPT TO:<a@elsewhere.mssante.fr>", 550, "5.7.1"),
        step("RCPT TO:<b@elsewhere.mssante.fr>", 550, "5.7.1"),
        step("STARTTLS", 503, "5.5.1"),
    ])
    .await;
    c.expect(421, "4.7.0").await;
    c.expect_eof().await;
    assert_eq!(gw.rejections("rcpt", "relay_denied"), 2);
    assert!(gw.spooled_messages().is_empty());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn answers_commands_pipelined_behind_the_end_of_data() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    let batch = format!(
        "Subject: 1\r\n\r\n1\r\n.\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        rcpt("carol")
    );
    c.send_raw(batch.as_bytes()).await;
    c.expect(250, "2.0.0").await;
    c.expect(250, "2.1.0").await;
    c.expect(250, "2.1.5").await;
    c.expect(354, "2.0.0").await;
    c.send_raw(b"Subject: 2\r\n\r\n2\r\n.\r\nQUIT\r\n").await;
    c.expect(250, "2.0.0").await;
    c.expect(221, "2.0.0").await;
    c.expect_eof().await;
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 2);
    let to: Vec<&str> = stored
        .iter()
        .map(|m| m.envelope.recipients[0].address.as_str())
        .collect();
    assert!(to.contains(&rcpt("bob").as_str()) && to.contains(&rcpt("carol").as_str()));
}

#[tokio::test]
async fn closes_connection_whose_tls_handshake_stalls() {
    let mut gw = TestGateway::start_with(inbound("handshake_timeout", "1s")).await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.send("STARTTLS").await;
    c.expect(220, "2.0.0").await;
    // No ClientHello follows.
    c.expect_eof().await;
    gw.assert_still_serving().await;
    gw.shutdown().await;
    assert_eq!(gw.metrics.tls_handshake_failures_total.get(&["timeout"]), 1);
}

#[tokio::test]
async fn closes_a_session_kept_alive_past_its_maximum_duration() {
    let gw = TestGateway::start_with(inbound("max_session_duration", "1s")).await;
    let mut c = gw.established(Some("peer-a")).await;
    // NOOPs well within the command timeout do not keep the session open forever.
    let started = std::time::Instant::now();
    loop {
        c.send("NOOP").await;
        let r = c.read_reply().await;
        if r.code == 421 {
            r.assert_is(421, "4.4.2");
            break;
        }
        assert!(started.elapsed() < IO_TIMEOUT, "session never closed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.expect_eof().await;
    assert_eq!(gw.rejections("connection", "session_duration"), 1);
}

#[tokio::test]
async fn shutdown_cuts_a_stalled_body_after_the_grace_period() {
    let mut gw = TestGateway::start_with(inbound("shutdown_grace", "1s")).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.begin_data(SENDER, &[&rcpt("bob")]).await;
    c.send_raw(b"Subject: never finished\r\n").await;
    // The body stalls; shutdown waits for it no longer than the grace period.
    let started = std::time::Instant::now();
    tokio::time::timeout(IO_TIMEOUT, gw.take_gateway().shutdown())
        .await
        .expect("shutdown returns after the grace period");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    c.expect_eof().await;
    assert!(
        gw.spooled_messages().is_empty(),
        "nothing acknowledged, nothing queued"
    );
}

#[tokio::test]
async fn a_message_with_more_received_headers_than_the_limit_is_refused_as_a_loop() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    let r = c
        .try_message(SENDER, &[&rcpt("bob")], &common::message_with_received(51))
        .await;
    r.assert_is(554, "5.4.6");
    assert_eq!(gw.rejections("data", "mail_loop"), 1);
    assert!(gw.spooled_messages().is_empty(), "nothing kept");
    assert!(gw.tmp_files().is_empty(), "nothing left in tmp/");
    // At the limit it passes, and the session went on.
    c.send_message(SENDER, &[&rcpt("bob")], &common::message_with_received(50))
        .await;
    assert_eq!(gw.spooled_messages().len(), 1);
}

/// Interoperability with a stock Postfix as the sending peer operator: TLS required and
/// verified on its side (`smtp_tls_security_level = secure`, our name matched), its client
/// certificate and EHLO name checked on ours. Debian's postfix package is installed by
/// scripts/test.sh (as root).
#[tokio::test]
async fn postfix_as_the_sending_peer_operator() {
    assert!(
        std::path::Path::new("/usr/sbin/postfix").exists(),
        "Debian's postfix package is missing: scripts/test.sh installs it (as root)"
    );
    let gw = TestGateway::start().await;
    let (_dir, pf_dir) = common::postfix_workdir();
    let _postfix = common::Postfix::start("postfix-sender.sh", &pf_dir, gw.addr.port());
    let body = "From: Alice <alice@peer-a.test.mssante.fr>\n\
                To: Bob <bob@gateway.test.mssante.fr>\n\
                Subject: Compte rendu par Postfix\n\
                \n\
                .a line that starts with a dot\n\
                R\u{e9}sultat en pi\u{e8}ce jointe.\n";
    let mut sendmail = std::process::Command::new("/usr/sbin/sendmail")
        .args(["-C", &pf_dir.join("etc").to_string_lossy()])
        .args(["-f", SENDER, "bob@gateway.test.mssante.fr"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run Postfix's sendmail");
    {
        use std::io::Write;
        let mut stdin = sendmail.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).expect("write the message");
    }
    assert!(sendmail.wait().expect("sendmail").success());

    let maillog = pf_dir.join("maillog");
    common::wait_for(
        "Postfix to relay the message",
        std::time::Duration::from_secs(60),
        || !gw.spooled_messages().is_empty(),
    )
    .await;
    let stored = gw.spooled_messages();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.envelope.mail_from, SENDER);
    assert_eq!(m.envelope.helo, "smtp.peer-a.test.mssante.fr");
    assert_eq!(
        m.envelope.peer_cn.as_deref(),
        Some("smtp.peer-a.test.mssante.fr")
    );
    assert!(m.envelope.tls.is_some(), "{:?}", m.envelope);
    // Postfix adds its Received, Message-Id and Date; the rest arrives as written.
    let text = String::from_utf8_lossy(&m.body).replace('\r', "");
    let (headers, content) = text.split_once("\n\n").expect("a header section");
    let (sent_headers, sent_content) = body.split_once("\n\n").expect("a header section");
    assert_eq!(content, sent_content, "body intact:\n{text}");
    for line in sent_headers.lines() {
        assert!(headers.contains(line), "{line:?} kept:\n{text}");
    }
    // Postfix's side: our chain verified and our name matched, then the message sent.
    let mut log = String::new();
    common::wait_for(
        "Postfix to log the delivery",
        std::time::Duration::from_secs(10),
        || {
            log = std::fs::read_to_string(&maillog).unwrap_or_default();
            log.contains("status=sent")
        },
    )
    .await;
    assert!(
        log.contains("Verified TLS connection established to 127.0.0.1"),
        "{log}"
    );
}
