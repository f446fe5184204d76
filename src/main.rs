//! The `mssante-gateway` binary: parses the command line and runs the chosen command.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mssante_gateway::config::{Config, LogFormat};
use mssante_gateway::gateway::Gateway;
use mssante_gateway::tools::{annexe1, doctor, sample_whitelist, test_pki};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::TestPki {
            out,
            whitelist_only,
        } => test_pki(&out, whitelist_only),
        Command::Annexe1 {
            config,
            add,
            remove,
            switch,
            second_certificate,
            json,
        } => annexe1(
            &config,
            &annexe1::Request {
                add,
                remove,
                switch,
            },
            second_certificate.as_deref(),
            json,
        ),
        Command::Doctor {
            config,
            json,
            nameservers,
            no_dns,
        } => doctor(&config, json, &nameservers, no_dns),
    }
}

fn doctor(path: &Path, json: bool, nameservers: &[String], no_dns: bool) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut options = doctor::Options {
        dns: !no_dns,
        ..doctor::Options::default()
    };
    for ns in nameservers {
        let parsed = ns
            .parse::<std::net::SocketAddr>()
            .or_else(|_| ns.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()));
        match parsed {
            Ok(addr) => options.nameservers.push(addr),
            Err(_) => {
                eprintln!("--nameserver {ns}: expected an IP address, optionally with a port (192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(doctor::run(&config, &options));
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("doctor: cannot write JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(report.exit_code())
}

fn annexe1(
    path: &Path,
    request: &annexe1::Request,
    second_certificate: Option<&Path>,
    json: bool,
) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut subjects = vec![config.tls.identity.info().subject.clone()];
    if let Some(file) = second_certificate {
        let second = mssante_gateway::trust::pki::load_certificates(file)
            .map_err(|e| e.to_string())
            .and_then(|chain| match chain.first() {
                Some(leaf) => mssante_gateway::trust::parse_identity(leaf)
                    .map(|id| id.subject)
                    .map_err(|e| e.to_string()),
                None => Err("no certificate in the file".to_string()),
            });
        match second {
            Ok(dn) => subjects.push(dn),
            Err(e) => {
                eprintln!("--second-certificate {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    match annexe1::build(&config, &subjects, request) {
        Ok(form) => {
            if json {
                match serde_json::to_string_pretty(&form) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("annexe1: cannot write JSON: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", annexe1::to_markdown(&form));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                let value = serde_json::json!({ "errors": errors });
                println!("{value:#}");
            }
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            eprintln!(
                "{}: {} problem(s) in the Annexe 1; nothing was printed",
                path.display(),
                errors.len()
            );
            ExitCode::from(2)
        }
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
