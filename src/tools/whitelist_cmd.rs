//! The `whitelist` commands: inspect, verify, look up and fetch the liste blanche with the
//! same code the gateway uses.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::UnixTime;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::trust::dn::SubjectDn;
use crate::trust::pki::{PkiError, TrustStore};
use crate::whitelist::fetch::FetchOutcome;
use crate::whitelist::live::WhitelistState;
use crate::whitelist::refresh::{self, Refresher};
use crate::whitelist::store;
use crate::whitelist::{
    load_and_verify, ChainCheck, SignerIdentity, VerifyOptions, Whitelist, WhitelistError,
};

/// A command's failure, as shown to the operator.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The list was refused.
    #[error("{path}: REFUSED: {source}")]
    Invalid {
        /// The file or URL.
        path: String,
        /// Why.
        source: WhitelistError,
    },
    /// The file could not be read, or is over the size bound.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// Trust anchors could not be loaded.
    #[error("{0}")]
    Pki(#[from] PkiError),
    /// No way to check the signer's chain was given.
    #[error("say how to check the signer's certificate chain: --config FILE (the espace's anchors), --anchors FILE, or --skip-chain to check only the digest, the signature value and the signer's name")]
    NoAnchors,
    /// The download failed.
    #[error("{0}")]
    Fetch(String),
    /// No list is available.
    #[error("no valid liste blanche at {0}: run `whitelist fetch` or check whitelist.cache")]
    NoList(String),
}

/// How `verify` checks the signer's chain.
pub enum Anchors<'a> {
    /// The anchors and signer of a configuration.
    Config(&'a Config),
    /// Anchor files given on the command line, with the expected signer.
    Files(TrustStore, SignerIdentity),
    /// No chain check (digest, signature value and signer name only).
    Skip(SignerIdentity),
}

/// A one-paragraph summary of a list.
pub fn describe(list: &Whitelist) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "generated:  {}", list.generated());
    let _ = writeln!(out, "entries:    {}", list.entry_count());
    let _ = writeln!(out, "domains:    {}", list.domain_count());
    let _ = writeln!(
        out,
        "DNs:        {} distinct after normalisation ({} as written)",
        list.dn_count(),
        list.dn_text_count()
    );
    match list.signer() {
        Some(s) => {
            let _ = writeln!(
                out,
                "signer:     {} (valid until {}; chain {})",
                s.subject,
                s.not_after,
                if s.chain_verified {
                    "verified"
                } else {
                    "NOT checked"
                }
            );
        }
        None => {
            let _ = writeln!(out, "signer:     none (signature NOT verified)");
        }
    }
    if !list.warnings().is_empty() {
        let _ = writeln!(out, "warnings:   {}", list.warnings().len());
        for w in list.warnings() {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

/// `whitelist verify FILE`: checks a signed list as the gateway would.
pub fn verify(file: &Path, anchors: &Anchors<'_>) -> Result<String, CommandError> {
    let max_bytes = match anchors {
        Anchors::Config(c) => c.whitelist.max_size,
        _ => store::DEFAULT_MAX_BYTES,
    };
    let bytes = store::read_bounded(file, max_bytes)?;
    let invalid = |source| CommandError::Invalid {
        path: file.display().to_string(),
        source,
    };
    let list = match anchors {
        Anchors::Config(c) => refresh::load(&bytes, &c.tls.trust, &c.whitelist).map_err(invalid)?,
        Anchors::Files(store, signer) => {
            let mut opts =
                VerifyOptions::new(store.anchors(), store.intermediates(), UnixTime::now());
            opts.signer = signer.clone();
            load_and_verify(&bytes, &opts).map_err(invalid)?
        }
        Anchors::Skip(signer) => {
            let opts = VerifyOptions {
                chain: ChainCheck::SkipInsecure,
                signer: signer.clone(),
            };
            load_and_verify(&bytes, &opts).map_err(invalid)?
        }
    };
    Ok(format!("{}: valid\n{}", file.display(), describe(&list)))
}

fn cached(config: &Config) -> Result<(Whitelist, Option<SystemTime>), CommandError> {
    let path = &config.whitelist.cache;
    let bytes = store::read_bounded(path, config.whitelist.max_size)?;
    let list = refresh::load(&bytes, &config.tls.trust, &config.whitelist).map_err(|source| {
        CommandError::Invalid {
            path: path.display().to_string(),
            source,
        }
    })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((list, modified))
}

/// `whitelist show`: the cached list in use.
pub fn show(config: &Config) -> Result<String, CommandError> {
    let (list, modified) = cached(config)?;
    let mut out = format!(
        "{} ({}; source {})\n",
        config.whitelist.cache.display(),
        config.espace.as_str(),
        if config.whitelist.fetch {
            config.whitelist.url.as_str()
        } else {
            "fixed file"
        }
    );
    out.push_str(&describe(&list));
    if let Some(age) = modified.and_then(|m| SystemTime::now().duration_since(m).ok()) {
        let _ = writeln!(
            out,
            "age:        {}s since last confirmed (max_age {}s){}",
            age.as_secs(),
            config.whitelist.max_age.as_secs(),
            if config.whitelist.fetch && age > config.whitelist.max_age {
                ": STALE, mail is being answered 451 4.7.1"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

/// What `whitelist lookup` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The domain or DN is in the list.
    Listed,
    /// It is not.
    NotListed,
    /// The query is not a DN (it has a `=`) that parses.
    BadQuery,
}

/// The text `whitelist lookup` prints, and its answer.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub text: String,
    pub answer: Answer,
}

/// `whitelist lookup DOMAIN|DN`: which entries a domain has, or which domains a DN serves.
pub fn lookup(config: &Config, query: &str) -> Result<Lookup, CommandError> {
    let (list, _) = cached(config)?;
    let mut out = String::new();
    let mut answer = Answer::Listed;
    if query.contains('=') {
        let dn = match SubjectDn::parse(query) {
            Ok(dn) => dn,
            Err(e) => {
                return Ok(Lookup {
                    text: format!("{query}: not a DN ({e})\n"),
                    answer: Answer::BadQuery,
                })
            }
        };
        let domains = list.domains_for_dn(&dn);
        if domains.is_empty() {
            answer = Answer::NotListed;
            let _ = writeln!(
                out,
                "{dn}: not listed (key {})",
                dn.normalized_key().as_str()
            );
        } else {
            let _ = writeln!(out, "{dn}: listed for {} domain(s)", domains.len());
            for d in domains {
                let _ = writeln!(out, "  {d}");
            }
        }
    } else {
        let entries = list.entries_for_domain(query);
        if entries.is_empty() {
            answer = Answer::NotListed;
            let _ = writeln!(out, "{query}: not listed");
        }
        for e in entries {
            let _ = writeln!(out, "{}", e.domain);
            let _ = writeln!(out, "  DN:          {}", e.dn_text);
            let _ = writeln!(out, "  description: {}", e.description);
            let _ = writeln!(out, "  responsable: {}", e.responsable_contact);
            let _ = writeln!(out, "  support:     {}", e.support_contact);
            let _ = writeln!(out, "  updated:     {}", e.updated_text);
        }
    }
    Ok(Lookup { text: out, answer })
}

/// `whitelist fetch`: one download, verified and cached as the gateway would.
pub async fn fetch(config: &Config) -> Result<String, CommandError> {
    let state = Arc::new(WhitelistState::new(Some(config.whitelist.max_age)));
    let metrics = Arc::new(Metrics::new());
    // Start from the cache so that an older download is refused and 304 can apply.
    let _ = refresh::load_cache(&state, &config.tls.trust, &config.whitelist, &metrics);
    let trust = Arc::clone(&config.tls.trust);
    let mut refresher = Refresher::new(
        Arc::clone(&state),
        Box::new(move || Arc::clone(&trust)),
        config.whitelist.clone(),
        metrics,
    )
    .map_err(|e| CommandError::Fetch(e.to_string()))?;
    match refresher.refresh_once().await {
        Ok(FetchOutcome::Updated(list)) => Ok(format!(
            "{}: updated, cached in {}\n{}",
            config.whitelist.url,
            config.whitelist.cache.display(),
            describe(&list)
        )),
        Ok(FetchOutcome::UpdatedNotCached(_, error)) => Err(CommandError::Fetch(format!(
            "{}: the list verifies but cannot be cached: {error}; fix whitelist.cache",
            config.whitelist.url
        ))),
        Ok(FetchOutcome::Unchanged) => Ok(format!(
            "{}: unchanged (the cached list is current)\n",
            config.whitelist.url
        )),
        Err(e) => Err(CommandError::Fetch(format!(
            "{}: {} ({e}); the cached list, if any, is kept",
            config.whitelist.url,
            refresh::failure_reason(&e)
        ))),
    }
}
