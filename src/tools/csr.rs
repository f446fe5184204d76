//! `csr`: a new private key and the certificate request (PKCS#10) an operator sends with
//! ANS's order form for its IGC Santé SSL server certificate: form 414 in the test espace,
//! 413 in production.
//!
//! The subject is the one the espace expects of an operator's mail server (the Annexe 1
//! and the integration guide): `CN=<hostname>,OU=<1+FINESS | 3+SIRET>,O=<STRUCTURE
//! NAME>,ST=<Département (nn)>,C=FR`, encoded C first as IGC Santé's certificates are,
//! with the CN again as a dNSName; an RSA key of 2048 (or 3072) bits, signed with
//! sha256WithRSAEncryption. Each value is checked by the rules `doctor` applies to the
//! installed certificate (`identity_checks`), before any key is made, and every problem is
//! reported at once with its configuration key.

use std::path::{Path, PathBuf};

use rcgen::string::PrintableString;
use rcgen::{CertificateParams, DnType, DnValue, KeyPair, RsaKeySize};

use super::identity_checks::{self as rules, StructureId};
use super::test_pki::leaf_dn;
use crate::config::{ConfigError, Espace, RequestSettings};
use crate::durable::{self, WriteError};
use crate::trust::dn::SubjectDn;

/// The subject of the request, each value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The mail server's FQDN, lower case: the CN and the dNSName.
    pub cn: String,
    /// `1` + FINESS or `3` + SIRET.
    pub ou: String,
    /// The structure's name, upper case without accents.
    pub o: String,
    /// `Département (nn)`.
    pub st: String,
}

impl Subject {
    /// The subject as a DN, C included.
    pub fn dn(&self) -> SubjectDn {
        SubjectDn {
            cn: Some(self.cn.clone()),
            ou: vec![self.ou.clone()],
            o: Some(self.o.clone()),
            st: Some(self.st.clone()),
            c: Some("FR".into()),
            ..SubjectDn::default()
        }
    }
}

const LR: &str = "operator.legal_representative";

/// The subject built from the configuration, or every problem, naming its key.
pub fn subject(settings: &RequestSettings) -> Result<Subject, Vec<ConfigError>> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(ConfigError {
            file: settings.path.clone(),
            key: key.to_string(),
            message,
        })
    };

    // The order forms refuse a name under mssante.fr whatever the DNS method: a delegation
    // is asked for with the Annexe 1, after the certificate is issued.
    let cn = match (&settings.hostname, &settings.certificate_cn) {
        (Some(name), _) => rules::server_name(name, &[]).map_err(|e| e.to_string()),
        (None, Some(name)) => rules::server_name(name, &[]).map_err(|e| {
            format!("{e} (hostname is not set, so this is the CN of tls.certificate: set hostname to the name to request)")
        }),
        (None, None) => Err("is not set, and tls.certificate cannot be read for its CN: set hostname to the FQDN of the mail server the certificate is for (the MX target), e.g. hostname = \"smtp.ch-xyz.fr\"".into()),
    };
    let cn = cn.map_err(|e| problem("hostname", e)).ok();

    let Some(op) = &settings.operator else {
        problem(
            "operator",
            "the [operator] section is missing: csr takes the structure's name, identifier (FINESS or SIRET) and département from [operator.legal_representative] (see config/local.toml)".into(),
        );
        return Err(problems);
    };
    let lr = &op.legal_representative;

    let ou = match rules::finess_or_siret(&lr.structure_id) {
        Ok(StructureId::Finess) => Some(format!("1{}", lr.structure_id)),
        Ok(StructureId::Siret) => Some(format!("3{}", lr.structure_id)),
        Err(e) => {
            problem(&format!("{LR}.structure_id"), format!("{e}; the certificate's OU is 1 followed by the structure's FINESS, or 3 followed by its SIRET"));
            None
        }
    };

    let name = lr
        .structure_name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let o = rules::upper_without_accents(&name);
    let o = match rules::organisation(&o) {
        Ok(()) => Some(o),
        Err(e) => {
            problem(
                &format!("{LR}.structure_name"),
                format!("{e} (the certificate's O is this name in upper case without accents)"),
            );
            None
        }
    };

    let st = match &lr.department {
        None => {
            problem(
                &format!("{LR}.department"),
                "is missing: the certificate's ST is the structure's département, its name, a space and its code in brackets; add e.g. department = \"Bas-Rhin (67)\" to [operator.legal_representative]".into(),
            );
            None
        }
        Some(d) => match rules::departement(d) {
            Ok(()) => Some(d.trim().to_string()),
            Err(e) => {
                problem(&format!("{LR}.department"), e);
                None
            }
        },
    };

    match (cn, ou, o, st) {
        (Some(cn), Some(ou), Some(o), Some(st)) if problems.is_empty() => {
            Ok(Subject { cn, ou, o, st })
        }
        _ => Err(problems),
    }
}

/// The RSA key sizes `csr` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySize {
    /// 2048 bits, the size of the espace's certificates.
    Rsa2048,
    /// 3072 bits.
    Rsa3072,
}

impl KeySize {
    /// The size in bits.
    pub fn bits(self) -> u16 {
        match self {
            KeySize::Rsa2048 => 2048,
            KeySize::Rsa3072 => 3072,
        }
    }
}

/// A new key and its request, both PEM.
pub struct Request {
    /// The private key, PKCS#8.
    pub key_pem: String,
    /// The PKCS#10 request.
    pub csr_pem: String,
}

/// Why no request was written.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// A file to write exists and `--force` was not given.
    #[error("{path} exists: csr does not replace a {what} (it may go with the certificate in use); choose another path ({flag}), or pass --force")]
    Exists {
        /// The file.
        path: PathBuf,
        /// `private key` or `request`.
        what: &'static str,
        /// The flag that names another path.
        flag: &'static str,
    },
    /// The key and the request would be the same file.
    #[error("--key-out and --out name the same file {0}: give two paths")]
    SamePath(PathBuf),
    /// The key or the request could not be made.
    #[error("cannot make the {what}: {source}")]
    Generate {
        /// `RSA key` or `request`.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("cannot write the {what}: {source}")]
    Write {
        /// `private key` or `request`.
        what: &'static str,
        /// The step that failed.
        source: WriteError,
    },
    /// The key was written, the request was not.
    #[error("{source}; the new private key was written to {key} all the same: once the cause is fixed, run csr again with --force (a new key replaces that one)")]
    RequestAfterKey {
        /// The key written.
        key: PathBuf,
        /// Why the request was not written.
        source: Box<CsrError>,
    },
}

/// A new RSA key of `size` and the request for `subject`, signed with it.
pub fn generate(subject: &Subject, size: KeySize) -> Result<Request, CsrError> {
    let rsa_size = match size {
        KeySize::Rsa2048 => RsaKeySize::_2048,
        KeySize::Rsa3072 => RsaKeySize::_3072,
    };
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rsa_size).map_err(|source| {
        CsrError::Generate {
            what: "RSA key",
            source,
        }
    })?;
    let request = |source| CsrError::Generate {
        what: "request",
        source,
    };
    let mut params = CertificateParams::new(vec![subject.cn.clone()]).map_err(request)?;
    let mut dn = leaf_dn(&subject.cn, &subject.ou, &subject.o, &subject.st).to_rcgen();
    // RFC 5280 types countryName as a PrintableString, as IGC Santé encodes it.
    let country = PrintableString::try_from("FR").map_err(request)?;
    dn.push(DnType::CountryName, DnValue::PrintableString(country));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(request)?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(request)?,
    })
}

/// Where the key and the request go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The private key (mode 0600).
    pub key: PathBuf,
    /// The request.
    pub csr: PathBuf,
}

impl Files {
    /// The paths given, or `<cn>.key` and `<cn>.csr` in the current directory.
    pub fn new(subject: &Subject, key: Option<PathBuf>, csr: Option<PathBuf>) -> Files {
        Files {
            key: key.unwrap_or_else(|| PathBuf::from(format!("{}.key", subject.cn))),
            csr: csr.unwrap_or_else(|| PathBuf::from(format!("{}.csr", subject.cn))),
        }
    }

    /// Refuses, before a key is made, paths that would replace a file without `force`.
    pub fn check(&self, force: bool) -> Result<(), CsrError> {
        if self.key == self.csr {
            return Err(CsrError::SamePath(self.key.clone()));
        }
        let exists = |path: &Path| path.symlink_metadata().is_ok();
        if !force && exists(&self.key) {
            return Err(CsrError::Exists {
                path: self.key.clone(),
                what: "private key",
                flag: "--key-out",
            });
        }
        if !force && exists(&self.csr) {
            return Err(CsrError::Exists {
                path: self.csr.clone(),
                what: "request",
                flag: "--out",
            });
        }
        Ok(())
    }

    /// Writes the key (mode 0600 from its creation) then the request, each durably; an
    /// existing file is replaced only with `force`.
    pub fn write(&self, request: &Request, force: bool) -> Result<(), CsrError> {
        // Created between `check` and now: still not replaced.
        let failed = |path: &Path, what, flag| {
            let path = path.to_path_buf();
            move |source: WriteError| match source.source.kind() {
                std::io::ErrorKind::AlreadyExists => CsrError::Exists { path, what, flag },
                _ => CsrError::Write { what, source },
            }
        };
        durable::create(&self.key, request.key_pem.as_bytes(), 0o600, force).map_err(failed(
            &self.key,
            "private key",
            "--key-out",
        ))?;
        durable::create(&self.csr, request.csr_pem.as_bytes(), 0o644, force)
            .map_err(failed(&self.csr, "request", "--out"))
            .map_err(|e| CsrError::RequestAfterKey {
                key: self.key.clone(),
                source: Box::new(e),
            })
    }
}

/// The ANS form the request goes with, by espace.
pub fn form(espace: Espace) -> &'static str {
    match espace {
        Espace::Test => "F414 (test espace)",
        Espace::Production => "F413 (production)",
    }
}

/// What `csr` prints once the files are written.
pub fn summary(subject: &Subject, files: &Files, size: KeySize, espace: Espace) -> String {
    let form = form(espace);
    format!(
        "private key  {key} (RSA {bits}, PKCS#8, mode 0600: keep it on this machine)\n\
         request      {csr} (PKCS#10, sha256WithRSAEncryption)\n\
         subject      {dn}\n\
         SAN          DNS:{cn}\n\
         \n\
         Attach this request to form {form}: IGC Santé SSL server certificate (SSL_SERVEUR) for {cn}.\n\
         When the certificate arrives, put it (then its issuing CA) in tls.certificate and this key in tls.key,\n\
         then run check-config and doctor.\n",
        key = files.key.display(),
        bits = size.bits(),
        csr = files.csr.display(),
        dn = super::annexe1::form_dn(&subject.dn()),
        cn = subject.cn,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::OperatorSettings;
    use rcgen::PublicKeyData;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateSigningRequestDer;
    use x509_parser::prelude::{FromDer, X509CertificationRequest};
    use x509_parser::public_key::PublicKey;

    /// The bundled configuration's operator data, with a département and a host name of
    /// the operator's own domain.
    fn settings() -> RequestSettings {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
        let mut s = RequestSettings::load(&path).expect("config/local.toml parses");
        s.hostname = Some("smtp.ch-exemple.fr".into());
        s
    }

    fn with(change: impl FnOnce(&mut RequestSettings, &mut OperatorSettings)) -> RequestSettings {
        let mut s = settings();
        let mut op = s.operator.clone().expect("[operator]");
        change(&mut s, &mut op);
        s.operator = Some(op);
        s
    }

    fn refused(s: &RequestSettings) -> Vec<ConfigError> {
        subject(s).expect_err("must be refused")
    }

    #[test]
    fn the_subject_follows_the_form_and_passes_the_doctors_checks() {
        let s = subject(&settings()).expect("valid");
        assert_eq!(
            s,
            Subject {
                cn: "smtp.ch-exemple.fr".into(),
                ou: "1750000010".into(),
                o: "CH GATEWAY TEST".into(),
                st: "Paris (75)".into(),
            }
        );
        for check in rules::check_subject(&s.dn(), &[]) {
            assert_eq!(check.status, rules::Status::Pass, "{check:?}");
        }
    }

    #[test]
    fn a_siret_gives_ou_3_and_the_name_is_written_in_capitals_without_accents() {
        let s = with(|_, op| {
            // Capgemini Technology Services, as its certificate in the liste blanche says.
            op.legal_representative.structure_id = "47976684200724".into();
            op.legal_representative.structure_name = "  Œuvre  hospitalière de l'Île ".into();
        });
        let s = subject(&s).expect("valid");
        assert_eq!(s.ou, "347976684200724");
        assert_eq!(s.o, "OEUVRE HOSPITALIERE DE L'ILE");
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let s = with(|s, op| {
            s.hostname = Some("smtp.ch-exemple.mssante.fr".into());
            op.legal_representative.structure_id = "750000011".into();
            op.legal_representative.structure_name = "Clinique ‘Saint-Jean’".into();
            op.legal_representative.department = None;
        });
        let errors = refused(&s);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "hostname",
                "operator.legal_representative.structure_id",
                "operator.legal_representative.structure_name",
                "operator.legal_representative.department",
            ],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("mssante.fr"), "{errors:?}");
        assert!(errors[1].message.contains("check digit"), "{errors:?}");
        assert!(errors[2].message.contains("'‘'"), "{errors:?}");
        assert!(errors[3].message.contains("is missing"), "{errors:?}");
    }

    #[test]
    fn the_hostname_follows_the_cn_rule() {
        for bad in [
            "mssante.fr",
            "MSSANTE.FR.",
            "smtp.Gateway.Test.MSSANTE.fr",
            "192.0.2.25",
            "[2001:db8::25]",
            "smtp",
            "smtp..ch-x.fr",
            "smtp.hôpital.fr",
            "",
        ] {
            let s = with(|s, _| s.hostname = Some(bad.into()));
            let errors = refused(&s);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].key, "hostname", "{bad}");
        }
        // Case and a trailing dot do not matter: the CN is written in lower case.
        let s = with(|s, _| s.hostname = Some("SMTP.CH-Exemple.FR.".into()));
        assert_eq!(subject(&s).expect("valid").cn, "smtp.ch-exemple.fr");
    }

    #[test]
    fn without_hostname_the_certificate_cn_is_used_and_named() {
        // The bundled certificate's CN is under mssante.fr (a delegated test domain).
        let s = with(|s, _| s.hostname = None);
        assert_eq!(
            s.certificate_cn.as_deref(),
            Some("smtp.gateway.test.mssante.fr")
        );
        let errors = refused(&s);
        assert_eq!(errors[0].key, "hostname");
        assert!(
            errors[0].message.contains("the CN of tls.certificate"),
            "{errors:?}"
        );
        let s = with(|s, _| {
            s.hostname = None;
            s.certificate_cn = None;
        });
        assert!(refused(&s)[0].message.contains("is not set"));
    }

    #[test]
    fn a_bad_departement_is_refused() {
        for bad in [
            "Paris",
            "Paris(75)",
            "Corse (20)",
            "Nowhere (99)",
            "Paris\n (75)",
        ] {
            let s = with(|_, op| op.legal_representative.department = Some(bad.into()));
            let errors = refused(&s);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].key, "operator.legal_representative.department");
        }
        for good in [
            "Corse-du-Sud (2A)",
            "Haute-Corse (2B)",
            "Mayotte (976)",
            "Ain (01)",
        ] {
            let s = with(|_, op| op.legal_representative.department = Some(good.into()));
            assert_eq!(subject(&s).expect(good).st, good);
        }
    }

    #[test]
    fn an_empty_or_oversized_name_is_refused() {
        for bad in [String::new(), "   ".into(), "A".repeat(65)] {
            let s = with(|_, op| op.legal_representative.structure_name = bad.clone());
            let errors = refused(&s);
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert_eq!(
                errors[0].key,
                "operator.legal_representative.structure_name"
            );
        }
        let s = with(|_, op| op.legal_representative.structure_name = "A".repeat(64));
        assert!(subject(&s).is_ok());
    }

    #[test]
    fn a_missing_operator_section_is_named() {
        let mut s = settings();
        s.operator = None;
        let errors = refused(&s);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "operator");
    }

    #[test]
    fn the_request_carries_the_subject_in_igc_sante_order_and_the_cn_as_dns_name() {
        let s = subject(&settings()).expect("valid");
        let request = generate(&s, KeySize::Rsa2048).expect("generated");
        let der =
            CertificateSigningRequestDer::from_pem_slice(request.csr_pem.as_bytes()).expect("PEM");
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("PKCS#10");
        let info = &csr.certification_request_info;
        let order: Vec<String> = info
            .subject
            .iter_attributes()
            .map(|a| a.attr_type().to_id_string())
            .collect();
        // C, ST, O, OU, CN.
        assert_eq!(
            order,
            ["2.5.4.6", "2.5.4.8", "2.5.4.10", "2.5.4.11", "2.5.4.3"]
        );
        assert_eq!(
            SubjectDn::from_x509(&info.subject).expect("subject"),
            s.dn()
        );
        assert_eq!(
            csr.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.11",
            "sha256WithRSAEncryption"
        );
        // The key written is the one the request carries, of the size asked.
        let key = KeyPair::from_pem(&request.key_pem).expect("PKCS#8 key");
        assert_eq!(key.subject_public_key_info(), info.subject_pki.raw);
        match info.subject_pki.parsed() {
            Ok(PublicKey::RSA(rsa)) => assert_eq!(rsa.key_size(), 2048),
            other => panic!("not RSA: {other:?}"),
        }
    }
}
