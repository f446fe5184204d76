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

    /// Whether the reply is a positive completion (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The text of every line, joined by a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The enhanced status code, or the one the basic code implies (`4.0.0` for a 451
    /// without one).
    pub fn status(&self) -> Enhanced {
        self.enhanced
            .unwrap_or(Enhanced((self.code / 100) as u8, 0, 0))
    }

    /// Appends the wire form (CRLF-terminated lines) to `out`.
    ///
    /// Text is sanitised: CR, LF and other control characters in a line (which could come
    /// from a peer's input echoed back) are replaced by spaces so a reply never splits;
    /// the reply is ASCII (RFC 5321 without SMTPUTF8: accented Latin letters lose their
    /// accent, anything else becomes `?`), and no line exceeds 512 bytes with its CRLF
    /// (RFC 5321 §4.5.3.1.5: longer text is cut and ends with `...`).
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
        let start = out.len() - line_start_len(self.code, self.enhanced);
        for c in text.chars() {
            out.push(ascii_of(c));
        }
        if out.len() - start > MAX_LINE - 2 {
            out.truncate(start + MAX_LINE - 5);
            out.extend_from_slice(b"...");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The longest reply line, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_LINE: usize = 512;

/// Bytes written before a line's text: code, separator, enhanced code and its space.
fn line_start_len(code: u16, enhanced: Option<Enhanced>) -> usize {
    code.to_string().len() + 1 + enhanced.map_or(0, |e| e.to_string().len() + 1)
}

/// One ASCII byte for a character of reply text.
fn ascii_of(c: char) -> u8 {
    let folded = match c {
        c if c.is_ascii_control() => ' ',
        c if c.is_ascii() => c,
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'A',
        'ç' => 'c',
        'Ç' => 'C',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'È' | 'É' | 'Ê' | 'Ë' => 'E',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'Ì' | 'Í' | 'Î' | 'Ï' => 'I',
        'ñ' => 'n',
        'Ñ' => 'N',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' => 'O',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'Ù' | 'Ú' | 'Û' | 'Ü' => 'U',
        'ý' | 'ÿ' => 'y',
        '\u{2019}' | '\u{2018}' => '\'',
        _ => '?',
    };
    folded as u8
}

/// One line, as logs and DSN diagnostic codes want it: the lines of a multi-line reply
/// joined by a space, sanitised as on the wire.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = Reply {
            code: self.code,
            enhanced: self.enhanced,
            lines: vec![Cow::Owned(self.text())],
        };
        let mut out = Vec::new();
        one.write_to(&mut out);
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
    fn replies_are_ascii_and_at_most_512_bytes_a_line() {
        let r = Reply::new(530, Enhanced(5, 7, 1), "IGC Sant\u{e9} \u{2192} \u{1F600}");
        assert_eq!(r.to_string(), "530 5.7.1 IGC Sante ? ?");
        let long = Reply::new(550, Enhanced(5, 7, 1), "x".repeat(2000));
        let mut out = Vec::new();
        long.write_to(&mut out);
        assert_eq!(out.len(), MAX_LINE);
        assert!(out.ends_with(b"...\r\n"));
        let multi = Reply::plain(250, vec!["y".repeat(600).into(), "ok".into()]);
        let mut out = Vec::new();
        multi.write_to(&mut out);
        for line in out.split_inclusive(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE && line.is_ascii());
        }
    }

    #[test]
    fn control_characters_never_split_a_reply() {
        let r = Reply::new(501, Enhanced(5, 5, 4), "bad\r\n250 injected");
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"501 5.5.4 bad  250 injected\r\n");
    }
}
