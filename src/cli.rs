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
    /// Check a configuration and make the running gateway reload it (SIGHUP): new
    /// certificates, anchors, CRLs and domains apply to new connections, open sessions
    /// continue. An invalid configuration is not sent.
    Reload {
        /// The configuration file (TOML) of the running gateway.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Take the running gateway out of service without stranding its queue (SIGUSR1):
    /// `/readyz` turns not ready, the listeners close, and it keeps delivering until its
    /// queue is empty or `relay.drain_deadline` passes, then exits. Prints the queue as it
    /// empties; exit 0 when the gateway stopped with an empty queue, 1 otherwise.
    Drain {
        /// The configuration file (TOML) of the running gateway.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect, verify, look up or download the liste blanche.
    Whitelist {
        /// What to do with it.
        #[command(subcommand)]
        action: WhitelistAction,
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
    /// A tester's view of a peer operator: the recipient domain's liste blanche entries,
    /// its MX records, then for each MX until one works the TCP connection, greeting, EHLO,
    /// STARTTLS, the TLS handshake with our certificate, the server's chain, its CN against
    /// the MX host and its DN against the list, then MAIL and RCPT (and RSET, or a test
    /// message with --send). One verdict per step with the SMTP exchange; exit 0 (all
    /// pass), 1 (warnings) or 2 (failures).
    Probe {
        /// The recipient at the peer operator (`user@domain`).
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// The sender (default: `postmaster@<first local domain>`).
        #[arg(long, value_name = "ADDRESS")]
        from: Option<String>,
        /// The configuration file (TOML): our certificate, anchors, liste blanche, DNS.
        #[arg(long, short)]
        config: PathBuf,
        /// Send a test message (Subject "Test mssante-gateway probe") instead of RSET
        /// after RCPT. It is sent only if the server passed every check.
        #[arg(long)]
        send: bool,
        /// DNS server to ask instead of `dns.name_servers` (`IP` or `IP:port`, repeatable).
        #[arg(long = "nameserver", value_name = "ADDR")]
        nameservers: Vec<String>,
        /// SMTP port of the MX hosts.
        #[arg(long, default_value_t = 25)]
        port: u16,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new private key and the certificate request (PKCS#10) for our IGC Santé SSL
    /// server certificate, its subject in the espace's form from the configuration:
    /// CN = hostname (not under mssante.fr), OU = 1+FINESS or 3+SIRET, O = the structure's
    /// name in capitals without accents, ST = `operator.legal_representative.department`,
    /// C = FR, and the CN as a DNS name. Prints the ANS form to attach it to: F414 (test
    /// espace) or F413 (production). Every problem is listed with its key (exit 2).
    Csr {
        /// The configuration file (TOML); its certificate and key files need not exist.
        #[arg(long, short)]
        config: PathBuf,
        /// Where to write the new private key (PEM, PKCS#8, created with mode 0600);
        /// default: `<hostname>.key` in the current directory.
        #[arg(long, value_name = "FILE")]
        key_out: Option<PathBuf>,
        /// Where to write the request (PEM); default: `<hostname>.csr` in the current
        /// directory.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// RSA key size in bits.
        #[arg(long, value_enum, default_value = "2048")]
        key_size: KeySize,
        /// Replace the key and request files if they exist (an existing key may be the one
        /// of the certificate in use: keep a copy).
        #[arg(long)]
        force: bool,
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

/// `csr --key-size`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeySize {
    /// RSA 2048 bits, as the espace's certificates.
    #[value(name = "2048")]
    Rsa2048,
    /// RSA 3072 bits.
    #[value(name = "3072")]
    Rsa3072,
}

/// The `whitelist` subcommands.
#[derive(Debug, Subcommand)]
pub enum WhitelistAction {
    /// Download the list once from the configured URL, verify it and update the cache.
    Fetch {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Download even with `whitelist.fetch = false` (which makes whitelist.cache a fixed
        /// file that this would overwrite).
        #[arg(long)]
        force: bool,
    },
    /// Show the cached list: generation date, entries, domains, DNs, signer, age.
    Show {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a domain's entries, or the domains a certificate DN serves (an argument
    /// containing `=` is taken as a DN).
    Lookup {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// A domain (`ch-x.mssante.fr`) or a DN (`CN=...,OU=...,O=...,ST=...,C=FR`).
        query: String,
    },
    /// Verify a signed list file (digest, signature, signer) and summarise it; exit 1 if
    /// it is refused.
    Verify {
        /// The list file.
        file: PathBuf,
        /// Check the signer's chain with this configuration's anchors and signer.
        #[arg(long, short, conflicts_with_all = ["anchors", "skip_chain"])]
        config: Option<PathBuf>,
        /// Check the signer's chain against these anchor files (PEM).
        #[arg(long)]
        anchors: Vec<PathBuf>,
        /// Intermediate CA files (PEM) for the chain check.
        #[arg(long)]
        intermediates: Vec<PathBuf>,
        /// Do not check the signer's chain (digest, signature value and signer name still
        /// are): for inspecting a list when the espace's root is not at hand.
        #[arg(long)]
        skip_chain: bool,
        /// Expected signer CN (default: the production signer).
        #[arg(long, requires = "signer_o")]
        signer_cn: Option<String>,
        /// Expected signer O.
        #[arg(long, requires = "signer_cn")]
        signer_o: Option<String>,
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
    /// Move every queued message, with its delivery state, out of this spool into DIR
    /// (for a spool no gateway runs on any more: drain leftovers, a retired replica).
    /// Refused while a gateway runs on the spool. Safe to run again after an interruption.
    Export {
        /// The directory to write to (created if needed).
        dir: PathBuf,
    },
    /// Move the messages exported to DIR into this spool; a running gateway picks them up
    /// within 15 s. A message this spool already holds is not imported twice. Safe to run
    /// again after an interruption.
    Import {
        /// The directory `queue export` wrote.
        dir: PathBuf,
    },
}
