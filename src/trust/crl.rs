//! Keeping the espace's CRLs current: each configured source is downloaded periodically,
//! checked (parsed, signed by one of our CAs, not older than the one in use) and written
//! atomically to its file; the trust store is then rebuilt and swapped in. On any failure
//! the last valid CRL stays. When a CRL in use is past its nextUpdate, peers of that CA get
//! a temporary refusal (451 4.7.1 `crl_expired`) rather than being judged on stale data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// One CRL to keep current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSource {
    /// Where the CA publishes it (its CRL distribution point).
    pub url: String,
    /// Where the last valid copy is kept (also loaded at start-up).
    pub file: PathBuf,
}

/// Why a downloaded CRL was not used.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Download failed.
    #[error("download from {url}: {message}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Not a CRL.
    #[error("not a valid CRL: {0}")]
    Parse(String),
    /// Not signed by any of our CAs.
    #[error("CRL issued by {issuer} is not signed by a configured CA")]
    UnknownSigner {
        /// The CRL's issuer.
        issuer: String,
    },
    /// Older than the CRL in use.
    #[error("downloaded CRL (thisUpdate {received}) is older than the one in use ({current})")]
    Older {
        /// thisUpdate of the CRL in use.
        current: i64,
        /// thisUpdate of the downloaded one.
        received: i64,
    },
    /// Writing the file failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl CrlError {
    /// The label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CrlError::Download { .. } => "network",
            CrlError::Parse(_) => "parse",
            CrlError::UnknownSigner { .. } => "signature",
            CrlError::Older { .. } => "older",
            CrlError::Write { .. } => "write",
        }
    }
}

/// What a verified CRL says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The issuing CA, RFC 4514 as x509-parser prints it.
    pub issuer: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, when present.
    pub next_update: Option<i64>,
}

/// DER of a CRL given as PEM or DER.
pub fn der_of(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    use rustls_pki_types::pem::PemObject;
    match rustls_pki_types::CertificateRevocationListDer::from_pem_slice(bytes) {
        Ok(crl) => Ok(crl.as_ref().to_vec()),
        // Not PEM: DER as published at most distribution points.
        Err(_) => Ok(bytes.to_vec()),
    }
}

/// Parses `der` and checks it is signed by one of `cas` (the anchors and intermediates).
pub fn check(der: &[u8], cas: &[CertificateDer<'_>]) -> Result<CrlInfo, CrlError> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CrlError::Parse(e.to_string()))?;
    let issuer_raw = crl.tbs_cert_list.issuer.as_raw();
    let info = CrlInfo {
        issuer: crate::trust::verify::rfc4514(&crl.tbs_cert_list.issuer),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
    };
    let alg = crl.signature_algorithm.algorithm.to_id_string();
    let verifier: &dyn signature::VerificationAlgorithm = match alg.as_str() {
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.10045.4.3.2" => &signature::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" => &signature::ECDSA_P384_SHA384_ASN1,
        other => {
            return Err(CrlError::Parse(format!(
                "unsupported signature algorithm {other}"
            )))
        }
    };
    let tbs: &[u8] = crl.tbs_cert_list.as_ref();
    let signed_by_a_ca = cas.iter().any(|ca| {
        let Ok((_, cert)) = X509Certificate::from_der(ca.as_ref()) else {
            return false;
        };
        cert.subject().as_raw() == issuer_raw
            && UnparsedPublicKey::new(verifier, &cert.public_key().subject_public_key.data)
                .verify(tbs, &crl.signature_value.data)
                .is_ok()
    });
    if !signed_by_a_ca {
        return Err(CrlError::UnknownSigner {
            issuer: info.issuer,
        });
    }
    Ok(info)
}

/// Downloads one source and, if the CRL is valid and not older than the file's, replaces
/// the file atomically. Returns the new CRL's description, or `None` when the file already
/// held the same thisUpdate.
pub async fn refresh_source(
    client: &reqwest::Client,
    source: &CrlSource,
    cas: &[CertificateDer<'_>],
    max_bytes: usize,
) -> Result<Option<CrlInfo>, CrlError> {
    let download = |message: String| CrlError::Download {
        url: source.url.clone(),
        message,
    };
    let mut response = client
        .get(&source.url)
        .send()
        .await
        .map_err(|e| download(e.to_string()))?;
    if !response.status().is_success() {
        return Err(download(format!("HTTP status {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| download(e.to_string()))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(download(format!("larger than {max_bytes} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    // Parsing and checking a CRL (up to tens of MB) and writing it with fsync are blocking
    // work: off the async workers that serve SMTP sessions.
    let cas: Vec<CertificateDer<'static>> = cas.iter().map(|c| c.clone().into_owned()).collect();
    let file = source.file.clone();
    tokio::task::spawn_blocking(move || install(&body, &cas, &file))
        .await
        .map_err(|e| CrlError::Write {
            path: source.file.clone(),
            message: e.to_string(),
        })?
}

/// Checks a downloaded CRL and, if it is not older than the one in `file`, replaces it.
fn install(
    body: &[u8],
    cas: &[CertificateDer<'_>],
    file: &Path,
) -> Result<Option<CrlInfo>, CrlError> {
    let der = der_of(body)?;
    let new = check(&der, cas)?;
    if let Ok(current) = std::fs::read(file) {
        if let Ok(current) = der_of(&current).and_then(|d| check(&d, cas)) {
            if new.this_update < current.this_update {
                return Err(CrlError::Older {
                    current: current.this_update,
                    received: new.this_update,
                });
            }
            if new.this_update == current.this_update {
                return Ok(None);
            }
        }
    }
    crate::durable::replace(file, &der).map_err(|e| CrlError::Write {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Some(new))
}

/// A client for CRL downloads: CRLs are signed objects, usually served over plain HTTP.
pub fn client(timeout: Duration) -> Result<reqwest::Client, CrlError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("mssante-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CrlError::Download {
            url: String::new(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki::load_certificates;
    use std::path::Path;

    fn certs_test(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-test")
            .join(name)
    }

    #[test]
    fn the_test_intermediate_crl_is_signed_by_the_intermediate() {
        let der = der_of(&std::fs::read(certs_test("intermediate-ca.crl.pem")).unwrap()).unwrap();
        let cas = load_certificates(&certs_test("intermediate-ca.pem")).unwrap();
        let info = check(&der, &cas).unwrap();
        assert!(info
            .issuer
            .contains("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"));
        assert!(info.next_update.unwrap() > info.this_update);
    }

    #[test]
    fn a_crl_not_signed_by_our_cas_is_refused() {
        let der = der_of(&std::fs::read(certs_test("intermediate-ca.crl.pem")).unwrap()).unwrap();
        let others = load_certificates(&certs_test("foreign-root-ca.pem")).unwrap();
        assert!(matches!(
            check(&der, &others),
            Err(CrlError::UnknownSigner { .. })
        ));
        let mut tampered = der.clone();
        let n = tampered.len();
        tampered[n - 10] ^= 1;
        let cas = load_certificates(&certs_test("intermediate-ca.pem")).unwrap();
        assert!(check(&tampered, &cas).is_err());
        assert!(matches!(check(b"garbage", &cas), Err(CrlError::Parse(_))));
    }
}
