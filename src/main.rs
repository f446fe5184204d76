//! The `mssante-gateway` binary: parses the command line and runs the chosen command.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mssante_gateway::config::{Config, LogFormat};
use mssante_gateway::gateway::Gateway;
use mssante_gateway::tools::test_pki;
use tokio::signal::unix::{signal, Signal, SignalKind};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::TestPki { out } => match test_pki::generate(&out) {
            Ok(files) => {
                for f in files {
                    println!("{:<32} {:<28} {}", f.file_name, f.purpose, f.subject_dn);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("test-pki: {e}");
                ExitCode::from(1)
            }
        },
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
        // Before the listener starts: from the first accepted connection on, SIGTERM must
        // drain the sessions, not kill the process with the default action.
        let signals = stop_signals();
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
        wait_for_signal(signals).await;
        tracing::info!("shutting down: no new connections; open sessions finish their transaction");
        gateway.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Handlers for SIGTERM and SIGINT; `None` if they cannot be installed.
fn stop_signals() -> Option<(Signal, Signal)> {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => None,
    }
}

async fn wait_for_signal(signals: Option<(Signal, Signal)>) {
    let Some((mut term, mut int)) = signals else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
