//! The protocol's hot functions, without sockets: a pipelined transaction through
//! `Session` (what every message costs in parsing and replies), and the DATA decoder on a
//! 1 MiB body (dot-unstuffing and the end-of-data search).
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mssante_gateway::smtp::data::DataDecoder;
use mssante_gateway::smtp::{Event, Session, SessionConfig};

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "smtp.gateway.test.mssante.fr".into(),
        max_message_size: 50 * 1024 * 1024,
        max_recipients: 100,
        max_errors: 10,
        tls_available: true,
        require_tls: false,
        max_idle_commands: 100,
    }
}

/// A body of about `size` bytes in 76-character lines, some starting with a stuffed dot,
/// as it is on the wire, followed by the terminator.
fn wire_body(size: usize) -> Vec<u8> {
    let mut out = b"Subject: bench\r\n\r\n".to_vec();
    let mut n = 0;
    while out.len() < size {
        if n % 50 == 0 {
            out.extend_from_slice(b"..a line starting with a dot, stuffed on the wire\r\n");
        }
        out.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-+=\r\n",
        );
        n += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Drives `session` over `input` as the connection does, accepting every decision; returns
/// the body bytes seen.
fn drive(session: &mut Session, input: &[u8]) -> usize {
    session.feed(input);
    let mut body = 0;
    while let Some(ev) = session.poll() {
        match ev {
            Event::MessageChunk(c) => body += c.len(),
            Event::MessageEnd => session.message_stored("0123456789ABCDEF"),
            _ => session.accept(),
        }
    }
    body
}

fn session(c: &mut Criterion) {
    let mut tx = b"MAIL FROM:<x@peer-a.test.mssante.fr> SIZE=1100 BODY=8BITMIME\r\n\
RCPT TO:<y@gateway.test.mssante.fr>\r\nDATA\r\n"
        .to_vec();
    tx.extend_from_slice(&wire_body(1024));
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pipelined transaction, 1 KiB body", |b| {
        let mut s = Session::new(config());
        drive(&mut s, b"EHLO smtp.peer-a.test.mssante.fr\r\n");
        let _ = s.take_output();
        b.iter(|| {
            let n = drive(&mut s, black_box(&tx));
            black_box(s.take_output());
            n
        })
    });
    g.bench_function("EHLO + pipelined transaction on a new session", |b| {
        let mut all = b"EHLO smtp.peer-a.test.mssante.fr\r\n".to_vec();
        all.extend_from_slice(&tx);
        b.iter(|| {
            let mut s = Session::new(config());
            let n = drive(&mut s, black_box(&all));
            black_box(s.take_output());
            n
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let body = wire_body(1024 * 1024);
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode 1 MiB in one slice", |b| {
        b.iter(|| decode_all(black_box(&body), body.len()))
    });
    g.bench_function("decode 1 MiB in 16 KiB reads", |b| {
        b.iter(|| decode_all(black_box(&body), 16 * 1024))
    });
    g.bench_function("session DATA 1 MiB in 16 KiB reads", |b| {
        let mut s = Session::new(config());
        drive(&mut s, b"EHLO smtp.peer-a.test.mssante.fr\r\n");
        let _ = s.take_output();
        let head = b"MAIL FROM:<x@peer-a.test.mssante.fr>\r\nRCPT TO:<y@gateway.test.mssante.fr>\r\nDATA\r\n";
        b.iter(|| {
            let mut n = drive(&mut s, head);
            for chunk in body.chunks(16 * 1024) {
                n += drive(&mut s, black_box(chunk));
            }
            black_box(s.take_output());
            n
        })
    });
    g.finish();
}

/// Decodes `input` handed over in reads of `read` bytes; returns the body length.
fn decode_all(input: &[u8], read: usize) -> usize {
    let mut d = DataDecoder::new();
    let mut total = 0;
    for chunk in input.chunks(read) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let step = d.decode(rest);
            total += step.body.len();
            if step.end {
                return total;
            }
            rest = &rest[step.consumed..];
        }
    }
    total
}

criterion_group!(benches, session, data);
criterion_main!(benches);
