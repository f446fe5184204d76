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
    /// Check the installation end to end: our certificate against the IGC Santé rules and
    /// the espace's anchors, each local domain in the liste blanche with our DN and its MX
    /// pointing at our CN, the auto-reply mailbox, the list's freshness and the listeners.
    /// One line per check with the fix; exit 0 (all pass), 1 (warnings) or 2 (failures).
    Doctor {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// DNS server to ask for MX records (`IP` or `IP:port`, repeatable); default: the
        /// system's resolvers.
        #[arg(long = "nameserver", value_name = "ADDR")]
        nameservers: Vec<String>,
        /// Do not query the DNS (the MX checks are reported as warnings, not checked).
        #[arg(long)]
        no_dns: bool,
    },
    /// Print the Annexe 1 declaration (adding, removing or switching domains in the liste
    /// blanche), pre-filled from `[operator]` and our certificate, in French as ANS reads
    /// it. Every field is checked by the form's rules; all problems are listed (exit 2).
    Annexe1 {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Domains to add (declared in `[[operator.domains]]`).
        #[arg(long, value_name = "DOMAIN", num_args = 1..)]
        add: Vec<String>,
        /// Domains to remove (declared in `[[operator.domains]]`).
        #[arg(long, value_name = "DOMAIN", num_args = 1..)]
        remove: Vec<String>,
        /// The added or removed domains change operator (BASCULE).
        #[arg(long)]
        switch: bool,
        /// A second SSL certificate (PEM) of the operator, whose DN is declared too.
        #[arg(long, value_name = "FILE")]
        second_certificate: Option<PathBuf>,
        /// Print JSON instead of the Markdown document.
        #[arg(long)]
        json: bool,
    },
}
