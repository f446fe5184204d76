//! IGC Santé trust: loading our identity and the espace's anchors (`pki`), deciding
//! whether a peer's certificate chain is acceptable (`verify`), comparing subject DNs the
//! way the liste blanche writes them (`dn`), and the rustls configurations for both
//! directions (`tls`).

pub(crate) mod crl;
pub mod dn;
pub mod pki;
pub mod tls;
pub mod verify;

pub use pki::{ExtKeyUsage, OurIdentity, PkiError, TrustStore};
pub use tls::{client_config, server_config, TlsConfigError, TlsInfo, TlsVersion, TlsVersions};
pub use verify::{parse_identity, verify_chain, CertError, PeerIdentity, Usage};
