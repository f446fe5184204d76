//! `doctor`: is this installation ready for the espace de confiance? One verdict per check,
//! each with the fix, so an operator can go down the list.
//!
//! Checks, in order: our certificate against the IGC Santé rules (`identity_checks`) and
//! the espace's anchors (as a server and as a client); the liste blanche cache (it loads,
//! it is fresh); for each local domain, that the list names it with our DN and that its MX
//! records point at our CN; the auto-reply mailbox and the rest of the Annexe 1 data; the
//! listeners answer. The internal mail server is not checked: this version of the
//! configuration has no setting for it yet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use rustls_pki_types::UnixTime;
use serde::Serialize;
use time::OffsetDateTime;

use super::annexe1;
use super::identity_checks::{self, Check, Status};
use crate::config::Config;
use crate::dns::{DnsError, Resolver};
use crate::trust::dn::SubjectDn;
use crate::trust::verify::{verify_chain, CertError, Usage};
use crate::whitelist::{refresh, store, Whitelist};

/// How the doctor reaches the outside world.
#[derive(Debug, Clone)]
pub struct Options {
    /// DNS servers for the MX lookups; empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    /// Query the DNS at all (false: the MX checks are warnings, not checked).
    pub dns: bool,
    /// Time limit of each TCP connection attempt and DNS query.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nameservers: Vec::new(),
            dns: true,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration file checked.
    pub config: String,
    /// The worst verdict.
    pub status: Status,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    fn new(config: &Config, checks: Vec<Check>) -> Self {
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass);
        Report {
            config: config.path.display().to_string(),
            status,
            checks,
        }
    }

    /// 0 when everything passed, 1 with warnings, 2 with failures.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        }
    }

    /// One line per check (`FAIL  name  message`), then a summary.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.status.as_str().to_ascii_uppercase(),
                c.name,
                c.message
            ));
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{}: {} pass, {} warn, {} fail\n",
            self.config,
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

/// Runs every check.
pub async fn run(config: &Config, options: &Options) -> Report {
    let now = OffsetDateTime::now_utc();
    let identity = &config.tls.identity;
    let ours = identity.info();
    let mut checks = Vec::new();

    // Our certificate.
    if let Some(leaf) = identity.chain().first() {
        checks.extend(identity_checks::check_certificate(
            leaf.as_ref(),
            now,
            &identity_checks::delegated_zones(config),
        ));
    }
    match &ours.cn {
        Some(cn) if cn.eq_ignore_ascii_case(&config.hostname) => checks.push(Check::pass(
            "hostname",
            format!("our host name {} is the certificate's CN", config.hostname),
        )),
        _ => checks.push(Check::warn(
            "hostname",
            format!(
                "our host name {} is not the certificate's CN {}: peers compare our EHLO name with the CN; leave hostname out of the configuration",
                config.hostname,
                ours.cn.as_deref().unwrap_or("(none)")
            ),
        )),
    }
    for (usage, name, role) in [
        (
            Usage::Server,
            "chain.server",
            "TLS server (peers delivering to us)",
        ),
        (
            Usage::Client,
            "chain.client",
            "TLS client (delivering to peers)",
        ),
    ] {
        checks.push(
            match verify_chain(identity.chain(), &config.tls.trust, UnixTime::now(), usage) {
                Ok(_) => Check::pass(
                    name,
                    format!("chains to the {} espace's anchors as {role}", config.espace.as_str()),
                ),
                Err(e @ CertError::Untrusted(_)) => Check::fail(
                    name,
                    format!("as {role}: {e}; put the leaf then its intermediate in tls.certificate, and the espace's roots in tls.anchors"),
                ),
                Err(e) => Check::fail(name, format!("as {role}: {e}")),
            },
        );
    }

    crl_checks(config, &mut checks);

    // The liste blanche.
    let list = whitelist_checks(config, &mut checks);

    // Each local domain: listed with our DN, MX at our CN.
    let resolver = if options.dns {
        Some(resolver(config, options))
    } else {
        None
    };
    for domain in &config.local_domains {
        if let Some(list) = &list {
            checks.push(domain_listed(list, domain, &ours.subject));
        }
        let cn = ours.cn.as_deref().unwrap_or_default();
        let mx = match &resolver {
            None => Check::warn(
                format!("domain.{domain}.mx"),
                "not checked (--no-dns): its MX records must point at our CN",
            ),
            Some(Err(e)) => Check::warn(
                format!("domain.{domain}.mx"),
                format!("not checked: no DNS resolver ({e}){}", dns_advice(options)),
            ),
            Some(Ok(r)) => mx_check(r, domain, cn, options).await,
        };
        checks.push(mx);
    }

    // The Annexe 1 data.
    checks.extend(operator_checks(config));

    // Listeners.
    checks.push(reachable("listener.inbound", config.inbound.listen, options.timeout).await);
    if let Some(metrics) = config.metrics_listen {
        checks.push(reachable("listener.metrics", metrics, options.timeout).await);
    }
    if let Some(sub) = &config.submission {
        checks.push(reachable("listener.submission", sub.listen, options.timeout).await);
    }
    if let Some(relay) = &config.relay {
        checks.push(reachable("internal_server", relay.internal, options.timeout).await);
    }

    Report::new(config, checks)
}

/// Per CA that issues operators' certificates: its CRL is loaded and current. Under
/// `tls.revocation = "require"` a missing or expired CRL defers every peer of that CA.
fn crl_checks(config: &Config, checks: &mut Vec<Check>) {
    use crate::trust::pki::Revocation;
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;

    let trust = &config.tls.trust;
    let require = trust.revocation() == Revocation::Require;
    let now = time::OffsetDateTime::now_utc();
    for ca in trust.crl_coverage() {
        let name = format!("crl {}", ca.issuer);
        if !ca.present {
            let text = format!(
                "no CRL of {} is loaded: add its CRL file to tls.crls, or its distribution point to tls.crl_sources",
                ca.issuer
            );
            checks.push(if require {
                Check::fail(&name, format!("{text}; until then its peers are deferred (tls.revocation = \"require\")"))
            } else {
                Check::warn(&name, format!("{text}; revoked certificates of this CA are not detected (tls.revocation = \"best_effort\")"))
            });
            continue;
        }
        let next_update = trust.crls().iter().find_map(|der| {
            let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).ok()?;
            (crate::trust::verify::rfc4514(crl.issuer()) == ca.issuer)
                .then(|| crl.next_update().map(|t| t.to_datetime()))
        });
        checks.push(match next_update.flatten() {
            Some(next) if next < now => Check::fail(
                &name,
                format!("the CRL of {} expired at {next}: its peers are deferred until a current one is loaded (check the tls.crl_sources downloads, mssante_crl_fetch_total)", ca.issuer),
            ),
            Some(next) => Check::pass(&name, format!("CRL of {} loaded, next update {next}", ca.issuer)),
            None => Check::pass(&name, format!("CRL of {} loaded (no nextUpdate)", ca.issuer)),
        });
    }
}

fn whitelist_checks(config: &Config, checks: &mut Vec<Check>) -> Option<Whitelist> {
    let settings = &config.whitelist;
    let path = settings.cache.display();
    let bytes = match store::load(&settings.cache, settings.max_size) {
        Ok(Some(b)) => b,
        Ok(None) => {
            checks.push(Check::fail(
                "whitelist.load",
                format!("no list at {path}: start the gateway with whitelist.fetch = true to download it, or copy the espace's signed list there"),
            ));
            return None;
        }
        Err(e) => {
            checks.push(Check::fail(
                "whitelist.load",
                format!("{e}: check the path and the gateway user's rights"),
            ));
            return None;
        }
    };
    let list = match refresh::load(&bytes, &config.tls.trust, settings) {
        Ok(l) => l,
        Err(e) => {
            checks.push(Check::fail(
                "whitelist.load",
                if settings.fetch {
                    format!("{path} refused ({e}): check that tls.anchors and tls.intermediates hold the espace's CAs (the signer chains to them), then delete the file and let the gateway download the list again")
                } else {
                    format!("{path} refused ({e}): check that tls.anchors and tls.intermediates hold the espace's CAs (the signer chains to them), and replace the file with the espace's signed list (fetch = false: the gateway only reads it)")
                },
            ));
            return None;
        }
    };
    checks.push(Check::pass(
        "whitelist.load",
        format!(
            "{path}: {} entries, {} domains, generated {}",
            list.entry_count(),
            list.domain_count(),
            list.generated().date()
        ),
    ));
    let generated_age = age_between(list.generated(), OffsetDateTime::now_utc());
    let max_age = settings.max_age;
    let fresh = if settings.fetch {
        let confirmed = std::fs::metadata(&settings.cache)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if confirmed > max_age {
            Check::fail("whitelist.fresh", format!("last confirmed {} ago, more than whitelist.max_age ({}): the gateway answers 451 to every peer; check that it reaches {}", human(confirmed), human(max_age), settings.url))
        } else if confirmed > settings.refresh_interval.saturating_mul(2) {
            Check::warn("whitelist.fresh", format!("last confirmed {} ago, more than two refresh intervals: check the gateway's logs for failed downloads of {}", human(confirmed), settings.url))
        } else {
            Check::pass(
                "whitelist.fresh",
                format!(
                    "confirmed {} ago; generated {} ago",
                    human(confirmed),
                    human(generated_age)
                ),
            )
        }
    } else if generated_age > max_age {
        Check::warn("whitelist.fresh", format!("a fixed file (whitelist.fetch = false) generated {} ago and never refreshed: set fetch = true, or replace the file with the espace's current list", human(generated_age)))
    } else {
        Check::pass(
            "whitelist.fresh",
            format!(
                "a fixed file (whitelist.fetch = false) generated {} ago",
                human(generated_age)
            ),
        )
    };
    checks.push(fresh);
    Some(list)
}

fn age_between(then: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(now - then).unwrap_or_default()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}min", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// The list must name `domain` with our DN.
pub fn domain_listed(list: &Whitelist, domain: &str, ours: &SubjectDn) -> Check {
    let name = format!("domain.{domain}.whitelist");
    if list.domain_served_by(domain, ours) {
        return Check::pass(name, "listed with our certificate's DN");
    }
    let entries = list.entries_for_domain(domain);
    if entries.is_empty() {
        Check::fail(name, format!("not in the liste blanche: peers refuse mail from and to it; declare it to ANS (mssante-gateway annexe1 --add {domain})"))
    } else {
        let listed: Vec<&str> = entries.iter().map(|e| e.dn_text.as_str()).collect();
        Check::fail(name, format!("listed only with {}, not with our DN {}: peers refuse our certificate for it; declare our DN to ANS, or install the listed certificate", listed.join(" ; "), annexe1::form_dn(ours)))
    }
}

/// The gateway's own resolver, on `--nameserver` when given, each query sent once with
/// the doctor's timeout.
fn resolver(config: &Config, options: &Options) -> Result<Resolver, String> {
    let mut dns = config.dns.clone();
    if !options.nameservers.is_empty() {
        dns.name_servers = options.nameservers.clone();
    }
    dns.timeout = options.timeout;
    dns.attempts = 1;
    Resolver::new(&dns).map_err(|e| e.to_string())
}

/// What to try when the DNS did not answer.
fn dns_advice(options: &Options) -> String {
    if options.nameservers.is_empty() {
        "; pass --nameserver IP".into()
    } else {
        let servers: Vec<String> = options
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("; check that {} answers", servers.join(", "))
    }
}

/// Every MX target of `domain` must be our CN (hostname/CN coherence).
async fn mx_check(resolver: &Resolver, domain: &str, cn: &str, options: &Options) -> Check {
    let name = format!("domain.{domain}.mx");
    match resolver.mx_hosts(domain).await {
        Ok(hosts) => {
            // A domain without MX but with an address (implicit MX) has no MX record.
            let targets: Vec<String> = hosts
                .into_iter()
                .filter(|h| !h.implicit)
                .map(|h| h.exchange)
                .collect();
            mx_verdict(domain, &targets, cn)
        }
        Err(
            DnsError::NoSuchDomain { .. }
            | DnsError::NoMailHost { .. }
            | DnsError::InvalidName { .. }
            | DnsError::NoAddress { .. },
        ) => Check::fail(name, format!("no MX record: peers cannot deliver to {domain}; publish an MX pointing at our CN {cn} (or ask ANS, with the redirection method)")),
        Err(e @ DnsError::NullMx { .. }) => Check::fail(
            name,
            format!("{e}: peers cannot deliver to {domain}; publish an MX pointing at our CN {cn}"),
        ),
        Err(e) => Check::warn(
            name,
            format!("not checked: DNS lookup failed ({e}){}", dns_advice(options)),
        ),
    }
}

/// The MX verdict from the targets found (pure, for tests).
pub fn mx_verdict(domain: &str, targets: &[String], cn: &str) -> Check {
    let name = format!("domain.{domain}.mx");
    if targets.is_empty() {
        return Check::fail(
            name,
            format!("no MX record: publish an MX pointing at our CN {cn}"),
        );
    }
    let wrong: Vec<&str> = targets
        .iter()
        .filter(|t| !t.eq_ignore_ascii_case(cn))
        .map(String::as_str)
        .collect();
    if wrong.is_empty() {
        Check::pass(name, format!("MX points at our CN {cn}"))
    } else {
        Check::fail(name, format!("MX points at {}, not at our CN {cn}: peers check that the MX host equals the certificate's CN; change the MX to {cn} (or order a certificate for that name)", wrong.join(", ")))
    }
}

fn operator_checks(config: &Config) -> Vec<Check> {
    let Some(op) = &config.operator else {
        return vec![Check::warn(
            "operator",
            "no [operator] section: the auto-reply mailbox and the Annexe 1 data are not configured (see config/local.toml)",
        )];
    };
    let mut checks = Vec::new();
    let domain = op
        .auto_reply
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase());
    checks.push(match domain {
        Some(d) if config.is_local_domain(&d) => Check::pass(
            "operator.auto_reply",
            format!("{} is in our domain {d}", op.auto_reply),
        ),
        _ => Check::fail(
            "operator.auto_reply",
            format!(
                "\"{}\" is not an address in our local domains ({}): the auto-reply mailbox (EX_GBM_4020) must be one of our MSSanté mailboxes",
                op.auto_reply,
                config.local_domains.join(", ")
            ),
        ),
    });
    let subjects = vec![config.tls.identity.info().subject.clone()];
    checks.push(
        match annexe1::build(config, &subjects, &annexe1::Request::default()) {
            Ok(_) => Check::pass(
                "operator.annexe1",
                "the Annexe 1 data follows the form's rules",
            ),
            Err(errors) => Check::warn(
                "operator.annexe1",
                format!(
                    "the Annexe 1 data breaks the form's rules: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        },
    );
    checks
}

/// A TCP connection to `addr` (loopback when it listens on every address) succeeds.
async fn reachable(name: &str, addr: SocketAddr, timeout: Duration) -> Check {
    let whose = if name == "internal_server" {
        "is the internal mail server up ([relay] internal)?"
    } else {
        "is the gateway running (serve)?"
    };
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Check::pass(name, format!("{target} accepts connections")),
        Ok(Err(e)) => Check::warn(
            name,
            format!(
                "{target} does not accept connections ({e}): {whose} is a firewall in the way?"
            ),
        ),
        Err(_) => Check::warn(
            name,
            format!(
                "{target} did not answer within {}s: {whose} is a firewall in the way?",
                timeout.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_must_point_at_the_cn() {
        let cn = "smtp.ch-xyz.mssante.fr";
        assert_eq!(
            mx_verdict("ch-xyz.mssante.fr", &[cn.to_string()], cn).status,
            Status::Pass
        );
        let wrong = mx_verdict(
            "ch-xyz.mssante.fr",
            &[cn.to_string(), "mx.other.fr".to_string()],
            cn,
        );
        assert_eq!(wrong.status, Status::Fail);
        assert!(wrong.message.contains("mx.other.fr"));
        assert_eq!(
            mx_verdict("ch-xyz.mssante.fr", &[], cn).status,
            Status::Fail
        );
    }

    /// The bundled configuration, fetching, with its cache confirmed `age` ago.
    fn fetching_config_with_cache_age(dir: &std::path::Path, age: Duration) -> Config {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cache = dir.join("liste.xml");
        std::fs::copy(root.join("certs-test/whitelist.xml"), &cache).expect("copy the list");
        let file = std::fs::File::options()
            .write(true)
            .open(&cache)
            .expect("open");
        file.set_modified(SystemTime::now() - age)
            .expect("set mtime");
        let text = std::fs::read_to_string(root.join("config/local.toml"))
            .expect("read")
            .replace(
                "cache = \"../certs-test/whitelist.xml\"",
                &format!("cache = {:?}", cache.display().to_string()),
            )
            .replace(
                "fetch = false",
                "fetch = true\nmax_age = \"72h\"\nrefresh_interval = \"1h\"",
            );
        Config::from_toml(&root.join("config/local.toml"), &text).expect("config")
    }

    fn freshness(config: &Config) -> Check {
        let mut checks = Vec::new();
        assert!(
            whitelist_checks(config, &mut checks).is_some(),
            "{checks:?}"
        );
        checks
            .into_iter()
            .find(|c| c.name == "whitelist.fresh")
            .expect("freshness check")
    }

    #[test]
    fn a_cache_older_than_max_age_fails_and_a_late_one_warns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = fetching_config_with_cache_age(dir.path(), Duration::from_secs(600));
        assert_eq!(freshness(&fresh).status, Status::Pass);
        let late = fetching_config_with_cache_age(dir.path(), Duration::from_secs(5 * 3600));
        assert_eq!(freshness(&late).status, Status::Warn);
        let stale = fetching_config_with_cache_age(dir.path(), Duration::from_secs(4 * 86400));
        let check = freshness(&stale);
        assert_eq!(check.status, Status::Fail);
        assert!(check.message.contains("451"), "{}", check.message);
    }

    #[test]
    fn exit_codes_follow_the_worst_verdict() {
        let config = Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"),
        )
        .expect("config");
        let r = Report::new(&config, vec![Check::pass("a", "")]);
        assert_eq!(r.exit_code(), 0);
        let r = Report::new(&config, vec![Check::pass("a", ""), Check::warn("b", "")]);
        assert_eq!(r.exit_code(), 1);
        let r = Report::new(&config, vec![Check::fail("a", ""), Check::warn("b", "")]);
        assert_eq!(r.exit_code(), 2);
    }
}
