//! Reading the messages we relay: their header section (for DSNs with RET=HDRS, the
//! auto-reply loop rules, loop detection and `queue show`), parsed by mail-parser.

use mail_parser::{HeaderName, MessageParser};

/// What we read of a message's header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Length of the header section, the blank line that ends it included; 0 when the
    /// message has no header.
    pub section_len: usize,
    /// `Received:` headers (RFC 5321 §6.3: their count detects mail loops).
    pub received: usize,
    /// `Auto-Submitted:` value, lower case.
    pub auto_submitted: Option<String>,
    /// `Precedence:` value, lower case.
    pub precedence: Option<String>,
    /// A `List-Id:` or `List-Unsubscribe:` header is present.
    pub list: bool,
    /// `Message-ID:` with its angle brackets.
    pub message_id: Option<String>,
    /// `Subject:`, RFC 2047 words decoded.
    pub subject: Option<String>,
    /// `From:` address(es), decoded, as written for a person to read.
    pub from: Option<String>,
}

/// Reads the header section of `message` (the body is not parsed).
pub fn read_headers(message: &[u8]) -> HeaderInfo {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return HeaderInfo::default();
    };
    // The section ends after the last header and the blank line that follows it, if any
    // (a message without body has none).
    let last = parsed
        .headers()
        .last()
        .and_then(|h| usize::try_from(h.offset_end).ok())
        .unwrap_or(0)
        .min(message.len());
    let blank = match &message[last..] {
        [b'\r', b'\n', ..] => 2,
        [b'\n', ..] => 1,
        _ => 0,
    };
    let section_len = last + blank;
    let raw = |name: &'static str| {
        parsed
            .header_raw(name)
            .map(|t| t.trim().to_ascii_lowercase())
    };
    let from = parsed.from().map(|a| {
        a.iter()
            .map(|addr| match (&addr.name, &addr.address) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    HeaderInfo {
        section_len,
        received: parsed
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::Received)
            .count(),
        auto_submitted: raw("Auto-Submitted"),
        precedence: raw("Precedence"),
        list: parsed.header(HeaderName::ListId).is_some()
            || parsed.header(HeaderName::ListUnsubscribe).is_some(),
        message_id: parsed.message_id().map(|id| format!("<{id}>")),
        subject: parsed.subject().map(str::to_string),
        from,
    }
}

/// The header section of a message, up to and including the blank line that ends it: empty
/// when the message has no header at all (it starts with the blank line, or is empty), the
/// whole message when it has no body.
pub fn headers_of(message: &[u8]) -> &[u8] {
    let len = read_headers(message).section_len;
    &message[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_section_ends_at_its_blank_line_and_is_empty_without_headers() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n\r\n"),
            (
                b"Received: from a\r\n\tby b\r\nSubject: b\r\n\r\n\r\nbody\r\n",
                b"Received: from a\r\n\tby b\r\nSubject: b\r\n\r\n",
            ),
            // An empty header section: no body line may pass for a header.
            (b"\r\nbody line: looks like a header\r\nmore\r\n", b""),
            (b"Subject: only headers\r\n", b"Subject: only headers\r\n"),
            (b"", b""),
            (b"not a header line\r\n\r\nbody\r\n", b""),
        ];
        for (message, section) in cases {
            assert_eq!(
                headers_of(message),
                section,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn loop_and_list_headers_are_read() {
        let mut m = String::new();
        for i in 0..51 {
            m.push_str(&format!(
                "Received: from h{i} by h{} ; Thu, 1 Jan 2026 00:00:00 +0000\r\n",
                i + 1
            ));
        }
        m.push_str("Auto-Submitted: Auto-Replied\r\nPrecedence: BULK\r\nList-Id: <l.example>\r\n");
        m.push_str("Message-ID: <m1@peer-a>\r\nFrom: =?utf-8?q?Ren=C3=A9?= <rene@peer-a.test.mssante.fr>\r\n");
        m.push_str("Subject: =?utf-8?q?r=C3=A9sultats?=\r\n\r\nReceived: not a header\r\n");
        let h = read_headers(m.as_bytes());
        assert_eq!(h.received, 51);
        assert_eq!(h.auto_submitted.as_deref(), Some("auto-replied"));
        assert_eq!(h.precedence.as_deref(), Some("bulk"));
        assert!(h.list);
        assert_eq!(h.message_id.as_deref(), Some("<m1@peer-a>"));
        assert_eq!(h.subject.as_deref(), Some("résultats"));
        assert_eq!(
            h.from.as_deref(),
            Some("René <rene@peer-a.test.mssante.fr>")
        );
        let plain = read_headers(b"Subject: x\r\n\r\n");
        assert_eq!(
            (plain.received, plain.list, plain.auto_submitted),
            (0, false, None)
        );
    }
}
