//! The spool's commit pattern on four stores: `W` writers each commit a message (envelope
//! and 1 KiB body) durably, wait for the commit, then remove it, for `SECS` seconds.
//! Prints commits per second and fsync-class calls per commit where known.
//!
//! - `log`: the gateway's spool (`Spool::store` then `Spool::complete`): the segmented log
//!   with group commit, as the gateway runs it;
//! - `redb`: one write transaction per message, `Durability::Immediate` (redb allows one
//!   writer at a time: each commit is its own sync);
//! - `redb-batched`: one writer thread gathers the commits waiting for it into one
//!   transaction (group commit written on top of redb, as the log does it);
//! - `fjall`: insert, then `persist(SyncData)` per message (fjall's journal).
//!
//! Removal is not synced in any store (a lost removal is a redelivery, not a loss).
//!
//! Usage: `cargo run --release -- <store> [writers] [seconds] [dir]`
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mssante_gateway::spool::{Direction, Envelope, Spool};

const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");

fn envelope() -> Envelope {
    Envelope::of_report(
        Direction::Inbound,
        "mx.test.mssante.fr",
        "2026-12-05T12:00:00Z".into(),
        "dr.dupont@hopital.test.mssante.fr",
    )
}

fn message() -> (Vec<u8>, Vec<u8>) {
    let env = serde_json::to_vec(&envelope()).unwrap_or_default();
    let body = vec![b'x'; 1024];
    (env, body)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = args.get(1).map(String::as_str).unwrap_or("log").to_string();
    let writers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = PathBuf::from(args.get(4).map(String::as_str).unwrap_or("var/stores"));
    let dir = dir.join(format!("{store}-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(2);
    }
    let duration = Duration::from_secs(secs);
    let started = Instant::now();
    let done = match store.as_str() {
        "log" => run_log(&dir, writers, duration),
        "redb" => run_redb(&dir, writers, duration, false),
        "redb-batched" => run_redb(&dir, writers, duration, true),
        "fjall" => run_fjall(&dir, writers, duration),
        other => {
            eprintln!("unknown store {other:?}: log, redb, redb-batched, fjall");
            std::process::exit(2);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{{\"store\":\"{store}\",\"writers\":{writers},\"seconds\":{elapsed:.2},\"commits\":{done},\"per_second\":{:.0}}}",
        done as f64 / elapsed
    );
}

fn run_log(dir: &Path, writers: usize, duration: Duration) -> u64 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    runtime.block_on(async {
        let spool = match Spool::open(dir) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("spool: {e}"),
        };
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + duration;
        let (_, body) = message();
        let envelope = envelope();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (spool, count, envelope, body) =
                (spool.clone(), count.clone(), envelope.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let id = match spool.store(&envelope, &body).await {
                        Ok(id) => id,
                        Err(e) => panic!("store: {e}"),
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = spool.complete(&id).await {
                        panic!("complete: {e}");
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let stats = spool.log_stats();
        eprintln!("log: {stats:?}");
        count.load(Ordering::Relaxed)
    })
}

/// A commit request to the batching writer: key, value, and where to say it is durable.
type Request = (u64, Arc<Vec<u8>>, mpsc::SyncSender<()>);

fn run_redb(dir: &Path, writers: usize, duration: Duration, batched: bool) -> u64 {
    let db = match redb::Database::create(dir.join("spool.redb")) {
        Ok(db) => Arc::new(db),
        Err(e) => panic!("redb: {e}"),
    };
    let (env, body) = message();
    let value = Arc::new([env, body].concat());
    let count = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Request>();
    let batcher = batched.then(|| {
        let db = db.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut syncs = 0u64;
            let mut records = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(first) = rx.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                redb_write(&db, redb::Durability::Immediate, |table| {
                    for (key, value, _) in &batch {
                        table.insert(*key, value.as_slice())?;
                    }
                    Ok(())
                });
                syncs += 1;
                records += batch.len() as u64;
                for (_, _, reply) in batch {
                    let _ = reply.send(());
                }
            }
            eprintln!("redb-batched: {syncs} commits for {records} messages");
        })
    });
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (db, value, count, next, tx) = (
                db.clone(),
                value.clone(),
                count.clone(),
                next.clone(),
                tx.clone(),
            );
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if batched {
                        let (reply, wait) = mpsc::sync_channel(1);
                        if tx.send((key, value.clone(), reply)).is_err() {
                            return;
                        }
                        let _ = wait.recv();
                    } else {
                        redb_write(&db, redb::Durability::Immediate, |table| {
                            table.insert(key, value.as_slice()).map(|_| ())
                        });
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    // Removal, not synced.
                    redb_write(&db, redb::Durability::None, |table| {
                        table.remove(key).map(|_| ())
                    });
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        let _ = t.join();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = batcher {
        let _ = b.join();
    }
    count.load(Ordering::Relaxed)
}

/// One redb write transaction with `durability`, running `f` on the table.
fn redb_write(
    db: &redb::Database,
    durability: redb::Durability,
    f: impl FnOnce(&mut redb::Table<'_, u64, &'static [u8]>) -> Result<(), redb::StorageError>,
) {
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => panic!("begin: {e}"),
    };
    txn.set_durability(durability);
    {
        let mut table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(e) => panic!("table: {e}"),
        };
        if let Err(e) = f(&mut table) {
            panic!("write: {e}");
        }
    }
    if let Err(e) = txn.commit() {
        panic!("commit: {e}");
    }
}

fn run_fjall(dir: &Path, writers: usize, duration: Duration) -> u64 {
    let keyspace = match fjall::Config::new(dir).open() {
        Ok(k) => k,
        Err(e) => panic!("fjall: {e}"),
    };
    let messages =
        match keyspace.open_partition("messages", fjall::PartitionCreateOptions::default()) {
            Ok(p) => p,
            Err(e) => panic!("partition: {e}"),
        };
    let (env, body) = message();
    let value = Arc::new([env, body].concat());
    let count = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (keyspace, messages, value, count, next) = (
                keyspace.clone(),
                messages.clone(),
                value.clone(),
                count.clone(),
                next.clone(),
            );
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let key = next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                    if let Err(e) = messages.insert(key, value.as_slice()) {
                        panic!("insert: {e}");
                    }
                    if let Err(e) = keyspace.persist(fjall::PersistMode::SyncData) {
                        panic!("persist: {e}");
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = messages.remove(key) {
                        panic!("remove: {e}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    count.load(Ordering::Relaxed)
}
