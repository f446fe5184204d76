//! `Session` told as the operator's stories: what a peer sends, what it reads back, and
//! what the connection driver is asked to decide.

use super::*;

const HOST: &str = "mx.gateway.test";
const GREETING: &str = "220 mx.gateway.test ESMTP mssante-gateway\r\n";
const MAX_SIZE: usize = 1000;

fn config() -> SessionConfig {
    SessionConfig {
        hostname: HOST.into(),
        max_message_size: MAX_SIZE,
        max_recipients: 3,
        max_errors: 10,
        tls_available: true,
        require_tls: false,
        max_idle_commands: 100,
    }
}

/// An event as the driver recorded it (body bytes are collected apart, since how they are
/// split depends on how the input was read).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Helo { host: String, extended: bool },
    StartTls,
    MailFrom(MailFrom),
    Rcpt(RcptTo),
    MessageStart,
    MessageEnd,
    MessageAborted(&'static str),
    Refused(&'static str),
}

/// The driver's answer to a decision: `None` accepts.
type Policy = Box<dyn FnMut(&Seen) -> Option<Reply>>;

/// A connection driver without sockets: it follows the driver contract of the session,
/// runs the TLS handshake (instantly) after STARTTLS and stores every message.
struct Driver {
    session: Session,
    policy: Policy,
    events: Vec<Seen>,
    /// The body of the message being received.
    body: Vec<u8>,
    /// Messages stored, in order.
    stored: Vec<Vec<u8>>,
}

impl Driver {
    /// A driver that accepts every decision; the greeting is already read.
    fn new(cfg: SessionConfig) -> Self {
        Self::with_policy(cfg, |_| None)
    }

    fn with_policy(
        cfg: SessionConfig,
        policy: impl FnMut(&Seen) -> Option<Reply> + 'static,
    ) -> Self {
        let mut d = Self {
            session: Session::new(cfg),
            policy: Box::new(policy),
            events: Vec::new(),
            body: Vec::new(),
            stored: Vec::new(),
        };
        assert_eq!(d.output(), GREETING);
        d
    }

    /// A driver past EHLO, in plaintext.
    fn ready() -> Self {
        let mut d = Self::new(config());
        d.send("EHLO mx.peer.test\r\n");
        d.events.clear();
        d
    }

    /// A driver with a transaction open for one recipient.
    fn in_transaction() -> Self {
        let mut d = Self::ready();
        assert_eq!(
            d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\n"),
            "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
        );
        d.events.clear();
        d
    }

    /// Feeds `input` as one read and returns what the session answers to it.
    fn send(&mut self, input: impl AsRef<[u8]>) -> String {
        self.session.feed(input.as_ref());
        self.pump();
        self.output()
    }

    /// Polls until the session needs more input, deciding as the policy says.
    fn pump(&mut self) {
        let mut starttls = false;
        loop {
            let seen = match self.session.poll() {
                None => break,
                Some(Event::MessageChunk(bytes)) => {
                    self.body.extend_from_slice(bytes);
                    continue;
                }
                Some(Event::Helo { host, extended }) => Seen::Helo { host, extended },
                Some(Event::StartTls) => Seen::StartTls,
                Some(Event::MailFrom(m)) => Seen::MailFrom(m),
                Some(Event::Rcpt(r)) => Seen::Rcpt(r),
                Some(Event::MessageStart) => Seen::MessageStart,
                Some(Event::MessageEnd) => Seen::MessageEnd,
                Some(Event::MessageAborted { reason }) => Seen::MessageAborted(reason),
                Some(Event::Refused { reason, .. }) => Seen::Refused(reason),
            };
            self.events.push(seen.clone());
            match seen {
                Seen::StartTls => starttls = true,
                Seen::MessageAborted(_) => self.body.clear(),
                Seen::Refused(_) => {}
                decision => match (self.policy)(&decision) {
                    Some(r) => self.session.reject(r),
                    None if decision == Seen::MessageEnd => {
                        self.stored.push(std::mem::take(&mut self.body));
                        let id = format!("Q{}", self.stored.len());
                        self.session.message_stored(&id);
                    }
                    None => {
                        if decision == Seen::MessageStart {
                            self.body.clear();
                        }
                        self.session.accept();
                    }
                },
            }
        }
        if starttls {
            // The 220 is written in plaintext first; the handshake then succeeds.
            self.session.tls_established();
            assert!(self.session.poll().is_none());
        }
    }

    /// What the session has to write, as text.
    fn output(&mut self) -> String {
        String::from_utf8(self.session.take_output()).expect("replies are ASCII")
    }

    /// The events seen since the last call.
    fn take_events(&mut self) -> Vec<Seen> {
        std::mem::take(&mut self.events)
    }
}

fn policy_reply() -> Reply {
    Reply::new(550, Enhanced(5, 7, 1), "Refused by policy")
}

fn mail_from(address: &str) -> MailFrom {
    MailFrom {
        address: address.into(),
        size: 0,
        body_8bitmime: false,
        smtputf8: false,
        ret_full: None,
        envid: None,
    }
}

fn rcpt_to(address: &str) -> RcptTo {
    RcptTo {
        address: address.into(),
        notify: 0,
        orcpt: None,
    }
}

const EHLO_REPLY: &str = "250-mx.gateway.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n250-DSN\r\n";

// Greeting, EHLO and HELO.

#[test]
fn greets_with_its_hostname() {
    let mut s = Session::new(config());
    assert_eq!(s.take_output(), GREETING.as_bytes());
    assert!(s.poll().is_none());
    assert!(!s.is_closed());
}

#[test]
fn ehlo_advertises_exactly_the_supported_extensions_and_starttls_before_tls() {
    let mut d = Driver::new(config());
    assert_eq!(
        d.send("EHLO mx.peer.test\r\n"),
        format!("{EHLO_REPLY}250 STARTTLS\r\n")
    );
    assert_eq!(
        d.take_events(),
        [Seen::Helo {
            host: "mx.peer.test".into(),
            extended: true
        }]
    );
}

#[test]
fn stops_advertising_starttls_once_tls_is_active() {
    let mut d = Driver::ready();
    assert_eq!(d.send("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
    assert!(d.session.tls_active());
    let ehlo = d.send("EHLO mx.peer.test\r\n");
    assert_eq!(ehlo, EHLO_REPLY.replace("250-DSN", "250 DSN"));
}

#[test]
fn does_not_advertise_starttls_without_a_tls_configuration() {
    let mut d = Driver::new(SessionConfig {
        tls_available: false,
        ..config()
    });
    assert_eq!(
        d.send("EHLO mx.peer.test\r\n"),
        EHLO_REPLY.replace("250-DSN", "250 DSN")
    );
    assert_eq!(
        d.send("STARTTLS\r\n"),
        "502 5.5.1 STARTTLS not available\r\n"
    );
}

#[test]
fn helo_answers_with_the_hostname_and_no_extensions() {
    let mut d = Driver::new(config());
    assert_eq!(d.send("HELO mx.peer.test\r\n"), "250 mx.gateway.test\r\n");
    assert_eq!(
        d.take_events(),
        [Seen::Helo {
            host: "mx.peer.test".into(),
            extended: false
        }]
    );
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn refuses_a_peer_whose_ehlo_the_policy_rejects() {
    let mut d = Driver::with_policy(config(), |e| {
        matches!(e, Seen::Helo { .. }).then(|| Reply::new(550, Enhanced(5, 7, 1), "No"))
    });
    assert_eq!(d.send("EHLO mx.peer.test\r\n"), "550 5.7.1 No\r\n");
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "503 5.5.1 Send EHLO first\r\n"
    );
}

#[test]
fn refuses_ehlo_without_a_domain() {
    let mut d = Driver::new(config());
    let out = d.send("EHLO\r\n");
    assert!(out.starts_with("501 "), "{out}");
    assert!(d.events.iter().all(|e| matches!(e, Seen::Refused(_))));
}

// Command sequence.

#[test]
fn refuses_mail_before_ehlo() {
    let mut d = Driver::new(config());
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "503 5.5.1 Send EHLO first\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("bad_sequence")]);
}

#[test]
fn refuses_mail_before_starttls_when_tls_is_required() {
    let mut d = Driver::new(SessionConfig {
        require_tls: true,
        ..config()
    });
    d.send("EHLO mx.peer.test\r\n");
    d.take_events();
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("tls_required")]);
    d.send("STARTTLS\r\n");
    d.send("EHLO mx.peer.test\r\n");
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn drops_plaintext_pipelined_behind_starttls() {
    let mut d = Driver::new(SessionConfig {
        require_tls: true,
        ..config()
    });
    d.send("EHLO mx.peer.test\r\n");
    d.take_events();
    // A man in the middle appends commands to the client's STARTTLS (CVE-2011-0411).
    let out = d.send("STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<b@gateway.test>\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(d.take_events(), [Seen::StartTls]);
    assert!(d.session.tls_active());
    // Inside TLS the client starts over with EHLO; nothing injected has run.
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "503 5.5.1 Send EHLO first\r\n"
    );
    d.send("EHLO mx.peer.test\r\n");
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Seen::MailFrom(m) if m.address.contains("evil"))));
}

#[test]
fn drops_plaintext_that_arrives_before_the_handshake_ends() {
    let mut s = Session::new(config());
    s.take_output();
    s.feed(b"EHLO mx.peer.test\r\n");
    assert!(matches!(s.poll(), Some(Event::Helo { .. })));
    s.accept();
    s.feed(b"STARTTLS\r\n");
    assert_eq!(s.poll(), Some(Event::StartTls));
    assert!(s.poll().is_none());
    // Read from the socket before the handshake: still plaintext.
    s.feed(b"MAIL FROM:<evil@attacker.test>\r\n");
    s.tls_established();
    assert!(s.poll().is_none());
    s.take_output();
    s.feed(b"NOOP\r\n");
    assert!(s.poll().is_none());
    assert_eq!(s.take_output(), b"250 2.0.0 OK\r\n");
}

#[test]
fn refuses_a_second_starttls() {
    let mut d = Driver::ready();
    d.send("STARTTLS\r\n");
    d.send("EHLO mx.peer.test\r\n");
    assert_eq!(d.send("STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
    assert!(d.session.tls_active());
}

#[test]
fn refuses_starttls_inside_a_transaction() {
    let mut d = Driver::in_transaction();
    assert_eq!(
        d.send("STARTTLS\r\n"),
        "503 5.5.1 STARTTLS not allowed during a mail transaction\r\n"
    );
    assert!(!d.session.tls_active());
}

#[test]
fn stays_closed_when_shutdown_comes_during_the_tls_handshake() {
    let mut s = Session::new(config());
    s.feed(b"EHLO mx.peer.test\r\n");
    assert!(matches!(s.poll(), Some(Event::Helo { .. })));
    s.accept();
    s.feed(b"STARTTLS\r\n");
    assert_eq!(s.poll(), Some(Event::StartTls));
    s.take_output();
    s.shutting_down();
    s.tls_established();
    assert!(s.is_closed());
    s.feed(b"NOOP\r\n");
    assert!(s.poll().is_none());
    assert_eq!(
        s.take_output(),
        b"421 4.3.2 Service shutting down, try again later\r\n"
    );
}

#[test]
fn refuses_rcpt_before_mail() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("RCPT TO:<b@gateway.test>\r\n"),
        "503 5.5.1 Send MAIL first\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("bad_sequence")]);
}

#[test]
fn refuses_a_nested_mail() {
    let mut d = Driver::in_transaction();
    assert_eq!(
        d.send("MAIL FROM:<c@peer.test>\r\n"),
        "503 5.5.1 Nested MAIL command\r\n"
    );
}

#[test]
fn refuses_data_before_rcpt() {
    let mut d = Driver::ready();
    assert_eq!(d.send("DATA\r\n"), "503 5.5.1 Send RCPT first\r\n");
    assert_eq!(d.take_events(), [Seen::Refused("bad_sequence")]);
    // After MAIL, RFC 5321 §3.3 allows 503 or 554; 554 tells a pipelining client whose
    // recipients were all refused why its DATA is.
    d.send("MAIL FROM:<a@peer.test>\r\n");
    assert_eq!(d.send("DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
    assert!(!d.take_events().contains(&Seen::MessageStart));
}

#[test]
fn refuses_data_when_every_recipient_was_refused() {
    let mut d = Driver::with_policy(config(), |e| matches!(e, Seen::Rcpt(_)).then(policy_reply));
    d.send("EHLO mx.peer.test\r\n");
    let out = d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<x@gateway.test>\r\nDATA\r\n");
    assert_eq!(
        out,
        "250 2.1.0 Sender OK\r\n550 5.7.1 Refused by policy\r\n554 5.5.1 No valid recipients\r\n"
    );
}

// Limits.

#[test]
fn refuses_a_declared_size_over_the_limit() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test> SIZE=1001\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("message_too_large")]);
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test> SIZE=1000\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn refuses_a_data_body_over_the_limit_once_it_has_ended() {
    let mut d = Driver::in_transaction();
    assert_eq!(
        d.send("DATA\r\n"),
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"
    );
    let line = format!("{}\r\n", "x".repeat(98));
    // 1100 bytes, sent in reads that each fit: the refusal waits for the end of data.
    for _ in 0..11 {
        assert_eq!(d.send(&line), "");
    }
    assert_eq!(
        d.send(".\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        d.take_events(),
        [
            Seen::MessageStart,
            Seen::MessageAborted("message_too_large")
        ]
    );
    assert!(d.stored.is_empty());
    assert!(d.body.is_empty());
    // The session goes on with a new transaction.
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn accepts_a_body_of_exactly_the_limit() {
    let mut d = Driver::in_transaction();
    let body = format!("{}\r\n", "y".repeat(MAX_SIZE - 2));
    let out = d.send(format!("DATA\r\n{body}.\r\n"));
    assert!(
        out.ends_with("250 2.0.0 Message accepted for delivery, queued as Q1\r\n"),
        "{out}"
    );
    assert_eq!(d.stored, [body.into_bytes()]);
}

#[test]
fn answers_452_to_recipients_beyond_the_limit() {
    let mut d = Driver::ready();
    d.send("MAIL FROM:<a@peer.test>\r\n");
    d.take_events();
    let out = d.send(
        "RCPT TO:<r1@gateway.test>\r\nRCPT TO:<r2@gateway.test>\r\n\
         RCPT TO:<r3@gateway.test>\r\nRCPT TO:<r4@gateway.test>\r\n",
    );
    assert_eq!(
        out,
        "250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n\
         452 4.5.3 Too many recipients\r\n"
    );
    let events = d.take_events();
    assert_eq!(events.last(), Some(&Seen::Refused("too_many_recipients")));
    assert_eq!(
        events.iter().filter(|e| matches!(e, Seen::Rcpt(_))).count(),
        3
    );
}

#[test]
fn delivers_to_the_first_recipients_when_a_pipelining_client_sends_too_many() {
    // RFC 5321 §4.5.3.1.10: a client may send more recipients than the server takes and
    // deliver the rest later; the 452s must not count as errors that close the session.
    let mut d = Driver::ready();
    let mut batch = String::from("MAIL FROM:<list@peer.test>\r\n");
    for i in 0..20 {
        batch.push_str(&format!("RCPT TO:<r{i}@gateway.test>\r\n"));
    }
    batch.push_str("DATA\r\n");
    let out = d.send(&batch);
    assert_eq!(out.matches("452 4.5.3").count(), 17);
    assert!(!d.session.is_closed());
    assert!(
        out.ends_with("354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"),
        "{out}"
    );
    assert_eq!(
        d.send("hello\r\n.\r\n"),
        "250 2.0.0 Message accepted for delivery, queued as Q1\r\n"
    );
}

#[test]
fn refuses_bare_lf_in_data() {
    let mut d = Driver::in_transaction();
    let out = d.send("DATA\r\nSubject: x\n\r\nbody\r\n.\r\n");
    assert_eq!(
        out,
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n\
         550 5.6.0 Bare CR or LF in message: lines must end with CRLF\r\n"
    );
    assert_eq!(
        d.take_events(),
        [Seen::MessageStart, Seen::MessageAborted("bare_newline")]
    );
    assert!(d.stored.is_empty());
}

#[test]
fn refuses_bare_cr_in_data() {
    let mut d = Driver::in_transaction();
    let out = d.send("DATA\r\nSubject: x\r\rbody\r\n.\r\n");
    assert!(out.ends_with("550 5.6.0 Bare CR or LF in message: lines must end with CRLF\r\n"));
    assert_eq!(
        d.take_events(),
        [Seen::MessageStart, Seen::MessageAborted("bare_newline")]
    );
    assert!(d.stored.is_empty());
}

#[test]
fn lf_dot_lf_does_not_end_a_message_so_nothing_is_smuggled() {
    let mut d = Driver::in_transaction();
    let out = d.send(
        "DATA\r\nhello\n.\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<b@gateway.test>\r\n\
         DATA\r\nforged\r\n.\r\n",
    );
    assert_eq!(
        out,
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n\
         550 5.6.0 Bare CR or LF in message: lines must end with CRLF\r\n"
    );
    assert_eq!(
        d.take_events(),
        [Seen::MessageStart, Seen::MessageAborted("bare_newline")]
    );
    assert!(d.stored.is_empty());
}

// Command lines.

#[test]
fn refuses_nul_in_a_command() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("NOOP\0x\r\n"),
        "500 5.5.2 NUL character not allowed in commands\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("nul_byte")]);
}

#[test]
fn refuses_an_overlong_line_and_goes_on() {
    let mut d = Driver::ready();
    let long = format!("NOOP {}\r\nNOOP\r\n", "a".repeat(MAX_LINE));
    assert_eq!(d.send(&long), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
    assert_eq!(d.take_events(), [Seen::Refused("line_too_long")]);
}

#[test]
fn refuses_an_overlong_line_read_in_pieces_once() {
    let mut d = Driver::ready();
    assert_eq!(d.send("a".repeat(3000)), "");
    assert_eq!(d.send("a".repeat(3000)), "500 5.5.2 Line too long\r\n");
    assert_eq!(d.send("a".repeat(3000)), "");
    assert_eq!(d.send("\r\nNOOP\r\n"), "250 2.0.0 OK\r\n");
    assert_eq!(d.take_events(), [Seen::Refused("line_too_long")]);
}

#[test]
fn accepts_a_line_of_exactly_the_maximum_length() {
    let mut d = Driver::ready();
    let line = format!("NOOP {}\r\n", "a".repeat(MAX_LINE - 7));
    assert_eq!(line.len(), MAX_LINE);
    assert_eq!(d.send(&line), "250 2.0.0 OK\r\n");
}

#[test]
fn answers_500_to_an_unknown_command() {
    let mut d = Driver::ready();
    assert_eq!(d.send("FOO bar\r\n"), "500 5.5.1 Command unrecognized\r\n");
    assert_eq!(d.take_events(), [Seen::Refused("unknown_command")]);
}

#[test]
fn closes_after_ten_consecutive_errors() {
    let mut d = Driver::ready();
    let out = d.send("FOO\r\n".repeat(12));
    assert_eq!(
        out,
        format!(
            "{}421 4.7.0 Too many errors, closing connection\r\n",
            "500 5.5.1 Command unrecognized\r\n".repeat(10)
        )
    );
    assert!(d.session.is_closed());
    assert_eq!(d.send("NOOP\r\n"), "");
    assert!(d.session.poll().is_none());
}

#[test]
fn a_success_resets_the_error_count() {
    let mut d = Driver::ready();
    d.send("FOO\r\n".repeat(9));
    d.send("MAIL FROM:<a@peer.test>\r\n");
    d.send("FOO\r\n".repeat(9));
    d.send("RSET\r\n");
    d.send("FOO\r\n".repeat(9));
    assert!(!d.session.is_closed());
    assert!(d
        .send("FOO\r\n")
        .ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    assert!(d.session.is_closed());
}

#[test]
fn policy_refusals_count_towards_the_error_limit() {
    let mut d = Driver::with_policy(config(), |e| matches!(e, Seen::Rcpt(_)).then(policy_reply));
    d.send("EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test>\r\n");
    let out = d.send("RCPT TO:<x@gateway.test>\r\n".repeat(10));
    assert!(out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    assert!(d.session.is_closed());
}

// Other commands.

#[test]
fn answers_vrfy_expn_help_and_noop() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("VRFY postmaster\r\n"),
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    );
    assert_eq!(
        d.send("EXPN staff\r\n"),
        "502 5.5.1 EXPN is not supported\r\n"
    );
    assert!(d.send("HELP\r\n").starts_with("214 2.0.0 "));
    assert_eq!(d.send("NOOP\r\n"), "250 2.0.0 OK\r\n");
    assert!(!d.session.is_closed());
}

#[test]
fn rset_abandons_the_transaction() {
    let mut d = Driver::in_transaction();
    assert_eq!(d.send("RSET\r\n"), "250 2.0.0 Reset OK\r\n");
    assert!(!d.session.in_transaction());
    assert_eq!(
        d.send("RCPT TO:<b@gateway.test>\r\n"),
        "503 5.5.1 Send MAIL first\r\n"
    );
}

#[test]
fn quit_says_goodbye_and_closes() {
    let mut d = Driver::in_transaction();
    assert_eq!(d.send("QUIT\r\nNOOP\r\n"), "221 2.0.0 Bye\r\n");
    assert!(d.session.is_closed());
    assert!(d.session.poll().is_none());
}

#[test]
fn a_closed_session_says_nothing_more() {
    let mut d = Driver::ready();
    d.send("QUIT\r\n");
    d.session.timed_out();
    d.session.shutting_down();
    assert_eq!(d.output(), "");
}

#[test]
fn a_timeout_closes_with_421() {
    let mut d = Driver::in_transaction();
    d.session.timed_out();
    assert_eq!(d.output(), "421 4.4.2 Timeout, closing connection\r\n");
    assert!(d.session.is_closed());
    assert!(d.session.poll().is_none());
}

#[test]
fn shutting_down_closes_with_421() {
    let mut d = Driver::ready();
    d.session.shutting_down();
    assert_eq!(
        d.output(),
        "421 4.3.2 Service shutting down, try again later\r\n"
    );
    assert!(d.session.is_closed());
}

// ESMTP parameters.

#[test]
fn reports_mail_parameters_to_the_policy() {
    let mut d = Driver::ready();
    d.send("MAIL FROM:<a@peer.test> SIZE=500 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159\r\n");
    assert_eq!(
        d.take_events(),
        [Seen::MailFrom(MailFrom {
            size: 500,
            body_8bitmime: true,
            smtputf8: true,
            ret_full: Some(false),
            envid: Some("QQ314159".into()),
            ..mail_from("a@peer.test")
        })]
    );
    d.send("RSET\r\nMAIL FROM:<> RET=FULL\r\n");
    assert_eq!(
        d.take_events()[0],
        Seen::MailFrom(MailFrom {
            ret_full: Some(true),
            ..mail_from("")
        })
    );
}

#[test]
fn refuses_binarymime() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test> BODY=BINARYMIME\r\n"),
        "555 5.5.4 BODY=BINARYMIME is not supported\r\n"
    );
}

#[test]
fn refuses_parameters_of_extensions_it_does_not_advertise() {
    let mut d = Driver::ready();
    for (param, name) in [
        ("REQUIRETLS", "REQUIRETLS"),
        ("HOLDFOR=60", "HOLDFOR"),
        ("MT-PRIORITY=3", "MT-PRIORITY"),
        ("AUTH=<>", "AUTH"),
        ("BY=120;R", "BY"),
        ("CONPERM", "CONPERM"),
    ] {
        assert_eq!(
            d.send(format!("MAIL FROM:<a@peer.test> {param}\r\n")),
            format!("555 5.5.4 Unsupported parameter {name}\r\n"),
            "{param}"
        );
        assert_eq!(d.take_events(), [Seen::Refused("unsupported_parameter")]);
    }
    d.send("MAIL FROM:<a@peer.test>\r\n");
    assert_eq!(
        d.send("RCPT TO:<b@gateway.test> RRVS=2014-04-03T23:01:00Z\r\n"),
        "555 5.5.4 Unsupported parameter RRVS\r\n"
    );
}

#[test]
fn reports_rcpt_dsn_parameters_to_the_policy() {
    let mut d = Driver::ready();
    d.send("MAIL FROM:<a@peer.test>\r\n");
    d.take_events();
    d.send(
        "RCPT TO:<b@gateway.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@gateway.test\r\n\
         RCPT TO:<c@gateway.test> NOTIFY=NEVER\r\nRCPT TO:<d@gateway.test>\r\n",
    );
    assert_eq!(
        d.take_events(),
        [
            Seen::Rcpt(RcptTo {
                notify: smtp_proto::RCPT_NOTIFY_SUCCESS | smtp_proto::RCPT_NOTIFY_FAILURE,
                orcpt: Some("b@gateway.test".into()),
                ..rcpt_to("b@gateway.test")
            }),
            Seen::Rcpt(RcptTo {
                notify: smtp_proto::RCPT_NOTIFY_NEVER,
                ..rcpt_to("c@gateway.test")
            }),
            Seen::Rcpt(rcpt_to("d@gateway.test")),
        ]
    );
}

// DATA.

#[test]
fn removes_dot_stuffing() {
    let mut d = Driver::in_transaction();
    d.send("DATA\r\n..hidden\r\n...\r\n.a.b\r\nend.\r\n.\r\n");
    assert_eq!(d.stored, [b".hidden\r\n..\r\na.b\r\nend.\r\n".to_vec()]);
}

#[test]
fn delivers_two_messages_in_one_session() {
    let mut d = Driver::in_transaction();
    d.send("DATA\r\none\r\n.\r\n");
    d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\nDATA\r\ntwo\r\n.\r\n");
    assert_eq!(d.stored, [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
    assert_eq!(
        d.take_events()
            .iter()
            .filter(|e| **e == Seen::MessageEnd)
            .count(),
        2
    );
}

#[test]
fn tells_the_client_when_the_spool_refuses_a_message() {
    let mut d = Driver::with_policy(config(), |e| {
        (*e == Seen::MessageEnd).then(|| Reply::new(451, Enhanced(4, 3, 0), "Spool full"))
    });
    d.send("EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\n");
    assert!(d
        .send("DATA\r\nx\r\n.\r\n")
        .ends_with("451 4.3.0 Spool full\r\n"));
    assert!(!d.session.in_transaction());
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn sends_no_354_when_the_message_cannot_be_spooled() {
    let mut d = Driver::with_policy(config(), |e| {
        (*e == Seen::MessageStart).then(|| Reply::new(451, Enhanced(4, 3, 0), "Spool full"))
    });
    d.send("EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\n");
    assert_eq!(d.send("DATA\r\n"), "451 4.3.0 Spool full\r\n");
    assert_eq!(d.send("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

// BDAT (RFC 3030).

#[test]
fn bdat_receives_a_single_last_chunk() {
    let mut d = Driver::in_transaction();
    let out = d.send("BDAT 7 LAST\r\nhello\r\n");
    assert_eq!(
        out,
        "250 2.0.0 Message accepted for delivery, queued as Q1\r\n"
    );
    assert_eq!(d.stored, [b"hello\r\n".to_vec()]);
    assert_eq!(d.take_events(), [Seen::MessageStart, Seen::MessageEnd]);
}

#[test]
fn bdat_receives_several_chunks_without_unstuffing() {
    let mut d = Driver::in_transaction();
    assert_eq!(
        d.send("BDAT 5\r\n.a\r\nb"),
        "250 2.0.0 5 octets received\r\n"
    );
    // A CRLF split across two chunks is a line ending like any other.
    assert_eq!(d.send("BDAT 2\r\nc\r"), "250 2.0.0 7 octets received\r\n");
    assert_eq!(
        d.send("BDAT 1 LAST\r\n\n"),
        "250 2.0.0 Message accepted for delivery, queued as Q1\r\n"
    );
    assert_eq!(d.stored, [b".a\r\nbc\r\n".to_vec()]);
    assert_eq!(d.take_events(), [Seen::MessageStart, Seen::MessageEnd]);
}

#[test]
fn bdat_refuses_bare_line_endings_like_data() {
    for (chunks, case) in [
        (vec!["BDAT 5 LAST\r\na\n.\nb"], "bare LF"),
        (vec!["BDAT 3 LAST\r\na\rb"], "bare CR"),
        (
            vec!["BDAT 2\r\na\r", "BDAT 1 LAST\r\nb"],
            "CR then another chunk",
        ),
        (vec!["BDAT 2 LAST\r\na\r"], "CR at the very end"),
    ] {
        let mut d = Driver::in_transaction();
        let mut out = String::new();
        for c in chunks {
            out.push_str(&d.send(c));
        }
        assert!(
            out.ends_with("550 5.6.0 Bare CR or LF in message: lines must end with CRLF\r\n"),
            "{case}: {out}"
        );
        assert!(d.stored.is_empty(), "{case}");
    }
}

#[test]
fn bdat_refuses_a_first_chunk_over_the_limit_after_reading_it() {
    let mut d = Driver::in_transaction();
    assert_eq!(d.send("BDAT 1001 LAST\r\n"), "");
    assert_eq!(d.send("z".repeat(1000)), "");
    assert_eq!(
        d.send("zNOOP\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("message_too_large")]);
    assert!(d.stored.is_empty() && d.body.is_empty());
}

#[test]
fn bdat_aborts_a_message_whose_next_chunk_is_over_the_limit() {
    let mut d = Driver::in_transaction();
    d.send(format!("BDAT 600\r\n{}", "a".repeat(600)));
    let out = d.send(format!("BDAT 401 LAST\r\n{}NOOP\r\n", "b".repeat(401)));
    assert_eq!(
        out,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
    );
    assert_eq!(
        d.take_events(),
        [
            Seen::MessageStart,
            Seen::MessageAborted("message_too_large")
        ]
    );
    assert!(d.stored.is_empty() && d.body.is_empty());
}

#[test]
fn bdat_before_rcpt_is_refused_and_its_bytes_discarded() {
    let mut d = Driver::ready();
    d.send("MAIL FROM:<a@peer.test>\r\n");
    d.take_events();
    let out = d.send("BDAT 12\r\nRSET\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(out, "503 5.5.1 No valid recipients\r\n250 2.0.0 OK\r\n");
    assert_eq!(d.take_events(), [Seen::Refused("bad_sequence")]);
    assert!(!d.session.is_closed());
    let mut d = Driver::ready();
    let out = d.send("BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(out, "503 5.5.1 Send RCPT first\r\n250 2.0.0 OK\r\n");
}

#[test]
fn bdat_rset_between_chunks_abandons_the_message() {
    let mut d = Driver::in_transaction();
    d.send("BDAT 4\r\nabcd");
    assert_eq!(d.send("RSET\r\n"), "250 2.0.0 Reset OK\r\n");
    assert_eq!(
        d.take_events(),
        [Seen::MessageStart, Seen::MessageAborted("reset")]
    );
    assert!(d.stored.is_empty() && d.body.is_empty());
    assert!(!d.session.in_transaction());
}

#[test]
fn bdat_quit_between_chunks_abandons_the_message() {
    let mut d = Driver::in_transaction();
    d.send("BDAT 4\r\nabcd");
    assert_eq!(d.send("QUIT\r\n"), "221 2.0.0 Bye\r\n");
    assert_eq!(
        d.take_events(),
        [Seen::MessageStart, Seen::MessageAborted("reset")]
    );
    assert!(d.session.is_closed());
}

#[test]
fn bdat_ehlo_between_chunks_abandons_the_message_and_starts_over() {
    let mut d = Driver::in_transaction();
    d.send("BDAT 4\r\nabcd");
    d.take_events();
    let out = d.send("EHLO mx.peer.test\r\n");
    assert_eq!(out, format!("{EHLO_REPLY}250 STARTTLS\r\n"));
    assert_eq!(
        d.take_events(),
        [
            Seen::MessageAborted("reset"),
            Seen::Helo {
                host: "mx.peer.test".into(),
                extended: true
            }
        ]
    );
    assert!(!d.session.in_transaction());
    assert!(d.stored.is_empty() && d.body.is_empty());
}

#[test]
fn ehlo_inside_a_transaction_resets_it() {
    let mut d = Driver::in_transaction();
    d.send("EHLO mx.peer.test\r\n");
    assert!(!d.session.in_transaction());
    assert_eq!(d.send("DATA\r\n"), "503 5.5.1 Send RCPT first\r\n");
}

#[test]
fn bdat_refuses_data_between_chunks() {
    let mut d = Driver::in_transaction();
    d.send("BDAT 4\r\nabcd");
    assert_eq!(
        d.send("DATA\r\n"),
        "503 5.5.1 DATA not allowed after BDAT\r\n"
    );
    // The message goes on.
    assert_eq!(
        d.send("BDAT 2 LAST\r\nef"),
        "250 2.0.0 Message accepted for delivery, queued as Q1\r\n"
    );
    assert_eq!(d.stored, [b"abcdef".to_vec()]);
}

#[test]
fn bdat_chunk_of_a_message_the_spool_refuses_is_discarded() {
    let mut d = Driver::with_policy(config(), |e| {
        (*e == Seen::MessageStart).then(|| Reply::new(451, Enhanced(4, 3, 0), "Spool full"))
    });
    d.send("EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\n");
    let out = d.send("BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(out, "451 4.3.0 Spool full\r\n250 2.0.0 OK\r\n");
    assert!(d.stored.is_empty() && d.body.is_empty());
}

// Pipelining and reads.

const TRANSACTION: &str = "EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test> SIZE=40\r\n\
    RCPT TO:<b@gateway.test>\r\nRCPT TO:<c@gateway.test>\r\nDATA\r\n\
    Subject: hi\r\n\r\n..dotted\r\n.\r\n\
    MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nde\
    NOOP\r\nQUIT\r\n";

#[test]
fn answers_a_pipelined_batch_in_one_write_in_order() {
    let mut d = Driver::new(config());
    let out = d.send(TRANSACTION);
    let expected = format!(
        "{EHLO_REPLY}250 STARTTLS\r\n\
         250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n\
         354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Message accepted for delivery, queued as Q1\r\n\
         250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 3 octets received\r\n\
         250 2.0.0 Message accepted for delivery, queued as Q2\r\n\
         250 2.0.0 OK\r\n221 2.0.0 Bye\r\n"
    );
    assert_eq!(out, expected);
    assert_eq!(
        d.stored,
        [
            b"Subject: hi\r\n\r\n.dotted\r\n".to_vec(),
            b"abcde".to_vec()
        ]
    );
    assert!(d.session.is_closed());
}

#[test]
fn reading_one_byte_at_a_time_changes_nothing() {
    let mut whole = Driver::new(config());
    let whole_out = whole.send(TRANSACTION);
    let mut bytewise = Driver::new(config());
    let mut out = String::new();
    for b in TRANSACTION.as_bytes() {
        out.push_str(&bytewise.send([*b]));
    }
    assert_eq!(out, whole_out);
    assert_eq!(bytewise.stored, whole.stored);
    assert_eq!(bytewise.events, whole.events);
}

#[test]
fn reading_in_any_piece_size_changes_nothing() {
    let input = format!(
        "{TRANSACTION}EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nbad\nline\r\n.\r\n\
         FOO\0\r\n{}\r\nNOOP\r\n",
        "L".repeat(5000)
    )
    .replace("QUIT\r\n", "");
    let mut whole = Driver::new(config());
    let whole_out = whole.send(&input);
    for piece in [2, 3, 5, 7, 64, 4095, 4096, 4097] {
        let mut d = Driver::new(config());
        let out: String = input.as_bytes().chunks(piece).map(|c| d.send(c)).collect();
        assert_eq!(out, whole_out, "piece size {piece}");
        assert_eq!(d.stored, whole.stored, "piece size {piece}");
        assert_eq!(d.events, whole.events, "piece size {piece}");
    }
}

#[test]
fn closes_a_session_that_only_sends_commands_moving_no_mail() {
    let mut d = Driver::ready();
    let mut out = String::new();
    for _ in 0..config().max_idle_commands - 1 {
        out = d.send("NOOP\r\n");
    }
    assert_eq!(out, "250 2.0.0 OK\r\n");
    // An accepted MAIL starts the count again.
    d.send("MAIL FROM:<a@b.example>\r\n");
    d.send("RSET\r\n");
    for _ in 0..config().max_idle_commands - 1 {
        out = d.send("NOOP\r\n");
    }
    assert_eq!(out, "250 2.0.0 OK\r\n");
    assert_eq!(
        d.send("NOOP\r\n"),
        "250 2.0.0 OK\r\n421 4.7.0 Too many commands without a mail transaction, closing connection\r\n"
    );
    assert!(d.session.is_closed());
}

// Addresses: routing, quoting, 8-bit (RFC 5321 §4.1.2, RFC 6531).

#[test]
fn keeps_a_quoted_local_part_as_written() {
    let mut d = Driver::ready();
    d.send("MAIL FROM:<\"a b\"@peer.test>\r\n");
    d.send("RCPT TO:<\"john doe\"@gateway.test>\r\n");
    d.send("RCPT TO:<@relay.test:\"x\\\"y\"@gateway.test>\r\n");
    assert_eq!(
        d.take_events(),
        [
            Seen::MailFrom(mail_from("\"a b\"@peer.test")),
            Seen::Rcpt(rcpt_to("\"john doe\"@gateway.test")),
            Seen::Rcpt(rcpt_to("\"x\\\"y\"@gateway.test")),
        ]
    );
}

#[test]
fn refuses_non_ascii_addresses_without_smtputf8_and_invalid_utf8_always() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("MAIL FROM:<jos\u{e9}@peer.test>\r\n"),
        "553 5.6.7 Non-ASCII address without SMTPUTF8\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("non_ascii_address")]);
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        d.send("RCPT TO:<andr\u{e9}@gateway.test>\r\n"),
        "553 5.6.7 Non-ASCII address without SMTPUTF8\r\n"
    );
    assert_eq!(
        d.send(b"RCPT TO:<b\xff@gateway.test>\r\n"),
        "501 5.6.7 Invalid UTF-8 in address\r\n"
    );
    d.send("RSET\r\n");
    d.take_events();
    assert_eq!(
        d.send("MAIL FROM:<jos\u{e9}@peer.test> SMTPUTF8\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        d.send("RCPT TO:<andr\u{e9}@gateway.test>\r\n"),
        "250 2.1.5 Recipient OK\r\n"
    );
    assert_eq!(
        d.send(b"RCPT TO:<b\xff@gateway.test>\r\n"),
        "501 5.6.7 Invalid UTF-8 in address\r\n"
    );
}

// What smtp-proto lets through.

#[test]
fn refuses_a_declared_size_beyond_64_bits() {
    let mut d = Driver::ready();
    assert_eq!(
        d.send("MAIL FROM:<a@peer.test> SIZE=99999999999999999999999\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(d.take_events(), [Seen::Refused("message_too_large")]);
}

#[test]
fn refuses_bdat_with_trailing_junk_after_reading_its_chunk() {
    let mut d = Driver::in_transaction();
    assert_eq!(
        d.send("BDAT 3 LAST junk\r\nabc"),
        "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"
    );
    assert!(d.stored.is_empty());
    // The chunk was consumed: the next line is read as a command.
    assert_eq!(d.send("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

#[test]
fn refuses_an_empty_message() {
    let mut d = Driver::in_transaction();
    assert_eq!(d.send("BDAT 0 LAST\r\n"), "554 5.6.0 Empty message\r\n");
    assert!(d.stored.is_empty());
    assert!(d
        .take_events()
        .contains(&Seen::MessageAborted("empty_message")));
}

#[test]
fn closes_on_a_bdat_size_beyond_64_bits() {
    let mut d = Driver::in_transaction();
    let out = d.send("BDAT 99999999999999999999999 LAST\r\nabc");
    assert!(out.starts_with("501 5.5.4"), "{out}");
    assert!(d.session.is_closed());
}

#[test]
fn the_session_owns_its_transaction_and_every_reset_clears_it() {
    let mut d = Driver::with_policy(config(), |seen| match seen {
        Seen::Rcpt(r) if r.address == "no@gateway.test" => Some(policy_reply()),
        _ => None,
    });
    d.send("EHLO mx.peer.test\r\n");
    d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\nRCPT TO:<no@gateway.test>\r\n");
    let t = d.session.transaction();
    assert_eq!(t.mail, Some(mail_from("a@peer.test")));
    assert_eq!(
        t.rcpts,
        [rcpt_to("b@gateway.test")],
        "a refused RCPT is not kept"
    );
    d.send("RSET\r\n");
    assert_eq!(d.session.transaction(), &Transaction::default());

    d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\nEHLO again.peer.test\r\n");
    assert_eq!(
        d.session.transaction(),
        &Transaction::default(),
        "EHLO resets"
    );

    d.send("MAIL FROM:<a@peer.test>\r\nRCPT TO:<b@gateway.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(d.stored.len(), 1);
    assert_eq!(
        d.session.transaction(),
        &Transaction::default(),
        "a stored message ends it"
    );

    // A refused MAIL leaves no transaction behind.
    let mut d = Driver::with_policy(config(), |seen| match seen {
        Seen::MailFrom(_) => Some(policy_reply()),
        _ => None,
    });
    d.send("EHLO mx.peer.test\r\nMAIL FROM:<a@peer.test>\r\n");
    assert_eq!(d.session.transaction(), &Transaction::default());
}
