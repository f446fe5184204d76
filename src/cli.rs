//! The command line: one subcommand per operator task.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mssante-gateway: the SMTP connector of an MSSanté mail operator.
///
/// It receives mail from the other operators of the espace de confiance (mutual TLS with
/// IGC Santé certificates, liste blanche), stores it durably and relays it to the internal
/// mail server.
#[derive(Debug, Parser)]
#[command(name = "mssante-gateway", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and the files it names; exit 0 if valid, 2 otherwise,
    /// listing every problem with the key and what is expected.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect and act on the spool of a gateway (running or stopped): the commands work
    /// on the files of `spool.dir`.
    Queue {
        /// The configuration file (TOML) naming the spool directory.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Generate a test PKI mimicking IGC Santé (root, intermediate, peer certificates and
    /// the certificates the espace must refuse). Test keys only, never for production.
    TestPki {
        /// The output directory (created if needed; existing files are overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Only (re)write the sample liste blanche `whitelist.xml` from the certificates
        /// already in the directory, keeping them.
        #[arg(long)]
        whitelist_only: bool,
    },
}

/// `queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// One line per queued message: id, size, age, attempts, next try, sender, recipients
    /// still pending, last error.
    List,
    /// The envelope, delivery state and headers of one message.
    Show {
        /// The queue id.
        id: String,
    },
    /// Make a deferred message due now (a running gateway picks it up within 15 s).
    Retry {
        /// The queue id.
        id: String,
    },
    /// Remove a message without delivering it and without a DSN.
    Delete {
        /// The queue id.
        id: String,
    },
}
