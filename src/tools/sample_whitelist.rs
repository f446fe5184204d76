//! A liste blanche for the test espace, signed by the test PKI's whitelist signer.
//!
//! It lists the gateway's own domain, the two test peer operators, and domains mirroring
//! ANS's audit entries of the production list (`cert-valide-audit`, `cert-expire-audit`,
//! ...), each with the DN of the test certificate that plays that audit case, so that the
//! audit matrix can be replayed against a running gateway.

use std::fs;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::trust::pki::{load_certificates, load_private_key, PkiError};
use crate::trust::verify::{parse_identity, CertError};
use crate::whitelist::{sign_enveloped, SignatureError, SigningKey};

/// One `Domaine` element of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// `Nom`.
    pub domain: String,
    /// `Description`.
    pub description: String,
    /// `DNCertificatOperateur`, as written in the list.
    pub dn: String,
}

/// (domain, certificate file stem in the PKI directory, description).
const SAMPLE: &[(&str, &str, &str)] = &[
    (
        "gateway.test.mssante.fr",
        "gateway",
        "Domaine de la passerelle de test (nous)",
    ),
    ("peer-a.test.mssante.fr", "peer-a", "Opérateur de test A"),
    ("peer-b.test.mssante.fr", "peer-b", "Opérateur de test B"),
    (
        "cert-valide-audit.test.mssante.fr",
        "peer-a",
        "Audit: certificat valide",
    ),
    (
        "cert-expire-audit.test.mssante.fr",
        "peer-expired",
        "Audit: certificat expiré",
    ),
    (
        "cert-revoque-audit.test.mssante.fr",
        "peer-revoked",
        "Audit: certificat révoqué",
    ),
    (
        "cert-non-igc-audit.test.mssante.fr",
        "peer-foreign",
        "Audit: certificat hors IGC Santé",
    ),
    (
        "cert-no-match-audit.test.mssante.fr",
        "peer-b",
        "Audit: DN ne correspondant pas à l'émetteur",
    ),
    (
        "cert-cn-diff-dn-audit.test.mssante.fr",
        "peer-a",
        "Audit: CN différent du DN déclaré",
    ),
    (
        "sans-tls-audit.test.mssante.fr",
        "peer-a",
        "Audit: sans TLS",
    ),
];

/// Why the sample list could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A certificate or key of the PKI directory could not be read.
    #[error("{0}")]
    Pki(#[from] PkiError),
    /// A certificate could not be parsed.
    #[error("certificate {path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CertError,
    },
    /// Signing failed.
    #[error("signing the sample list: {0}")]
    Sign(#[from] SignatureError),
    /// The signer's key is not PKCS#8.
    #[error("{0}: the signer key must be PKCS#8 (-----BEGIN PRIVATE KEY-----)")]
    KeyFormat(PathBuf),
    /// The list could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The subject DN (RFC 4514) of the certificate `<stem>.pem` in `dir`.
pub fn subject_of(dir: &Path, stem: &str) -> Result<String, SampleError> {
    let path = dir.join(format!("{stem}.pem"));
    let certs = load_certificates(&path)?;
    let first = certs
        .first()
        .ok_or_else(|| PkiError::NoCertificate { path: path.clone() })?;
    let id = parse_identity(first).map_err(|source| SampleError::Certificate { path, source })?;
    Ok(id.subject_dn)
}

/// The entries of the sample list, with the DNs read from the PKI in `dir`.
pub fn sample_entries(dir: &Path) -> Result<Vec<ListEntry>, SampleError> {
    SAMPLE
        .iter()
        .map(|(domain, stem, description)| {
            Ok(ListEntry {
                domain: (*domain).to_string(),
                description: (*description).to_string(),
                dn: subject_of(dir, stem)?,
            })
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An unsigned list in the format ANS publishes.
pub fn render(entries: &[ListEntry], generated: OffsetDateTime) -> String {
    let stamp = rfc3339(generated);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListeBlancheMSSante xmlns=\"https://listeblanche.mssante.fr/schema\">\n",
    );
    xml.push_str(&format!(
        "    <DateDeGeneration>{stamp}</DateDeGeneration>\n    <ListeDomaines>\n"
    ));
    for e in entries {
        xml.push_str(&format!(
            "        <Domaine>\n            <Nom>{}</Nom>\n            <Description>{}</Description>\n            <DNCertificatOperateur>{}</DNCertificatOperateur>\n            <ResponsableContact>01 00 00 00 00, responsable@{}</ResponsableContact>\n            <SupportContact>01 00 00 00 00, support@{}</SupportContact>\n            <DateMAJ>{stamp}</DateMAJ>\n        </Domaine>\n",
            escape(&e.domain),
            escape(&e.description),
            escape(&e.dn),
            escape(&e.domain),
            escape(&e.domain),
        ));
    }
    xml.push_str("    </ListeDomaines>\n</ListeBlancheMSSante>\n");
    xml
}

/// Signs `xml` with the PKI's `whitelist-signer` key and certificate from `dir`.
pub fn sign_with_test_signer(dir: &Path, xml: &str) -> Result<String, SampleError> {
    let key_path = dir.join("whitelist-signer.key");
    let key = match load_private_key(&key_path)? {
        rustls_pki_types::PrivateKeyDer::Pkcs8(k) => {
            SigningKey::from_pkcs8_der(k.secret_pkcs8_der())?
        }
        _ => return Err(SampleError::KeyFormat(key_path)),
    };
    let cert_path = dir.join("whitelist-signer.pem");
    let certs = load_certificates(&cert_path)?;
    let cert = certs
        .first()
        .ok_or(PkiError::NoCertificate { path: cert_path })?;
    Ok(sign_enveloped(xml, &key, cert.as_ref())?)
}

/// Writes `whitelist.xml` into the PKI directory `dir`: the sample entries, generated now,
/// signed by the test signer.
pub fn write(dir: &Path) -> Result<PathBuf, SampleError> {
    let entries = sample_entries(dir)?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let signed = sign_with_test_signer(dir, &render(&entries, now))?;
    let path = dir.join("whitelist.xml");
    fs::write(&path, signed).map_err(|source| SampleError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
