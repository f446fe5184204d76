//! Drives a `Session` with arbitrary bytes, cut into arbitrary pieces, with arbitrary
//! accept/reject decisions, and checks what must hold whatever the peer sends:
//! no panic, replies are whole CRLF lines with a 3-digit code, the body delivered never
//! exceeds the size limit, and a closed session does nothing more.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mssante_gateway::smtp::{Enhanced, Event, Reply, Session, SessionConfig};

const MAX_MESSAGE_SIZE: usize = 300;

/// Choices taken from the first bytes of the input: piece sizes and decisions.
struct Choices {
    state: u64,
}

impl Choices {
    fn new(seed: &[u8]) -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for &b in seed {
            state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Self { state: state | 1 }
    }

    /// xorshift64: cheap, and fully determined by the seed the fuzzer chose.
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// Mostly yes, so that transactions get deep.
    fn accept(&mut self) -> bool {
        !self.next().is_multiple_of(8)
    }
}

/// Checks that `out` is a sequence of complete reply lines and that the last one ends its
/// reply (no multi-line reply is cut in the middle).
fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"), "output ends mid-line: {out:?}");
    let mut continued: Option<&[u8]> = None;
    for line in out[..out.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in a reply: {line:?}");
        assert!(line.len() >= 4, "short reply line: {line:?}");
        assert!(
            line[..3].iter().all(u8::is_ascii_digit),
            "no code: {line:?}"
        );
        assert!(matches!(line[3], b' ' | b'-'), "bad separator: {line:?}");
        if let Some(code) = continued {
            assert_eq!(&line[..3], code, "continuation with another code");
        }
        continued = (line[3] == b'-').then_some(&line[..3]);
    }
    assert!(continued.is_none(), "multi-line reply cut: {out:?}");
    // Every CRLF-separated piece was checked: no bare LF either.
    let crlf = out.windows(2).filter(|w| w == b"\r\n").count();
    let lf = out.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(crlf, lf, "bare LF in a reply");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (seed, input) = data.split_at(4);
    let mut choices = Choices::new(seed);
    let mut s = Session::new(SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: MAX_MESSAGE_SIZE,
        max_recipients: 3,
        max_errors: 10,
        tls_available: seed[0] & 1 == 0,
        require_tls: seed[0] & 2 == 0,
        max_idle_commands: 100,
    });
    // The largest piece is chosen once, so that some runs feed small pieces throughout.
    let max_piece = 1 + (seed[1] as usize % 64) * (1 + seed[2] as usize % 4);
    let mut fed = 0;
    let mut body: Option<usize> = None;
    loop {
        if s.is_closed() {
            assert!(s.poll().is_none(), "a closed session produced an event");
            check_output(&s.take_output());
            s.feed(b"NOOP\r\n");
            assert!(s.poll().is_none(), "a closed session processed input");
            s.timed_out();
            s.shutting_down();
            s.tls_established();
            assert!(!s.has_output(), "a closed session answered");
            return;
        }
        while let Some(event) = s.poll() {
            match event {
                Event::Helo { .. } | Event::MailFrom(_) | Event::Rcpt(_) => {
                    if choices.accept() {
                        s.accept();
                    } else {
                        s.reject(Reply::new(550, Enhanced(5, 7, 1), "Refused by policy"));
                    }
                }
                Event::MessageStart => {
                    assert!(body.is_none(), "a message started inside another");
                    if choices.accept() {
                        body = Some(0);
                        s.accept();
                    } else {
                        s.reject(Reply::new(451, Enhanced(4, 3, 0), "Spool unavailable"));
                    }
                }
                Event::MessageChunk(bytes) => {
                    let len = body.as_mut().expect("a chunk outside of a message");
                    *len += bytes.len();
                    assert!(*len <= MAX_MESSAGE_SIZE, "{len} body bytes delivered");
                }
                Event::MessageEnd => {
                    assert!(body.take().is_some(), "the end of no message");
                    if choices.accept() {
                        s.message_stored("Q1");
                    } else {
                        s.reject(Reply::new(451, Enhanced(4, 3, 0), "Spool unavailable"));
                    }
                }
                Event::MessageAborted { .. } => {
                    assert!(body.take().is_some(), "the abort of no message");
                }
                Event::StartTls => {
                    assert!(!s.tls_active());
                    check_output(&s.take_output());
                    s.tls_established();
                    assert!(s.tls_active());
                }
                Event::Refused { .. } => {}
            }
        }
        check_output(&s.take_output());
        if s.is_closed() {
            continue;
        }
        if !s.in_transaction() {
            assert!(body.is_none(), "a message outlived its transaction");
        }
        if fed == input.len() {
            break;
        }
        let piece = 1 + (choices.next() as usize % max_piece);
        let end = (fed + piece).min(input.len());
        s.feed(&input[fed..end]);
        fed = end;
    }
    // The connection ends one way or another.
    match choices.next() % 3 {
        0 => s.timed_out(),
        1 => s.shutting_down(),
        _ => return,
    }
    assert!(s.is_closed());
    check_output(&s.take_output());
    assert!(s.poll().is_none());
});
