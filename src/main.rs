//! The `mssante-gateway` binary: parses the command line and runs the chosen command.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mssante_gateway::config::{Config, LogFormat};
use mssante_gateway::gateway::Gateway;
use mssante_gateway::tools::{sample_whitelist, test_pki};

use cli::{Cli, Command, QueueAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::Queue { config, action } => match config {
            Some(c) => queue(&c, action),
            None => {
                eprintln!("queue: --config FILE is needed to find the spool directory");
                ExitCode::from(2)
            }
        },
        Command::TestPki {
            out,
            whitelist_only,
        } => test_pki(&out, whitelist_only),
    }
}

fn test_pki(out: &Path, whitelist_only: bool) -> ExitCode {
    if !whitelist_only {
        match test_pki::generate(out) {
            Ok(files) => {
                for f in files {
                    println!("{:<32} {}  [{}]", f.file_name, f.purpose, f.subject_dn);
                }
            }
            Err(e) => {
                eprintln!("test-pki: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match sample_whitelist::write(out) {
        Ok(path) => {
            println!(
                "{:<32} sample liste blanche signed by whitelist-signer",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("test-pki: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!(
            "{}: {} problem(s); nothing was started",
            path.display(),
            errors.0.len()
        );
        ExitCode::from(2)
    })
}

fn check_config(path: &Path) -> ExitCode {
    match load_config(path) {
        Ok(c) => {
            println!(
                "{}: valid (espace {}, host {}, domains {}, inbound {})",
                path.display(),
                c.espace.as_str(),
                c.hostname,
                c.local_domains.join(" "),
                c.inbound.listen
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn queue(path: &Path, action: QueueAction) -> ExitCode {
    use mssante_gateway::spool::{self, Spool};
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let spool = match Spool::open(&config.spool_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("queue: {e}");
            return ExitCode::from(1);
        }
    };
    let id = match &action {
        QueueAction::List => None,
        QueueAction::Show { id } | QueueAction::Retry { id } | QueueAction::Delete { id } => {
            if !spool::is_message_name(id) {
                eprintln!("queue: \"{id}\" is not a queue id (19 hexadecimal digits, as shown by `queue list`)");
                return ExitCode::from(2);
            }
            Some(id.clone())
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let now = std::time::SystemTime::now();
    let result = match (action, id) {
        (QueueAction::List, _) => spool.list().map(|entries| {
            println!(
                "{:<19} {:>9} {:>8} {:>4} {:>8}  sender -> pending recipients  [last error]",
                "id", "bytes", "age", "try", "next in"
            );
            for e in &entries {
                print_entry_line(e, now);
            }
            println!("{} message(s)", entries.len());
        }),
        (QueueAction::Show { .. }, Some(id)) => {
            spool.entry(&id).map(|e| print_entry(&spool, &e, now))
        }
        (QueueAction::Retry { .. }, Some(id)) => runtime
            .block_on(spool.retry_now(&id))
            .map(|()| println!("{id}: due now")),
        (QueueAction::Delete { .. }, Some(id)) => runtime
            .block_on(spool.delete(&id))
            .map(|()| println!("{id}: deleted")),
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queue: {e}");
            ExitCode::from(1)
        }
    }
}

fn age_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn print_entry_line(e: &mssante_gateway::spool::QueueEntry, now: std::time::SystemTime) {
    use mssante_gateway::spool::{id_time_ms, unix_ms};
    let now_ms = unix_ms(now);
    let age = std::time::Duration::from_millis(
        now_ms.saturating_sub(id_time_ms(&e.id).unwrap_or(now_ms)),
    );
    let next = std::time::Duration::from_millis(e.state.next_due_unix_ms.saturating_sub(now_ms));
    let (from, pending) = match &e.envelope {
        Some(env) => (
            if env.mail_from.is_empty() {
                "<>".to_string()
            } else {
                env.mail_from.clone()
            },
            e.state.pending_recipients(env).join(","),
        ),
        None => ("(torn file)".to_string(), String::new()),
    };
    let err = e
        .state
        .last_error
        .as_deref()
        .map(|x| format!("  [{x}]"))
        .unwrap_or_default();
    println!(
        "{:<19} {:>9} {:>8} {:>4} {:>8}  {from} -> {pending}{err}",
        e.id,
        e.size,
        age_text(age),
        e.state.attempts,
        age_text(next)
    );
}

fn print_entry(
    spool: &mssante_gateway::spool::Spool,
    e: &mssante_gateway::spool::QueueEntry,
    now: std::time::SystemTime,
) {
    print_entry_line(e, now);
    if let Some(t) = &e.torn {
        println!("torn: {t}");
        return;
    }
    if let Some(env) = &e.envelope {
        println!(
            "received:   {} from {} ({})",
            env.received_at, env.helo, env.peer_addr
        );
        println!("peer DN:    {}", env.peer_dn.as_deref().unwrap_or("-"));
        println!("TLS:        {}", env.tls.as_deref().unwrap_or("-"));
        println!("envid:      {}", env.envid.as_deref().unwrap_or("-"));
        for r in &env.recipients {
            println!(
                "recipient:  {} notify={:#x} orcpt={}",
                r.address,
                r.notify,
                r.orcpt.as_deref().unwrap_or("-")
            );
        }
    }
    println!("attempts:   {}", e.state.attempts);
    println!(
        "last error: {}",
        e.state.last_error.as_deref().unwrap_or("-")
    );
    if let Ok(Ok(m)) = mssante_gateway::spool::read_message(spool, &e.id) {
        println!();
        print!(
            "{}",
            String::from_utf8_lossy(mssante_gateway::relay::dsn::headers_of(&m.body))
        );
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logs(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start(&config).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(1);
            }
        };
        tracing::info!(
            espace = config.espace.as_str(),
            hostname = %config.hostname,
            inbound = %gateway.inbound_addr,
            "mssante-gateway started"
        );
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections; open sessions finish their transaction");
        gateway.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
