//! SMTP replies with RFC 3463 enhanced status codes.
//!
//! Every reply the gateway sends carries an enhanced status code, except the greeting and
//! the EHLO/HELO answer, which RFC 2034 §3 exempts.

use std::borrow::Cow;
use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code of RFC 5321.
    pub code: u16,
    /// Absent only for the greeting and the EHLO/HELO answer (RFC 2034 §3).
    pub enhanced: Option<Enhanced>,
    /// The text lines; a multi-line reply repeats the code with `-` on all but the last.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A single-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<Cow<'static, str>>) -> Self {
        Self {
            code,
            enhanced: None,
            lines,
        }
    }

    /// Whether the reply is a positive completion or intermediate (2xx, 3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Whether the reply is a permanent failure (5xx).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form (CRLF-terminated lines) to `out`.
    ///
    /// Text is sanitised: CR, LF and other control characters in a line (which could come
    /// from a peer's input echoed back) are replaced by spaces so a reply never splits.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            self.write_line(out, ' ', "");
        }
        for (i, line) in self.lines.iter().enumerate() {
            self.write_line(out, if i == last { ' ' } else { '-' }, line);
        }
    }

    fn write_line(&self, out: &mut Vec<u8>, sep: char, text: &str) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}{}", self.code, sep);
        if let Some(e) = self.enhanced {
            let _ = write!(out, "{e} ");
        }
        out.extend(
            text.bytes()
                .map(|b| if b.is_ascii_control() { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_carries_enhanced_code() {
        let r = Reply::new(
            530,
            Enhanced(5, 7, 0),
            "Must issue a STARTTLS command first",
        );
        assert_eq!(
            r.to_string(),
            "530 5.7.0 Must issue a STARTTLS command first"
        );
    }

    #[test]
    fn multi_line_uses_dash_continuations() {
        let r = Reply::plain(
            250,
            vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()],
        );
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn control_characters_never_split_a_reply() {
        let r = Reply::new(501, Enhanced(5, 5, 4), "bad\r\n250 injected");
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"501 5.5.4 bad  250 injected\r\n");
    }
}
