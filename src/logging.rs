//! Log output that a peer cannot forge: every control character inside a log record (CR,
//! LF, NUL, ESC...) is written escaped, so a value taken from a certificate or an SMTP
//! command can never start a new line or rewrite the terminal.
//!
//! The escaping happens once, at the writer, for every record and every field, whatever
//! the call site: `tracing`'s text format writes values as they are. (The JSON format
//! escapes control characters itself; the writer leaves it nothing to do.)
//!
//! The JSON format is [`JsonFormat`]: every field keeps its type (strings, numbers,
//! booleans, and arrays for the fields of [`LIST_FIELDS`]), an unknown value is absent
//! rather than `"None"`, and the fields of the session span are under `span`. The fields
//! of each kind of decision are described by `docs/log-schema.json`, which a test checks
//! real lines against.
use std::fmt as core_fmt;
use std::io::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The fields whose value is a list: logged with [`list`], written as JSON arrays.
pub const LIST_FIELDS: &[&str] = &["rcpts", "local_domains", "noted"];

/// A list of strings for a log field named in [`LIST_FIELDS`]: log it with `%`. It
/// displays as a JSON array, which the JSON format writes as an array and the human format
/// shows as it is.
pub struct List(String);

/// `items` as a [`List`].
pub fn list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> List {
    let items: Vec<String> = items.into_iter().map(|i| i.as_ref().to_owned()).collect();
    // Serialising strings cannot fail.
    List(serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned()))
}

impl core_fmt::Display for List {
    fn fmt(&self, f: &mut core_fmt::Formatter<'_>) -> core_fmt::Result {
        f.write_str(&self.0)
    }
}

/// `time` as a log field: RFC 3339 in UTC (`2026-11-26T10:53:42Z`), as the record's own
/// `timestamp` is written.
pub fn time(time: time::OffsetDateTime) -> String {
    time.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.unix_timestamp().to_string())
}

/// The subscriber of `log.format = "json"`: `filter`, then [`JsonFormat`] (span fields
/// kept as JSON by `JsonFields`), written to `writer` through [`EscapingWriter`]. `serve`
/// installs it globally; the tests and the benchmark use this same one.
pub fn json_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> tracing_subscriber::fmt::Subscriber<
    JsonFields,
    JsonFormat,
    tracing_subscriber::EnvFilter,
    EscapingWriter<W>,
>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(EscapingWriter::new(writer, false))
        .fmt_fields(JsonFields::new())
        .event_format(JsonFormat)
        .finish()
}

/// One JSON object per record: `timestamp`, `level`, the event's fields (with `message`),
/// `target`, and `span` (the current span's name and fields) when there is one.
/// `tracing-log`'s `log.*` fields, which carry a dependency's source path, are left out.
pub struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> core_fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        // Each key and value is serialised by serde_json straight into one buffer, in
        // order (timestamp first).
        let mut out = Fields(Vec::with_capacity(512));
        out.0.push(b'{');
        out.entry("timestamp", &timestamp);
        out.entry("level", meta.level().as_str());
        event.record(&mut out);
        out.entry("target", meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            out.key("span");
            out.0.extend_from_slice(b"{\"name\":");
            out.value(span.name());
            // With `JsonFields`, a span's formatted fields are a JSON object: its members
            // follow the name.
            if let Some(text) = span.extensions().get::<FormattedFields<JsonFields>>() {
                let members = text.trim().trim_start_matches('{').trim_end_matches('}');
                if !members.trim().is_empty() {
                    out.0.push(b',');
                    out.0.extend_from_slice(members.as_bytes());
                }
            }
            out.0.push(b'}');
        }
        out.0.extend_from_slice(b"}\n");
        // serde_json writes UTF-8.
        writer.write_str(std::str::from_utf8(&out.0).map_err(|_| core_fmt::Error)?)
    }
}

/// A record being written: `{` and the members so far.
struct Fields(Vec<u8>);

impl Fields {
    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.value(key);
        self.0.push(b':');
    }

    fn value<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Serialising strings, numbers and JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, value);
    }

    fn entry<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.key(key);
        self.value(value);
    }

    fn put<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if !field.name().starts_with("log.") {
            self.entry(field.name(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, &value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn core_fmt::Debug) {
        let text = format!("{value:?}");
        if LIST_FIELDS.contains(&field.name()) {
            // Written again from its parsed form, so only a JSON array of strings passes.
            if let Ok(list) = serde_json::from_str::<Vec<String>>(&text) {
                self.put(field, &list);
                return;
            }
        }
        self.put(field, &text);
    }
}

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
