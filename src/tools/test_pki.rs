//! `test-pki`: generates a test PKI that mimics IGC Santé, for `certs-test/`, local runs
//! and tests.
//!
//! The hierarchy copies the shape of the real TEST espace (root `TEST AC RACINE IGC-SANTE
//! ELEMENTAIRE` → intermediate `TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS` → SSL server
//! leaves with serverAuth + clientAuth, RSA-2048, SHA-256), plus one certificate per way a
//! peer can be refused (expired, not yet valid, revoked, foreign root, server-only EKU), so
//! that every refusal path of `trust::verify` can be exercised against real files.
//!
//! Every key is written next to its certificate, CA keys included: this is a test PKI and
//! must never be trusted by a production connector.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Date, Month, OffsetDateTime};

/// One file written by [`generate`], described so the CLI can print a table of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFile {
    /// File name inside the output directory (no directory part).
    pub file_name: String,
    /// RFC 4514 subject DN of the certificate the file holds or belongs to (for a CRL: its
    /// issuer).
    pub subject_dn: String,
    /// Why the file exists: which test scenario or role it serves.
    pub purpose: String,
}

/// Why the test PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TestPkiError {
    #[error("cannot create the output directory {path}: {source}; check that its parent exists and is writable")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write {path}: {source}; check free space and permissions in the output directory"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

/// Organisation of IGC Santé's CAs (`OU=0002 187512751` is ASIP Santé's SIREN-based id).
const CA_ORG: &str = "ASIP-SANTE";
const CA_ORG_ID: &str = "0002 187512751";
const CA_OU_TEST: &str = "IGC-SANTE TEST";

pub const ROOT_CN: &str = "TEST AC RACINE IGC-SANTE ELEMENTAIRE";
pub const INTERMEDIATE_CN: &str = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS";
pub const FOREIGN_ROOT_CN: &str = "AC RACINE ETRANGERE";

/// Where the (fictitious) CRLs would be published: `.invalid` so nothing ever resolves it.
const ROOT_CRL_URL: &str = "http://igc-sante.test.invalid/crl/ACR-EL.crl";
const INTERMEDIATE_CRL_URL: &str = "http://igc-sante.test.invalid/crl/ACI-EL-ORG.crl";

/// A subject attribute type, in the vocabulary of IGC Santé DNs.
#[derive(Clone, Copy)]
enum Attr {
    Cn,
    Ou,
    O,
    St,
    C,
}

impl Attr {
    fn label(self) -> &'static str {
        match self {
            Attr::Cn => "CN",
            Attr::Ou => "OU",
            Attr::O => "O",
            Attr::St => "ST",
            Attr::C => "C",
        }
    }
}

/// A DN written the way MSSanté documents and the whitelist write it (RFC 4514 order: CN
/// first, C last). `csr` builds its request's subject with it too.
pub(crate) struct Dn(Vec<(Attr, String)>);

impl Dn {
    fn to_rfc4514(&self) -> String {
        self.0
            .iter()
            .map(|(attr, value)| format!("{}={}", attr.label(), value))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The DER encoding lists RDNs in the reverse of RFC 4514's order (C first, CN last),
    /// as in real IGC Santé certificates. rcgen keys its names by type, so a second OU is
    /// pushed as a custom type with the OU object identifier (2.5.4.11): same encoding.
    pub(crate) fn to_rcgen(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        let mut seen_ou = false;
        for (attr, value) in self.0.iter().rev() {
            let ty = match attr {
                Attr::Cn => DnType::CommonName,
                Attr::Ou if seen_ou => DnType::CustomDnType(vec![2, 5, 4, 11]),
                Attr::Ou => {
                    seen_ou = true;
                    DnType::OrganizationalUnitName
                }
                Attr::O => DnType::OrganizationName,
                Attr::St => DnType::StateOrProvinceName,
                Attr::C => DnType::CountryName,
            };
            dn.push(ty, value.as_str());
        }
        dn
    }
}

fn ca_dn(cn: &str) -> Dn {
    Dn(vec![
        (Attr::Cn, cn.to_owned()),
        (Attr::Ou, CA_OU_TEST.to_owned()),
        (Attr::Ou, CA_ORG_ID.to_owned()),
        (Attr::O, CA_ORG.to_owned()),
        (Attr::C, "FR".to_owned()),
    ])
}

/// An IGC Santé SSL server subject: `CN=cn,OU=ou,O=o,ST=st,C=FR`.
pub(crate) fn leaf_dn(cn: &str, ou: &str, o: &str, st: &str) -> Dn {
    Dn(vec![
        (Attr::Cn, cn.to_owned()),
        (Attr::Ou, ou.to_owned()),
        (Attr::O, o.to_owned()),
        (Attr::St, st.to_owned()),
        (Attr::C, "FR".to_owned()),
    ])
}

/// Which CA signs a leaf.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IssuedBy {
    Intermediate,
    ForeignRoot,
}

/// One leaf certificate to generate.
struct LeafSpec {
    name: &'static str,
    cn: &'static str,
    /// `1` + FINESS or `3` + SIRET, both with a valid Luhn key.
    ou: &'static str,
    o: &'static str,
    st: &'static str,
    not_before: (i32, Month, u8),
    not_after: (i32, Month, u8),
    server_auth_only: bool,
    issued_by: IssuedBy,
    revoked: bool,
    purpose: &'static str,
}

const VALID_FROM: (i32, Month, u8) = (2025, Month::January, 1);
const VALID_UNTIL: (i32, Month, u8) = (2045, Month::January, 1);

const LEAVES: &[LeafSpec] = &[
    LeafSpec {
        name: "gateway",
        cn: "smtp.gateway.test.mssante.fr",
        ou: "1750000010",
        o: "CH GATEWAY TEST",
        st: "Paris (75)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "our own connector's certificate (server and client side)",
    },
    LeafSpec {
        name: "peer-a",
        cn: "smtp.peer-a.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "valid peer operator (SIRET): accepted",
    },
    LeafSpec {
        name: "peer-b",
        cn: "smtp.peer-b.test.mssante.fr",
        ou: "1330000027",
        o: "OPERATEUR PEER B",
        st: "Gironde (33)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "second valid peer operator (FINESS): accepted",
    },
    LeafSpec {
        name: "peer-a-cn-diff",
        cn: "other.peer-a.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose:
            "peer A's organisation with another CN: chain valid, DN differs from the listed one",
    },
    LeafSpec {
        name: "peer-expired",
        cn: "smtp.peer-expired.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: (2020, Month::January, 1),
        not_after: (2021, Month::January, 1),
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "refused: expired on 2021-01-01",
    },
    LeafSpec {
        name: "peer-not-yet-valid",
        cn: "smtp.peer-not-yet-valid.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: (2099, Month::January, 1),
        not_after: (2101, Month::January, 1),
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "refused: valid only from 2099-01-01",
    },
    LeafSpec {
        name: "peer-revoked",
        cn: "smtp.peer-revoked.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: true,
        purpose: "refused: revoked in intermediate-ca.crl.pem",
    },
    LeafSpec {
        name: "peer-foreign",
        cn: "smtp.peer-foreign.test.mssante.fr",
        ou: "355555555600003",
        o: "OPERATEUR ETRANGER",
        st: "Paris (75)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::ForeignRoot,
        revoked: false,
        purpose: "refused: IGC-like subject issued by a foreign root (not IGC Santé)",
    },
    LeafSpec {
        name: "peer-server-only",
        cn: "smtp.peer-server-only.test.mssante.fr",
        ou: "398765432400001",
        o: "OPERATEUR PEER A",
        st: "Bas-Rhin (67)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: true,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "refused as a client: extended key usage serverAuth only",
    },
    LeafSpec {
        name: "whitelist-signer",
        cn: "alb.test.mssante.fr",
        ou: "312345678200002",
        o: "TEST SIGNATAIRE LISTE BLANCHE",
        st: "Paris (75)",
        not_before: VALID_FROM,
        not_after: VALID_UNTIL,
        server_auth_only: false,
        issued_by: IssuedBy::Intermediate,
        revoked: false,
        purpose: "signs the sample whitelist (like the real alb.mssante.fr signer)",
    },
];

fn date((year, month, day): (i32, Month, u8)) -> OffsetDateTime {
    // The tables above hold literal calendar dates; an invalid one is a programming error
    // caught by the unit test, so fall back to the epoch rather than panic.
    Date::from_calendar_date(year, month, day)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn generate_key(what: &str) -> Result<KeyPair, TestPkiError> {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|source| TestPkiError::Generate {
        what: format!("the RSA-2048 key of {what}"),
        source,
    })
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> TestPkiError + '_ {
    move |source| TestPkiError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// Collects the files to write, then writes them all.
struct Output {
    dir: PathBuf,
    files: Vec<PkiFile>,
}

impl Output {
    fn write(
        &mut self,
        file_name: &str,
        contents: &str,
        subject_dn: &str,
        purpose: &str,
    ) -> Result<(), TestPkiError> {
        let path = self.dir.join(file_name);
        fs::write(&path, contents).map_err(|source| TestPkiError::Write { path, source })?;
        self.files.push(PkiFile {
            file_name: file_name.to_owned(),
            subject_dn: subject_dn.to_owned(),
            purpose: purpose.to_owned(),
        });
        Ok(())
    }
}

fn ca_params(
    dn: &Dn,
    serial: u8,
    path_len: Option<u8>,
    crl_url: Option<&str>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn.to_rcgen();
    params.not_before = date((2019, Month::January, 1));
    params.not_after = date((2049, Month::December, 31));
    params.serial_number = Some(SerialNumber::from_slice(&[0x01, serial]));
    params.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = path_len.is_some();
    if let Some(url) = crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_owned()],
        }];
    }
    params
}

/// A CRL of the test intermediate CA, signed with its key from `dir` (a directory written
/// by [`generate`]), revoking the leaves with the given serial numbers (as in the leaves'
/// certificates: big-endian bytes). For tests of CRL downloads and expiry.
pub fn intermediate_crl(
    dir: &Path,
    revoked_serials: &[Vec<u8>],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, TestPkiError> {
    let key_path = dir.join("intermediate-ca.key");
    let pem = fs::read_to_string(&key_path).map_err(|source| TestPkiError::Write {
        path: key_path.clone(),
        source,
    })?;
    let key = KeyPair::from_pem(&pem).map_err(gen_err("the intermediate CA key"))?;
    // The same subject encoding as the certificate, so the CRL's issuer matches it byte
    // for byte, as certificate path validation requires.
    let params = ca_params(&ca_dn(INTERMEDIATE_CN), 2, Some(0), Some(ROOT_CRL_URL));
    let issuer = Issuer::new(params, &key);
    let crl = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(this_update.unix_timestamp().unsigned_abs()),
        issuing_distribution_point: None,
        revoked_certs: revoked_serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: this_update,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .map_err(gen_err("the CRL"))?;
    Ok(crl.der().to_vec())
}

/// A server certificate for `host` (a DNS name such as `localhost`) issued by the test
/// intermediate CA of `dir`, as (chain PEM: leaf then intermediate, PKCS#8 key PEM). For
/// test servers that must chain to the test anchors, like the liste blanche's web server.
pub fn issue_server_certificate(dir: &Path, host: &str) -> Result<(String, String), TestPkiError> {
    issue_under_intermediate(
        dir,
        host,
        vec![host.to_owned()],
        leaf_dn(host, "3000000000000", "TEST SERVEUR", "Paris (75)"),
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    )
}

/// Issues, under the intermediate CA of the PKI in `dir`, a peer certificate with peer A's
/// organisation (OU, O, ST, so its DN is listed if `cn` is peer A's) and the given CN and
/// extra dNSName SANs, for tests of names: a CN carrying control characters, a SAN that is
/// not the CN. Returns (chain PEM: leaf then intermediate, key PEM).
pub fn issue_peer_a_variant(
    dir: &Path,
    cn: &str,
    extra_dns_names: &[&str],
) -> Result<(String, String), TestPkiError> {
    issue_under_intermediate(
        dir,
        cn,
        extra_dns_names.iter().map(|n| n.to_string()).collect(),
        leaf_dn(cn, "398765432400001", "OPERATEUR PEER A", "Bas-Rhin (67)"),
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// A leaf with subject `dn`, dNSName SANs `names` and usages `ekus`, signed by the
/// intermediate CA of `dir`: (chain PEM, key PEM).
fn issue_under_intermediate(
    dir: &Path,
    label: &str,
    names: Vec<String>,
    dn: Dn,
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String), TestPkiError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| TestPkiError::Write { path, source })
    };
    let ca_key = KeyPair::from_pem(&read("intermediate-ca.key")?)
        .map_err(gen_err("the intermediate CA key"))?;
    let params = ca_params(&ca_dn(INTERMEDIATE_CN), 2, Some(0), Some(ROOT_CRL_URL));
    let issuer = Issuer::new(params, &ca_key);
    let key = generate_key(label)?;
    let mut leaf = CertificateParams::new(names).map_err(gen_err(label))?;
    leaf.distinguished_name = dn.to_rcgen();
    leaf.not_before = date((2025, Month::January, 1));
    leaf.not_after = date(VALID_UNTIL);
    leaf.extended_key_usages = ekus;
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_identifier_method = KeyIdMethod::Sha256;
    let cert = leaf.signed_by(&key, &issuer).map_err(gen_err(label))?;
    Ok((
        format!("{}{}", cert.pem(), read("intermediate-ca.pem")?),
        key.serialize_pem(),
    ))
}

/// Writes the test PKI into `out` (created if missing; existing files are overwritten)
/// and returns the list of files written, in a stable order.
pub fn generate(out: &Path) -> Result<Vec<PkiFile>, TestPkiError> {
    fs::create_dir_all(out).map_err(|source| TestPkiError::CreateDir {
        path: out.to_owned(),
        source,
    })?;
    let mut output = Output {
        dir: out.to_owned(),
        files: Vec::new(),
    };

    // Root.
    let root_dn = ca_dn(ROOT_CN);
    let root_dn_str = root_dn.to_rfc4514();
    let root_key = generate_key("the root CA")?;
    let root_params = ca_params(&root_dn, 1, None, None);
    let root_cert = root_params
        .self_signed(&root_key)
        .map_err(gen_err("the root CA certificate"))?;
    let root = Issuer::new(root_params, &root_key);
    output.write(
        "root-ca.pem",
        &root_cert.pem(),
        &root_dn_str,
        "test root CA (trust anchor of the test espace)",
    )?;
    output.write(
        "root-ca.key",
        &root_key.serialize_pem(),
        &root_dn_str,
        "test root CA private key (test only)",
    )?;
    output.write(
        "anchors.pem",
        &root_cert.pem(),
        &root_dn_str,
        "trust anchors to configure: the test root only",
    )?;

    // Intermediate (ORGANISATIONS), pathlen 0: it signs leaves only.
    let inter_dn = ca_dn(INTERMEDIATE_CN);
    let inter_dn_str = inter_dn.to_rfc4514();
    let inter_key = generate_key("the intermediate CA")?;
    let inter_params = ca_params(&inter_dn, 2, Some(0), Some(ROOT_CRL_URL));
    let inter_cert = inter_params
        .signed_by(&inter_key, &root)
        .map_err(gen_err("the intermediate CA certificate"))?;
    let inter_pem = inter_cert.pem();
    let intermediate = Issuer::new(inter_params, &inter_key);
    output.write(
        "intermediate-ca.pem",
        &inter_pem,
        &inter_dn_str,
        "test intermediate CA ORGANISATIONS (issues the leaves)",
    )?;
    output.write(
        "intermediate-ca.key",
        &inter_key.serialize_pem(),
        &inter_dn_str,
        "test intermediate CA private key (test only)",
    )?;

    // Foreign root: a CA outside IGC Santé, to prove its leaves are refused.
    let foreign_dn = Dn(vec![
        (Attr::Cn, FOREIGN_ROOT_CN.to_owned()),
        (Attr::O, "FOREIGN".to_owned()),
        (Attr::C, "FR".to_owned()),
    ]);
    let foreign_dn_str = foreign_dn.to_rfc4514();
    let foreign_key = generate_key("the foreign root CA")?;
    let foreign_params = ca_params(&foreign_dn, 3, None, None);
    let foreign_cert = foreign_params
        .self_signed(&foreign_key)
        .map_err(gen_err("the foreign root CA certificate"))?;
    let foreign_pem = foreign_cert.pem();
    let foreign = Issuer::new(foreign_params, &foreign_key);
    output.write(
        "foreign-root-ca.pem",
        &foreign_pem,
        &foreign_dn_str,
        "a root outside IGC Santé (never a trust anchor)",
    )?;
    output.write(
        "foreign-root-ca.key",
        &foreign_key.serialize_pem(),
        &foreign_dn_str,
        "foreign root private key (test only)",
    )?;

    let mut revoked = Vec::new();
    for (index, spec) in LEAVES.iter().enumerate() {
        let dn = leaf_dn(spec.cn, spec.ou, spec.o, spec.st);
        let dn_str = dn.to_rfc4514();
        let key = generate_key(spec.name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn.to_rcgen();
        params.subject_alt_names = vec![SanType::DnsName(
            spec.cn
                .try_into()
                .map_err(gen_err(&format!("the SAN of {}", spec.name)))?,
        )];
        params.not_before = date(spec.not_before);
        params.not_after = date(spec.not_after);
        let serial = SerialNumber::from_slice(&[0x10, u8::try_from(index).unwrap_or(u8::MAX)]);
        params.serial_number = Some(serial.clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = if spec.server_auth_only {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = true;
        let (issuer, issuer_pem) = match spec.issued_by {
            IssuedBy::Intermediate => {
                params.crl_distribution_points = vec![CrlDistributionPoint {
                    uris: vec![INTERMEDIATE_CRL_URL.to_owned()],
                }];
                (&intermediate, &inter_pem)
            }
            IssuedBy::ForeignRoot => (&foreign, &foreign_pem),
        };
        let cert = params
            .signed_by(&key, issuer)
            .map_err(gen_err(&format!("the certificate of {}", spec.name)))?;
        if spec.revoked {
            revoked.push(RevokedCertParams {
                serial_number: serial,
                revocation_time: date((2025, Month::June, 1)),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let cert_pem = cert.pem();
        output.write(
            &format!("{}.pem", spec.name),
            &cert_pem,
            &dn_str,
            spec.purpose,
        )?;
        output.write(
            &format!("{}.key", spec.name),
            &key.serialize_pem(),
            &dn_str,
            &format!("private key of {} (PKCS#8)", spec.name),
        )?;
        output.write(
            &format!("{}-chain.pem", spec.name),
            &format!("{cert_pem}{issuer_pem}"),
            &dn_str,
            &format!("{} followed by its issuing CA", spec.name),
        )?;
    }

    let crl = CertificateRevocationListParams {
        this_update: date((2025, Month::June, 1)),
        next_update: date((2045, Month::January, 1)),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&intermediate)
    .map_err(gen_err("the intermediate CA's CRL"))?;
    let crl_pem = crl.pem().map_err(gen_err("the PEM form of the CRL"))?;
    output.write(
        "intermediate-ca.crl.pem",
        &crl_pem,
        &inter_dn_str,
        "CRL of the intermediate CA (ACI-EL-ORG.crl): revokes peer-revoked",
    )?;

    Ok(output.files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    use x509_parser::public_key::PublicKey;

    fn pem_der(path: &Path) -> Vec<u8> {
        let text = fs::read(path).expect("generated file is readable");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).expect("generated file is PEM");
        pem.contents
    }

    /// RFC 4514 rendering in the order the whitelist writes DNs (last RDN first).
    fn subject_rfc4514(cert: &X509Certificate<'_>) -> String {
        let mut parts: Vec<String> = Vec::new();
        for rdn in cert.subject().iter() {
            for attr in rdn.iter() {
                let oid = attr.attr_type().to_id_string();
                let label = match oid.as_str() {
                    "2.5.4.3" => "CN",
                    "2.5.4.11" => "OU",
                    "2.5.4.10" => "O",
                    "2.5.4.8" => "ST",
                    "2.5.4.6" => "C",
                    other => panic!("unexpected attribute {other}"),
                };
                parts.push(format!("{label}={}", attr.as_str().expect("string value")));
            }
        }
        parts.reverse();
        parts.join(",")
    }

    fn luhn_valid(digits: &str) -> bool {
        let sum: u32 = digits
            .chars()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let d = c.to_digit(10).expect("digit");
                if i % 2 == 1 {
                    let d2 = d * 2;
                    if d2 > 9 {
                        d2 - 9
                    } else {
                        d2
                    }
                } else {
                    d
                }
            })
            .sum();
        sum % 10 == 0
    }

    #[test]
    fn generated_leaves_look_like_igc_sante_ssl_server_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(dir.path()).expect("generation succeeds");

        let root = pem_der(&dir.path().join("root-ca.pem"));
        let (_, root) = X509Certificate::from_der(&root).expect("root parses");
        assert_eq!(
            subject_rfc4514(&root),
            "CN=TEST AC RACINE IGC-SANTE ELEMENTAIRE,OU=IGC-SANTE TEST,OU=0002 187512751,O=ASIP-SANTE,C=FR"
        );
        let inter = pem_der(&dir.path().join("intermediate-ca.pem"));
        let (_, inter) = X509Certificate::from_der(&inter).expect("intermediate parses");
        assert_eq!(
            subject_rfc4514(&inter),
            "CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=IGC-SANTE TEST,OU=0002 187512751,O=ASIP-SANTE,C=FR"
        );
        let bc = inter
            .basic_constraints()
            .expect("valid extension")
            .expect("present");
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));

        let mut serials = std::collections::HashSet::new();
        for spec in LEAVES {
            let der = pem_der(&dir.path().join(format!("{}.pem", spec.name)));
            let (_, cert) = X509Certificate::from_der(&der).expect("leaf parses");
            let expected = format!(
                "CN={},OU={},O={},ST={},C=FR",
                spec.cn, spec.ou, spec.o, spec.st
            );
            assert_eq!(subject_rfc4514(&cert), expected, "{}", spec.name);
            assert!(
                files.iter().any(
                    |f| f.file_name == format!("{}.pem", spec.name) && f.subject_dn == expected
                ),
                "{} is listed with its DN",
                spec.name
            );

            let (kind, id) = spec.ou.split_at(1);
            match kind {
                "1" => assert_eq!(id.len(), 9, "FINESS of {}", spec.name),
                "3" => assert_eq!(id.len(), 14, "SIRET of {}", spec.name),
                other => panic!("OU kind {other} of {}", spec.name),
            }
            assert!(luhn_valid(id), "Luhn key of {}", spec.name);

            let eku = cert
                .extended_key_usage()
                .expect("valid EKU")
                .expect("EKU present")
                .value;
            assert!(eku.server_auth, "{}", spec.name);
            assert_eq!(eku.client_auth, !spec.server_auth_only, "{}", spec.name);

            match cert.public_key().parsed().expect("public key parses") {
                PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048, "{}", spec.name),
                _ => panic!("{} must have an RSA key", spec.name),
            }
            assert_eq!(
                cert.signature_algorithm.algorithm.to_id_string(),
                "1.2.840.113549.1.1.11",
                "{} is signed with sha256WithRSAEncryption",
                spec.name
            );

            let san = cert
                .subject_alternative_name()
                .expect("valid SAN")
                .expect("SAN present");
            let dns: Vec<&str> = san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(*d),
                    _ => None,
                })
                .collect();
            assert_eq!(dns, vec![spec.cn], "SAN = CN for {}", spec.name);

            assert!(
                serials.insert(cert.raw_serial().to_vec()),
                "serial of {} is unique",
                spec.name
            );
            for suffix in [".key", "-chain.pem"] {
                assert!(dir.path().join(format!("{}{suffix}", spec.name)).is_file());
            }
        }
        check_verdicts(dir.path());
        for name in [
            "root-ca.key",
            "intermediate-ca.key",
            "anchors.pem",
            "intermediate-ca.crl.pem",
            "foreign-root-ca.pem",
        ] {
            assert!(files.iter().any(|f| f.file_name == name), "{name} listed");
            assert!(dir.path().join(name).is_file(), "{name} written");
        }
    }

    /// The generated files drive `trust::verify` to the intended verdict for each case.
    fn check_verdicts(dir: &Path) {
        use crate::trust::pki::{load_certificates, TrustStore};
        use crate::trust::verify::{verify_chain, CertError, Usage};
        use rustls_pki_types::UnixTime;

        let store = TrustStore::load(
            &[dir.join("anchors.pem")],
            &[dir.join("intermediate-ca.pem")],
            &[dir.join("intermediate-ca.crl.pem")],
        )
        .expect("generated store loads");
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_893_456_000)); // 2030-01-01
        let verdict = |name: &str, usage: Usage| {
            let chain = load_certificates(&dir.join(format!("{name}-chain.pem")))
                .expect("generated chain loads");
            verify_chain(&chain, &store, now, usage)
        };
        for name in [
            "gateway",
            "peer-a",
            "peer-b",
            "peer-a-cn-diff",
            "whitelist-signer",
        ] {
            assert!(verdict(name, Usage::Client).is_ok(), "{name} accepted");
        }
        assert!(matches!(
            verdict("peer-expired", Usage::Client),
            Err(CertError::Expired { .. })
        ));
        assert!(matches!(
            verdict("peer-not-yet-valid", Usage::Client),
            Err(CertError::NotYetValid { .. })
        ));
        assert!(matches!(
            verdict("peer-revoked", Usage::Client),
            Err(CertError::Revoked)
        ));
        assert!(matches!(
            verdict("peer-foreign", Usage::Client),
            Err(CertError::Untrusted(_))
        ));
        assert!(matches!(
            verdict("peer-server-only", Usage::Client),
            Err(CertError::WrongUsage { .. })
        ));
    }
}
