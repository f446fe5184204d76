//! Configuration: a TOML file turned into a typed, validated [`Config`].
//!
//! Loading collects every problem rather than stopping at the first, and each one names the
//! file, the key and what is expected, so `check-config` can list them all at once. Paths
//! in the file are relative to the directory holding the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dns::DnsSettings;
use crate::inbound::{AllowedNet, InboundSettings, SubmissionSettings};
use crate::operator::OperatorSettings;
use crate::policy::{EhloCheck, EhloNames, FcrdnsCheck};
use crate::relay::outbound::OutboundSettings;
use crate::relay::{RelayProtocol, RelaySettings};
use crate::trust::crl::CrlSource;
use crate::trust::pki::{self, Hierarchy, OurIdentity, Revocation, TrustStore};
use crate::trust::tls::{TlsVersion, TlsVersions};
use crate::trust::TlsSettings;
use crate::whitelist::SignerIdentity;
use crate::whitelist::WhitelistSettings;

/// Which espace de confiance the gateway belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Espace {
    /// The test espace, for an operator's integration.
    Test,
    /// The production espace.
    Production,
}

impl Espace {
    /// The liste blanche URL of the espace (overridable by `whitelist.url`).
    pub fn whitelist_url(self) -> &'static str {
        match self {
            Espace::Test => {
                "https://espacedeconfiance.test.mssante.fr/listeblanchemssanteigcsante.xml"
            }
            Espace::Production => "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml",
        }
    }

    /// The name used in logs and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Espace::Test => "test",
            Espace::Production => "production",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    espace: Espace,
    hostname: Option<String>,
    local_domains: Vec<String>,
    tls: RawTls,
    #[serde(default)]
    inbound: RawInbound,
    spool: RawSpool,
    whitelist: RawWhitelist,
    #[serde(default)]
    policy: RawPolicy,
    submission: Option<RawSubmission>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
    relay: Option<RawRelay>,
    operator: Option<OperatorSettings>,
    #[serde(default)]
    dns: DnsSettings,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    limits: RawLimits,
}

/// Limits on what a message may carry, whichever way it comes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_received_headers: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_received_headers: 50,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutbound {
    port: u16,
    connect_timeout: String,
    timeout: String,
    concurrency: usize,
    concurrency_per_domain: usize,
    helo: Option<String>,
}

impl Default for RawOutbound {
    fn default() -> Self {
        Self {
            port: 25,
            connect_timeout: "30s".into(),
            timeout: "5m".into(),
            concurrency: 16,
            concurrency_per_domain: 2,
            helo: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    internal: String,
    #[serde(default)]
    protocol: RelayProtocol,
    #[serde(default)]
    starttls: bool,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    auth_user: Option<String>,
    auth_password: Option<String>,
    #[serde(default = "default_internal_concurrency")]
    internal_concurrency: usize,
    #[serde(default = "default_relay_idle")]
    idle_timeout: String,
    #[serde(default = "default_relay_timeout")]
    timeout: String,
    #[serde(default = "default_retry_first")]
    retry_first: String,
    #[serde(default = "default_retry_max")]
    retry_max: String,
    #[serde(default = "default_expiry")]
    expiry: String,
    #[serde(default = "default_jitter")]
    retry_jitter: f64,
    #[serde(default = "default_drain_deadline")]
    drain_deadline: String,
}

fn default_drain_deadline() -> String {
    "10m".into()
}

fn default_internal_concurrency() -> usize {
    4
}
fn default_relay_idle() -> String {
    "60s".into()
}
fn default_relay_timeout() -> String {
    "5m".into()
}
fn default_retry_first() -> String {
    "5m".into()
}
fn default_retry_max() -> String {
    "1h".into()
}
fn default_expiry() -> String {
    "5d".into()
}
fn default_jitter() -> f64 {
    0.1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhitelist {
    url: Option<String>,
    cache: PathBuf,
    #[serde(default = "yes")]
    fetch: bool,
    #[serde(default = "default_refresh")]
    refresh_interval: String,
    #[serde(default = "default_max_age")]
    max_age: String,
    #[serde(default = "default_max_shrink")]
    max_shrink: f64,
    #[serde(default = "default_max_size")]
    max_size: usize,
    #[serde(default = "default_fetch_timeout")]
    timeout: String,
    #[serde(default = "yes")]
    verify_signature: bool,
    signer_cn: Option<String>,
    signer_o: Option<String>,
    #[serde(default)]
    client_certificate: bool,
}

fn yes() -> bool {
    true
}
fn default_refresh() -> String {
    "1h".into()
}
fn default_max_age() -> String {
    "72h".into()
}
fn default_max_shrink() -> f64 {
    0.2
}
fn default_max_size() -> usize {
    crate::whitelist::store::DEFAULT_MAX_BYTES
}
fn default_fetch_timeout() -> String {
    "60s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmission {
    listen: String,
    allow: Vec<String>,
    #[serde(default)]
    require_tls: bool,
    #[serde(default)]
    proxy_protocol: RawProxyProtocol,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    ehlo_check: EhloCheck,
    ehlo_names: EhloNames,
    fcrdns: FcrdnsCheck,
    refuse_routing_addresses: bool,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            ehlo_check: EhloCheck::default(),
            ehlo_names: EhloNames::default(),
            fcrdns: FcrdnsCheck::default(),
            refuse_routing_addresses: true,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    key: PathBuf,
    anchors: Vec<PathBuf>,
    #[serde(default)]
    intermediates: Vec<PathBuf>,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default)]
    crl_sources: Vec<RawCrlSource>,
    #[serde(default = "default_crl_refresh")]
    crl_refresh_interval: String,
    #[serde(default)]
    revocation: Revocation,
    #[serde(default = "default_min_version")]
    min_version: String,
    #[serde(default = "default_max_version")]
    max_version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrlSource {
    url: String,
    file: PathBuf,
}

fn default_crl_refresh() -> String {
    "1h".into()
}

fn default_min_version() -> String {
    "1.2".into()
}
fn default_max_version() -> String {
    "1.3".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInbound {
    listen: String,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_connection_rate_per_ip: u32,
    max_session_duration: String,
    shutdown_grace: String,
    max_idle_commands: u32,
    handshake_timeout: String,
    command_timeout: String,
    data_timeout: String,
    max_message_size: usize,
    max_recipients: usize,
    max_errors: u32,
    tls_deadline: String,
    max_pre_tls_connections: Option<usize>,
    listen_backlog: Option<u32>,
    proxy_protocol: RawProxyProtocol,
}

/// The balancers allowed to send a PROXY protocol header, for `key`; a range that covers
/// every address is refused (anyone could then choose the address we see).
fn proxy_trusted(p: &mut Problems<'_>, key: &str, raw: &RawProxyProtocol) -> Vec<AllowedNet> {
    let mut nets = Vec::new();
    for t in &raw.trusted {
        match t.parse::<AllowedNet>() {
            Ok(n) if n.prefix() == 0 => p.add(
                key,
                format!("\"{t}\" trusts every address: name the load balancers' addresses, since whoever may send the header chooses the client address the per-IP limits and logs see"),
            ),
            Ok(n) => nets.push(n),
            Err(e) => p.add(key, e),
        }
    }
    nets
}

/// `[inbound.proxy_protocol]`, `[submission.proxy_protocol]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct RawProxyProtocol {
    trusted: Vec<String>,
}

impl Default for RawInbound {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:25".into(),
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_connection_rate_per_ip: 120,
            max_session_duration: "1h".into(),
            max_idle_commands: 100,
            shutdown_grace: "2m".into(),
            handshake_timeout: "30s".into(),
            command_timeout: "5m".into(),
            data_timeout: "10m".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            tls_deadline: "30s".into(),
            max_pre_tls_connections: None,
            listen_backlog: None,
            proxy_protocol: RawProxyProtocol::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
    dependencies: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
            dependencies: "off".into(),
        }
    }
}

/// The log filter: `level` for the gateway's own records and `dependencies` for those of
/// the libraries it uses (whose errors the gateway reports itself, with a reason). A
/// `level` with directives of its own (`=` or `,`) is taken as the whole filter.
fn log_filter(p: &mut Problems<'_>, raw: &RawLog) -> String {
    if raw.level.contains(['=', ',']) {
        let filter = raw.level.trim().to_owned();
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&filter) {
            p.add("log.level", format!("\"{filter}\" is not a log filter ({e}): try \"info\" or \"mssante_gateway=debug,rustls=warn\""));
        }
        return filter;
    }
    for (key, value) in [
        ("log.level", &raw.level),
        ("log.dependencies", &raw.dependencies),
    ] {
        if value
            .trim()
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_err()
        {
            p.add(
                key,
                format!("\"{value}\" is not a level: off, error, warn, info, debug or trace"),
            );
        }
    }
    format!(
        "{},{}={}",
        raw.dependencies.trim(),
        env!("CARGO_CRATE_NAME"),
        raw.level.trim()
    )
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The espace de confiance.
    pub espace: Espace,
    /// Our host name: greeting, EHLO, Received. Equal to our certificate's CN, since peers
    /// check hostname/CN coherence.
    pub hostname: String,
    /// The mail domains we receive for (lower case).
    pub local_domains: Vec<String>,
    /// TLS material and versions.
    pub tls: TlsSettings,
    /// The inbound listener's address and limits.
    pub inbound: InboundSettings,
    /// Where accepted messages are stored.
    pub spool_dir: PathBuf,
    /// The liste blanche: where it comes from and how it is checked.
    pub whitelist: WhitelistSettings,
    /// Hostname/CN coherence mode for peers.
    pub ehlo_check: EhloCheck,
    /// Which certificate names a peer's EHLO name may equal.
    pub ehlo_names: EhloNames,
    /// Forward-confirmed reverse DNS of peers against their certificate's CN.
    pub fcrdns: FcrdnsCheck,
    /// Recipients whose local part carries a route (`%`, `!`, quoted `@`) are refused.
    pub refuse_routing_addresses: bool,
    /// The listener for our internal mail server's outgoing mail, if enabled.
    pub submission: Option<SubmissionSettings>,
    /// The address of the `/metrics`, `/healthz`, `/readyz` endpoint, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), from `log.level` and `log.dependencies`.
    pub log_level: String,
    /// Delivery to the internal server; without it messages stay queued.
    pub relay: Option<RelaySettings>,
    /// The operator's Annexe 1 declaration data, for `annexe1` and `doctor`.
    pub operator: Option<OperatorSettings>,
    /// How MX records are resolved for outbound delivery.
    pub dns: DnsSettings,
    /// Delivery to other operators.
    pub outbound: OutboundSettings,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key (dotted path); for errors found while parsing, the key nearest the error
    /// followed by its position.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while validating.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`, loading the TLS material it names.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses and validates `text`, read from `path` (used for messages and relative paths).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let (raw, early) = parse(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut p = Problems {
            file: path,
            list: early,
        };
        let resolve = |rel: &Path| base.join(rel);

        // TLS material.
        let identity =
            match OurIdentity::load(&resolve(&raw.tls.certificate), &resolve(&raw.tls.key)) {
                Ok(id) => Some(id),
                Err(e) => {
                    let key = match &e {
                        pki::PkiError::KeyMismatch { .. }
                        | pki::PkiError::NoPrivateKey { .. }
                        | pki::PkiError::UnsupportedKey { .. } => "tls.key",
                        pki::PkiError::Read { path, .. } | pki::PkiError::Pem { path, .. }
                            if *path == resolve(&raw.tls.key) =>
                        {
                            "tls.key"
                        }
                        _ => "tls.certificate",
                    };
                    p.add(key, e.to_string());
                    None
                }
            };
        if raw.tls.anchors.is_empty() {
            p.add(
                "tls.anchors",
                "at least one trust anchor file is needed: the espace's IGC Santé root certificates (PEM)",
            );
        }
        let anchors: Vec<PathBuf> = raw.tls.anchors.iter().map(|a| resolve(a)).collect();
        let intermediates: Vec<PathBuf> =
            raw.tls.intermediates.iter().map(|a| resolve(a)).collect();
        let mut crls: Vec<PathBuf> = raw.tls.crls.iter().map(|a| resolve(a)).collect();
        let mut crl_sources = Vec::new();
        for (i, src) in raw.tls.crl_sources.iter().enumerate() {
            if !(src.url.starts_with("http://") || src.url.starts_with("https://")) {
                p.add(
                    &format!("tls.crl_sources[{i}].url"),
                    format!(
                        "\"{}\" is not an http:// or https:// URL (a CA's CRL distribution point)",
                        src.url
                    ),
                );
            }
            let file = resolve(&src.file);
            // The last valid download is used from the start; before the first one the
            // CA's certificates are checked without a CRL (status unknown is allowed).
            if file.is_file() {
                crls.push(file.clone());
            }
            crl_sources.push(CrlSource {
                url: src.url.clone(),
                file,
            });
        }
        let crl_refresh_interval = duration(
            &mut p,
            "tls.crl_refresh_interval",
            &raw.tls.crl_refresh_interval,
        );
        let trust = match TrustStore::load(&anchors, &intermediates, &crls) {
            Ok(t) => {
                espace_coherence(&mut p, raw.espace, &t);
                Some(t.with_revocation(raw.tls.revocation))
            }
            Err(e) => {
                // Name the key whose file is at fault.
                let key = match e.path() {
                    Some(f) if crl_sources.iter().any(|s| s.file == f) => "tls.crl_sources",
                    Some(f) if crls.iter().any(|c| c == f) => "tls.crls",
                    Some(f) if intermediates.iter().any(|i| i == f) => "tls.intermediates",
                    _ => "tls.anchors",
                };
                p.add(key, e.to_string());
                None
            }
        };
        let min = parse_tls_version(&raw.tls.min_version);
        let max = parse_tls_version(&raw.tls.max_version);
        if min.is_none() {
            p.add(
                "tls.min_version",
                format!(
                    "\"{}\" is not a TLS version: expected \"1.2\" or \"1.3\"",
                    raw.tls.min_version
                ),
            );
        }
        if max.is_none() {
            p.add(
                "tls.max_version",
                format!(
                    "\"{}\" is not a TLS version: expected \"1.2\" or \"1.3\"",
                    raw.tls.max_version
                ),
            );
        }
        let versions = match (min, max) {
            (Some(min), Some(max)) if min > max => {
                p.add("tls.min_version", "is above tls.max_version");
                None
            }
            (Some(min), Some(max)) => Some(TlsVersions { min, max }),
            _ => None,
        };

        // Identity and domains.
        let hostname = match (&raw.hostname, &identity) {
            (Some(h), Some(id)) => {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                let names = certificate_names(id);
                if !names.iter().any(|n| n.eq_ignore_ascii_case(&h)) {
                    p.add(
                        "hostname",
                        format!(
                            "\"{h}\" is neither the CN nor a DNS name of the certificate ({}): peers check that our host name equals the certificate's CN; leave hostname out to use the CN",
                            names.join(", ")
                        ),
                    );
                }
                h
            }
            (Some(h), None) => h.clone(),
            (None, Some(id)) => match &id.info().cn {
                Some(cn) => cn.to_ascii_lowercase(),
                None => {
                    p.add(
                        "hostname",
                        "the certificate has no CN: set hostname explicitly",
                    );
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        if raw.local_domains.is_empty() {
            p.add(
                "local_domains",
                "at least one mail domain is needed (the domains we receive for)",
            );
        }
        let mut local_domains = Vec::new();
        for d in &raw.local_domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain(&d) {
                p.add("local_domains", format!("\"{d}\" is not a domain name"));
            }
            local_domains.push(d);
        }

        // Inbound.
        let i = &raw.inbound;
        let listen = match i.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    "inbound.listen",
                    format!(
                        "\"{}\" is not an address and port such as \"0.0.0.0:25\" or \"[::]:25\"",
                        i.listen
                    ),
                );
                None
            }
        };
        let inbound_proxy =
            proxy_trusted(&mut p, "inbound.proxy_protocol.trusted", &i.proxy_protocol);
        let handshake_timeout = duration(&mut p, "inbound.handshake_timeout", &i.handshake_timeout);
        let tls_deadline = duration(&mut p, "inbound.tls_deadline", &i.tls_deadline);
        let max_pre_tls_connections = i
            .max_pre_tls_connections
            .unwrap_or((i.max_connections / 2).max(1));
        if max_pre_tls_connections == 0 || max_pre_tls_connections > i.max_connections {
            p.add(
                "inbound.max_pre_tls_connections",
                format!("{max_pre_tls_connections} must be between 1 and inbound.max_connections ({}); it keeps slots for authenticated peers", i.max_connections),
            );
        }
        // Room for a burst of every allowed connection arriving at once.
        let listen_backlog = i.listen_backlog.unwrap_or_else(|| {
            u32::try_from(i.max_connections)
                .unwrap_or(u32::MAX)
                .clamp(1024, 65535)
        });
        let max_session_duration = duration(
            &mut p,
            "inbound.max_session_duration",
            &i.max_session_duration,
        );
        let shutdown_grace = duration(&mut p, "inbound.shutdown_grace", &i.shutdown_grace);
        let command_timeout = duration(&mut p, "inbound.command_timeout", &i.command_timeout);
        let data_timeout = duration(&mut p, "inbound.data_timeout", &i.data_timeout);
        for (key, v) in [
            ("inbound.max_connections", i.max_connections),
            ("inbound.max_connections_per_ip", i.max_connections_per_ip),
            ("inbound.max_message_size", i.max_message_size),
            ("inbound.max_recipients", i.max_recipients),
            ("inbound.max_errors", i.max_errors as usize),
            ("inbound.max_idle_commands", i.max_idle_commands as usize),
        ] {
            if v == 0 {
                p.add(key, "must be greater than 0");
            }
        }

        // Liste blanche.
        let w = &raw.whitelist;
        let url = w
            .url
            .clone()
            .unwrap_or_else(|| raw.espace.whitelist_url().to_string());
        if raw.espace == Espace::Production && !w.verify_signature {
            p.add(
                "whitelist.verify_signature",
                "false is refused in the production espace: the liste blanche decides who may send you patient data, and only its signature proves it comes from ANS; remove the key",
            );
        }
        if w.fetch && !url.starts_with("https://") {
            p.add(
                "whitelist.url",
                format!("\"{url}\" must be an https:// URL (the list is fetched over HTTPS)"),
            );
        }
        let refresh_interval = duration(&mut p, "whitelist.refresh_interval", &w.refresh_interval);
        let max_age = duration(&mut p, "whitelist.max_age", &w.max_age);
        let fetch_timeout = duration(&mut p, "whitelist.timeout", &w.timeout);
        if !(0.0..1.0).contains(&w.max_shrink) {
            p.add("whitelist.max_shrink", format!("{} is not a fraction in [0, 1): e.g. 0.2 refuses a list that lost more than 20% of its entries", w.max_shrink));
        }
        if w.max_size == 0 {
            p.add("whitelist.max_size", "must be greater than 0");
        }
        let cache = resolve(&w.cache);
        if !w.fetch && !cache.is_file() {
            p.add(
                "whitelist.cache",
                format!(
                    "{} does not exist: with fetch = false the gateway only reads this file",
                    cache.display()
                ),
            );
        }
        let mut signer = SignerIdentity::production();
        match (&w.signer_cn, &w.signer_o) {
            (Some(cn), Some(o)) => {
                signer = SignerIdentity {
                    cn: cn.clone(),
                    o: o.clone(),
                };
            }
            (None, None) => {}
            _ => p.add(
                "whitelist.signer_cn",
                "signer_cn and signer_o go together: give both or neither",
            ),
        }

        let submission = match &raw.submission {
            None => None,
            Some(sub) => {
                let listen = sub.listen.parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "\"{}\" is not an address and port such as \"10.0.0.5:2587\"",
                        sub.listen
                    )
                });
                let mut allow = Vec::new();
                for a in &sub.allow {
                    match a.parse::<AllowedNet>() {
                        Ok(n) => allow.push(n),
                        Err(e) => p.add("submission.allow", e),
                    }
                }
                if sub.allow.is_empty() {
                    p.add("submission.allow", "list the internal mail servers' addresses (e.g. [\"10.0.0.5/32\"]); nobody else may submit");
                }
                let proxy_trusted = proxy_trusted(
                    &mut p,
                    "submission.proxy_protocol.trusted",
                    &sub.proxy_protocol,
                );
                match listen {
                    Ok(listen) => Some(SubmissionSettings {
                        listen,
                        allow,
                        require_tls: sub.require_tls,
                        proxy_trusted,
                    }),
                    Err(e) => {
                        p.add("submission.listen", e);
                        None
                    }
                }
            }
        };

        for (key, problem) in raw.dns.validate() {
            p.add(&format!("dns.{key}"), problem);
        }

        let log_level = log_filter(&mut p, &raw.log);
        let metrics_listen = match &raw.metrics.listen {
            None => None,
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.add(
                        "metrics.listen",
                        format!("\"{a}\" is not an address and port such as \"127.0.0.1:9925\""),
                    );
                    None
                }
            },
        };

        let max_received_headers = raw.limits.max_received_headers;
        if max_received_headers == 0 {
            p.add(
                "limits.max_received_headers",
                "must be at least 1 (50 is usual: RFC 5321 §6.3 loop detection)",
            );
        }
        let relay = raw
            .relay
            .as_ref()
            .and_then(|r| relay_settings(&mut p, r, &resolve))
            .map(|mut r| {
                r.max_received_headers = max_received_headers;
                r
            });

        let o = &raw.outbound;
        if o.port == 0 {
            p.add(
                "outbound.port",
                "must be a TCP port, 25 in the espace de confiance",
            );
        }
        if o.concurrency == 0 {
            p.add(
                "outbound.concurrency",
                "must be at least 1 (16 is the default)",
            );
        }
        if o.concurrency_per_domain == 0 {
            p.add(
                "outbound.concurrency_per_domain",
                "must be at least 1 (2 is the default)",
            );
        }
        let outbound_connect = duration(&mut p, "outbound.connect_timeout", &o.connect_timeout);
        let outbound_timeout = duration(&mut p, "outbound.timeout", &o.timeout);
        let outbound_helo = match &o.helo {
            Some(h) => {
                let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
                if !is_domain(&h) {
                    p.add("outbound.helo", format!("\"{h}\" is not a host name"));
                }
                h
            }
            None => hostname.clone(),
        };

        if !p.list.is_empty() {
            return Err(ConfigErrors(p.list));
        }
        // Every `None` above added a problem, so these are all present here.
        let (
            Some(identity),
            Some(trust),
            Some(versions),
            Some(listen),
            Some(handshake_timeout),
            Some(command_timeout),
            Some(data_timeout),
            Some(refresh_interval),
            Some(max_age),
            Some(fetch_timeout),
            Some(crl_refresh_interval),
            Some(outbound_connect),
            Some(outbound_timeout),
        ) = (
            identity,
            trust,
            versions,
            listen,
            handshake_timeout,
            command_timeout,
            data_timeout,
            refresh_interval,
            max_age,
            fetch_timeout,
            crl_refresh_interval,
            outbound_connect,
            outbound_timeout,
        )
        else {
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                key: "(config)".into(),
                message: "incomplete configuration".into(),
            }]));
        };
        let identity = Arc::new(identity);
        Ok(Config {
            path: path.to_path_buf(),
            espace: raw.espace,
            hostname,
            local_domains,
            tls: TlsSettings {
                identity: Arc::clone(&identity),
                trust: Arc::new(trust),
                versions,
                anchor_files: anchors,
                intermediate_files: intermediates,
                crl_files: crls,
                crl_sources,
                crl_refresh_interval,
            },
            inbound: InboundSettings {
                listen,
                max_connections: i.max_connections,
                max_connections_per_ip: i.max_connections_per_ip,
                max_connection_rate_per_ip: i.max_connection_rate_per_ip,
                max_idle_commands: i.max_idle_commands,
                max_session_duration: max_session_duration.unwrap_or(Duration::from_secs(3600)),
                shutdown_grace: shutdown_grace.unwrap_or(Duration::from_secs(120)),
                handshake_timeout,
                command_timeout,
                data_timeout,
                max_message_size: i.max_message_size,
                max_recipients: i.max_recipients,
                max_errors: i.max_errors,
                tls_deadline: tls_deadline.unwrap_or(Duration::from_secs(30)),
                max_pre_tls_connections,
                listen_backlog,
                max_received_headers,
                proxy_trusted: inbound_proxy,
            },
            spool_dir: resolve(&raw.spool.dir),
            whitelist: WhitelistSettings {
                url,
                cache,
                fetch: w.fetch,
                refresh_interval,
                max_age,
                max_shrink: w.max_shrink,
                max_size: w.max_size,
                timeout: fetch_timeout,
                verify_signature: w.verify_signature,
                signer,
                client_identity: w.client_certificate.then(|| Arc::clone(&identity)),
            },
            ehlo_check: raw.policy.ehlo_check,
            ehlo_names: raw.policy.ehlo_names,
            fcrdns: raw.policy.fcrdns,
            refuse_routing_addresses: raw.policy.refuse_routing_addresses,
            submission,
            metrics_listen,
            log_format: raw.log.format,
            log_level,
            relay,
            operator: raw.operator,
            dns: raw.dns,
            outbound: OutboundSettings {
                port: o.port,
                connect_timeout: outbound_connect,
                timeout: outbound_timeout,
                concurrency: o.concurrency,
                concurrency_per_domain: o.concurrency_per_domain,
                helo: outbound_helo,
            },
        })
    }

    /// Whether `domain` (any case, trailing dot allowed) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d))
    }
}

/// What `csr` reads from a configuration file: the espace, the host name and the operator
/// data. Unlike [`Config::load`], it needs none of the TLS files, since the certificate
/// being requested does not exist yet; the file must still parse without a problem.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// The file it was read from.
    pub path: PathBuf,
    /// The espace: which order form the request goes with.
    pub espace: Espace,
    /// `hostname` as written, if set.
    pub hostname: Option<String>,
    /// The CN of `tls.certificate` when that file can be read (a renewal): the host name
    /// when `hostname` is not set, as in [`Config::hostname`].
    pub certificate_cn: Option<String>,
    /// The `[operator]` section: the structure's name, identifier and département.
    pub operator: Option<OperatorSettings>,
}

impl RequestSettings {
    /// Reads and parses the file at `path`; every problem of its syntax or keys is
    /// reported, as [`Config::load`] does.
    pub fn load(path: &Path) -> Result<RequestSettings, ConfigErrors> {
        let (raw, early) = parse(path, &read(path)?)?;
        if !early.is_empty() {
            return Err(ConfigErrors(early));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let certificate_cn = pki::load_certificates(&base.join(&raw.tls.certificate))
            .ok()
            .and_then(|chain| {
                let leaf = chain.first()?;
                crate::trust::parse_identity(leaf).ok()?.cn
            });
        Ok(RequestSettings {
            path: path.to_path_buf(),
            espace: raw.espace,
            hostname: raw.hostname,
            certificate_cn,
            operator: raw.operator,
        })
    }
}

/// Reads the configuration file at `path`.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            message: format!("cannot read the configuration file: {e}"),
        }])
    })
}

/// Parses `text` (read from `path`) into its raw form, with the problems found on the way
/// (each `key = value` line serde refused is set aside and named); an error when nothing
/// usable remains.
fn parse(path: &Path, text: &str) -> Result<(RawConfig, Vec<ConfigError>), ConfigErrors> {
    // A wrong key or value stops serde at the first one: set that `key = value` line
    // aside (blanked, so line numbers stay) and parse again, so that one run names
    // every such problem, then the caller's checks run on what remains.
    let mut early: Vec<ConfigError> = Vec::new();
    let mut current = text.to_string();
    let mut set_aside: Vec<String> = Vec::new();
    let raw: RawConfig = loop {
        let e = match toml::from_str::<RawConfig>(&current) {
            Ok(raw) => break raw,
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        // A required key set aside for a wrong value is then "missing": said already.
        if set_aside
            .iter()
            .any(|k| message.contains(&format!("missing field `{k}`")))
        {
            return Err(ConfigErrors(early));
        }
        let key = match e.span() {
            Some(span) => {
                let (line, col) = line_col(&current, span.start);
                match key_at(&current, span.start) {
                    Some(key) => format!("{key} (line {line}, column {col})"),
                    None => format!("line {line}, column {col}"),
                }
            }
            None => "(syntax)".into(),
        };
        early.push(ConfigError {
            file: path.to_path_buf(),
            key,
            message,
        });
        let aside = e
            .span()
            .and_then(|span| key_value_line(&current, span.start))
            .filter(|_| early.len() < 32);
        match aside {
            Some((range, name)) => {
                current.replace_range(range, "");
                set_aside.push(name);
            }
            None => return Err(ConfigErrors(early)),
        }
    };
    Ok((raw, early))
}

fn relay_settings(
    p: &mut Problems<'_>,
    r: &RawRelay,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<RelaySettings> {
    let internal = match r.internal.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "relay.internal",
                format!(
                    "\"{}\" is not an address and port such as \"127.0.0.1:2526\"",
                    r.internal
                ),
            );
            None
        }
    };
    let idle_timeout = duration(p, "relay.idle_timeout", &r.idle_timeout);
    let timeout = duration(p, "relay.timeout", &r.timeout);
    let first = duration(p, "relay.retry_first", &r.retry_first);
    let max = duration(p, "relay.retry_max", &r.retry_max);
    let expiry = duration(p, "relay.expiry", &r.expiry);
    let drain_deadline = duration(p, "relay.drain_deadline", &r.drain_deadline);
    if r.internal_concurrency == 0 {
        p.add("relay.internal_concurrency", "must be greater than 0");
    }
    if !(0.0..1.0).contains(&r.retry_jitter) {
        p.add(
            "relay.retry_jitter",
            format!(
                "{} is not a fraction in [0, 1): e.g. 0.1 spreads each delay by ±10%",
                r.retry_jitter
            ),
        );
    }
    if let (Some(f), Some(m)) = (first, max) {
        if f > m {
            p.add("relay.retry_first", "is above relay.retry_max");
        }
    }
    let auth = match (&r.auth_user, &r.auth_password) {
        (Some(u), Some(pw)) => Some((u.clone(), pw.clone())),
        (None, None) => None,
        _ => {
            p.add(
                "relay.auth_user",
                "auth_user and auth_password go together: give both or neither",
            );
            None
        }
    };
    if let (Some(a), Some(_)) = (internal, &auth) {
        if !r.starttls && !a.ip().is_loopback() {
            p.add(
                "relay.auth_user",
                "AUTH would send the password in clear to a non-loopback server: set relay.starttls = true",
            );
        }
    }
    let tls_ca = r.tls_ca.as_ref().map(|c| resolve(c));
    if r.starttls && tls_ca.is_none() {
        p.add(
            "relay.tls_ca",
            "with starttls = true, name the PEM file of the CA that signed the internal server's certificate",
        );
    }
    if let Some(ca) = &tls_ca {
        if !ca.is_file() {
            p.add("relay.tls_ca", format!("{} does not exist", ca.display()));
        }
    }
    Some(RelaySettings {
        internal: internal?,
        protocol: r.protocol,
        starttls: r.starttls,
        tls_ca,
        tls_server_name: r
            .tls_server_name
            .clone()
            .unwrap_or_else(|| "localhost".into()),
        auth,
        internal_concurrency: r.internal_concurrency,
        idle_timeout: idle_timeout?,
        timeout: timeout?,
        max_received_headers: 50,
        drain_deadline: drain_deadline?,
        retry: crate::relay::retry::RetrySchedule {
            first: first?,
            max: max?,
            expiry: expiry?,
            jitter: r.retry_jitter,
        },
    })
}

/// The host names a certificate speaks for: its CN and its dNSName SANs.
fn certificate_names(id: &OurIdentity) -> Vec<String> {
    let info = id.info();
    info.cn
        .iter()
        .chain(info.dns_names.iter())
        .cloned()
        .collect()
}

/// The espace selects the IGC Santé hierarchy: a CA of the other one (test roots in
/// production, production roots in the test espace), or a CA that is not IGC Santé in
/// production, would let the wrong peers in.
fn espace_coherence(p: &mut Problems<'_>, espace: Espace, trust: &TrustStore) {
    for (key, subject) in trust.ca_subjects() {
        let wrong = match (espace, Hierarchy::of(&subject)) {
            (Espace::Production, Hierarchy::Test) => Some(
                "is a CA of the IGC Santé TEST hierarchy; the production espace needs ANS's production roots (AC RACINE IGC-SANTE ...)",
            ),
            (Espace::Production, Hierarchy::Other) => Some(
                "is not an IGC Santé CA; the production espace trusts only ANS's IGC Santé roots",
            ),
            (Espace::Test, Hierarchy::Production) => Some(
                "is a CA of the production IGC Santé hierarchy; the test espace needs the TEST roots (TEST AC RACINE IGC-SANTE ...), never production ones",
            ),
            _ => None,
        };
        if let Some(why) = wrong {
            p.add(
                key,
                format!("{subject} {why} (espace = \"{}\"); fix tls.anchors and tls.intermediates, or espace", espace.as_str()),
            );
        }
    }
}

fn parse_tls_version(s: &str) -> Option<TlsVersion> {
    match s.trim() {
        "1.2" | "TLSv1.2" => Some(TlsVersion::Tls12),
        "1.3" | "TLSv1.3" => Some(TlsVersion::Tls13),
        _ => None,
    }
}

fn duration(p: &mut Problems<'_>, key: &str, value: &str) -> Option<Duration> {
    match crate::duration::parse_positive(value) {
        Ok(d) => Some(d),
        Err(e) => {
            p.add(key, e);
            None
        }
    }
}

fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The dotted key written on the line holding `offset`, under the table header above it:
/// serde's messages ("unknown variant `staging`") do not say which key they are about.
/// A line without `=` (a table header) gives the table alone.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| !t.is_empty());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    let header = line
        .trim()
        .starts_with('[')
        .then(|| line.trim().trim_matches(|c| c == '[' || c == ']').trim());
    match (header, table, key) {
        (Some(h), _, _) => Some(h.to_string()),
        (None, Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, None, Some(k)) => Some(k.to_string()),
        (None, Some(t), None) => Some(t.to_string()),
        (None, None, None) => None,
    }
}

/// The byte range of the line at `offset` (without its newline) and its key, when that
/// line is a whole `key = value` whose value ends on it (brackets and quotes balanced):
/// such a line can be set aside without breaking the rest of the file.
fn key_value_line(text: &str, offset: usize) -> Option<(std::ops::Range<usize>, String)> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[start..end];
    let (key, value) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let value = value.trim();
    let balanced = value.matches('[').count() == value.matches(']').count()
        && value.matches('{').count() == value.matches('}').count()
        && value.matches('"').count() % 2 == 0
        && !value.starts_with("\"\"\"")
        && !value.starts_with("\'\'\'");
    balanced.then(|| {
        (
            start..end,
            key.rsplit('.').next().unwrap_or(key).to_string(),
        )
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_key() {
        let text = "espace = \"staging\"\n[tls]\ncertificate = \"a.pem\"\n\n[inbound]\nbogus = 3\n";
        assert_eq!(key_at(text, 9).as_deref(), Some("espace"));
        let at = text.find("bogus").unwrap();
        assert_eq!(key_at(text, at).as_deref(), Some("inbound.bogus"));
        let at = text.find("[tls]").unwrap();
        assert_eq!(key_at(text, at).as_deref(), Some("tls"));
        let at = text.find("certificate").unwrap();
        assert_eq!(key_at(text, at).as_deref(), Some("tls.certificate"));

        let errors = Config::from_toml(Path::new("/etc/gw.toml"), text).unwrap_err();
        let shown = errors.to_string();
        assert!(
            shown
                .starts_with("/etc/gw.toml: espace (line 1, column 10): unknown variant `staging`"),
            "{shown}"
        );
    }

    #[test]
    fn domains() {
        assert!(is_domain("ch-xyz.mssante.fr"));
        assert!(!is_domain("a@b.fr"));
        assert!(!is_domain("-a.fr"));
        assert!(!is_domain("a..fr"));
    }
}
