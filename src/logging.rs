//! Log output that a peer cannot forge: every control character inside a log record (CR,
//! LF, NUL, ESC...) is written escaped, so a value taken from a certificate or an SMTP
//! command can never start a new line or rewrite the terminal.
//!
//! The escaping happens once, at the writer, for every record and every field, whatever
//! the call site: `tracing`'s text format writes values as they are. (The JSON format
//! escapes control characters itself; the writer leaves it nothing to do.)
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Appends `text` to `out` with control characters escaped (`\r`, `\n`, `\t`, `\0`,
/// `\x1b`...), except those `keep` allows.
fn escape_into(text: &[u8], keep: impl Fn(u8) -> bool, out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b if keep(b) => out.push(b),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\0' => out.extend_from_slice(b"\\0"),
            0x00..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
}

/// `text` with its control characters escaped, for messages that quote a peer's input
/// outside the log (reports, CLI output).
pub fn escape_control(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    escape_into(text.as_bytes(), |_| false, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A [`MakeWriter`] whose writers escape control characters in each record, keeping only
/// the newline that ends it (and ESC when `ansi` colours are on).
pub struct EscapingWriter<M> {
    inner: M,
    ansi: bool,
}

impl<M> EscapingWriter<M> {
    /// Wraps `inner`; `ansi`: colour escape sequences are expected and kept.
    pub fn new(inner: M, ansi: bool) -> Self {
        EscapingWriter { inner, ansi }
    }
}

/// The writer of one record.
pub struct Escaping<W> {
    inner: W,
    ansi: bool,
}

impl<W: Write> Write for Escaping<W> {
    /// `tracing`'s formatter hands each record over in one call, ending with its newline.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        let ansi = self.ansi;
        let keep = |b: u8| ansi && b == 0x1b;
        // Nearly every record has nothing to escape: write it as it is, no copy.
        if !body.iter().any(|&b| (b < 0x20 || b == 0x7f) && !keep(b)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        escape_into(body, keep, &mut out);
        out.extend_from_slice(end);
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapingWriter<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_final_newline_only() {
        let mut out = Vec::new();
        let mut w = Escaping {
            inner: &mut out,
            ansi: false,
        };
        w.write_all(b"peer_dn=CN=evil\r\n2026-01-01 INFO forged\0 \x1b[31m\n")
            .expect("write");
        assert_eq!(
            out,
            b"peer_dn=CN=evil\\r\\n2026-01-01 INFO forged\\0 \\x1b[31m\n".to_vec()
        );
    }

    #[test]
    fn colours_survive_on_a_terminal() {
        let mut out = Vec::new();
        let mut w = Escaping {
            inner: &mut out,
            ansi: true,
        };
        w.write_all(b"\x1b[32mINFO\x1b[0m a\nb\n").expect("write");
        assert_eq!(out, b"\x1b[32mINFO\x1b[0m a\\nb\n".to_vec());
    }

    #[test]
    fn escapes_for_other_outputs() {
        assert_eq!(escape_control("a\r\nb\u{0}c"), "a\\r\\nb\\0c");
        assert_eq!(escape_control("Sant\u{e9}"), "Sant\u{e9}");
    }
}
