//! The `mssante-gateway` binary: parses the command line and runs the chosen command.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use mssante_gateway::config::{Config, LogFormat};
use mssante_gateway::gateway::{Gateway, ReloadReport};
use mssante_gateway::tools::whitelist_cmd::{self, Anchors, CommandError};
use mssante_gateway::tools::{annexe1, csr, doctor, probe, sample_whitelist, test_pki};
use mssante_gateway::trust::pki::TrustStore;
use mssante_gateway::whitelist::SignerIdentity;

use cli::{Cli, Command, KeySize, QueueAction, WhitelistAction};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::Whitelist { action } => whitelist(action),
        Command::Reload { config } => send_reload(&config),
        Command::Drain { config } => drain(&config),
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
        Command::Csr {
            config,
            key_out,
            out,
            key_size,
            force,
        } => csr(&config, key_out, out, key_size, force),
        Command::Probe {
            to,
            from,
            config,
            send,
            nameservers,
            port,
            json,
        } => probe(&config, to, from, send, &nameservers, port, json),
    }
}

/// `--nameserver` values: `IP` (port 53) or `IP:port`.
fn parse_nameservers(values: &[String]) -> Result<Vec<std::net::SocketAddr>, ExitCode> {
    values
        .iter()
        .map(|ns| {
            ns.parse::<std::net::SocketAddr>()
                .or_else(|_| ns.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| {
                    eprintln!("--nameserver {ns}: expected an IP address, optionally with a port (192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)");
                    ExitCode::from(2)
                })
        })
        .collect()
}

fn probe(
    path: &Path,
    to: String,
    from: Option<String>,
    send: bool,
    nameservers: &[String],
    port: u16,
    json: bool,
) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut options = probe::Options::new(to);
    options.from = from;
    options.send = send;
    options.port = port;
    options.nameservers = match parse_nameservers(nameservers) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let report = match block_on(probe::run(&config, &options)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    print_report("probe", &report, report.to_text(), json, report.exit_code())
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
    options.nameservers = match parse_nameservers(nameservers) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let report = match block_on(doctor::run(&config, &options)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    print_report(
        "doctor",
        &report,
        report.to_text(),
        json,
        report.exit_code(),
    )
}

/// Runs `f` on a new async runtime (exit 2 if the runtime cannot start).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Prints a tool's report as JSON or as its text, then exits with `code`.
fn print_report<R: serde::Serialize>(
    tool: &str,
    report: &R,
    text: String,
    json: bool,
    code: u8,
) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(out) => println!("{out}"),
            Err(e) => {
                eprintln!("{tool}: cannot write JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{text}");
    }
    ExitCode::from(code)
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

fn csr(
    path: &Path,
    key_out: Option<std::path::PathBuf>,
    out: Option<std::path::PathBuf>,
    key_size: KeySize,
    force: bool,
) -> ExitCode {
    const NOTHING: &str = "no key or request was written";
    let settings = match mssante_gateway::config::RequestSettings::load(path) {
        Ok(s) => s,
        Err(errors) => return problems(path, &errors.0, NOTHING),
    };
    let subject = match csr::subject(&settings) {
        Ok(s) => s,
        Err(errors) => return problems(path, &errors, NOTHING),
    };
    let size = match key_size {
        KeySize::Rsa2048 => csr::KeySize::Rsa2048,
        KeySize::Rsa3072 => csr::KeySize::Rsa3072,
    };
    let files = csr::Files::new(&subject, key_out, out);
    if let Err(e) = files.check(force) {
        eprintln!("csr: {e}");
        return ExitCode::from(2);
    }
    let written = csr::generate(&subject, size).and_then(|request| files.write(&request, force));
    match written {
        Ok(()) => {
            print!("{}", csr::summary(&subject, &files, size, settings.espace));
            ExitCode::SUCCESS
        }
        Err(e @ csr::CsrError::Exists { .. }) => {
            eprintln!("csr: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("csr: {e}");
            ExitCode::from(1)
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

fn whitelist(action: WhitelistAction) -> ExitCode {
    let result: Result<String, CommandError> = match action {
        WhitelistAction::Show { config } => match load_config(&config) {
            Ok(c) => whitelist_cmd::show(&c),
            Err(code) => return code,
        },
        WhitelistAction::Lookup { config, query } => {
            let c = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Scripts test the answer: 0 listed, 1 not listed, 2 a query that is not a
            // domain or DN, or no list to look in.
            return match whitelist_cmd::lookup(&c, &query) {
                Ok(found) => {
                    print!("{}", found.text);
                    match found.answer {
                        whitelist_cmd::Answer::Listed => ExitCode::SUCCESS,
                        whitelist_cmd::Answer::NotListed => ExitCode::from(1),
                        whitelist_cmd::Answer::BadQuery => ExitCode::from(2),
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            };
        }
        WhitelistAction::Fetch { config, force } => {
            let c = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !c.whitelist.fetch && !force {
                eprintln!(
                    "{}: whitelist.fetch = false: {} is the fixed list in use and a download would replace it; set whitelist.fetch = true, or pass --force",
                    config.display(),
                    c.whitelist.cache.display()
                );
                return ExitCode::from(2);
            }
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
    Config::load(path).map_err(|errors| problems(path, &errors.0, "nothing was started"))
}

/// Prints each problem of the configuration at `path`, then their number and `outcome`;
/// exit 2.
fn problems(
    path: &Path,
    errors: &[mssante_gateway::config::ConfigError],
    outcome: &str,
) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("{}: {} problem(s); {outcome}", path.display(), errors.len());
    ExitCode::from(2)
}

fn check_config(path: &Path) -> ExitCode {
    use mssante_gateway::tools::config_checks::{self, Level};
    match load_config(path) {
        Ok(c) => {
            let findings = config_checks::run(&c);
            let mut errors = 0;
            for f in &findings {
                match f.level {
                    Level::Error => {
                        errors += 1;
                        eprintln!("{}: {}: {}", path.display(), f.key, f.message);
                    }
                    Level::Warning => {
                        eprintln!("{}: {}: warning: {}", path.display(), f.key, f.message)
                    }
                }
            }
            if errors > 0 {
                eprintln!(
                    "{}: {errors} problem(s); nothing was started",
                    path.display()
                );
                return ExitCode::from(2);
            }
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
    if let QueueAction::Export { .. } = &action {
        let pid_file = config.spool_dir.join(PID_FILE);
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                if signal(pid, "-0") {
                    eprintln!("queue export: a gateway (process {pid}) runs on {}; its relay could deliver a message being moved. Drain it first (`mssante-gateway drain`), then export what is left", config.spool_dir.display());
                    return ExitCode::from(1);
                }
            }
        }
    }
    let id = match &action {
        QueueAction::List | QueueAction::Export { .. } | QueueAction::Import { .. } => None,
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
    // Messages an export or import could not move (torn): exit 1.
    let mut left_behind = false;
    // The id a command named, to say so when it is not queued.
    let named = id.clone();
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
        (QueueAction::Export { dir }, _) => runtime
            .block_on(spool.export(&dir))
            .map(|r| left_behind = print_transfer("exported to", &dir, &r)),
        (QueueAction::Import { dir }, _) => runtime
            .block_on(spool.import(&dir))
            .map(|r| left_behind = print_transfer("imported from", &dir, &r)),
        _ => Ok(()),
    };
    match (result, named) {
        (Ok(()), _) if left_behind => ExitCode::from(1),
        (Ok(()), _) => ExitCode::SUCCESS,
        (Err(spool::SpoolError::Io { source, .. }), Some(id))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            eprintln!("queue: {id} is not in the queue (delivered, bounced or deleted already? see `queue list`)");
            ExitCode::from(1)
        }
        (Err(e), _) => {
            eprintln!("queue: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints what a transfer did; whether it left messages behind.
fn print_transfer(what: &str, dir: &Path, r: &mssante_gateway::spool::TransferReport) -> bool {
    for id in &r.moved {
        println!("{id}: {what} {}", dir.display());
    }
    for id in &r.already_present {
        println!("{id}: already in this spool (an earlier run was interrupted); its copy removed");
    }
    for (id, why) in &r.skipped {
        eprintln!("{id}: left in place: {why}");
    }
    println!(
        "{} message(s) moved, {} already present, {} left in place",
        r.moved.len(),
        r.already_present.len(),
        r.skipped.len()
    );
    !r.skipped.is_empty()
}

/// RCPT's NOTIFY as written in SMTP (RFC 3461): `NEVER`, or the list of
/// `SUCCESS,FAILURE,DELAY`; `-` when the client gave none (failures are then reported).
fn notify_words(notify: u64) -> String {
    use smtp_proto::{
        RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    };
    if notify & RCPT_NOTIFY_NEVER != 0 {
        return "NEVER".into();
    }
    let words: Vec<&str> = [
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ]
    .iter()
    .filter(|(bit, _)| notify & bit != 0)
    .map(|(_, word)| *word)
    .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(",")
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
        match &env.tls {
            Some(tls) => println!("TLS:        {} {}", tls.version, tls.cipher),
            None => println!("TLS:        -"),
        }
        println!("envid:      {}", env.envid.as_deref().unwrap_or("-"));
        for r in &env.recipients {
            println!(
                "recipient:  {} notify={} orcpt={}",
                r.address,
                notify_words(r.notify),
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
        let headers = mssante_gateway::message::read_headers(&m.body);
        // Decoded (RFC 2047), then the raw header section as it is.
        let shown = |v: Option<&str>| v.map(|v| v.escape_debug().to_string());
        println!(
            "from:       {}",
            shown(headers.from.as_deref()).unwrap_or_else(|| "-".into())
        );
        println!(
            "subject:    {}",
            shown(headers.subject.as_deref()).unwrap_or_else(|| "-".into())
        );
        println!("received:   {} Received header(s)", headers.received);
        println!();
        print!(
            "{}",
            String::from_utf8_lossy(&m.body[..headers.section_len])
        );
    }
}

/// Installs the log subscriber. Records are formatted on the task that logs and written to
/// stderr by a thread of their own (tracing-appender's non-blocking writer, which blocks
/// rather than drops when it falls behind), in batches: a slow terminal or journal does
/// not hold a session's worker thread in `write`, and a burst costs few system calls. The guard flushes what is queued when dropped: keep
/// it until the process exits.
fn init_logs(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        // Buffered: the thread writes whatever records are queued in one system call and
        // flushes as soon as the queue is empty (that is the bound on the delay).
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Values from certificates and SMTP commands reach the log: the writer escapes every
    // control character in a record, so none can forge a line.
    match config.log_format {
        LogFormat::Json => {
            use tracing_subscriber::util::SubscriberInitExt;
            mssante_gateway::logging::json_subscriber(filter, writer).init()
        }
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(mssante_gateway::logging::EscapingWriter::new(writer, ansi))
            .init(),
    }
    guard
}

fn serve(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log_writer = init_logs(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Installed before the listeners open, so a SIGTERM right after start-up still
        // closes sessions gracefully instead of killing the process.
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::from(1);
            }
        };
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
        tokio::spawn(tell_systemd(gateway.readiness()));
        let pid_file = config.spool_dir.join(PID_FILE);
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(file = %pid_file.display(), error = %e, "cannot write the pid file; `reload` will not find this process");
        }
        let mut gateway = gateway;
        loop {
            match signals.next().await {
                Signal::Reload => {
                    gateway.reload_from(path);
                }
                Signal::Stop => break,
                Signal::Drain => {
                    systemd(&[
                        sd_notify::NotifyState::Stopping,
                        sd_notify::NotifyState::Status("draining: delivering the queue"),
                    ]);
                    tokio::select! {
                        report = gateway.drain() => {
                            tracing::info!(remaining = report.remaining, elapsed_s = report.elapsed.as_secs(), deadline_reached = report.deadline_reached, "drain finished");
                        }
                        _ = signals.stop() => {
                            tracing::warn!("stop signal during the drain: stopping now; the rest of the queue stays in the spool");
                        }
                    }
                    break;
                }
            }
        }
        tracing::info!("shutting down: no new connections; open sessions finish their transaction");
        systemd(&[sd_notify::NotifyState::Stopping]);
        gateway.shutdown().await;
        let _ = std::fs::remove_file(&pid_file);
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Tells systemd (`Type=notify`) about a state change; nothing without `NOTIFY_SOCKET`.
fn systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// systemd's `Type=notify`: `READY=1` once the gateway can serve (listeners bound, a
/// liste blanche loaded, CRLs where required: what `/readyz` says), then, when the unit
/// sets `WatchdogSec`, `WATCHDOG=1` at half that interval from the async runtime, so a
/// runtime that stops making progress gets the service restarted.
async fn tell_systemd(ready: std::sync::Arc<dyn Fn() -> bool + Send + Sync>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if !ready() {
        systemd(&[sd_notify::NotifyState::Status(
            "starting: waiting for a valid liste blanche (and a CRL per CA when required)",
        )]);
    }
    while !ready() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let every = (interval / 2).max(std::time::Duration::from_millis(50));
        loop {
            systemd(&[sd_notify::NotifyState::Watchdog]);
            tokio::time::sleep(every).await;
        }
    }
}

/// The file, in the spool directory, holding the pid of the running gateway.
const PID_FILE: &str = "mssante-gateway.pid";

/// The pid of the gateway running on `config`'s spool, from its pid file.
fn running_pid(config: &Config) -> Result<u32, ExitCode> {
    let pid_file = config.spool_dir.join(PID_FILE);
    match std::fs::read_to_string(&pid_file) {
        Ok(text) => text.trim().parse::<u32>().map_err(|_| {
            eprintln!("{}: not a pid: {:?}", pid_file.display(), text.trim());
            ExitCode::from(1)
        }),
        Err(e) => {
            eprintln!(
                "cannot read {}: {e}; is the gateway running with this configuration?",
                pid_file.display()
            );
            Err(ExitCode::from(1))
        }
    }
}

/// Sends `signal` (a `kill` option such as `-HUP`) to `pid`; whether it was delivered.
fn signal(pid: u32, signal: &str) -> bool {
    match std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("cannot run kill: {e}");
            false
        }
    }
}

/// The valid configuration at `path` and the pid of the gateway running on it.
fn running_gateway(path: &Path) -> Result<(Config, u32), ExitCode> {
    let config = load_config(path).inspect_err(|_| {
        eprintln!("the running gateway was not signalled: it keeps its configuration");
    })?;
    let pid = running_pid(&config)?;
    Ok((config, pid))
}

/// `reload`: checks the configuration, signals the running gateway (SIGHUP), then prints
/// what the gateway reports: applied (exit 0, naming each changed setting that needs a
/// restart) or refused (exit 1, with the problems).
fn send_reload(path: &Path) -> ExitCode {
    let (config, pid) = match running_gateway(path) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let report_file = config
        .spool_dir
        .join(mssante_gateway::gateway::RELOAD_REPORT);
    let read_report = || -> Option<ReloadReport> {
        serde_json::from_slice(&std::fs::read(&report_file).ok()?).ok()
    };
    let before = read_report()
        .filter(|r| r.pid == pid)
        .map_or(0, |r| r.sequence);
    if !signal(pid, "-HUP") {
        eprintln!("kill -HUP {pid} failed; is the gateway running?");
        return ExitCode::from(1);
    }
    // Loading the certificates and CRLs again takes well under a second; allow for a slow
    // disk.
    let started = std::time::Instant::now();
    let report = loop {
        match read_report() {
            Some(r) if r.pid == pid && r.sequence > before => break r,
            _ if started.elapsed() > std::time::Duration::from_secs(30) => {
                eprintln!(
                    "reload signalled to process {pid}, but it wrote no report to {} within 30 s; see its log",
                    report_file.display()
                );
                return ExitCode::from(1);
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    if report.applied {
        println!("configuration reloaded by process {pid}; new connections use it");
        for note in &report.restart_needed {
            println!("needs a restart: {note}");
        }
        ExitCode::SUCCESS
    } else {
        eprintln!("reload refused by process {pid}; the running configuration stays:");
        for problem in &report.problems {
            eprintln!("  {problem}");
        }
        ExitCode::from(1)
    }
}

/// `drain`: signals the running gateway (SIGUSR1), then follows its queue in the spool
/// until the process has exited.
fn drain(path: &Path) -> ExitCode {
    let (config, pid) = match running_gateway(path) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let deadline = config.relay.as_ref().map(|r| r.drain_deadline);
    if !signal(pid, "-USR1") {
        eprintln!("kill -USR1 {pid} failed; is the gateway running?");
        return ExitCode::from(1);
    }
    match deadline {
        Some(d) => println!(
            "drain signalled to process {pid}: listeners closing, delivering the queue for at most {}",
            humantime::format_duration(d)
        ),
        None => println!("drain signalled to process {pid}: no [relay], the gateway stops without delivering"),
    }
    let spool = match mssante_gateway::spool::Spool::open(&config.spool_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the spool: {e}");
            return ExitCode::from(1);
        }
    };
    let queued = || spool.list().map(|l| l.len());
    // The gateway exits by itself; wait a little past its deadline and the sessions' grace.
    let patience = deadline.unwrap_or_default()
        + config.inbound.shutdown_grace * 2
        + std::time::Duration::from_secs(30);
    let started = std::time::Instant::now();
    let mut last = None;
    // Running while the process exists and its pid file, removed as its last act, is
    // there (a process that has exited but is not yet reaped still answers `kill -0`).
    let pid_file = config.spool_dir.join(PID_FILE);
    let running = || {
        signal(pid, "-0")
            && std::fs::read_to_string(&pid_file).is_ok_and(|t| t.trim() == pid.to_string())
    };
    while running() {
        if started.elapsed() > patience {
            eprintln!(
                "process {pid} still running after {}; see its log",
                humantime::format_duration(patience)
            );
            return ExitCode::from(1);
        }
        if let Ok(n) = queued() {
            if last != Some(n) {
                println!("queue: {n} message(s)");
                last = Some(n);
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    match queued() {
        Ok(0) => {
            println!("process {pid} exited; the queue is empty");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            eprintln!(
                "process {pid} exited with {n} message(s) left in {}: start a gateway on this spool, or move them to another instance with `queue export` / `queue import`",
                config.spool_dir.display()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("process {pid} exited; cannot read the spool: {e}");
            ExitCode::from(1)
        }
    }
}

enum Signal {
    Reload,
    Stop,
    Drain,
}

/// The signals the gateway reacts to, installed once so none is missed between two waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
            _ = self.usr1.recv() => Signal::Drain,
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
