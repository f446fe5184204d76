//! Delivery status notifications (RFC 3464, RFC 3461): the bounce, delay warning or
//! success report sent back to a message's sender.
//!
//! NOTIFY decides whether a recipient is reported (no NOTIFY means FAILURE only; NEVER
//! means nothing), RET whether the whole message or its headers only are returned (no RET
//! means headers only: the body of a health-care message is not copied around unless the
//! sender asked for it), and ENVID and ORCPT are echoed back.

use smtp_proto::{RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS};
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use crate::metrics::labels;
use crate::spool::{Envelope, Recipient, StoredMessage};

/// What happened to a recipient (the DSN `Action:` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Permanent failure, or expiry.
    Failed,
    /// Still trying.
    Delayed,
    /// Handed to a final-delivery agent (LMTP).
    Delivered,
    /// Handed to a server that may not send DSNs itself (SMTP).
    Relayed,
}

impl Action {
    /// The `Action:` field value, also the label of `mssante_dsn_generated_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => labels::FAILED,
            Action::Delayed => labels::DELAYED,
            Action::Delivered => labels::DELIVERED,
            Action::Relayed => labels::RELAYED,
        }
    }
}

/// One recipient's line in the report.
#[derive(Debug, Clone)]
pub struct RecipientReport {
    /// The recipient as it was in the envelope (address, NOTIFY, ORCPT).
    pub recipient: Recipient,
    /// What happened.
    pub action: Action,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The server's reply, for `Diagnostic-Code: smtp; ...`.
    pub diagnostic: Option<String>,
}

/// Whether the sender asked to hear about `action` for a recipient with `notify`.
pub fn wanted(notify: u64, action: Action) -> bool {
    if notify & RCPT_NOTIFY_NEVER != 0 {
        return false;
    }
    match action {
        Action::Failed => notify == 0 || notify & RCPT_NOTIFY_FAILURE != 0,
        Action::Delayed => notify & RCPT_NOTIFY_DELAY != 0,
        Action::Delivered | Action::Relayed => notify & RCPT_NOTIFY_SUCCESS != 0,
    }
}

/// Context of a report.
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, From).
    pub reporting_mta: &'a str,
    /// The server that answered (Remote-MTA), when known.
    pub remote_mta: Option<&'a str>,
    /// The original message.
    pub original: &'a StoredMessage,
    /// The recipients to report (already filtered by [`wanted`]).
    pub recipients: Vec<RecipientReport>,
    /// For delays: until when we keep trying.
    pub will_retry_until: Option<OffsetDateTime>,
    /// Now.
    pub now: OffsetDateTime,
}

/// Builds the notification: its envelope (from `<>` to the original sender, NOTIFY=NEVER
/// so that a DSN never causes another) and its bytes. `None` when there is nobody to tell:
/// the original reverse path was `<>`, or no recipient is to be reported.
pub fn build(r: &Report<'_>) -> Option<(Envelope, Vec<u8>)> {
    let env = &r.original.envelope;
    if env.mail_from.is_empty() || r.recipients.is_empty() {
        return None;
    }
    let kind = r.recipients[0].action;
    let date = r.now.format(&Rfc2822).unwrap_or_default();
    let boundary = format!("{}/{}", r.original.id, r.reporting_mta);
    let subject = match kind {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Delivered | Action::Relayed => "Successful Mail Delivery Report",
    };
    // RET=FULL returns the whole message only when it is small enough to have been read
    // whole ([`crate::spool::HEAD`]); a larger one gets its headers, as most MTAs do
    // (Postfix: `bounce_size_limit`), so that a DSN never copies a 40 MB message.
    let too_large = r.original.rest.is_some();
    let ret_full = env.ret_full == Some(true) && !too_large;
    let fields = status_fields(r, &date);
    let body = &r.original.body;
    // The returned message or its headers go as they are (no transfer encoding of ours):
    // 8bit when the original declared 8BITMIME.
    let raw = if env.body_8bitmime { "8bit" } else { "7bit" };
    let returned = if ret_full {
        let mut full = body.to_vec();
        if !full.ends_with(b"\r\n") {
            full.extend_from_slice(b"\r\n");
        }
        MimePart::new("message/rfc822", BodyPart::Binary(full.into())).transfer_encoding(raw)
    } else {
        let headers = crate::message::headers_of(body);
        MimePart::new(
            "text/rfc822-headers",
            BodyPart::Binary(headers.to_vec().into()),
        )
        .transfer_encoding(raw)
    };
    let report = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "us-ascii"),
                BodyPart::Text(human_text(r, env.ret_full == Some(true) && too_large).into()),
            )
            .transfer_encoding("7bit"),
            MimePart::new(
                "message/delivery-status",
                BodyPart::Binary(fields.into_bytes().into()),
            )
            .transfer_encoding("7bit"),
            returned,
        ],
    );
    let m = MessageBuilder::new()
        .from((
            "Mail Delivery System".to_string(),
            format!("MAILER-DAEMON@{}", r.reporting_mta),
        ))
        .to(clean(&env.mail_from))
        .subject(subject)
        .date(r.now.unix_timestamp())
        .message_id(format!(
            "{}.{}@{}",
            r.original.id,
            kind.as_str(),
            r.reporting_mta
        ))
        .header("Auto-Submitted", Text::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .ok()?;
    // The direction is for metrics only: delivery is routed per recipient domain.
    let mut envelope = Envelope::of_report(
        crate::spool::Direction::Dsn,
        r.reporting_mta,
        r.now.format(&Rfc3339).unwrap_or_default(),
        &env.mail_from,
    );
    envelope.body_8bitmime = ret_full && env.body_8bitmime;
    envelope.smtputf8 = env.smtputf8;
    Some((envelope, m))
}

/// The message/delivery-status part (RFC 3464 §2.2 and §2.3): the per-message fields, then
/// a block per recipient.
fn status_fields(r: &Report<'_>, date: &str) -> String {
    let env = &r.original.envelope;
    let mut f = format!("Reporting-MTA: dns; {}\r\n", r.reporting_mta);
    if let Some(envid) = &env.envid {
        f.push_str(&format!("Original-Envelope-Id: {}\r\n", clean(envid)));
    }
    let arrival = OffsetDateTime::parse(&env.received_at, &Rfc3339)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok());
    if let Some(a) = arrival {
        f.push_str(&format!("Arrival-Date: {a}\r\n"));
    }
    for rr in &r.recipients {
        f.push_str("\r\n");
        if let Some(orcpt) = &rr.recipient.orcpt {
            // smtp-proto keeps the decoded address of `ORCPT=rfc822;...` (the only type
            // it accepts); a value that still has its type is written as it is.
            let o = clean(orcpt);
            let typed = o
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("rfc822;"));
            if typed {
                f.push_str(&format!("Original-Recipient: {o}\r\n"));
            } else {
                f.push_str(&format!("Original-Recipient: rfc822;{o}\r\n"));
            }
        }
        f.push_str(&format!(
            "Final-Recipient: rfc822;{}\r\nAction: {}\r\nStatus: {}\r\n",
            clean(&rr.recipient.address),
            rr.action.as_str(),
            rr.status
        ));
        if let Some(remote) = r.remote_mta {
            f.push_str(&format!("Remote-MTA: dns; {}\r\n", clean(remote)));
        }
        if let Some(d) = &rr.diagnostic {
            f.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", clean(d)));
        }
        f.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
        if let (Action::Delayed, Some(until)) = (rr.action, r.will_retry_until) {
            if let Ok(u) = until.format(&Rfc2822) {
                f.push_str(&format!("Will-Retry-Until: {u}\r\n"));
            }
        }
    }
    f
}

fn human_text(r: &Report<'_>, only_headers_returned: bool) -> String {
    let mut t = String::new();
    let intro = match r.recipients[0].action {
        Action::Failed => "Your message could not be delivered to the recipients below. This is a permanent error; it will not be retried.",
        Action::Delayed => "Your message has not been delivered yet to the recipients below. Delivery is still being attempted; you do not need to send it again.",
        Action::Delivered | Action::Relayed => "Your message was delivered to the recipients below.",
    };
    t.push_str(&format!(
        "This is the mail system at {}.\r\n\r\n{intro}\r\n\r\n",
        r.reporting_mta
    ));
    for rr in &r.recipients {
        t.push_str(&format!("<{}>: {}", rr.recipient.address, rr.status));
        if let Some(d) = &rr.diagnostic {
            t.push_str(&format!(" ({})", clean(d)));
        }
        t.push_str("\r\n");
    }
    if only_headers_returned {
        t.push_str(&format!(
            "\r\nThe message is larger than {} bytes: only its headers are returned.\r\n",
            crate::spool::HEAD
        ));
    }
    // The text part is declared us-ascii.
    t.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// A value safe on one header line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;

    fn original(ret_full: Option<bool>) -> StoredMessage {
        StoredMessage {
            id: "0000000000100000001".into(),
            envelope: Envelope {
                direction: Default::default(),
                received_at: "2026-01-02T03:04:05Z".into(),
                peer_addr: "192.0.2.1:1234".into(),
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
                recipients: vec![],
            },
            body: b"Subject: compte rendu\r\nMessage-ID: <m1@x>\r\n\r\nsecret body\r\n".to_vec(),
            rest: None,
        }
    }

    fn failed(notify: u64) -> RecipientReport {
        RecipientReport {
            recipient: Recipient {
                address: "bob@gateway.test.mssante.fr".into(),
                notify,
                orcpt: Some("Bob@Gateway.test.mssante.fr".into()),
            },
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: Some("550 5.1.1 no such user".into()),
        }
    }

    fn report(o: &StoredMessage, rr: Vec<RecipientReport>) -> Option<(Envelope, Vec<u8>)> {
        build(&Report {
            reporting_mta: "smtp.gateway.test.mssante.fr",
            remote_mta: Some("mail.internal"),
            original: o,
            recipients: rr,
            will_retry_until: None,
            now: OffsetDateTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn notify_defaults_to_failure_only_and_never_means_never() {
        assert!(wanted(0, Action::Failed));
        assert!(!wanted(0, Action::Delayed));
        assert!(!wanted(0, Action::Relayed));
        assert!(!wanted(RCPT_NOTIFY_NEVER, Action::Failed));
        assert!(wanted(RCPT_NOTIFY_SUCCESS, Action::Delivered));
        assert!(!wanted(RCPT_NOTIFY_SUCCESS, Action::Failed));
        assert!(wanted(
            RCPT_NOTIFY_DELAY | RCPT_NOTIFY_FAILURE,
            Action::Delayed
        ));
    }

    /// The raw bytes of part `i` of a parsed DSN.
    fn part<'a>(m: &'a mail_parser::Message<'_>, i: usize) -> (String, &'a [u8]) {
        let p = &m.parts[i];
        let ct = p
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_default();
        let raw = m.raw_message();
        (ct, &raw[p.offset_body as usize..p.offset_end as usize])
    }

    #[test]
    fn bounce_carries_status_envid_orcpt_and_only_the_headers_by_default() {
        let o = original(None);
        let (env, text) = report(&o, vec![failed(0)]).expect("a DSN");
        assert_eq!(env.mail_from, "");
        assert_eq!(env.recipients[0].address, "alice@peer-a.test.mssante.fr");
        assert_eq!(env.recipients[0].notify, RCPT_NOTIFY_NEVER);
        let t = String::from_utf8(text.clone()).expect("ascii");
        assert!(!t.contains("secret body"));
        let m = mail_parser::MessageParser::new()
            .parse(&text)
            .expect("parses");
        let ct = m.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(
            ct.attribute("boundary"),
            Some("0000000000100000001/smtp.gateway.test.mssante.fr")
        );
        assert_eq!(m.parts.len(), 4, "the report and its three parts");
        let (ct, status) = part(&m, 2);
        assert_eq!(ct, "message/delivery-status");
        let status = String::from_utf8_lossy(status);
        for field in [
            "Reporting-MTA: dns; smtp.gateway.test.mssante.fr\r\n",
            "Original-Envelope-Id: ENV-42\r\n",
            "Original-Recipient: rfc822;Bob@Gateway.test.mssante.fr\r\n",
            "Final-Recipient: rfc822;bob@gateway.test.mssante.fr\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
        ] {
            assert!(status.contains(field), "missing {field:?} in\n{status}");
        }
        let (ct, headers) = part(&m, 3);
        assert_eq!(ct, "text/rfc822-headers");
        assert!(
            headers.starts_with(b"Subject: compte rendu\r\nMessage-ID: <m1@x>\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(headers)
        );
    }

    #[test]
    fn ret_hdrs_of_a_message_without_headers_returns_no_body_line() {
        let mut o = original(None);
        o.body = b"\r\nsecret body: looks like a header\r\nmore\r\n".to_vec();
        let (_, text) = report(&o, vec![failed(0)]).expect("a DSN");
        assert!(!String::from_utf8_lossy(&text).contains("secret body"));
        let m = mail_parser::MessageParser::new()
            .parse(&text)
            .expect("parses");
        let (ct, headers) = part(&m, 3);
        assert_eq!(ct, "text/rfc822-headers");
        assert!(
            headers.iter().all(|b| b.is_ascii_whitespace()),
            "{}",
            String::from_utf8_lossy(headers)
        );
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let o = original(Some(true));
        let (_, text) = report(&o, vec![failed(RCPT_NOTIFY_FAILURE)]).expect("a DSN");
        let m = mail_parser::MessageParser::new()
            .parse(&text)
            .expect("parses");
        let (ct, returned) = part(&m, 3);
        assert_eq!(ct, "message/rfc822");
        assert!(
            returned.starts_with(&o.body),
            "{}",
            String::from_utf8_lossy(returned)
        );
    }

    #[test]
    fn ret_full_of_a_large_message_returns_its_headers_and_says_so() {
        let mut o = original(Some(true));
        // Loaded for delivery with its body left in the spool file.
        o.rest = Some(crate::spool::Spilled {
            path: "/nonexistent".into(),
            offset: 0,
            len: 40 << 20,
        });
        let (_, text) = report(&o, vec![failed(RCPT_NOTIFY_FAILURE)]).expect("a DSN");
        let m = mail_parser::MessageParser::new()
            .parse(&text)
            .expect("parses");
        let (ct, returned) = part(&m, 3);
        assert_eq!(ct, "text/rfc822-headers");
        assert!(!String::from_utf8_lossy(returned).contains("secret body"));
        let (_, human) = part(&m, 1);
        assert!(
            String::from_utf8_lossy(human).contains("only its headers are returned"),
            "{}",
            String::from_utf8_lossy(human)
        );
    }

    #[test]
    fn no_dsn_to_the_null_sender() {
        let mut o = original(None);
        o.envelope.mail_from.clear();
        assert!(report(&o, vec![failed(0)]).is_none());
    }
}
