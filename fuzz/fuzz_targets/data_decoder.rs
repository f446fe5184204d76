//! Decoding a DATA body in any split gives what decoding it whole gives, and a clean body
//! (no bare CR or LF) decodes to its lines with the stuffing dot removed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mssante_gateway::smtp::data::DataDecoder;

/// What decoding produced: body, end reached, bare newline seen, input bytes consumed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    end: bool,
    bare: bool,
    consumed: usize,
}

/// Decodes `input` fed in pieces whose lengths are taken in turn from `sizes`.
fn decode(input: &[u8], sizes: &[u8]) -> Outcome {
    let mut d = DataDecoder::new();
    let mut body = Vec::new();
    let mut fed = 0;
    let mut turn = 0;
    while fed < input.len() {
        let size = match sizes {
            [] => input.len(),
            _ => usize::from(sizes[turn % sizes.len()]).max(1),
        };
        turn += 1;
        let piece = &input[fed..(fed + size).min(input.len())];
        let mut at = 0;
        // The decoder is called until the piece is consumed, as the session does.
        while at < piece.len() {
            let step = d.decode(&piece[at..]);
            assert!(step.consumed > 0, "no progress");
            assert!(step.body.start <= step.body.end && step.body.end <= step.consumed);
            assert!(
                !step.end || step.body.is_empty(),
                "body returned with the end"
            );
            body.extend_from_slice(&piece[at..][step.body]);
            at += step.consumed;
            if step.end {
                return Outcome {
                    body,
                    end: true,
                    bare: d.saw_bare_newline(),
                    consumed: fed + at,
                };
            }
        }
        fed += piece.len();
    }
    Outcome {
        body,
        end: false,
        bare: d.saw_bare_newline(),
        consumed: fed,
    }
}

/// The body of a clean message, by definition: CRLF lines up to `.` CRLF, each leading dot
/// removed.
fn reference(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(len) = input[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &input[at..at + len + 2];
        at += len + 2;
        if line == b".\r\n" {
            return Some((body, at));
        }
        body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, input) = rest.split_at(n);
    let whole = decode(input, &[]);
    assert_eq!(decode(input, sizes), whole, "split {sizes:?}");
    assert_eq!(decode(input, &[1]), whole, "byte at a time");
    if !whole.bare && whole.end {
        let (body, consumed) = reference(input).expect("a clean end is a CRLF line end");
        assert_eq!(whole.body, body);
        assert_eq!(whole.consumed, consumed);
    }
});
