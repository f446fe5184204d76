//! The MSSanté whitelist (liste blanche): the only domains, and for each the operator
//! certificate DNs, allowed to exchange mail in the espace de confiance.
//!
//! Flow: raw signed XML (downloaded, or read from the [`store`] cache at start-up) →
//! [`load_and_verify`] (signature, then [`parse`], then [`index`]) → an immutable
//! [`Whitelist`] shared as `ArcSwap<Whitelist>` ([`LiveWhitelist`]).

pub mod c14n;
pub mod fetch;
pub mod index;
pub mod live;
pub mod model;
pub mod parse;
pub mod refresh;
pub mod signature;
pub mod store;

pub use index::{LiveWhitelist, Whitelist};
pub use model::{Entry, ParseWarning, ParsedList, WarningKind};
pub use parse::ParseError;
pub use signature::{
    sign_enveloped, verify_enveloped, ChainCheck, SignatureError, SignerIdentity, SignerInfo,
    SigningKey, VerifyOptions,
};

/// Why a list was refused. The caller keeps using its previous list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhitelistError {
    /// The bytes are not UTF-8 (the list declares UTF-8).
    #[error("the list is not UTF-8 (invalid byte at {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The signature does not verify.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signed document is not a usable list.
    #[error("content: {0}")]
    Parse(#[from] ParseError),
}

/// Parses and indexes a list **without** checking its signature: only for an operator who
/// set `verify_signature = false` (logged at start-up and shown in metrics).
pub fn load_unverified(xml: &[u8]) -> Result<Whitelist, WhitelistError> {
    let text = std::str::from_utf8(xml).map_err(|e| WhitelistError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let list = parse::parse(text)?;
    tracing::warn!(
        generated = %list.generated,
        entries = list.entries.len(),
        "whitelist loaded WITHOUT signature verification (verify_signature = false)"
    );
    Ok(Whitelist::new(list, None))
}

/// The single entry point for a list from the network or the cache: verifies the
/// signature (see [`signature`]), parses and indexes. Nothing of an unverified list is
/// parsed into the index.
pub fn load_and_verify(xml: &[u8], opts: &VerifyOptions<'_>) -> Result<Whitelist, WhitelistError> {
    let text = std::str::from_utf8(xml).map_err(|e| WhitelistError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let signer = verify_enveloped(text, opts)?;
    let list = parse::parse(text)?;
    tracing::info!(
        generated = %list.generated,
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
