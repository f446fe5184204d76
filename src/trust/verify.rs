//! Deciding whether a peer's certificate chain is acceptable: a pure function of the
//! chain, the trust store and the time, so every refusal can be tested without sockets
//! and reported with a precise reason.

use crate::trust::dn::SubjectDn;
use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use webpki::{
    EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::pki::{ExtKeyUsage, Revocation, TrustStore};

/// Which role the peer plays, hence which extended key usage its certificate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A peer connecting to us: it authenticates as a TLS client (clientAuth).
    Client,
    /// A peer we connect to: it authenticates as a TLS server (serverAuth).
    Server,
}

impl Usage {
    fn required(self) -> ExtKeyUsage {
        match self {
            Usage::Client => ExtKeyUsage::ClientAuth,
            Usage::Server => ExtKeyUsage::ServerAuth,
        }
    }
}

/// Why a peer's certificate chain is refused. Messages are written for the peer
/// operator's administrator, who reads them in an SMTP reply or a bounce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error(
        "no certificate was presented; present the operator's IGC Santé SSL server certificate"
    )]
    Missing,
    #[error("certificate not trusted ({0}); it must chain to the IGC Santé roots of this espace (test and production hierarchies are distinct)")]
    Untrusted(String),
    #[error("certificate expired on {}; install a renewed IGC Santé certificate", fmt_time(.not_after))]
    Expired { not_after: OffsetDateTime },
    #[error("certificate not valid before {}; check the server clock or wait for the validity start", fmt_time(.not_before))]
    NotYetValid { not_before: OffsetDateTime },
    #[error(
        "certificate revoked by its certification authority; install a new IGC Santé certificate"
    )]
    Revoked,
    #[error("certificate lacks the extended key usage {required}; an IGC Santé SSL server certificate carries serverAuth and clientAuth")]
    WrongUsage { required: ExtKeyUsage },
    #[error("the revocation list of the certificate's authority is out of date on our side (next update was {}); try again later", fmt_time(.next_update))]
    CrlExpired { next_update: OffsetDateTime },
    #[error("we hold no revocation list of the certificate's authority yet, so its revocation status is unknown; try again later")]
    CrlUnavailable,
    #[error("certificate cannot be parsed ({0}); present a well-formed X.509 certificate")]
    Malformed(String),
    #[error("certificate refused: {0}")]
    Other(String),
}

fn fmt_time(t: &OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl CertError {
    /// Stable label for logs and metrics when the peer is an inbound client.
    pub fn client_reason(&self) -> &'static str {
        match self {
            CertError::Missing => "client_cert_missing",
            CertError::Untrusted(_) => "client_cert_untrusted",
            CertError::Expired { .. } => "client_cert_expired",
            CertError::NotYetValid { .. } => "client_cert_not_yet_valid",
            CertError::Revoked => "client_cert_revoked",
            CertError::WrongUsage { .. } => "client_cert_wrong_usage",
            CertError::Malformed(_) => "client_cert_malformed",
            CertError::CrlExpired { .. } => "crl_expired",
            CertError::CrlUnavailable => "crl_unavailable",
            CertError::Other(_) => "client_cert_other",
        }
    }

    /// Stable label for logs and metrics when the peer is a server we deliver to.
    pub fn server_reason(&self) -> &'static str {
        match self {
            CertError::Missing => "server_cert_missing",
            CertError::Untrusted(_) => "server_cert_untrusted",
            CertError::Expired { .. } => "server_cert_expired",
            CertError::NotYetValid { .. } => "server_cert_not_yet_valid",
            CertError::Revoked => "server_cert_revoked",
            CertError::WrongUsage { .. } => "server_cert_wrong_usage",
            CertError::Malformed(_) => "server_cert_malformed",
            CertError::CrlExpired { .. } => "crl_expired",
            CertError::CrlUnavailable => "crl_unavailable",
            CertError::Other(_) => "server_cert_other",
        }
    }
}

/// Who a certificate names: what `policy` compares with the whitelist and what logs show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject as an RFC 4514 string (`CN=...,OU=...,O=...,ST=...,C=FR`: last RDN first,
    /// the order the whitelist uses), attribute names as x509-parser abbreviates them.
    pub subject_dn: String,
    /// The subject parsed for comparison with the liste blanche's DNs (see `trust::dn`).
    pub subject: SubjectDn,
    /// First common name of the subject: the mail server's FQDN for IGC Santé SSL
    /// certificates, compared with the MX host or EHLO name.
    pub cn: Option<String>,
    /// dNSName subject alternative names.
    pub dns_names: Vec<String>,
    /// Issuer as an RFC 4514 string, for logs.
    pub issuer_dn: String,
    /// Serial number in upper-case hexadecimal without separators, as CRLs list it.
    pub serial_hex: String,
    /// End of validity, for renewal warnings.
    pub not_after: OffsetDateTime,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (serial {}, issuer {})",
            self.subject_dn, self.serial_hex, self.issuer_dn
        )
    }
}

/// The SHA-256 fingerprint of a certificate as `openssl x509 -noout -fingerprint -sha256`
/// prints it (upper-case hexadecimal pairs joined by colons), so an operator can match a
/// log line with a certificate file.
pub fn sha256_fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a certificate's identity without judging it (used for logs even when the
/// chain is refused, and for our own certificate).
pub fn parse_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, CertError> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    identity_of(&x509)
}

fn identity_of(x509: &X509Certificate<'_>) -> Result<PeerIdentity, CertError> {
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .map(attribute_value);
    let dns_names = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(CertError::Malformed(format!(
                "subject alternative name: {e}"
            )))
        }
    };
    let serial_hex = x509
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let subject = SubjectDn::from_x509(x509.subject())
        .map_err(|e| CertError::Malformed(format!("subject: {e}")))?;
    Ok(PeerIdentity {
        subject_dn: rfc4514(x509.subject()),
        subject,
        cn,
        dns_names,
        issuer_dn: rfc4514(x509.issuer()),
        serial_hex,
        not_after: x509.validity().not_after.to_datetime(),
    })
}

/// Formats a name per RFC 4514: RDNs in reverse order of their encoding, `,` between
/// RDNs, `+` inside a multi-valued RDN, special characters escaped. The one text form of a
/// name in logs, metric labels and reports (`CN=...,O=...,C=FR`).
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter().collect();
    rdns.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let label = oid2abbrev(attr.attr_type(), oid_registry())
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    format!("{label}={}", escape_rfc4514(&attribute_value(attr)))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes an attribute value: the usual string types directly, BMPString as UTF-16,
/// TeletexString as Latin-1 (what CAs put there in practice), anything else as `#hex`.
fn attribute_value(attr: &AttributeTypeAndValue<'_>) -> String {
    if let Ok(s) = attr.as_str() {
        return s.to_owned();
    }
    let value = attr.attr_value();
    let data = value.data;
    match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::TeletexString => data.iter().map(|&b| char::from(b)).collect(),
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let escape = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn unix_to_datetime(t: UnixTime) -> OffsetDateTime {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Verifies a peer's chain (leaf first, as presented in the TLS handshake) against the
/// espace's trust store at time `now`, requiring the extended key usage of `usage`.
///
/// Checks, in order: a certificate is present; the leaf parses; the leaf is within its
/// validity period (checked here so the error names the exact date, whatever path webpki
/// would have tried); then webpki builds a path to an anchor through the presented and
/// the known intermediates, checking signatures, constraints and revocation; finally the
/// leaf must carry the extended key usage of `usage` (an absent EKU extension is refused
/// too: IGC Santé certificates always carry one).
///
/// Revocation: every loaded CRL is consulted for the whole chain. Under
/// [`Revocation::Require`] (the default) the leaf's issuer must have a CRL loaded, else
/// [`CertError::CrlUnavailable`], a temporary refusal: an unknown status is not "not
/// revoked". Under [`Revocation::BestEffort`] such a certificate is accepted (CAs above
/// the issuer are checked only against the CRLs that are loaded, under both policies).
/// The last valid CRL is kept when a download fails (`trust::crl`), but once
/// it is past its nextUpdate it no longer tells whether a certificate was revoked since:
/// verification then fails with [`CertError::CrlExpired`], which the policy answers with a
/// temporary refusal (our state, not the peer's fault: it retries later).
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    store: &TrustStore,
    now: UnixTime,
    usage: Usage,
) -> Result<PeerIdentity, CertError> {
    let Some(leaf) = chain.first() else {
        return Err(CertError::Missing);
    };
    let (_, x509) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let identity = identity_of(&x509)?;

    let now_dt = unix_to_datetime(now);
    let not_before = x509.validity().not_before.to_datetime();
    if now_dt < not_before {
        return Err(CertError::NotYetValid { not_before });
    }
    if now_dt > identity.not_after {
        return Err(CertError::Expired {
            not_after: identity.not_after,
        });
    }

    let end_entity =
        EndEntityCert::try_from(leaf).map_err(|e| CertError::Malformed(e.to_string()))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .chain(store.intermediates())
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    let crls: Vec<_> = store.parsed_crls().iter().collect();
    let revocation = RevocationOptionsBuilder::new(&crls).ok().map(|builder| {
        builder
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build()
    });
    // webpki applies the EKU validator to the intermediates as well, and IGC Santé CAs
    // carry no EKU: "required if present" lets them pass, and the leaf's EKU is then
    // required explicitly below, after the path is known to be trusted (so that an
    // untrusted certificate is reported as untrusted, not as lacking a usage).
    let eku = match usage {
        Usage::Client => KeyUsage::client_auth(),
        Usage::Server => KeyUsage::server_auth(),
    };
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            store.anchors(),
            &intermediates,
            now,
            eku,
            revocation,
            None,
        )
        .map_err(|e| map_webpki_error(e, usage))?;

    // A version 1 CRL of the leaf's issuer, which webpki cannot read, is consulted here.
    let v1 = store.v1_crl_for(x509.issuer().as_raw());
    if let Some(crl) = v1 {
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if let Some(next) = crl.next_update.filter(|next| *next < now_secs) {
            return Err(CertError::CrlExpired {
                next_update: OffsetDateTime::from_unix_timestamp(next)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            });
        }
        if crl.revoked.contains(x509.raw_serial()) {
            return Err(CertError::Revoked);
        }
    }
    if store.revocation() == Revocation::Require
        && v1.is_none()
        && !store.has_crl_from(end_entity.issuer())
    {
        return Err(CertError::CrlUnavailable);
    }

    let leaf_ekus = x509
        .extended_key_usage()
        .map_err(|e| CertError::Malformed(format!("extended key usage: {e}")))?
        .map(|ext| ext.value.clone());
    let has_required = leaf_ekus.is_some_and(|eku| match usage {
        Usage::Client => eku.client_auth,
        Usage::Server => eku.server_auth,
    });
    if !has_required {
        return Err(CertError::WrongUsage {
            required: usage.required(),
        });
    }
    Ok(identity)
}

fn map_webpki_error(err: webpki::Error, usage: Usage) -> CertError {
    use webpki::Error as E;
    match err {
        E::CertExpired { not_after, .. } => CertError::Expired {
            not_after: unix_to_datetime(not_after),
        },
        E::CertNotValidYet { not_before, .. } => CertError::NotYetValid {
            not_before: unix_to_datetime(not_before),
        },
        E::CertRevoked => CertError::Revoked,
        E::CrlExpired { next_update, .. } => CertError::CrlExpired {
            next_update: unix_to_datetime(next_update),
        },
        E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => CertError::WrongUsage {
            required: usage.required(),
        },
        // webpki's text for these carries a debug dump of every supported algorithm
        // (over 1 KB): a peer needs one sentence.
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => CertError::Untrusted(
            "signed with an unsupported algorithm (IGC Santé certificates are signed with RSA and SHA-256)"
                .to_string(),
        ),
        E::UnknownIssuer
        | E::InvalidSignatureForPublicKey
        | E::SignatureAlgorithmMismatch
        | E::CertDistrusted
        | E::CaUsedAsEndEntity
        | E::EndEntityUsedAsCa
        | E::PathLenConstraintViolated
        | E::NameConstraintViolation
        | E::MaximumPathDepthExceeded
        | E::InvalidCrlSignatureForPublicKey
        | E::IssuerNotCrlSigner => CertError::Untrusted(err.to_string()),
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::InvalidCertValidity
        | E::InvalidSerialNumber
        | E::UnsupportedCertVersion
        | E::UnsupportedCriticalExtension
        | E::MalformedDnsIdentifier
        | E::MalformedNameConstraint => CertError::Malformed(err.to_string()),
        other => CertError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::trust::pki::load_certificates;

    fn test_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs-test")
            .join(name)
    }

    fn chain(name: &str) -> Vec<CertificateDer<'static>> {
        load_certificates(&test_file(name)).expect("test certificate loads")
    }

    fn store() -> TrustStore {
        TrustStore::load(
            &[test_file("anchors.pem")],
            &[test_file("intermediate-ca.pem")],
            &[test_file("intermediate-ca.crl.pem")],
        )
        .expect("test store loads")
    }

    fn at(t: OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(t.unix_timestamp()).expect("after 1970"),
        ))
    }

    fn now() -> UnixTime {
        at(datetime!(2030-01-01 00:00 UTC))
    }

    #[test]
    fn accepts_a_valid_peer_and_reports_its_identity() {
        let id = verify_chain(&chain("peer-a-chain.pem"), &store(), now(), Usage::Client)
            .expect("peer-a is accepted");
        assert_eq!(
            id.subject_dn,
            "CN=smtp.peer-a.test.mssante.fr,OU=398765432400001,O=OPERATEUR PEER A,ST=Bas-Rhin (67),C=FR"
        );
        assert_eq!(id.cn.as_deref(), Some("smtp.peer-a.test.mssante.fr"));
        assert_eq!(id.dns_names, vec!["smtp.peer-a.test.mssante.fr".to_owned()]);
        assert_eq!(
            id.issuer_dn,
            "CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=IGC-SANTE TEST,OU=0002 187512751,O=ASIP-SANTE,C=FR"
        );
        assert_eq!(id.serial_hex, "1001");
        assert_eq!(id.not_after, datetime!(2045-01-01 00:00 UTC));
    }

    #[test]
    fn accepts_a_valid_server_for_outbound_delivery() {
        verify_chain(&chain("peer-b-chain.pem"), &store(), now(), Usage::Server)
            .expect("peer-b is accepted as a server");
    }

    #[test]
    fn accepts_a_peer_sending_only_its_leaf_when_the_intermediate_is_known() {
        verify_chain(&chain("peer-a.pem"), &store(), now(), Usage::Client)
            .expect("known intermediate completes the path");
    }

    #[test]
    fn refuses_a_leaf_alone_when_the_intermediate_is_unknown() {
        let anchors = chain("anchors.pem");
        let bare = TrustStore::from_der(&anchors, Vec::new(), Vec::new()).expect("store");
        let err = verify_chain(&chain("peer-a.pem"), &bare, now(), Usage::Client).unwrap_err();
        assert!(matches!(err, CertError::Untrusted(_)), "{err:?}");
        assert_eq!(err.client_reason(), "client_cert_untrusted");
    }

    #[test]
    fn refuses_an_empty_chain_as_missing() {
        let err = verify_chain(&[], &store(), now(), Usage::Client).unwrap_err();
        assert_eq!(err, CertError::Missing);
        assert_eq!(err.client_reason(), "client_cert_missing");
        assert_eq!(err.server_reason(), "server_cert_missing");
    }

    #[test]
    fn refuses_an_expired_certificate_with_its_end_date() {
        let err = verify_chain(
            &chain("peer-expired-chain.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CertError::Expired {
                not_after: datetime!(2021-01-01 00:00 UTC)
            }
        );
        assert!(
            err.to_string()
                .contains("certificate expired on 2021-01-01T00:00:00Z"),
            "{err}"
        );
        assert_eq!(err.client_reason(), "client_cert_expired");
        assert_eq!(err.server_reason(), "server_cert_expired");
    }

    #[test]
    fn refuses_a_valid_certificate_once_its_validity_has_ended() {
        let err = verify_chain(
            &chain("peer-a-chain.pem"),
            &store(),
            at(datetime!(2045-01-01 00:00:01 UTC)),
            Usage::Client,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
    }

    #[test]
    fn refuses_a_certificate_not_yet_valid_with_its_start_date() {
        let err = verify_chain(
            &chain("peer-not-yet-valid-chain.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CertError::NotYetValid {
                not_before: datetime!(2099-01-01 00:00 UTC)
            }
        );
        assert!(err.to_string().contains("2099-01-01T00:00:00Z"), "{err}");
        assert_eq!(err.client_reason(), "client_cert_not_yet_valid");
    }

    #[test]
    fn refuses_a_revoked_certificate() {
        let err = verify_chain(
            &chain("peer-revoked-chain.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert_eq!(err, CertError::Revoked);
        assert_eq!(err.client_reason(), "client_cert_revoked");
        assert_eq!(err.server_reason(), "server_cert_revoked");
    }

    #[test]
    fn without_a_crl_for_its_issuer_a_certificate_is_deferred_unless_best_effort() {
        let anchors = chain("anchors.pem");
        let no_crl = TrustStore::from_der(&anchors, chain("intermediate-ca.pem"), Vec::new())
            .expect("store");
        for name in ["peer-revoked-chain.pem", "peer-a-chain.pem"] {
            let err = verify_chain(&chain(name), &no_crl, now(), Usage::Client)
                .expect_err("revocation status unknown");
            assert_eq!(err, CertError::CrlUnavailable, "{name}");
            assert_eq!(err.client_reason(), "crl_unavailable");
            assert_eq!(err.server_reason(), "crl_unavailable");
        }
        let best_effort = no_crl.with_revocation(Revocation::BestEffort);
        verify_chain(
            &chain("peer-revoked-chain.pem"),
            &best_effort,
            now(),
            Usage::Client,
        )
        .expect("best effort: unknown revocation status is allowed");
    }

    #[test]
    fn refuses_a_certificate_from_a_foreign_root() {
        let err = verify_chain(
            &chain("peer-foreign-chain.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::Untrusted(_)), "{err:?}");
        assert!(err.to_string().contains("IGC Santé"), "{err}");
        assert_eq!(err.server_reason(), "server_cert_untrusted");
    }

    #[test]
    fn refuses_a_server_only_certificate_as_a_client() {
        let err = verify_chain(
            &chain("peer-server-only-chain.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CertError::WrongUsage {
                required: ExtKeyUsage::ClientAuth
            }
        );
        assert!(err.to_string().contains("clientAuth"), "{err}");
        assert_eq!(err.client_reason(), "client_cert_wrong_usage");
        assert_eq!(err.server_reason(), "server_cert_wrong_usage");
    }

    #[test]
    fn accepts_a_server_only_certificate_as_a_server() {
        verify_chain(
            &chain("peer-server-only-chain.pem"),
            &store(),
            now(),
            Usage::Server,
        )
        .expect("serverAuth is enough for a server");
    }

    #[test]
    fn refuses_garbage_as_malformed() {
        let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
        let err = verify_chain(&garbage, &store(), now(), Usage::Client).unwrap_err();
        assert!(matches!(err, CertError::Malformed(_)), "{err:?}");
        assert_eq!(err.client_reason(), "client_cert_malformed");
        assert_eq!(err.server_reason(), "server_cert_malformed");
    }

    #[test]
    fn refuses_a_ca_certificate_presented_as_a_leaf() {
        let err = verify_chain(
            &chain("intermediate-ca.pem"),
            &store(),
            now(),
            Usage::Client,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::Untrusted(_)), "{err:?}");
    }

    #[test]
    fn rfc4514_escapes_special_characters() {
        assert_eq!(escape_rfc4514("C H U, LIMOGES"), "C H U\\, LIMOGES");
        assert_eq!(escape_rfc4514(" lead"), "\\ lead");
        assert_eq!(escape_rfc4514("trail "), "trail\\ ");
        assert_eq!(escape_rfc4514("#x+y"), "\\#x\\+y");
        assert_eq!(escape_rfc4514("Paris (75)"), "Paris (75)");
    }
}
