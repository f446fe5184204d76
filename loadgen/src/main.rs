//! `mssante-loadgen`: loads an MSSanté gateway (or any ESMTP server requiring STARTTLS and
//! a client certificate) the way peer operators do, and measures the bare limits it is
//! compared with. See BENCHMARKS.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mssante_gateway::config::Config;
use mssante_loadgen::limits::{fsync_loop, BareTlsServer};
use mssante_loadgen::run::{self as loadgen, LoadConfig, Mode, Sizes};

/// Load generator for mssante-gateway: ESMTP + STARTTLS + client certificate.
///
/// Without a subcommand: N connections in parallel send messages (M per connection; 1
/// means one TLS handshake per message) until --messages are sent or --duration has
/// passed. Reports messages/s, handshakes/s, accept latency (end of DATA to 250)
/// quantiles and errors by reply code.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Bare limit c1: a mutual-TLS accept loop without SMTP, in this process, with the
    /// gateway's TLS settings from --config; N clients connect, handshake and close.
    BareTls {
        /// The gateway configuration whose certificate, anchors and versions to use.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Bare limit c2: the spool's commit sequence alone (write 1 KiB, fdatasync, rename,
    /// directory fsync) in DIR.
    Fsync {
        /// A directory on the spool's file system (tmp/ and queue/ are created in it; the
        /// files written are left in queue/: remove DIR afterwards).
        #[arg(long)]
        dir: PathBuf,
        /// Writers in parallel.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Stop after this many commits.
        #[arg(long, default_value_t = 100_000)]
        total: u64,
        /// Stop after this long (seconds).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Memory per idle session: opens --messages sessions (STARTTLS and EHLO done, then
    /// idle) and reads the server's VmRSS (process --pid) before and after.
    Idle {
        /// The server's process id.
        #[arg(long)]
        pid: u32,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The server (loopback only unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: SocketAddr,
    /// The name expected in the server's certificate.
    #[arg(long, default_value = "smtp.gateway.test.mssante.fr")]
    server_name: String,
    /// Directory of the test PKI (peer-a-chain.pem, peer-a.key, anchors.pem).
    #[arg(long, default_value = "certs-test")]
    certs: PathBuf,
    /// Client certificate name in --certs (<name>-chain.pem and <name>.key).
    #[arg(long, default_value = "peer-a")]
    peer: String,
    /// Connections in parallel.
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// Messages per connection (1: a new TLS handshake for every message).
    #[arg(short = 'm', long, default_value_t = 1)]
    per_connection: usize,
    /// Message size (1k, 100k, 10m...).
    #[arg(long, default_value = "1k", conflicts_with = "sizes")]
    size: String,
    /// Size distribution, size:weight,...  e.g. 1k:80,100k:19,10m:1.
    #[arg(long)]
    sizes: Option<String>,
    /// Send MAIL, RCPT and DATA one at a time instead of in one write.
    #[arg(long)]
    no_pipelining: bool,
    /// Stop after this many messages (sessions for `idle`, handshakes with
    /// --plain-tls-only).
    #[arg(short = 'n', long, default_value_t = 1000)]
    messages: u64,
    /// Stop starting new messages after this long (seconds).
    #[arg(short = 'd', long, default_value_t = 30.0)]
    duration: f64,
    /// Start at most this many messages per second (spread evenly over the run), to
    /// measure latency below saturation; default: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Longest wait for one reply or handshake (seconds).
    #[arg(long, default_value_t = 30.0)]
    io_timeout: f64,
    /// Offer TLS session resumption (default: full handshakes only).
    #[arg(long)]
    resume: bool,
    /// No SMTP: TLS handshake right after connect, then close (against `bare-tls` or any
    /// implicit-TLS server).
    #[arg(long)]
    plain_tls_only: bool,
    /// Allow a target that is not on the loopback interface.
    #[arg(long)]
    allow_remote: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    fn load_config(&self) -> Result<LoadConfig, String> {
        let mut cfg = LoadConfig::test_peer(self.target, &self.certs);
        cfg.server_name = self.server_name.clone();
        cfg.client_chain = self.certs.join(format!("{}-chain.pem", self.peer));
        cfg.client_key = self.certs.join(format!("{}.key", self.peer));
        cfg.connections = self.connections.max(1);
        cfg.messages_per_connection = self.per_connection.max(1);
        cfg.sizes =
            Sizes::parse(self.sizes.as_deref().unwrap_or(&self.size)).map_err(|e| e.to_string())?;
        cfg.pipelining = !self.no_pipelining;
        cfg.total = self.messages;
        cfg.duration = secs(self.duration, "--duration")?;
        cfg.io_timeout = secs(self.io_timeout, "--io-timeout")?;
        cfg.resumption = self.resume;
        cfg.rate = match self.rate {
            Some(r) if r > 0.0 && r.is_finite() => Some(r),
            Some(_) => return Err("--rate: a positive number of messages per second".into()),
            None => None,
        };
        cfg.mode = if self.plain_tls_only {
            Mode::PlainTlsOnly
        } else {
            Mode::Smtp
        };
        cfg.allow_remote = self.allow_remote;
        Ok(cfg)
    }
}

fn secs(v: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{flag}: a positive number of seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => load(&cli.run).await,
            Some(Command::BareTls { config, run }) => bare_tls(&config, &run).await,
            Some(Command::Fsync {
                dir,
                parallel,
                total,
                duration,
                json,
            }) => {
                let d = secs(duration, "--duration")?;
                let r = tokio::task::spawn_blocking(move || fsync_loop(&dir, parallel, total, d))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("fsync loop: {e}"))?;
                if json {
                    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
                } else {
                    println!(
                        "fsync loop in {} ({} writers): {} commits in {:.2} s = {:.1} commits/s ({:.1} fsyncs/s), p50 {:.2} ms, p99 {:.2} ms",
                        r.dir.display(), r.parallel, r.commits, r.elapsed_s, r.commits_per_s, r.fsyncs_per_s, r.p50_ms, r.p99_ms
                    );
                }
                Ok(())
            }
            Some(Command::Idle { pid, run }) => {
                let cfg = run.load_config()?;
                let r = loadgen::idle_sessions(cfg, pid)
                    .await
                    .map_err(|e| e.to_string())?;
                if run.json {
                    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
                } else {
                    println!(
                        "{} idle TLS sessions ({} failed): RSS {} KiB -> {} KiB = {:.1} KiB per session",
                        r.sessions, r.failed, r.rss_before_kib, r.rss_after_kib, r.kib_per_session
                    );
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("mssante-loadgen: {message}");
    ExitCode::from(2)
}

async fn load(run: &RunArgs) -> Result<(), String> {
    let cfg = run.load_config()?;
    let report = loadgen::run(cfg).await.map_err(|e| e.to_string())?;
    print_report(&report, run.json)
}

async fn bare_tls(config: &std::path::Path, run: &RunArgs) -> Result<(), String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let server = BareTlsServer::start(&config, "127.0.0.1:0".parse().map_err(|_| "address")?)
        .await
        .map_err(|e| e.to_string())?;
    let mut cfg = run.load_config()?;
    cfg.target = server.addr;
    cfg.mode = Mode::PlainTlsOnly;
    let report = loadgen::run(cfg).await.map_err(|e| e.to_string())?;
    server.stop();
    print_report(&report, run.json)
}

fn print_report(report: &loadgen::Report, json: bool) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
