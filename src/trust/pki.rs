//! Loading IGC Santé material from disk: our certificate and key, the espace's trust
//! anchors, known intermediates and CRLs.
//!
//! Everything here runs at start-up (or on a reload), so errors name the file and say
//! what to fix; the verification itself (`trust::verify`) is pure and never touches disk.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::DistinguishedName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, TrustAnchor};
use webpki::{CertRevocationList, OwnedCertRevocationList};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::verify::{parse_identity, PeerIdentity};

/// An extended key usage an IGC Santé SSL server certificate must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtKeyUsage {
    /// id-kp-serverAuth: needed to answer STARTTLS as a server.
    ServerAuth,
    /// id-kp-clientAuth: needed to present the certificate when we connect to a peer.
    ClientAuth,
}

impl fmt::Display for ExtKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtKeyUsage::ServerAuth => "serverAuth",
            ExtKeyUsage::ClientAuth => "clientAuth",
        })
    }
}

fn join_usages(usages: &[ExtKeyUsage]) -> String {
    usages
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Why certificates, keys, anchors or CRLs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}; check the path in the configuration and that the gateway's user may read the file")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid PEM: {detail}; expected one or more -----BEGIN ...----- sections"
    )]
    Pem { path: PathBuf, detail: String },
    #[error("{path} contains no certificate; expected PEM sections -----BEGIN CERTIFICATE-----")]
    NoCertificate { path: PathBuf },
    #[error("{path} contains no private key; expected a PEM section -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY")]
    NoPrivateKey { path: PathBuf },
    #[error("certificate #{index} of {path} cannot be parsed: {detail}; the file may be truncated or not an X.509 certificate")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("the private key in {path} is not usable: {detail}; use an RSA (2048 bits or more) or ECDSA key")]
    UnsupportedKey { path: PathBuf, detail: String },
    #[error("the private key {key_path} does not belong to the certificate {cert_path}; install the key generated with the certificate request")]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error("the certificate {path} lacks the extended key usage {}; an IGC Santé SSL server certificate (SERV, usage SSL_SERV) carries both serverAuth and clientAuth: order one of that profile", join_usages(.missing))]
    MissingUsage {
        path: PathBuf,
        missing: Vec<ExtKeyUsage>,
    },
    #[error("certificate #{index} of {path} cannot be a trust anchor: {detail}")]
    BadAnchor {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("CRL #{index} of {path} cannot be parsed: {detail}; expected a PEM (-----BEGIN X509 CRL-----) or DER CRL as published by the CA")]
    BadCrl {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error("no trust anchor configured; add the espace's IGC Santé root certificates (PEM)")]
    NoAnchors,
}

impl PkiError {
    /// The file concerned, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            PkiError::Read { path, .. } | PkiError::BadCrl { path, .. } => Some(path),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, err: rustls_pki_types::pem::Error) -> PkiError {
    PkiError::Pem {
        path: path.to_owned(),
        detail: err.to_string(),
    }
}

/// Parses PEM certificates (one or several; other PEM sections are skipped).
fn certificates_from_pem(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (index, cert) in certs.iter().enumerate() {
        X509Certificate::from_der(cert.as_ref()).map_err(|e| PkiError::BadCertificate {
            path: path.to_owned(),
            index: index + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Loads every certificate of a PEM file, in file order (leaf first for a chain file).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    certificates_from_pem(path, &read(path)?)
}

/// Loads the first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(PkiError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// Loads the CRLs of a file, PEM (one or several `X509 CRL` sections) or DER (one CRL).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let bytes = read(path)?;
    // A DER CRL starts with a SEQUENCE tag (0x30); anything with a PEM header is PEM.
    let is_pem = bytes.windows(10).any(|w| w == b"-----BEGIN");
    let crls = if is_pem {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(PkiError::BadCrl {
            path: path.to_owned(),
            index: 1,
            detail: "no -----BEGIN X509 CRL----- section found".to_owned(),
        });
    }
    for (index, crl) in crls.iter().enumerate() {
        // Version 1 and 2 both parse; which reader uses it is decided at load.
        if let Err(e) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
        {
            return Err(PkiError::BadCrl {
                path: path.to_owned(),
                index: index + 1,
                detail: e.to_string(),
            });
        }
    }
    Ok(crls)
}

/// A version 1 CRL, read here since webpki reads only version 2.
#[derive(Debug)]
pub(crate) struct V1Crl {
    /// The issuer's DER name, SEQUENCE header included.
    pub issuer: Vec<u8>,
    /// Serial numbers revoked, as their DER content bytes.
    pub revoked: std::collections::HashSet<Vec<u8>>,
    /// nextUpdate, Unix seconds.
    pub next_update: Option<i64>,
}

/// CRLs as parsed at load time.
#[derive(Default)]
struct Parsed {
    v2: Vec<CertRevocationList<'static>>,
    v1: Vec<V1Crl>,
}

impl Parsed {
    /// Parses CRL #`index` of `path`: a version 2 CRL for webpki, else a version 1 CRL
    /// whose signature by one of `cas` is checked here.
    fn add(
        &mut self,
        path: &Path,
        index: usize,
        crl: &CertificateRevocationListDer<'_>,
        cas: &[CertificateDer<'_>],
    ) -> Result<(), PkiError> {
        let webpki_error = match OwnedCertRevocationList::from_der(crl.as_ref()) {
            Ok(parsed) => {
                self.v2.push(parsed.into());
                return Ok(());
            }
            Err(e) => e,
        };
        let bad = |detail: String| PkiError::BadCrl {
            path: path.to_owned(),
            index: index + 1,
            detail,
        };
        let v1 = x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
            .ok()
            .filter(|(_, parsed)| parsed.version().is_none());
        let Some((_, parsed)) = v1 else {
            return Err(bad(webpki_error.to_string()));
        };
        super::crl::check(crl.as_ref(), cas).map_err(|e| bad(e.to_string()))?;
        self.v1.push(V1Crl {
            issuer: parsed.tbs_cert_list.issuer.as_raw().to_vec(),
            revoked: parsed
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
            next_update: parsed.next_update().map(|t| t.timestamp()),
        });
        Ok(())
    }
}

/// Our connector's identity: the certificate chain we present (as a server after
/// STARTTLS, and as a client to peers) and its private key.
#[derive(Debug)]
pub struct OurIdentity {
    /// Leaf first, then the intermediates we send so peers can build the path.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, checked to match the leaf's public key at load time.
    key: PrivateKeyDer<'static>,
    /// The leaf's subject, SANs and validity, for logs, `doctor` and the Annexe 1 form.
    info: PeerIdentity,
}

impl OurIdentity {
    /// Loads our certificate chain (PEM, leaf first) and key, and checks that they belong
    /// together and that the leaf may be used both as TLS server and TLS client.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<OurIdentity, PkiError> {
        let chain = load_certificates(cert_path)?;
        let key = load_private_key(key_path)?;
        Self::from_parts(chain, key, cert_path, key_path)
    }

    /// Same checks as [`OurIdentity::load`] on material already in memory; the paths only
    /// label errors.
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<OurIdentity, PkiError> {
        let Some(leaf) = chain.first() else {
            return Err(PkiError::NoCertificate {
                path: cert_path.to_owned(),
            });
        };
        let bad_leaf = |detail: String| PkiError::BadCertificate {
            path: cert_path.to_owned(),
            index: 1,
            detail,
        };
        let (_, x509) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|e| bad_leaf(e.to_string()))?;

        // The key must prove the certificate: derive the public key from the private key
        // with the same crypto provider rustls will sign with, and compare SPKIs.
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| PkiError::UnsupportedKey {
                path: key_path.to_owned(),
                detail: e.to_string(),
            })?;
        let Some(key_spki) = signing_key.public_key() else {
            return Err(PkiError::UnsupportedKey {
                path: key_path.to_owned(),
                detail: "its public key cannot be derived to compare with the certificate"
                    .to_owned(),
            });
        };
        if key_spki.as_ref() != x509.tbs_certificate.subject_pki.raw {
            return Err(PkiError::KeyMismatch {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
            });
        }

        let eku = x509
            .extended_key_usage()
            .map_err(|e| bad_leaf(e.to_string()))?
            .map(|ext| ext.value.clone());
        let mut missing = Vec::new();
        if !eku.as_ref().is_some_and(|e| e.server_auth) {
            missing.push(ExtKeyUsage::ServerAuth);
        }
        if !eku.as_ref().is_some_and(|e| e.client_auth) {
            missing.push(ExtKeyUsage::ClientAuth);
        }
        if !missing.is_empty() {
            return Err(PkiError::MissingUsage {
                path: cert_path.to_owned(),
                missing,
            });
        }

        let info = parse_identity(leaf).map_err(|e| bad_leaf(e.to_string()))?;
        Ok(OurIdentity { chain, key, info })
    }

    /// The chain to present, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The leaf's parsed subject, SANs, issuer, serial and expiry.
    pub fn info(&self) -> &PeerIdentity {
        &self.info
    }
}

/// An RFC 4514 rendering of a DER `Name` (with its SEQUENCE header).
fn subject_text(der: &[u8]) -> String {
    x509_parser::x509::X509Name::from_der(der)
        .map(|(_, name)| crate::trust::verify::rfc4514(&name))
        .unwrap_or_else(|_| "(unreadable name)".to_string())
}

/// Which IGC Santé hierarchy a CA belongs to, from its name: the test hierarchy's CAs carry
/// `TEST` (`TEST AC RACINE IGC-SANTE ELEMENTAIRE`, `OU=IGC-SANTE TEST`); the production
/// ones carry `IGC-SANTE` without it. The published production roots' fingerprints are not
/// bundled here, so names are what is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// An IGC Santé CA of the test espace.
    Test,
    /// An IGC Santé CA of the production espace.
    Production,
    /// Not recognisably IGC Santé.
    Other,
}

impl Hierarchy {
    /// The hierarchy a CA subject (RFC 4514 text) names.
    pub fn of(subject: &str) -> Hierarchy {
        let upper = subject.to_ascii_uppercase();
        let test = upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "TEST");
        match (upper.contains("IGC-SANTE"), test) {
            (true, true) => Hierarchy::Test,
            (true, false) => Hierarchy::Production,
            (false, _) => Hierarchy::Other,
        }
    }
}

/// What is known of a certificate whose issuing CA has no CRL loaded (`tls.revocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// Nothing: the peer is refused temporarily (`451 4.7.1 crl_unavailable`) until the
    /// CRL of its certificate's issuer is loaded. The espace's rule: revocation unknown is
    /// not "not revoked".
    #[default]
    Require,
    /// It is taken as not revoked (a CRL, once loaded, is still enforced, and an expired
    /// one still defers). For a test set-up without CRLs.
    BestEffort,
}

/// What a peer's certificate must chain to: the espace's anchors, plus the intermediates
/// and CRLs we know.
#[derive(Debug)]
pub struct TrustStore {
    /// What a missing CRL means (`tls.revocation`).
    revocation: Revocation,
    /// The espace's IGC Santé roots (test and production never mixed: one store per espace).
    anchors: Vec<TrustAnchor<'static>>,
    /// Known intermediates, so a peer that sends only its leaf still verifies.
    intermediates: Vec<CertificateDer<'static>>,
    /// The anchors' and intermediates' certificates, for checking who signed a CRL.
    ca_certificates: Vec<CertificateDer<'static>>,
    /// CRLs as loaded, kept to report and to persist.
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// The same CRLs parsed once at load time, so each verification does not re-parse
    /// lists that can hold many thousand entries.
    parsed_crls: Vec<CertRevocationList<'static>>,
    /// Version 1 CRLs (no extensions), which webpki does not read: their signature was
    /// checked against our CAs at load time, and `verify` consults them itself.
    v1_crls: Vec<V1Crl>,
    /// The anchors' subjects, offered to TLS clients as "acceptable CA names" so that a
    /// peer holding several certificates picks its IGC Santé one.
    subjects: Vec<DistinguishedName>,
    /// The CAs that issue operators' certificates (the known intermediates, or the anchors
    /// when none is configured): (RFC 4514 subject, DER subject as webpki compares it,
    /// DER subject with its SEQUENCE header as x509-parser gives it).
    issuing: Vec<(String, Vec<u8>, Vec<u8>)>,
}

/// Whether a CA that issues operators' certificates has a CRL loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlCoverage {
    /// The CA's subject, RFC 4514.
    pub issuer: String,
    /// A CRL from it is loaded (current or not: an expired one defers its peers).
    pub present: bool,
}

impl TrustStore {
    /// Builds the store from files: anchors (PEM roots, required), known intermediates
    /// (PEM, optional) and CRLs (PEM or DER, optional).
    pub fn load<P: AsRef<Path>>(
        anchor_files: &[P],
        intermediate_files: &[P],
        crl_files: &[P],
    ) -> Result<TrustStore, PkiError> {
        let mut anchors = Vec::new();
        let mut cas = Vec::new();
        for path in anchor_files {
            let path = path.as_ref();
            for (index, cert) in load_certificates(path)?.into_iter().enumerate() {
                anchors.push(anchor(path, index, &cert)?);
                cas.push(cert);
            }
        }
        let mut intermediates = Vec::new();
        for path in intermediate_files {
            intermediates.extend(load_certificates(path.as_ref())?);
        }
        cas.extend(intermediates.iter().cloned());
        let mut crls = Vec::new();
        let mut parsed = Parsed::default();
        for path in crl_files {
            let path = path.as_ref();
            for (index, crl) in load_crls(path)?.into_iter().enumerate() {
                parsed.add(path, index, &crl, &cas)?;
                crls.push(crl);
            }
        }
        Self::assemble(anchors, cas, intermediates, crls, parsed)
    }

    /// Builds the store from material already in memory (tests, or a CRL refresh that
    /// downloaded new lists); `Path::new("<memory>")` labels errors.
    pub fn from_der(
        anchor_certs: &[CertificateDer<'_>],
        intermediates: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<TrustStore, PkiError> {
        let origin = Path::new("<memory>");
        let anchors = anchor_certs
            .iter()
            .enumerate()
            .map(|(index, cert)| anchor(origin, index, cert))
            .collect::<Result<Vec<_>, _>>()?;
        let cas: Vec<CertificateDer<'static>> = anchor_certs
            .iter()
            .map(|c| c.clone().into_owned())
            .chain(intermediates.iter().cloned())
            .collect();
        let mut parsed = Parsed::default();
        for (index, crl) in crls.iter().enumerate() {
            parsed.add(origin, index, crl, &cas)?;
        }
        Self::assemble(anchors, cas, intermediates, crls, parsed)
    }

    fn assemble(
        anchors: Vec<TrustAnchor<'static>>,
        ca_certificates: Vec<CertificateDer<'static>>,
        intermediates: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        parsed: Parsed,
    ) -> Result<TrustStore, PkiError> {
        let Parsed {
            v2: parsed_crls,
            v1: v1_crls,
        } = parsed;
        if anchors.is_empty() {
            return Err(PkiError::NoAnchors);
        }
        let subjects = anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        let issuing = if intermediates.is_empty() {
            anchors
                .iter()
                .map(|a| {
                    let named = DistinguishedName::in_sequence(a.subject.as_ref());
                    (
                        subject_text(named.as_ref()),
                        a.subject.as_ref().to_vec(),
                        named.as_ref().to_vec(),
                    )
                })
                .collect()
        } else {
            intermediates
                .iter()
                .filter_map(|der| {
                    let cert = webpki::EndEntityCert::try_from(der).ok()?;
                    let (_, x509) = X509Certificate::from_der(der.as_ref()).ok()?;
                    Some((
                        crate::trust::verify::rfc4514(x509.subject()),
                        cert.subject().to_vec(),
                        x509.subject().as_raw().to_vec(),
                    ))
                })
                .collect()
        };
        Ok(TrustStore {
            revocation: Revocation::Require,
            anchors,
            ca_certificates,
            intermediates,
            crls,
            parsed_crls,
            v1_crls,
            subjects,
            issuing,
        })
    }

    /// The subjects (RFC 4514) of the anchors, then of the known intermediates, each with
    /// its configuration key (`tls.anchors`, `tls.intermediates`).
    pub fn ca_subjects(&self) -> Vec<(&'static str, String)> {
        let anchors = self.anchors.iter().map(|a| {
            let name = DistinguishedName::in_sequence(a.subject.as_ref());
            ("tls.anchors", subject_text(name.as_ref()))
        });
        let intermediates = self.intermediates.iter().map(|der| {
            let subject = X509Certificate::from_der(der.as_ref())
                .map(|(_, x509)| crate::trust::verify::rfc4514(x509.subject()))
                .unwrap_or_else(|_| "(unreadable certificate)".to_string());
            ("tls.intermediates", subject)
        });
        anchors.chain(intermediates).collect()
    }

    /// For each CA that issues operators' certificates, whether its CRL is loaded: under
    /// [`Revocation::Require`] the peers of a CA without one are deferred.
    pub fn crl_coverage(&self) -> Vec<CrlCoverage> {
        self.issuing
            .iter()
            .map(|(issuer, subject, raw)| CrlCoverage {
                issuer: issuer.clone(),
                present: self.has_crl_from(subject) || self.v1_crl_for(raw).is_some(),
            })
            .collect()
    }

    /// True when no peer is deferred for a missing CRL: best effort, or every issuing CA
    /// has its CRL loaded.
    pub fn revocation_ready(&self) -> bool {
        self.revocation == Revocation::BestEffort || self.crl_coverage().iter().all(|c| c.present)
    }

    /// The same store with another revocation policy.
    pub fn with_revocation(mut self, revocation: Revocation) -> TrustStore {
        self.revocation = revocation;
        self
    }

    /// What a missing CRL means for the certificates checked with this store.
    pub fn revocation(&self) -> Revocation {
        self.revocation
    }

    /// The version 1 CRL issued by `issuer` (DER name with its SEQUENCE header), if loaded.
    pub(crate) fn v1_crl_for(&self, issuer: &[u8]) -> Option<&V1Crl> {
        self.v1_crls.iter().find(|crl| crl.issuer == issuer)
    }

    /// Whether a CRL issued by `issuer` (a DER name as webpki gives it) is loaded.
    pub(crate) fn has_crl_from(&self, issuer: &[u8]) -> bool {
        self.parsed_crls.iter().any(|crl| crl.issuer() == issuer)
    }

    /// The trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The certificates of the anchors and known intermediates: who may sign a CRL.
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_certificates
    }

    /// The known intermediates.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// The CRLs, as loaded.
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// The CRLs, parsed for webpki.
    pub(crate) fn parsed_crls(&self) -> &[CertRevocationList<'static>] {
        &self.parsed_crls
    }

    /// The anchors' subjects (DER `Name`s), used as TLS client-certificate root hints.
    pub fn subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }
}

fn anchor(
    path: &Path,
    index: usize,
    cert: &CertificateDer<'_>,
) -> Result<TrustAnchor<'static>, PkiError> {
    webpki::anchor_from_trusted_cert(cert)
        .map(|a| a.to_owned())
        .map_err(|e| PkiError::BadAnchor {
            path: path.to_owned(),
            index: index + 1,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-test")
            .join(name)
    }

    #[test]
    fn loads_every_certificate_of_a_chain_file_leaf_first() {
        let chain = load_certificates(&test_file("peer-a-chain.pem")).expect("chain loads");
        assert_eq!(chain.len(), 2);
        let leaf = super::super::verify::parse_identity(&chain[0]).expect("leaf parses");
        assert_eq!(leaf.cn.as_deref(), Some("smtp.peer-a.test.mssante.fr"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_certificates(&test_file("does-not-exist.pem")).unwrap_err();
        assert!(matches!(err, PkiError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("does-not-exist.pem"), "{err}");
    }

    #[test]
    fn key_file_is_not_a_certificate() {
        let err = load_certificates(&test_file("peer-a.key")).unwrap_err();
        assert!(matches!(err, PkiError::NoCertificate { .. }), "{err:?}");
    }

    #[test]
    fn certificate_file_is_not_a_key() {
        let err = load_private_key(&test_file("peer-a.pem")).unwrap_err();
        assert!(matches!(err, PkiError::NoPrivateKey { .. }), "{err:?}");
    }

    #[test]
    fn our_identity_loads_a_matching_pair() {
        let our = OurIdentity::load(&test_file("gateway-chain.pem"), &test_file("gateway.key"))
            .expect("identity loads");
        assert_eq!(our.chain().len(), 2);
        assert_eq!(
            our.info().cn.as_deref(),
            Some("smtp.gateway.test.mssante.fr")
        );
        assert_eq!(
            our.info().subject_dn,
            "CN=smtp.gateway.test.mssante.fr,OU=1750000010,O=CH GATEWAY TEST,ST=Paris (75),C=FR"
        );
    }

    #[test]
    fn our_identity_refuses_a_key_of_another_certificate() {
        let err =
            OurIdentity::load(&test_file("gateway.pem"), &test_file("peer-a.key")).unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn our_identity_needs_client_auth_to_connect_to_peers() {
        let err = OurIdentity::load(
            &test_file("peer-server-only.pem"),
            &test_file("peer-server-only.key"),
        )
        .unwrap_err();
        match err {
            PkiError::MissingUsage { ref missing, .. } => {
                assert_eq!(missing, &[ExtKeyUsage::ClientAuth]);
                assert!(err.to_string().contains("clientAuth"), "{err}");
            }
            other => panic!("expected MissingUsage, got {other:?}"),
        }
    }

    #[test]
    fn crls_load_from_pem_and_der() {
        let pem = load_crls(&test_file("intermediate-ca.crl.pem")).expect("PEM CRL loads");
        assert_eq!(pem.len(), 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let der_path = dir.path().join("ACI-EL-ORG.crl");
        std::fs::write(&der_path, pem[0].as_ref()).expect("write DER");
        let der = load_crls(&der_path).expect("DER CRL loads");
        assert_eq!(der[0].as_ref(), pem[0].as_ref());
    }

    #[test]
    fn garbage_is_not_a_crl() {
        let err = load_crls(&test_file("README.md")).unwrap_err();
        assert!(matches!(err, PkiError::BadCrl { .. }), "{err:?}");
    }

    #[test]
    fn trust_store_offers_the_anchor_subjects_as_hints() {
        let store = TrustStore::load(
            &[test_file("anchors.pem")],
            &[test_file("intermediate-ca.pem")],
            &[test_file("intermediate-ca.crl.pem")],
        )
        .expect("store loads");
        assert_eq!(store.anchors().len(), 1);
        assert_eq!(store.intermediates().len(), 1);
        assert_eq!(store.crls().len(), 1);
        assert_eq!(store.subjects().len(), 1);
    }

    #[test]
    fn trust_store_needs_an_anchor() {
        let none: [PathBuf; 0] = [];
        let err = TrustStore::load(&none, &none, &none).unwrap_err();
        assert!(matches!(err, PkiError::NoAnchors), "{err:?}");
    }
}
