//! The MSSanté whitelist (liste blanche): the only domains, and for each the operator
//! certificate DNs, allowed to exchange mail in the espace de confiance.
//!
//! Flow: raw signed XML (downloaded, or read from the [`store`] cache at start-up) →
//! [`load_and_verify`] (one [`xml`] tree; its [`signature`] checked; the entries read from
//! that same tree by [`parse`]; then [`index`]) → an immutable
//! [`Whitelist`] shared as `ArcSwap<Whitelist>` ([`LiveWhitelist`]).

pub(crate) mod c14n;
pub mod fetch;
pub(crate) mod index;
pub(crate) mod live;
pub(crate) mod model;
pub mod parse;
pub(crate) mod refresh;
pub mod signature;
pub mod store;
pub(crate) mod xml;

use crate::trust::pki::OurIdentity;
pub use index::{LiveWhitelist, Whitelist};
pub use model::{Entry, ParseWarning, ParsedList, WarningKind};
pub use parse::ParseError;
pub use signature::{
    sign_enveloped, verify_enveloped, ChainCheck, SignatureError, SignerIdentity, SignerInfo,
    SigningKey, VerifyOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why a list was refused. The caller keeps using its previous list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhitelistError {
    /// The bytes are not UTF-8 (the list declares UTF-8).
    #[error("the list is not UTF-8 (invalid byte at {valid_up_to}); only UTF-8 is accepted")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The bytes start with a UTF-16 or UTF-32 byte-order mark.
    #[error("the list is encoded in {0}; only UTF-8 is accepted")]
    OtherEncoding(&'static str),
    /// The signature does not verify.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signed document is not a usable list.
    #[error("content: {0}")]
    Parse(#[from] ParseError),
}

/// The list as text: UTF-8, with a clear word for the other Unicode encodings.
fn utf8(xml: &[u8]) -> Result<&str, WhitelistError> {
    for (bom, name) in [
        (&[0x00, 0x00, 0xfe, 0xff][..], "UTF-32BE"),
        (&[0xff, 0xfe, 0x00, 0x00][..], "UTF-32LE"),
        (&[0xfe, 0xff][..], "UTF-16BE"),
        (&[0xff, 0xfe][..], "UTF-16LE"),
    ] {
        if xml.starts_with(bom) {
            return Err(WhitelistError::OtherEncoding(name));
        }
    }
    std::str::from_utf8(xml).map_err(|e| WhitelistError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Parses and indexes a list **without** checking its signature: only for an operator who
/// set `verify_signature = false` (logged at start-up and shown in metrics).
pub fn load_unverified(xml: &[u8]) -> Result<Whitelist, WhitelistError> {
    let list = parse::parse(utf8(xml)?)?;
    tracing::warn!(
        generated = crate::logging::time(list.generated),
        entries = list.entries.len(),
        "whitelist loaded WITHOUT signature verification (verify_signature = false)"
    );
    Ok(Whitelist::new(list, None))
}

/// The single entry point for a list from the network or the cache: parses the document
/// once, verifies its signature (see [`signature`]), then reads and indexes the entries
/// from that same parsed document, so what is used is exactly what was digested. Nothing
/// of an unverified list is parsed into the index.
pub fn load_and_verify(xml: &[u8], opts: &VerifyOptions<'_>) -> Result<Whitelist, WhitelistError> {
    let doc = xml::Document::parse(utf8(xml)?).map_err(SignatureError::from)?;
    let signer = signature::verify_document(&doc, opts)?;
    let list = parse::from_document(&doc)?;
    tracing::info!(
        generated = crate::logging::time(list.generated),
        entries = list.entries.len(),
        warnings = list.warnings.len(),
        signer = %signer.subject,
        chain_verified = signer.chain_verified,
        "whitelist verified"
    );
    for warning in &list.warnings {
        tracing::warn!(%warning, "whitelist entry");
    }
    Ok(Whitelist::new(list, Some(signer)))
}

/// How the liste blanche is obtained and trusted.
#[derive(Debug, Clone)]
pub struct WhitelistSettings {
    /// The espace's URL (from `espace` unless overridden).
    pub url: String,
    /// The cache file: the raw signed XML of the last valid list. With `fetch = false` it
    /// is the list itself, read only.
    pub cache: PathBuf,
    /// Download and refresh the list; false for an offline gateway on a fixed file.
    pub fetch: bool,
    /// Time between refreshes (a random jitter of up to 10% is added).
    pub refresh_interval: Duration,
    /// Past this age without a valid refresh, decisions answer 451 4.7.1.
    pub max_age: Duration,
    /// A new list with fewer entries than `(1 - max_shrink)` times the current one is
    /// refused as truncated.
    pub max_shrink: f64,
    /// Largest download accepted, in bytes.
    pub max_size: usize,
    /// Whole download time limit.
    pub timeout: Duration,
    /// Check the XML signature (never off in production).
    pub verify_signature: bool,
    /// Who must have signed the list.
    pub signer: SignerIdentity,
    /// Our identity, presented as client certificate when downloading the list
    /// (`whitelist.client_certificate = true`), for an espace server that asks for one.
    pub client_identity: Option<Arc<OurIdentity>>,
}
