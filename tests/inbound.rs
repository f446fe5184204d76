//! The inbound listener as a peer operator sees it: real sockets, real TLS, the test PKI.
//!
//! Each hostile case checks the exact reply and enhanced code, the refusal counted in the
//! metrics, and that the gateway then still accepts a message from a valid peer.

mod common;

use common::{inbound, Client, ReplyCheck, TestGateway, IO_TIMEOUT, LOCAL_DOMAIN};

const SENDER: &str = "alice@peer-a.test.mssante.fr";

fn rcpt(local: &str) -> String {
    format!("{local}@{LOCAL_DOMAIN}")
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
    assert_eq!(
        gw.metrics
            .messages_received_total
            .with_label_values(&["inbound"])
            .get(),
        1
    );
}

#[tokio::test]
async fn refuses_mail_before_starttls() {
    let gw = TestGateway::start().await;
    let mut c = gw.connect().await;
    c.ehlo().await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(530, "5.7.0").await;
    assert_eq!(gw.rejections("mail", "tls_required"), 1);
    gw.assert_still_serving().await;
}

/// A peer that completes STARTTLS with `peer`'s certificate is refused at MAIL.
async fn assert_refused_at_mail(peer: Option<&str>, code: u16, enhanced: &str, reason: &str) {
    let gw = TestGateway::start().await;
    let mut c = gw.established(peer).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    let r = c.expect(code, enhanced).await;
    assert_eq!(gw.rejections("mail", reason), 1, "{r:?}");
    // No transaction was opened: RCPT is out of sequence.
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(503, "5.5.1").await;
    gw.assert_still_serving().await;
    assert_eq!(
        gw.spooled_messages().len(),
        1,
        "only the valid peer's message"
    );
}

#[tokio::test]
async fn refuses_peer_without_client_certificate() {
    assert_refused_at_mail(None, 530, "5.7.1", "client_cert_missing").await;
}

#[tokio::test]
async fn refuses_peer_certificate_from_a_foreign_ca() {
    assert_refused_at_mail(Some("peer-foreign"), 550, "5.7.1", "client_cert_untrusted").await;
}

#[tokio::test]
async fn refuses_expired_peer_certificate() {
    assert_refused_at_mail(Some("peer-expired"), 550, "5.7.1", "client_cert_expired").await;
}

#[tokio::test]
async fn refuses_peer_certificate_not_yet_valid() {
    assert_refused_at_mail(
        Some("peer-not-yet-valid"),
        550,
        "5.7.1",
        "client_cert_not_yet_valid",
    )
    .await;
}

#[tokio::test]
async fn refuses_revoked_peer_certificate() {
    assert_refused_at_mail(Some("peer-revoked"), 550, "5.7.1", "client_cert_revoked").await;
}

#[tokio::test]
async fn refuses_peer_certificate_without_client_auth_usage() {
    assert_refused_at_mail(
        Some("peer-server-only"),
        550,
        "5.7.1",
        "client_cert_wrong_usage",
    )
    .await;
}

#[tokio::test]
async fn refuses_command_line_over_4096_bytes() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    let long = format!("MAIL FROM:<{}@peer-a.test.mssante.fr>", "a".repeat(4100));
    c.send(&long).await;
    c.expect(500, "5.5.2").await;
    // The rest of the long line was skipped, not taken as a command: the session is
    // in sync and answers the next one.
    c.send("NOOP").await;
    c.expect(250, "2.0.0").await;
    assert_eq!(gw.rejections("command", "line_too_long"), 1);
    gw.assert_still_serving().await;
}

/// A command sent and the reply expected (code, enhanced code).
type Exchange<'a> = (&'a str, u16, &'a str);

/// One refused command per case, in an established session: what is sent, the replies
/// expected, and the (stage, reason) counted once. The session stays usable.
#[tokio::test]
async fn refuses_out_of_place_commands_with_a_counted_reason() {
    let bob = format!("RCPT TO:<{}>", rcpt("bob"));
    let mail = format!("MAIL FROM:<{SENDER}>");
    let cases: [(&[Exchange], (&str, &str)); 3] = [
        (
            &[("XYZZY plugh", 500, "5.5.1")],
            ("command", "unknown_command"),
        ),
        (&[(&bob, 503, "5.5.1")], ("rcpt", "bad_sequence")),
        (
            &[
                (&mail, 250, "2.1.0"),
                ("RCPT TO:<victim@elsewhere.mssante.fr>", 550, "5.7.1"),
            ],
            ("rcpt", "relay_denied"),
        ),
    ];
    for (exchange, (stage, reason)) in cases {
        let gw = TestGateway::start().await;
        let mut c = gw.established(Some("peer-a")).await;
        for (line, code, enhanced) in exchange {
            c.send(line).await;
            c.expect(*code, enhanced).await;
        }
        assert_eq!(gw.rejections(stage, reason), 1, "{stage}/{reason}");
        gw.assert_still_serving().await;
    }
}

#[tokio::test]
async fn refuses_data_before_rcpt() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    // No transaction at all: out of sequence.
    c.send("DATA").await;
    c.expect(503, "5.5.1").await;
    assert_eq!(gw.rejections("data", "bad_sequence"), 1);
    // MAIL accepted but no recipient: RFC 5321 §3.3 allows 503 or 554 "no valid
    // recipients"; the gateway says the latter, which tells the peer more.
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send("DATA").await;
    c.expect(554, "5.5.1").await;
    assert_eq!(gw.rejections("data", "bad_sequence"), 2);
    // No 354 was sent, so nothing that follows is taken as a body.
    c.send("NOOP").await;
    c.expect(250, "2.0.0").await;
    assert!(gw.tmp_files().is_empty());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_declared_size_over_the_limit() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}> SIZE=1048577")).await;
    c.expect(552, "5.3.4").await;
    assert_eq!(gw.rejections("mail", "message_too_large"), 1);
    c.send(&format!("MAIL FROM:<{SENDER}> SIZE=1048576")).await;
    c.expect(250, "2.1.0").await;
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_data_stream_over_the_limit_and_keeps_nothing() {
    let gw = TestGateway::start_with(inbound("max_message_size", 1024)).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(503, "5.5.1").await;
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn defers_recipients_over_the_limit() {
    let gw = TestGateway::start_with(inbound("max_recipients", 2)).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    for who in ["r1", "r2"] {
        c.send(&format!("RCPT TO:<{}>", rcpt(who))).await;
        c.expect(250, "2.1.5").await;
    }
    c.send(&format!("RCPT TO:<{}>", rcpt("r3"))).await;
    c.expect(452, "4.5.3").await;
    assert_eq!(gw.rejections("rcpt", "too_many_recipients"), 1);
    // The message still goes to the recipients accepted.
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("r1"))).await;
    c.expect(250, "2.1.5").await;
    c.send("RSET").await;
    c.expect(250, "2.0.0").await;
    c.send_message(SENDER, &two, b"Subject: 3\r\n\r\n3\r\n")
        .await;
    // A refused recipient does not count towards the limit.
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send("RCPT TO:<x@elsewhere.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    for who in ["r1", "r2"] {
        c.send(&format!("RCPT TO:<{}>", rcpt(who))).await;
        c.expect(250, "2.1.5").await;
    }
    c.send(&format!("RCPT TO:<{}>", rcpt("r3"))).await;
    c.expect(452, "4.5.3").await;
    assert_eq!(gw.rejections("rcpt", "too_many_recipients"), 1);
    assert_eq!(gw.spooled_messages().len(), 3);
    gw.assert_still_serving().await;
}

/// Sends a DATA body that `body` makes invalid, then a line that would be a command if
/// the body had ended early, then the real end of data.
async fn assert_bare_newline_refused(body: &[u8]) {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
    c.send_raw(body).await;
    // Smuggling attempt: only valid if the bare line ending above ended the message.
    c.send_raw(b"MAIL FROM:<smuggled@evil.example>\r\n").await;
    c.send_raw(b".\r\n").await;
    // The first reply after 354 is the verdict on the whole body: nothing in it was run
    // as a command.
    c.expect(550, "5.6.0").await;
    c.send("NOOP").await;
    c.expect(250, "2.0.0").await;
    assert_eq!(gw.rejections("data", "bare_newline"), 1);
    assert!(gw.spooled_messages().is_empty());
    assert!(gw.tmp_files().is_empty());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_bare_lf_in_data_and_lf_dot_lf_does_not_end_it() {
    assert_bare_newline_refused(b"Subject: x\r\n\r\nhello\n.\n").await;
}

#[tokio::test]
async fn refuses_bare_cr_in_data_and_cr_dot_cr_does_not_end_it() {
    assert_bare_newline_refused(b"Subject: x\r\n\r\nhello\r.\r").await;
}

#[tokio::test]
async fn refuses_crlf_dot_lf_in_data_and_does_not_end_it() {
    assert_bare_newline_refused(b"Subject: x\r\n\r\nhello\r\n.\n").await;
}

#[tokio::test]
async fn refuses_lf_dot_crlf_in_data_and_does_not_end_it() {
    assert_bare_newline_refused(b"Subject: x\r\n\r\nhello\n.\r\n").await;
}

#[tokio::test]
async fn refuses_nul_byte_in_command() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send_raw(b"MAIL FROM:<alice\0@peer-a.test.mssante.fr>\r\n")
        .await;
    c.expect(500, "5.5.2").await;
    assert_eq!(gw.rejections("command", "nul_byte"), 1);
    gw.assert_still_serving().await;
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(503, "5.5.1").await;
    assert_eq!(gw.rejections("mail", "bad_sequence"), 1);
    c.ehlo().await;
    c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
    let stored = gw.spooled_messages();
    assert_eq!(stored[0].envelope.mail_from, SENDER);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_second_starttls() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send("STARTTLS").await;
    c.expect(503, "5.5.1").await;
    assert_eq!(gw.rejections("starttls", "bad_sequence"), 1);
    c.send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
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
    assert_eq!(
        gw.metrics
            .tls_handshake_failures_total
            .with_label_values(&["not_tls"])
            .get(),
        1
    );
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
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
async fn refuses_third_connection_from_the_same_address() {
    let gw = TestGateway::start_with(inbound("max_connections_per_ip", 2)).await;
    let mut first = gw.connect().await;
    let _second = gw.connect().await;
    gw.assert_connection_refused("max_connections_per_ip").await;
    // The connections within the limit are served...
    first.ehlo().await;
    first.starttls(Some("peer-a")).await;
    first.ehlo().await;
    first
        .send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
    // ...and so is another address.
    let other = "127.0.0.2".parse().expect("an address");
    let mut c = Client::connect_from(other, gw.addr).await;
    c.expect_code(220).await;
    c.quit().await;
}

#[tokio::test]
async fn refuses_connections_from_an_address_opening_them_too_fast() {
    let gw = TestGateway::start_with(inbound("max_connection_rate_per_ip", 2)).await;
    // Two in a row are the burst allowed; they are closed at once and do not hold slots.
    for _ in 0..2 {
        let mut c = gw.connect().await;
        c.quit().await;
    }
    gw.assert_connection_refused("connection_rate").await;
    assert_eq!(gw.connections_refused("inbound", "connection_rate"), 1);
    // Another address has its own allowance.
    let other = "127.0.0.3".parse().expect("an address");
    let mut c = Client::connect_from(other, gw.addr).await;
    c.expect_code(220).await;
    c.quit().await;
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
        c.send(&format!("MAIL FROM:<{SENDER}>")).await;
        c.expect(550, "5.7.1").await;
        c.quit().await;
    }
    assert_eq!(gw.rejections("mail", "client_cert_revoked"), 2);
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn closes_idle_body_after_the_data_timeout_and_keeps_nothing() {
    let mut gw = TestGateway::start_with(inbound("data_timeout", "1s")).await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send("RCPT TO:<a@elsewhere.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    c.send("RCPT TO:<b@elsewhere.mssante.fr>").await;
    c.expect(550, "5.7.1").await;
    c.send("STARTTLS").await;
    c.expect(503, "5.5.1").await;
    c.expect(421, "4.7.0").await;
    c.expect_eof().await;
    assert_eq!(gw.rejections("rcpt", "relay_denied"), 2);
    assert!(gw.spooled_messages().is_empty());
    gw.assert_still_serving().await;
}

#[tokio::test]
async fn refuses_connections_over_the_global_limit() {
    let gw = TestGateway::start_with(inbound("max_connections", 1)).await;
    let mut first = gw.connect().await;
    gw.assert_connection_refused("max_connections").await;
    first.ehlo().await;
    first.starttls(Some("peer-a")).await;
    first.ehlo().await;
    first
        .send_message(SENDER, &[&rcpt("bob")], b"Subject: x\r\n\r\nx\r\n")
        .await;
}

#[tokio::test]
async fn answers_commands_pipelined_behind_the_end_of_data() {
    let gw = TestGateway::start().await;
    let mut c = gw.established(Some("peer-a")).await;
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
    assert_eq!(
        gw.metrics
            .tls_handshake_failures_total
            .with_label_values(&["timeout"])
            .get(),
        1
    );
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
    c.send(&format!("MAIL FROM:<{SENDER}>")).await;
    c.expect(250, "2.1.0").await;
    c.send(&format!("RCPT TO:<{}>", rcpt("bob"))).await;
    c.expect(250, "2.1.5").await;
    c.send("DATA").await;
    c.expect(354, "2.0.0").await;
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
