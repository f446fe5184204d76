//! The DATA body decoder: finds the end of the message, removes dot-stuffing and detects
//! bare CR and bare LF.
//!
//! Only `CRLF . CRLF` ends a message (RFC 5321 §4.1.1.4). A line ending is CRLF and nothing
//! else: a bare LF or a bare CR is recorded (the message is then refused once its end is
//! reached) and never starts a line, so `\n.\n` or `\r.\r` can never end a message. That is
//! what defeats SMTP smuggling, where a second message hides behind a line ending that one
//! server takes for the end of data and the next one does not.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
    /// At the start of a line (after CRLF, or at the start of the body).
    LineStart,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
}

/// One step of decoding: how much input was consumed, which part of it is message body,
/// and whether the end of data was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input consumed by this step.
    pub consumed: usize,
    /// The body bytes found, as a range of the input (a sub-range of `0..consumed`).
    pub body: Range<usize>,
    /// The terminating `CRLF.CRLF` was consumed.
    pub end: bool,
}

/// A streaming decoder for one DATA body.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    /// A bare CR or LF was seen somewhere in the body.
    bare_newline: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    /// A decoder positioned at the start of a body (right after the 354 reply).
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
            bare_newline: false,
        }
    }

    /// Whether a bare CR or LF was seen so far.
    pub fn saw_bare_newline(&self) -> bool {
        self.bare_newline
    }

    /// Decodes from the start of `input` and returns one contiguous run of body bytes.
    ///
    /// A run stops before a stuffed dot (which is dropped) and at the end of data; the
    /// caller calls again with the rest of the input until it is consumed or `end` is set.
    pub fn decode(&mut self, input: &[u8]) -> Step {
        let mut start = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Text => {
                    // Fast path: skip to the next CR or LF.
                    match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                        None => {
                            i = input.len();
                            continue;
                        }
                        Some(off) => {
                            i += off;
                            if input[i] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.bare_newline = true;
                            }
                        }
                    }
                }
                State::Cr => match b {
                    b'\n' => self.state = State::LineStart,
                    b'\r' => self.bare_newline = true,
                    _ => {
                        self.bare_newline = true;
                        self.state = State::Text;
                    }
                },
                State::LineStart => match b {
                    b'.' => {
                        // Either the terminator or a stuffed dot: the body run ends here
                        // and the dot itself is never part of the body.
                        self.state = State::Dot;
                        if i > start {
                            return Step {
                                consumed: i + 1,
                                body: start..i,
                                end: false,
                            };
                        }
                        start = i + 1;
                    }
                    b'\r' => self.state = State::Cr,
                    b'\n' => {
                        self.bare_newline = true;
                        self.state = State::Text;
                    }
                    _ => self.state = State::Text,
                },
                State::Dot => match b {
                    b'\r' => {
                        self.state = State::DotCr;
                        start = i + 1;
                    }
                    b'\n' => {
                        // ".\n" is not an end: the dot was stuffing, the LF is bare.
                        self.bare_newline = true;
                        self.state = State::Text;
                    }
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return Step {
                            consumed: i + 1,
                            body: start..start,
                            end: true,
                        };
                    }
                    // ".\r" followed by anything else: the dot was stuffing and the CR is
                    // bare. The message will be refused for it, so the lone CR is simply
                    // left out of the body; the current byte is decoded again as text.
                    self.bare_newline = true;
                    self.state = State::Text;
                    start = i;
                    continue;
                }
            }
            i += 1;
        }
        // A held-back `.` or `.` CR was already excluded by moving `start` past it.
        Step {
            consumed: input.len(),
            body: start..input.len(),
            end: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes and returns (body, ended, bare, rest).
    fn run(input: &[u8], piece: usize) -> (Vec<u8>, bool, bool, Vec<u8>) {
        let mut d = DataDecoder::new();
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            if pending.is_empty() {
                if fed >= input.len() {
                    return (body, false, d.saw_bare_newline(), Vec::new());
                }
                let end = (fed + piece).min(input.len());
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            let step = d.decode(&pending);
            body.extend_from_slice(&pending[step.body.clone()]);
            pending.drain(..step.consumed);
            if step.end {
                let mut rest = pending.clone();
                rest.extend_from_slice(&input[fed..]);
                return (body, true, d.saw_bare_newline(), rest);
            }
        }
    }

    fn all_piece_sizes(input: &[u8]) -> (Vec<u8>, bool, bool, Vec<u8>) {
        let whole = run(input, input.len().max(1));
        for piece in 1..=input.len().max(1) {
            assert_eq!(run(input, piece), whole, "piece size {piece}");
        }
        whole
    }

    #[test]
    fn plain_message_ends_at_crlf_dot_crlf() {
        let (body, end, bare, rest) = all_piece_sizes(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
        assert!(end);
        assert!(!bare);
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        let (body, end, _, rest) = all_piece_sizes(b".\r\n");
        assert!(body.is_empty());
        assert!(end);
        assert!(rest.is_empty());
    }

    #[test]
    fn stuffed_dots_are_removed() {
        let (body, end, bare, _) = all_piece_sizes(b"..a\r\n...\r\nb.c\r\n.\r\n");
        assert_eq!(body, b".a\r\n..\r\nb.c\r\n");
        assert!(end && !bare);
    }

    #[test]
    fn bare_lf_dot_lf_never_ends_the_message() {
        let (body, end, bare, _) = all_piece_sizes(b"a\n.\nMAIL FROM:<x@y>\r\n");
        assert!(!end);
        assert!(bare);
        // A bare LF does not start a line, so the dot is plain text.
        assert_eq!(body, b"a\n.\nMAIL FROM:<x@y>\r\n");
    }

    #[test]
    fn crlf_dot_lf_is_not_an_end() {
        let (_, end, bare, _) = all_piece_sizes(b"a\r\n.\nb\r\n");
        assert!(!end);
        assert!(bare);
    }

    #[test]
    fn bare_cr_is_detected_and_kept() {
        let (body, end, bare, _) = all_piece_sizes(b"a\rb\r\n.\r\n");
        assert!(end && bare);
        assert_eq!(body, b"a\rb\r\n");
    }

    #[test]
    fn dot_cr_without_lf_is_bare_cr_not_an_end() {
        let (body, end, bare, _) = all_piece_sizes(b"x\r\n.\rz\r\n.\r\n");
        assert!(end && bare);
        assert_eq!(body, b"x\r\nz\r\n");
    }

    #[test]
    fn dot_cr_cr_lf() {
        let (body, end, bare, _) = all_piece_sizes(b"x\r\n.\r\r\n.\r\n");
        assert!(end && bare);
        assert_eq!(body, b"x\r\n\r\n");
    }

    #[test]
    fn binary_and_eight_bit_bytes_pass_untouched() {
        let mut msg: Vec<u8> = (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
        msg.extend_from_slice(b"\r\n");
        let mut wire = msg.clone();
        wire.extend_from_slice(b".\r\n");
        let (body, end, bare, _) = all_piece_sizes(&wire);
        assert!(end && !bare);
        assert_eq!(body, msg);
    }
}
