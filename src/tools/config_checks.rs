//! What `check-config` verifies beyond the file itself: everything `serve` would fail on
//! later, offline. The cached liste blanche verifies with the configured signer and
//! anchors; our certificate is within validity and chains to the anchors for both its
//! usages; each CRL is signed by a configured CA; the directories the gateway writes exist
//! and are writable; our local domains are on the list.
use std::path::{Path, PathBuf};

use rustls_pki_types::UnixTime;

use crate::config::Config;
use crate::trust::verify::{verify_chain, CertError, Usage};
use crate::trust::{crl, pki};
use crate::whitelist::{refresh, store, SignatureError, WhitelistError};

/// How serious a finding is: errors make `check-config` fail (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `serve` would fail, or refuse every peer.
    Error,
    /// Worth fixing; the gateway runs.
    Warning,
}

/// One finding, naming the configuration key to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub level: Level,
    /// The key to look at.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn error(key: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        level: Level::Error,
        key,
        message: message.into(),
    }
}

fn warning(key: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warning,
        key,
        message: message.into(),
    }
}

/// Runs every check on a configuration that loaded.
pub fn run(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    certificate(config, &mut findings);
    crls(config, &mut findings);
    directories(config, &mut findings);
    whitelist(config, &mut findings);
    findings
}

/// Our certificate: validity, and a chain to the anchors as server and as client.
fn certificate(config: &Config, findings: &mut Vec<Finding>) {
    let identity = &config.tls.identity;
    let now = time::OffsetDateTime::now_utc();
    let not_after = identity.info().not_after;
    if not_after < now {
        findings.push(error(
            "tls.certificate",
            format!("our certificate expired on {not_after}: peers refuse it; install the renewed IGC Santé certificate and its key"),
        ));
        return;
    }
    if not_after < now + time::Duration::days(30) {
        findings.push(warning(
            "tls.certificate",
            format!("our certificate expires on {not_after}, in less than 30 days: order its renewal now"),
        ));
    }
    for (usage, role) in [
        (Usage::Server, "as a server"),
        (Usage::Client, "as a client"),
    ] {
        match verify_chain(identity.chain(), &config.tls.trust, UnixTime::now(), usage) {
            Ok(_) => {}
            // Our CRL state, not the certificate: reported by the CRL checks and doctor.
            Err(CertError::CrlUnavailable | CertError::CrlExpired { .. }) => {}
            Err(e) => findings.push(error(
                "tls.certificate",
                format!("our certificate does not verify {role} against tls.anchors: {e}; put the leaf then its intermediate in tls.certificate, and the espace's roots in tls.anchors"),
            )),
        }
    }
}

/// Each CRL file is signed by one of the configured CAs.
fn crls(config: &Config, findings: &mut Vec<Finding>) {
    let tls = &config.tls;
    let cas = tls.trust.ca_certificates();
    for file in &tls.crl_files {
        let key = if tls.crl_sources.iter().any(|s| &s.file == file) {
            "tls.crl_sources"
        } else {
            "tls.crls"
        };
        let Ok(crls) = pki::load_crls(file) else {
            continue; // Reported when the configuration loaded.
        };
        for der in crls {
            if let Err(e) = crl::check(der.as_ref(), cas) {
                findings.push(error(
                    key,
                    format!("{}: {e}; use the CRL published by one of the CAs in tls.anchors / tls.intermediates", file.display()),
                ));
            }
        }
    }
}

/// Creates and removes a file in `dir`: the only sure test that the gateway may write.
fn writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    std::fs::remove_file(&probe)
        .map_err(|e| format!("cannot remove a file in {}: {e}", dir.display()))
}

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// The spool (created at start if missing) and, when downloading, the cache's directory.
fn directories(config: &Config, findings: &mut Vec<Finding>) {
    let spool = &config.spool_dir;
    let spool_check = if spool.is_dir() {
        writable(spool)
    } else if spool.exists() {
        Err(format!("{} exists and is not a directory", spool.display()))
    } else {
        match existing_ancestor(spool) {
            Some(dir) => writable(&dir).map_err(|e| {
                format!(
                    "{} does not exist and cannot be created: {e}",
                    spool.display()
                )
            }),
            None => Err(format!("{} cannot be created", spool.display())),
        }
    };
    if let Err(e) = spool_check {
        findings.push(error(
            "spool.dir",
            format!("{e}; the spool holds every accepted message: give the service user a writable directory"),
        ));
    }
    let w = &config.whitelist;
    if w.fetch {
        let dir = match w.cache.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let check = if dir.is_dir() {
            writable(&dir)
        } else {
            Err(format!("{} does not exist", dir.display()))
        };
        if let Err(e) = check {
            findings.push(error(
                "whitelist.cache",
                format!("{e}: a downloaded list could not be cached (a restart would then have no list until the next download); create the directory, writable by the service user"),
            ));
        }
    }
}

/// The cached (or fixed) list verifies with the configured signer and anchors, and lists
/// our domains.
fn whitelist(config: &Config, findings: &mut Vec<Finding>) {
    let w = &config.whitelist;
    let bytes = match store::load(&w.cache, w.max_size) {
        Ok(Some(bytes)) => bytes,
        Ok(None) if w.fetch => {
            findings.push(warning(
                "whitelist.cache",
                format!(
                    "no list at {} yet: it is downloaded at start-up",
                    w.cache.display()
                ),
            ));
            return;
        }
        Ok(None) => {
            findings.push(error(
                "whitelist.cache",
                format!("no list at {} and whitelist.fetch = false: copy the espace's signed list there, or set whitelist.fetch = true", w.cache.display()),
            ));
            return;
        }
        Err(e) => {
            findings.push(error("whitelist.cache", e.to_string()));
            return;
        }
    };
    let list = match refresh::load(&bytes, &config.tls.trust, w) {
        Ok(list) => list,
        Err(e) => {
            let (key, fix) = match &e {
                WhitelistError::Signature(SignatureError::SignerMismatch { .. }) => (
                    "whitelist.signer_o",
                    "set whitelist.signer_cn and whitelist.signer_o to the signer ANS announced",
                ),
                WhitelistError::Signature(SignatureError::SignerNotTrusted(_)) => (
                    "tls.anchors",
                    "the signer must chain to tls.anchors through tls.intermediates (the espace's IGC Santé CAs)",
                ),
                _ => (
                    "whitelist.cache",
                    "replace the file with the espace's signed list (whitelist fetch downloads it)",
                ),
            };
            let level = if w.fetch {
                Level::Warning
            } else {
                Level::Error
            };
            findings.push(Finding {
                level,
                key,
                message: format!(
                    "the list at {} does not verify: {e}; {fix}{}",
                    w.cache.display(),
                    if w.fetch {
                        " (a valid download will replace it)"
                    } else {
                        ""
                    }
                ),
            });
            return;
        }
    };
    for domain in &config.local_domains {
        if !list.is_listed_domain(domain) {
            findings.push(warning(
                "local_domains",
                format!("{domain} is not on the liste blanche: peers will refuse mail from it until ANS lists it (declare it with the Annexe 1 form: mssante-gateway annexe1)"),
            ));
        }
    }
}
