//! The SMTP client without I/O: replies read from bytes (framing here, parsing by
//! smtp-proto's response parser), the capabilities of an EHLO/LHLO reply, the commands we
//! send, and one transaction's exchange with a reply per recipient.
//!
//! The async driver that moves these bytes over TCP and TLS is the `client` module; the
//! relay, `probe`, the load generator and the tests' clients all read replies here.
//!
//! Why not mail-send: its `send()` stops at the first refused recipient and hides the
//! per-recipient replies partial delivery needs, LMTP's per-recipient replies after the
//! body are not exposed, and it builds its own DATA framing where we keep the bytes of
//! the message under our control (dot-stuffing, one added `Received:`).

use std::borrow::Cow;

use smtp_proto::response::parser::{ResponseReceiver, MAX_RESPONSE_LENGTH};

use super::reply::{Enhanced, Reply};

/// Most lines in one reply.
const MAX_REPLY_LINES: usize = 200;
/// Most bytes of one reply on the wire, codes and line ends included. The text itself is
/// bounded by smtp-proto to [`MAX_RESPONSE_LENGTH`] bytes.
const MAX_REPLY_BYTES: usize = 2 * MAX_RESPONSE_LENGTH;

/// A server's bytes that are not a well-formed reply: the session cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that does not start with a three-digit code and a separator.
    #[error("not an SMTP reply: {0:?}")]
    NotAReply(String),
    /// More lines or bytes than any server needs.
    #[error("reply longer than {0} bytes or {MAX_REPLY_LINES} lines")]
    TooLong(usize),
    /// (strict reading) A line ended by LF alone.
    #[error("reply line not ended by CRLF: {0:?}")]
    BareLf(String),
    /// (strict reading) The lines of one reply carry different codes.
    #[error("multi-line reply with mixed codes {0} and {1}")]
    MixedCodes(u16, u16),
}

/// Reads replies out of the bytes a server sends, however they are split.
#[derive(Debug, Default)]
pub struct ReplyReader {
    /// Received and not yet taken as a reply.
    buf: Vec<u8>,
    /// The wire form of the last reply taken, for transcripts.
    last: Vec<u8>,
    /// Refuse bare LF line ends and mixed codes (RFC 5321 §4.2.1): the tests read the
    /// gateway's replies this way; against peers we are as lenient as Postfix.
    strict: bool,
}

impl ReplyReader {
    /// A reader that accepts LF line ends and ignores the codes of continuation lines.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// A reader that refuses anything RFC 5321 does not allow.
    pub fn strict() -> ReplyReader {
        ReplyReader {
            strict: true,
            ..ReplyReader::default()
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet taken as a reply.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes received but not yet taken as a reply.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes received but not yet taken as a reply.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Drops what is buffered: at a STARTTLS upgrade point, bytes the server sent in
    /// plaintext after its 220 must not be read as if they came through TLS.
    pub fn discard(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }

    /// The wire form of the last reply taken (its lines, line ends included).
    pub fn last_wire(&self) -> &[u8] {
        &self.last
    }

    /// The next complete reply, `None` until all its lines are in.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        let mut pos = 0;
        let mut first_code = None;
        for _ in 0..MAX_REPLY_LINES {
            let Some(nl) = memchr::memchr(b'\n', &self.buf[pos..]) else {
                if self.buf.len() > MAX_REPLY_BYTES {
                    return Err(ReplyError::TooLong(MAX_REPLY_BYTES));
                }
                return Ok(None);
            };
            let end = pos + nl + 1;
            if end > MAX_REPLY_BYTES {
                return Err(ReplyError::TooLong(MAX_REPLY_BYTES));
            }
            let line = &self.buf[pos..pos + nl];
            let shown = || String::from_utf8_lossy(line).trim_end().to_string();
            let code = line
                .get(..3)
                .filter(|c| c.iter().all(u8::is_ascii_digit))
                .map(|c| c.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
                .ok_or_else(|| ReplyError::NotAReply(shown()))?;
            if self.strict {
                if !line.ends_with(b"\r") {
                    return Err(ReplyError::BareLf(shown()));
                }
                match first_code {
                    Some(first) if first != code => {
                        return Err(ReplyError::MixedCodes(first, code));
                    }
                    _ => first_code = Some(code),
                }
            }
            pos = end;
            match line.get(3) {
                Some(b'-') => continue,
                None | Some(b' ' | b'\r') => {
                    self.last.clear();
                    self.last.extend(self.buf.drain(..pos));
                    return parse(&self.last).map(Some);
                }
                Some(_) => return Err(ReplyError::NotAReply(shown())),
            }
        }
        Err(ReplyError::TooLong(MAX_REPLY_BYTES))
    }
}

/// Parses one complete reply (all its lines) with smtp-proto.
fn parse(wire: &[u8]) -> Result<Reply, ReplyError> {
    let mut receiver = ResponseReceiver::default();
    let response = match receiver.parse(&mut wire.iter()) {
        Ok(r) => r,
        Err(smtp_proto::Error::ResponseTooLong) => {
            return Err(ReplyError::TooLong(MAX_RESPONSE_LENGTH))
        }
        Err(e) => {
            return Err(ReplyError::NotAReply(format!(
                "{}: {e:?}",
                String::from_utf8_lossy(wire).trim_end()
            )))
        }
    };
    let mut lines: Vec<Cow<'static, str>> = response
        .message
        .split('\n')
        .map(|l| Cow::Owned(l.to_string()))
        .collect();
    let [class, subject, detail] = response.esc;
    let enhanced = match class {
        0 if subject == 0 && detail == 0 => None,
        2 | 4 | 5 => Some(Enhanced(class, subject.into(), detail.into())),
        // Three numbers that are not an RFC 3463 class: part of the text after all.
        _ => {
            if let Some(first) = lines.first_mut() {
                *first = Cow::Owned(format!("{class}.{subject}.{detail} {first}"));
            }
            None
        }
    };
    Ok(Reply {
        code: response.code,
        enhanced,
        lines,
    })
}

/// What a server offers in its EHLO/LHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Its name (first word of the reply).
    pub name: String,
    /// The extension lines as sent, for reports.
    pub extensions: Vec<String>,
    /// PIPELINING: MAIL and RCPT replies are read in one batch.
    pub pipelining: bool,
    /// CHUNKING: BDAT, no dot-stuffing.
    pub chunking: bool,
    /// 8BITMIME.
    pub eight_bit: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// STARTTLS.
    pub starttls: bool,
}

impl Capabilities {
    /// Reads the capabilities out of a positive EHLO/LHLO reply.
    pub fn of(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities {
            name: reply
                .lines
                .first()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("")
                .to_string(),
            ..Capabilities::default()
        };
        for line in reply.lines.iter().skip(1) {
            caps.extensions.push(line.to_string());
            let keyword = line.split_whitespace().next().unwrap_or("");
            let flag = match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => &mut caps.pipelining,
                "CHUNKING" => &mut caps.chunking,
                "8BITMIME" => &mut caps.eight_bit,
                "SMTPUTF8" => &mut caps.smtputf8,
                "STARTTLS" => &mut caps.starttls,
                _ => continue,
            };
            *flag = true;
        }
        caps
    }
}

/// The envelope of one message to send.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The reverse path (empty for `<>`).
    pub mail_from: &'a str,
    /// Declared BODY=8BITMIME (sent when the server offers it).
    pub eight_bit: bool,
    /// Declared SMTPUTF8 (sent when the server offers it).
    pub smtputf8: bool,
    /// The recipients to try, in order.
    pub recipients: &'a [String],
}

/// `MAIL FROM` with the parameters the server supports, CRLF included.
pub fn mail_command(envelope: &Envelope<'_>, caps: &Capabilities) -> String {
    let mut mail = format!("MAIL FROM:<{}>", envelope.mail_from);
    if envelope.eight_bit && caps.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if envelope.smtputf8 && caps.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    mail
}

/// `RCPT TO`, CRLF included.
pub fn rcpt_command(recipient: &str) -> String {
    format!("RCPT TO:<{recipient}>\r\n")
}

/// The `BDAT` command that carries a message of `len` bytes in one chunk.
pub fn bdat_command(len: u64) -> String {
    format!("BDAT {len} LAST\r\n")
}

/// The DATA payload of `parts` (sent one after the other as one message): dot-stuffed,
/// ended by a line break if it lacks one, then `.` CRLF.
pub fn data_payload(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + len / 64 + 8);
    let mut bol = true;
    for part in parts {
        dot_stuff(&mut out, part, &mut bol);
    }
    if !bol {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Copies `data` into `out` doubling every `.` that starts a line (RFC 5321 §4.5.2);
/// `bol` carries "at the beginning of a line" across calls.
pub fn dot_stuff(out: &mut Vec<u8>, data: &[u8], bol: &mut bool) {
    let mut rest = data;
    while !rest.is_empty() {
        if *bol && rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..=i]);
                rest = &rest[i + 1..];
                *bol = true;
            }
            None => {
                out.extend_from_slice(rest);
                *bol = false;
                rest = &[];
            }
        }
    }
}

/// What the driver does next in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these commands, then read a reply.
    Send(String),
    /// Write the message (BDAT when the server offers CHUNKING, else the DATA payload),
    /// then read a reply.
    SendBody {
        /// Send as one `BDAT … LAST` chunk.
        chunking: bool,
    },
    /// Read the next reply (pipelined or per-recipient replies).
    Read,
    /// Nothing is to be sent: write `RSET`, read its reply and give it to
    /// [`Exchange::on_reply`].
    Reset,
    /// The results are known: [`Exchange::results`].
    Done,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the MAIL reply.
    Mail,
    /// Waiting for the reply to RCPT number `.0`.
    Rcpt(usize),
    /// Waiting for the 354 after DATA.
    Data,
    /// Waiting for the reply (LMTP: the `.0`-th per-recipient reply) after the body.
    Body(usize),
    /// Waiting for the RSET reply.
    Reset,
    Done,
}

/// One transaction with a reply per recipient: MAIL, RCPT for each recipient
/// (pipelined when the server offers it), DATA or BDAT only when at least one recipient
/// was accepted, and for LMTP one reply per accepted recipient after the body.
#[derive(Debug)]
pub struct Exchange {
    lmtp: bool,
    pipelining: bool,
    chunking: bool,
    /// The RCPT commands, in order.
    rcpts: Vec<String>,
    stage: Stage,
    mail: Option<Reply>,
    /// The reply that decides each recipient's fate, once known.
    results: Vec<Option<Reply>>,
    /// The recipients the server accepted at RCPT.
    accepted: Vec<usize>,
}

impl Exchange {
    /// Starts a transaction; the first step is always [`Step::Send`].
    pub fn start(envelope: &Envelope<'_>, caps: &Capabilities, lmtp: bool) -> (Exchange, Step) {
        let rcpts: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| rcpt_command(r))
            .collect();
        let mut first = mail_command(envelope, caps);
        if caps.pipelining {
            rcpts.iter().for_each(|r| first.push_str(r));
        }
        let exchange = Exchange {
            lmtp,
            pipelining: caps.pipelining,
            chunking: caps.chunking,
            results: vec![None; rcpts.len()],
            rcpts,
            stage: Stage::Mail,
            mail: None,
            accepted: Vec::new(),
        };
        (exchange, Step::Send(first))
    }

    /// Takes the server's next reply; `Err` when the reply to RSET refuses it (the
    /// session is then unusable).
    pub fn on_reply(&mut self, reply: Reply) -> Result<Step, Reply> {
        let positive = (200..300).contains(&reply.code);
        let step = match self.stage {
            Stage::Mail => {
                let n = self.rcpts.len();
                self.mail = Some(reply);
                if self.pipelining && n > 0 {
                    self.stage = Stage::Rcpt(0);
                    Step::Read
                } else if !positive || n == 0 {
                    self.refuse_all_with_mail();
                    self.stage = Stage::Reset;
                    Step::Reset
                } else {
                    self.stage = Stage::Rcpt(0);
                    Step::Send(self.rcpts[0].clone())
                }
            }
            Stage::Rcpt(i) => {
                if let Some(slot) = self.results.get_mut(i) {
                    *slot = Some(reply);
                }
                if positive {
                    self.accepted.push(i);
                }
                let next = i + 1;
                if next < self.rcpts.len() {
                    self.stage = Stage::Rcpt(next);
                    if self.pipelining {
                        Step::Read
                    } else {
                        Step::Send(self.rcpts[next].clone())
                    }
                } else if !self.mail.as_ref().is_some_and(is_success) {
                    // Pipelined: the RCPT replies after a refused MAIL say nothing.
                    self.refuse_all_with_mail();
                    self.stage = Stage::Reset;
                    Step::Reset
                } else if self.accepted.is_empty() {
                    self.stage = Stage::Reset;
                    Step::Reset
                } else if self.chunking {
                    self.stage = Stage::Body(0);
                    Step::SendBody { chunking: true }
                } else {
                    self.stage = Stage::Data;
                    Step::Send("DATA\r\n".into())
                }
            }
            Stage::Data => {
                if reply.code == 354 {
                    self.stage = Stage::Body(0);
                    Step::SendBody { chunking: false }
                } else {
                    self.decide_accepted(&reply);
                    self.stage = Stage::Reset;
                    Step::Reset
                }
            }
            Stage::Body(k) if self.lmtp => {
                if let Some(&i) = self.accepted.get(k) {
                    self.results[i] = Some(reply);
                }
                if k + 1 < self.accepted.len() {
                    self.stage = Stage::Body(k + 1);
                    Step::Read
                } else {
                    self.stage = Stage::Done;
                    Step::Done
                }
            }
            Stage::Body(_) => {
                self.decide_accepted(&reply);
                self.stage = Stage::Done;
                Step::Done
            }
            Stage::Reset => {
                if !positive {
                    return Err(reply);
                }
                self.stage = Stage::Done;
                Step::Done
            }
            Stage::Done => Step::Done,
        };
        Ok(step)
    }

    /// The connection broke while reading `Stage::Body` replies of LMTP: the recipients
    /// already answered keep their reply (a 250 there means delivered: sending again
    /// would duplicate), the rest get a temporary failure naming `error`. `None` when
    /// nothing can be said per recipient (the whole attempt is unknown).
    pub fn connection_lost(&mut self, error: &str) -> Option<Vec<Reply>> {
        let Stage::Body(k) = self.stage else {
            return None;
        };
        if !self.lmtp {
            return None;
        }
        let lost = Reply::new(
            451,
            Enhanced(4, 4, 2),
            format!("connection lost before this recipient's reply: {error}"),
        );
        for &i in self.accepted.get(k..).unwrap_or(&[]) {
            self.results[i] = Some(lost.clone());
        }
        self.stage = Stage::Done;
        Some(self.results())
    }

    /// The reply that decided each recipient's fate, in the order of the envelope's
    /// recipients.
    pub fn results(&self) -> Vec<Reply> {
        self.results
            .iter()
            .map(|r| {
                r.clone().unwrap_or_else(|| {
                    Reply::new(451, Enhanced(4, 4, 2), "no reply for this recipient")
                })
            })
            .collect()
    }

    fn refuse_all_with_mail(&mut self) {
        if let Some(mail) = &self.mail {
            self.results = vec![Some(mail.clone()); self.rcpts.len()];
        }
    }

    fn decide_accepted(&mut self, reply: &Reply) {
        for &i in &self.accepted {
            self.results[i] = Some(reply.clone());
        }
    }
}

/// 2xx.
fn is_success(reply: &Reply) -> bool {
    (200..300).contains(&reply.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut ReplyReader) -> Vec<Reply> {
        std::iter::from_fn(|| reader.next_reply().expect("well formed")).collect()
    }

    #[test]
    fn replies_are_read_however_the_bytes_are_split() {
        let wire =
            b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n550 5.1.1 no such user\r\n";
        for cut in 0..wire.len() {
            let mut reader = ReplyReader::strict();
            reader.feed(&wire[..cut]);
            let mut got = read_all(&mut reader);
            reader.feed(&wire[cut..]);
            got.extend(read_all(&mut reader));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].code, 250);
            assert_eq!(got[0].lines, ["mx.example", "PIPELINING", "CHUNKING"]);
            assert_eq!(got[1].code, 550);
            assert_eq!(got[1].enhanced, Some(Enhanced(5, 1, 1)));
            assert_eq!(got[1].text(), "no such user");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn malformed_replies_are_errors_and_strictness_is_a_choice() {
        let mut r = ReplyReader::new();
        r.feed(b"hello there\r\n");
        assert!(matches!(r.next_reply(), Err(ReplyError::NotAReply(_))));
        let mut r = ReplyReader::new();
        r.feed(b"250x\r\n");
        assert!(matches!(r.next_reply(), Err(ReplyError::NotAReply(_))));

        let mut lenient = ReplyReader::new();
        lenient.feed(b"250-a\n251 b\n");
        let reply = lenient.next_reply().expect("lenient").expect("complete");
        assert_eq!((reply.code, reply.lines.len()), (250, 2));
        let mut strict = ReplyReader::strict();
        strict.feed(b"250 a\n");
        assert!(matches!(strict.next_reply(), Err(ReplyError::BareLf(_))));
        let mut strict = ReplyReader::strict();
        strict.feed(b"250-a\r\n251 b\r\n");
        assert_eq!(strict.next_reply(), Err(ReplyError::MixedCodes(250, 251)));
    }

    #[test]
    fn endless_replies_are_refused_not_buffered() {
        let mut r = ReplyReader::new();
        r.feed(&b"250-x\r\n".repeat(MAX_REPLY_LINES + 1));
        assert!(matches!(r.next_reply(), Err(ReplyError::TooLong(_))));
        let mut r = ReplyReader::new();
        r.feed(&vec![b'5'; MAX_REPLY_BYTES + 1]);
        assert!(matches!(r.next_reply(), Err(ReplyError::TooLong(_))));
        let mut r = ReplyReader::new();
        r.feed(format!("250 {}\r\n", "y".repeat(MAX_RESPONSE_LENGTH + 10)).as_bytes());
        assert!(matches!(r.next_reply(), Err(ReplyError::TooLong(_))));
    }

    #[test]
    fn enhanced_codes_are_read_only_when_they_are_rfc_3463() {
        let mut r = ReplyReader::new();
        r.feed(b"451 4.7.26 later\r\n250 1.2.3 odd\r\n354 go ahead\r\n");
        let replies = read_all(&mut r);
        assert_eq!(replies[0].enhanced, Some(Enhanced(4, 7, 26)));
        assert_eq!(replies[1].enhanced, None);
        assert_eq!(replies[1].text(), "1.2.3 odd");
        assert_eq!(replies[2].enhanced, None);
        assert_eq!(replies[2].status(), Enhanced(3, 0, 0));
        assert_eq!(replies[0].to_string(), "451 4.7.26 later");
        assert_eq!(r.last_wire(), b"354 go ahead\r\n");
    }

    #[test]
    fn capabilities_are_read_from_the_ehlo_lines() {
        let mut r = ReplyReader::new();
        r.feed(b"250-mx.example greets you\r\n250-pipelining\r\n250-SIZE 100\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
        let caps = Capabilities::of(&r.next_reply().expect("ok").expect("complete"));
        assert_eq!(caps.name, "mx.example");
        assert!(caps.pipelining && caps.starttls && caps.eight_bit);
        assert!(!caps.chunking && !caps.smtputf8);
        assert_eq!(
            caps.extensions,
            ["pipelining", "SIZE 100", "STARTTLS", "8BITMIME"]
        );
    }

    #[test]
    fn leading_dots_are_doubled_across_parts() {
        let mut out = Vec::new();
        let mut bol = true;
        dot_stuff(&mut out, b".a\r\nb.\r\n", &mut bol);
        dot_stuff(&mut out, b"..c\r\n.", &mut bol);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n..");
        assert!(!bol);
        assert_eq!(
            data_payload(&[b"X: 1\r\n", b".\r\nend"]),
            b"X: 1\r\n..\r\nend\r\n.\r\n"
        );
    }

    fn reply(code: u16) -> Reply {
        Reply::new(code, Enhanced((code / 100) as u8, 0, 0), format!("r{code}"))
    }

    fn caps(pipelining: bool, chunking: bool) -> Capabilities {
        Capabilities {
            pipelining,
            chunking,
            ..Capabilities::default()
        }
    }

    fn recipients(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}@example")).collect()
    }

    /// Runs an exchange against scripted replies; returns the steps and the results.
    fn run(caps: &Capabilities, lmtp: bool, n: usize, script: &[u16]) -> (Vec<Step>, Vec<u16>) {
        let rcpts = recipients(n);
        let envelope = Envelope {
            mail_from: "a@example",
            eight_bit: false,
            smtputf8: false,
            recipients: &rcpts,
        };
        let (mut ex, first) = Exchange::start(&envelope, caps, lmtp);
        let mut steps = vec![first];
        for &code in script {
            let step = ex.on_reply(reply(code)).expect("RSET accepted");
            steps.push(step.clone());
            if step == Step::Done {
                break;
            }
        }
        (steps, ex.results().iter().map(|r| r.code).collect())
    }

    #[test]
    fn pipelined_transaction_reads_every_rcpt_reply_then_sends_data() {
        let (steps, results) = run(
            &caps(true, false),
            false,
            3,
            &[250, 250, 550, 250, 354, 250],
        );
        assert_eq!(
            steps,
            [
                Step::Send(
                    "MAIL FROM:<a@example>\r\nRCPT TO:<r0@example>\r\nRCPT TO:<r1@example>\r\nRCPT TO:<r2@example>\r\n"
                        .into()
                ),
                Step::Read,
                Step::Read,
                Step::Read,
                Step::Send("DATA\r\n".into()),
                Step::SendBody { chunking: false },
                Step::Done,
            ]
        );
        assert_eq!(results, [250, 550, 250]);
    }

    #[test]
    fn refused_mail_or_no_accepted_recipient_sends_no_body() {
        let (steps, results) = run(&caps(true, false), false, 2, &[550, 250, 250, 250]);
        assert_eq!(steps[3], Step::Reset);
        assert_eq!(results, [550, 550]);
        let (steps, results) = run(&caps(false, false), false, 2, &[451, 250]);
        assert_eq!(steps[1], Step::Reset);
        assert_eq!(results, [451, 451]);
        let (steps, results) = run(&caps(false, true), false, 2, &[250, 550, 450, 250]);
        assert_eq!(
            steps[1..],
            [
                Step::Send("RCPT TO:<r0@example>\r\n".into()),
                Step::Send("RCPT TO:<r1@example>\r\n".into()),
                Step::Reset,
                Step::Done
            ]
        );
        assert_eq!(results, [550, 450]);
    }

    #[test]
    fn refused_data_decides_the_accepted_recipients_only() {
        let (steps, results) = run(&caps(false, false), false, 2, &[250, 250, 550, 451, 250]);
        assert_eq!(steps[4], Step::Reset);
        assert_eq!(results, [451, 550]);
    }

    #[test]
    fn lmtp_reads_one_reply_per_accepted_recipient_and_keeps_them_when_the_line_drops() {
        let (steps, results) = run(&caps(true, true), true, 3, &[250, 250, 550, 250, 250, 452]);
        assert_eq!(steps[4], Step::SendBody { chunking: true });
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(results, [250, 550, 452]);

        let rcpts = recipients(3);
        let envelope = Envelope {
            mail_from: "",
            eight_bit: false,
            smtputf8: false,
            recipients: &rcpts,
        };
        let (mut ex, _) = Exchange::start(&envelope, &caps(true, true), true);
        assert_eq!(
            ex.connection_lost("reset"),
            None,
            "before the body nothing is known"
        );
        for code in [250, 250, 250, 250] {
            ex.on_reply(reply(code)).expect("step");
        }
        ex.on_reply(reply(250)).expect("first recipient delivered");
        let results = ex.connection_lost("reset").expect("per-recipient results");
        assert_eq!(
            results.iter().map(|r| r.code).collect::<Vec<_>>(),
            [250, 451, 451]
        );
        assert!(results[1].text().contains("connection lost"));
    }

    #[test]
    fn a_refused_rset_ends_the_session() {
        let rcpts = recipients(1);
        let envelope = Envelope {
            mail_from: "a@example",
            eight_bit: true,
            smtputf8: true,
            recipients: &rcpts,
        };
        let mut c = caps(false, false);
        c.eight_bit = true;
        let (mut ex, first) = Exchange::start(&envelope, &c, false);
        assert_eq!(
            first,
            Step::Send("MAIL FROM:<a@example> BODY=8BITMIME\r\n".into())
        );
        assert_eq!(ex.on_reply(reply(550)), Ok(Step::Reset));
        assert_eq!(ex.on_reply(reply(421)).map_err(|r| r.code), Err(421));
    }
}
