//! The bare limits the gateway is measured against, on the same machine:
//!
//! - a mutual-TLS accept loop without SMTP, built with the gateway's own
//!   [`server_config`] and identity, checking each client chain with [`verify_chain`] as
//!   a session does: the handshake rate no SMTP server with this PKI can beat;
//! - the spool's durability sequence alone (write 1 KiB, `fdatasync`, rename, `fsync` of
//!   the directory, as `mssante_gateway::spool::Incoming::commit` does): the commit rate no
//!   one-file-per-message spool on this file system can beat.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::UnixTime;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use mssante_gateway::config::Config;
use mssante_gateway::trust::tls::{server_config, TlsConfigError};
use mssante_gateway::trust::verify::{verify_chain, Usage};

/// A running bare TLS server.
pub struct BareTlsServer {
    /// Where it accepts.
    pub addr: SocketAddr,
    /// Handshakes completed whose client chain verified.
    pub verified: Arc<AtomicU64>,
    /// Handshakes that failed, or chains that did not verify.
    pub failed: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl BareTlsServer {
    /// Binds `listen` and accepts TLS connections (no STARTTLS, no SMTP) with the TLS
    /// settings of `config` until dropped or stopped.
    pub async fn start(config: &Config, listen: SocketAddr) -> Result<BareTlsServer, StartError> {
        let tls = server_config(
            &config.tls.identity,
            Arc::clone(&config.tls.trust),
            config.tls.versions,
        )?;
        let trust = Arc::clone(&config.tls.trust);
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let verified = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let acceptor = TlsAcceptor::from(tls);
        let (ok, ko) = (Arc::clone(&verified), Arc::clone(&failed));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stopped.wait_for(|s| *s) => return,
                };
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, trust) = (acceptor.clone(), Arc::clone(&trust));
                let (ok, ko) = (Arc::clone(&ok), Arc::clone(&ko));
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(Duration::from_secs(30), handshake).await
                    else {
                        ko.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
                    match verify_chain(chain, &trust, UnixTime::now(), Usage::Client) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => ko.fetch_add(1, Ordering::Relaxed),
                    };
                    // Wait for the client's close, as a server does.
                    let mut buf = [0u8; 512];
                    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut buf)).await;
                });
            }
        });
        Ok(BareTlsServer {
            addr,
            verified,
            failed,
            stop,
        })
    }

    /// Stops accepting.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for BareTlsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why the bare TLS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsConfigError),
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// What the fsync loop measured.
#[derive(Debug, Clone, Serialize)]
pub struct FsyncReport {
    /// The directory measured.
    pub dir: PathBuf,
    /// Writers in parallel.
    pub parallel: usize,
    /// Commits done (each: write, fdatasync, rename, directory fsync).
    pub commits: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// `commits / elapsed_s`.
    pub commits_per_s: f64,
    /// Sync calls per second (two per commit).
    pub fsyncs_per_s: f64,
    /// Median time of one commit, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Runs the spool's commit sequence on 1 KiB files in `dir` (its `tmp/` and `queue/`
/// subdirectories are created) with `parallel` threads until `total` commits or
/// `duration`.
///
/// The files are left in `queue/` for the caller to remove with the directory: deleting
/// them here would slow the next measurement down on file systems that avoid reusing
/// recently freed inodes (ext4 without a journal scans past them), which the spool,
/// which does not delete at this point, does not pay either.
pub fn fsync_loop(
    dir: &Path,
    parallel: usize,
    total: u64,
    duration: Duration,
) -> std::io::Result<FsyncReport> {
    let tmp = dir.join("tmp");
    let queue = dir.join("queue");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&queue)?;
    let claimed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let payload = vec![b'x'; 1024];
    let mut threads = Vec::new();
    for t in 0..parallel.max(1) {
        let (tmp, queue, claimed, payload) = (
            tmp.clone(),
            queue.clone(),
            Arc::clone(&claimed),
            payload.clone(),
        );
        threads.push(std::thread::spawn(move || -> std::io::Result<Vec<u32>> {
            let mut times = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < total {
                let began = Instant::now();
                let name = format!("{t}-{n}");
                n += 1;
                let path = tmp.join(&name);
                let mut f = std::fs::File::create(&path)?;
                f.write_all(&payload)?;
                f.sync_data()?;
                drop(f);
                std::fs::rename(&path, queue.join(&name))?;
                std::fs::File::open(&queue)?.sync_all()?;
                times.push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(times)
        }));
    }
    let mut times = Vec::new();
    for t in threads {
        times.extend(
            t.join()
                .map_err(|_| std::io::Error::other("writer panicked"))??,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    times.sort_unstable();
    let q = |p: f64| {
        if times.is_empty() {
            return 0.0;
        }
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        f64::from(times[i]) / 1000.0
    };
    let commits = times.len() as u64;
    Ok(FsyncReport {
        dir: dir.to_path_buf(),
        parallel: parallel.max(1),
        commits,
        elapsed_s: elapsed,
        commits_per_s: commits as f64 / elapsed,
        fsyncs_per_s: 2.0 * commits as f64 / elapsed,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    })
}
