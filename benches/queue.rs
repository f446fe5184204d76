//! Intake with a backlog: what one commit costs, and what the relay's loop asks the queue
//! at each wake-up (depth and oldest age, time to the next due message, the due messages),
//! while N messages wait deferred (an internal server that is down).
//!
//! The spool is on `QUEUE_BENCH_DIR` (default `/dev/shm`, a tmpfs: the file system's cost is
//! left out, the queue's is what is measured). Prints, for each backlog, the median and
//! p99 of commit + loop queries in microseconds. No timing is asserted.
//!
//! `QUEUE_BENCH_BACKLOGS` (default `0,10000,100000`) and `QUEUE_BENCH_SAMPLES` (default
//! 2000) set the cells.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mssante_gateway::spool::{Envelope, MessageState, Recipient, Spool};

fn envelope() -> Envelope {
    Envelope {
        direction: Default::default(),
        received_at: "2026-01-01T00:00:00Z".into(),
        peer_addr: "127.0.0.1:1".into(),
        helo: "smtp.peer-a.test.mssante.fr".into(),
        peer_dn: None,
        peer_cn: None,
        peer_ptr: None,
        tls: None,
        mail_from: "a@peer-a.test.mssante.fr".into(),
        envid: None,
        ret_full: None,
        body_8bitmime: false,
        smtputf8: false,
        recipients: vec![Recipient {
            address: "b@gateway.test.mssante.fr".into(),
            notify: 0,
            orcpt: None,
        }],
    }
}

const BODY: &[u8] = b"Subject: bench\r\n\r\n0123456789abcdefghijklmnopqrstuvwxyz\r\n";

async fn commit(spool: &Spool) -> String {
    let mut m = spool.create(&envelope()).await.expect("create");
    m.write(BODY).await.expect("write");
    m.commit().await.expect("commit")
}

/// What the relay's loop asks at each wake-up.
fn loop_queries(spool: &Spool) -> usize {
    let now = SystemTime::now();
    let summary = spool.summary(now);
    let next = spool.time_to_next(now);
    let due = spool.next_due(now);
    for id in &due {
        spool.release(id);
    }
    summary.messages + usize::from(next.is_some()) + due.len()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument:
    // keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let backlogs: Vec<usize> = std::env::var("QUEUE_BENCH_BACKLOGS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![0, 200]
            } else {
                vec![0, 10_000, 100_000]
            }
        });
    let samples: usize = std::env::var("QUEUE_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50 } else { 2000 });
    let base = PathBuf::from(std::env::var("QUEUE_BENCH_DIR").unwrap_or("/dev/shm".into()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for backlog in backlogs {
            let dir = tempfile::tempdir_in(&base).expect("bench directory");
            let spool = Spool::open(dir.path()).expect("spool");
            // The backlog: deferred for an hour, as with an internal server down.
            let later = SystemTime::now() + Duration::from_secs(3600);
            for _ in 0..backlog {
                let id = commit(&spool).await;
                spool
                    .defer(&id, MessageState::default(), "451 down", later)
                    .await
                    .expect("defer");
            }
            let mut times = Vec::with_capacity(samples);
            let mut sink = 0usize;
            for _ in 0..samples {
                let t = Instant::now();
                let id = commit(&spool).await;
                sink += loop_queries(&spool);
                times.push(t.elapsed());
                // Keep the backlog constant: the new message is delivered at once.
                spool.next_due(SystemTime::now());
                spool.complete(&id).await.expect("complete");
            }
            times.sort();
            println!(
                "queue/backlog {backlog:>6}: commit + loop queries median {:8.1} us, p99 {:8.1} us ({samples} samples, check {})",
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                sink % 7
            );
        }
    });
}
