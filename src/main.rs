//! The `mssante-gateway` binary: parses the command line and runs the chosen command.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mssante_gateway::config::{Config, LogFormat};
use mssante_gateway::gateway::Gateway;
use mssante_gateway::tools::whitelist_cmd::{self, Anchors, CommandError};
use mssante_gateway::tools::{sample_whitelist, test_pki};
use mssante_gateway::trust::pki::TrustStore;
use mssante_gateway::whitelist::SignerIdentity;

use cli::{Cli, Command, WhitelistAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::Whitelist { action } => whitelist(action),
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

fn whitelist(action: WhitelistAction) -> ExitCode {
    let result: Result<String, CommandError> = match action {
        WhitelistAction::Show { config } => match load_config(&config) {
            Ok(c) => whitelist_cmd::show(&c),
            Err(code) => return code,
        },
        WhitelistAction::Lookup { config, query } => match load_config(&config) {
            Ok(c) => whitelist_cmd::lookup(&c, &query),
            Err(code) => return code,
        },
        WhitelistAction::Fetch { config } => {
            let c = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(whitelist_cmd::fetch(&c)),
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        WhitelistAction::Verify {
            file,
            config,
            anchors,
            intermediates,
            skip_chain,
            signer_cn,
            signer_o,
        } => {
            let signer = match (signer_cn, signer_o) {
                (Some(cn), Some(o)) => SignerIdentity { cn, o },
                _ => SignerIdentity::production(),
            };
            let loaded;
            let how = if let Some(path) = config {
                loaded = match load_config(&path) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                Ok(Anchors::Config(&loaded))
            } else if !anchors.is_empty() {
                TrustStore::load(&anchors, &intermediates, &[] as &[std::path::PathBuf])
                    .map(|store| Anchors::Files(store, signer))
                    .map_err(CommandError::from)
            } else if skip_chain {
                Ok(Anchors::Skip(signer))
            } else {
                Err(CommandError::NoAnchors)
            };
            how.and_then(|how| whitelist_cmd::verify(&file, &how))
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
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
