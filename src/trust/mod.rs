//! IGC Santé trust: loading our identity and the espace's anchors (`pki`), deciding
//! whether a peer's certificate chain is acceptable (`verify`), comparing subject DNs the
//! way the liste blanche writes them (`dn`), and the rustls configurations for both
//! directions (`tls`).

pub(crate) mod crl;
pub mod dn;
pub mod pki;
pub mod tls;
pub mod verify;

use crate::trust::crl::CrlSource;
pub use pki::{ExtKeyUsage, OurIdentity, PkiError, TrustStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
pub use tls::{client_config, server_config, TlsConfigError, TlsInfo, TlsVersion, TlsVersions};
pub use verify::{parse_identity, verify_chain, CertError, PeerIdentity, Usage};

/// TLS material, loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Our certificate chain and key.
    pub identity: Arc<OurIdentity>,
    /// The espace's anchors, known intermediates and CRLs.
    pub trust: Arc<TrustStore>,
    /// Allowed protocol versions.
    pub versions: TlsVersions,
    /// The files the trust store was built from, to rebuild it when a CRL is refreshed.
    pub anchor_files: Vec<PathBuf>,
    /// Known intermediate CA files.
    pub intermediate_files: Vec<PathBuf>,
    /// CRL files (fixed ones, then those of `crl_sources` that exist).
    pub crl_files: Vec<PathBuf>,
    /// CRLs downloaded from their distribution points.
    pub crl_sources: Vec<CrlSource>,
    /// Time between CRL downloads.
    pub crl_refresh_interval: Duration,
}
