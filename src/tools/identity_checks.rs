//! The rules of the IGC Santé SSL server certificate and of the Annexe 1 form, as pure
//! functions: each returns a [`Check`] whose message says what to fix.
//!
//! DN form (Annexe 1, integration guide):
//! `CN=<mail server FQDN>,OU=<1+FINESS | 3+SIRET>,O=<NAME IN UPPER CASE>,ST=<Département> (<code>),C=FR`.
//! The field validators (`fqdn`, `server_name`, `finess_or_siret`, `organisation`,
//! `departement`, `email`, `phone`) are shared with `annexe1` and `csr`, which report their
//! errors per form field or configuration key.

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::config::Config;
use crate::operator::DnsMethod;
use crate::trust::dn::SubjectDn;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Conforms.
    Pass,
    /// Works today, but should be fixed (or could not be checked).
    Warn,
    /// Breaks exchanges in the espace or the form's rules.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One verdict: a stable name (`certificate.ou`), a status and a message that says what is
/// wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable dotted name.
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// What was found; for warn and fail, the fix.
    pub message: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(name, Status::Pass, message)
    }
    /// A warning.
    pub fn warn(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, message)
    }
    /// A failure.
    pub fn fail(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, message)
    }
    fn new(name: impl Into<String>, status: Status, message: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status,
            message: message.into(),
        }
    }
}

/// Most characters of an FQDN in the Annexe 1 form.
pub const FORM_FQDN_MAX: usize = 63;

/// Days before expiry from which the certificate check warns.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The form's FQDN rule: at most 63 characters, only letters, digits, `.` and `-`, at
/// least two labels, no empty label, no label starting or ending with `-`.
pub fn fqdn(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty: expected a fully qualified host name such as smtp.ch-xyz.fr".into());
    }
    if value.len() > FORM_FQDN_MAX {
        return Err(format!(
            "\"{value}\" has {} characters: the form accepts at most {FORM_FQDN_MAX}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "\"{value}\" contains {c:?}: only letters, digits, '.' and '-' are accepted"
        ));
    }
    let labels: Vec<&str> = value.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "\"{value}\" is not fully qualified: write the whole name, e.g. smtp.ch-xyz.fr"
        ));
    }
    if labels
        .iter()
        .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return Err(format!(
            "\"{value}\" has an empty label or a label starting or ending with '-'"
        ));
    }
    Ok(())
}

/// ANS's own zone: the espace's mail domains are its sub-domains.
pub const MSSANTE_ZONE: &str = "mssante.fr";

/// Whether `name` (lower case, no trailing dot) is `zone` or a name under it.
fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}

/// Why a name breaks the CN rule ([`server_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerNameError {
    /// Not a host name by the form's rule, or an IP address: what is wrong.
    Invalid(String),
    /// A host name in ANS's zone `mssante.fr`, outside any zone delegated to us.
    UnderMssante {
        /// The name, in lower case.
        name: String,
    },
}

impl std::fmt::Display for ServerNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerNameError::Invalid(why) => f.write_str(why),
            ServerNameError::UnderMssante { name } => write!(
                f,
                "\"{name}\" is in ANS's zone mssante.fr: the certificate order forms (414 test, 413 production) refuse a server name under mssante.fr, which needs the zone delegated by ANS; name the mail server in the operator's own domain, e.g. smtp.ch-xyz.fr"
            ),
        }
    }
}

/// The CN rule of an IGC Santé SSL server certificate, for the name `csr` requests and for
/// the CN of our certificate that `doctor` and `annexe1` check: the mail server's FQDN by
/// the form's rule ([`fqdn`]), not an IP address, and neither `mssante.fr` nor a name
/// under it, unless the name lies in one of the `delegated` zones (sub-domains of
/// `mssante.fr` that ANS delegated to the operator's name servers). Order form 414 gives
/// `nomserveur.mssante.fr` as "NON valide (car nécessite une délégation)". Case,
/// surrounding spaces and one trailing dot are ignored: the name is returned in lower
/// case, without the dot.
pub fn server_name(value: &str, delegated: &[String]) -> Result<String, ServerNameError> {
    // Spaces only: a control character in a name is an error, not padding.
    let trimmed = value.trim_matches(' ');
    let name = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let unbracketed = name.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Err(ServerNameError::Invalid(format!(
            "\"{value}\" is an IP address: the CN must be the mail server's host name (the MX target), e.g. smtp.ch-xyz.fr"
        )));
    }
    fqdn(&name).map_err(ServerNameError::Invalid)?;
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ServerNameError::Invalid(format!(
            "\"{value}\" ends in a numeric label: not a host name (an IP address?); the CN must be the mail server's host name, e.g. smtp.ch-xyz.fr"
        )));
    }
    if in_zone(&name, MSSANTE_ZONE) {
        let delegated_here = delegated.iter().any(|zone| {
            let zone = zone.trim().trim_end_matches('.').to_ascii_lowercase();
            zone != MSSANTE_ZONE && in_zone(&zone, MSSANTE_ZONE) && in_zone(&name, &zone)
        });
        if !delegated_here {
            return Err(ServerNameError::UnderMssante { name });
        }
    }
    Ok(name)
}

/// The sub-domains of `mssante.fr` delegated to our name servers: our local domains under
/// `mssante.fr` when `[operator.dns]` declares the delegation method. A CN may lie in them
/// (see [`server_name`]).
pub fn delegated_zones(config: &Config) -> Vec<String> {
    match config.operator.as_ref().map(|op| &op.dns) {
        Some(DnsMethod::Delegation { .. }) => config
            .local_domains
            .iter()
            .filter(|d| *d != MSSANTE_ZONE && in_zone(d, MSSANTE_ZONE))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Luhn checksum over ASCII digits.
fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// Which national identifier a structure has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructureId {
    /// FINESS, for health establishments.
    Finess,
    /// SIRET, for structures without FINESS.
    Siret,
}

/// A FINESS number: 9 characters, the last a Luhn key on the digits. Corsican numbers
/// start with `2A` or `2B`; their key rule is not published with the form, so only their
/// shape is checked.
pub fn finess(value: &str) -> Result<(), String> {
    if value.len() != 9 {
        return Err(format!(
            "FINESS \"{value}\" has {} characters: a FINESS has 9",
            value.len()
        ));
    }
    let corsica = value.starts_with("2A") || value.starts_with("2B");
    let digits = if corsica { &value[2..] } else { value };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "FINESS \"{value}\" must be 9 digits (or 2A/2B followed by 7 digits)"
        ));
    }
    if !corsica && !luhn(value) {
        return Err(format!(
            "FINESS \"{value}\" has a wrong check digit (Luhn key): copy it again from the FINESS directory"
        ));
    }
    Ok(())
}

/// A SIRET number: 14 digits with a Luhn key. La Poste's establishments (SIREN 356000000)
/// are too many for the Luhn key: theirs have a digit sum divisible by 5 instead, except
/// the head office, 35600000000048, which has a Luhn key like any other; a La Poste SIRET
/// passes with either rule.
pub fn siret(value: &str) -> Result<(), String> {
    if value.len() != 14 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("SIRET \"{value}\" must be exactly 14 digits"));
    }
    let la_poste = value.starts_with("356000000")
        && value.bytes().map(|b| u32::from(b - b'0')).sum::<u32>() % 5 == 0;
    let ok = la_poste || luhn(value);
    if !ok {
        return Err(format!(
            "SIRET \"{value}\" has a wrong check digit (Luhn key): copy it again from the SIRENE directory"
        ));
    }
    Ok(())
}

/// A structure identifier as the form asks it: a FINESS (9 characters) or a SIRET (14
/// digits), told apart by length.
pub fn finess_or_siret(value: &str) -> Result<StructureId, String> {
    match value.len() {
        9 => finess(value).map(|()| StructureId::Finess),
        14 => siret(value).map(|()| StructureId::Siret),
        n => Err(format!(
            "\"{value}\" has {n} characters: expected a FINESS (9 characters) or a SIRET (14 digits)"
        )),
    }
}

/// An e-mail address: one `@`, a non-empty local part, a domain.
pub fn email(value: &str) -> Result<(), String> {
    let v = value.trim();
    match v.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && !v.contains(char::is_whitespace)
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "\"{value}\" is not an e-mail address such as contact@ch-xyz.fr"
        )),
    }
}

/// A phone number: digits with optional `+`, spaces, dots, dashes and parentheses, at
/// least 10 digits.
pub fn phone(value: &str) -> Result<(), String> {
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '.' | '-' | '(' | ')'));
    let digits = value.chars().filter(char::is_ascii_digit).count();
    if allowed && digits >= 10 {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" is not a phone number such as +33 1 23 45 67 89"
        ))
    }
}

/// A public incident contact, `"phone, e-mail"` as the liste blanche shows it.
pub fn phone_and_email(value: &str) -> Result<(), String> {
    let Some((p, e)) = value.split_once(',') else {
        return Err(format!(
            "\"{value}\" must be \"phone, e-mail\", e.g. \"+33 1 23 45 67 89, mssante@ch-xyz.fr\""
        ));
    };
    phone(p.trim())?;
    email(e.trim())
}

/// The département codes of the ST attribute: 01–95 without 20, 2A, 2B, 971–976.
pub fn is_departement_code(code: &str) -> bool {
    match code {
        "2A" | "2B" => true,
        _ if code.len() == 2 => code
            .parse::<u8>()
            .is_ok_and(|n| (1..=95).contains(&n) && n != 20),
        _ if code.len() == 3 => code.parse::<u16>().is_ok_and(|n| (971..=976).contains(&n)),
        _ => false,
    }
}

/// Replaces French accented letters by their base letter, the ligatures Œ and Æ by OE and
/// AE, and upper-cases: the O value the form expects (`Hôpital Privé` → `HOPITAL PRIVE`).
pub fn upper_without_accents(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            'à' | 'â' | 'ä' | 'á' | 'À' | 'Â' | 'Ä' | 'Á' => out.push('A'),
            'ç' | 'Ç' => out.push('C'),
            'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => out.push('E'),
            'î' | 'ï' | 'í' | 'Î' | 'Ï' | 'Í' => out.push('I'),
            'ô' | 'ö' | 'ó' | 'Ô' | 'Ö' | 'Ó' => out.push('O'),
            'ù' | 'û' | 'ü' | 'ú' | 'Ù' | 'Û' | 'Ü' | 'Ú' => out.push('U'),
            'ÿ' | 'Ÿ' => out.push('Y'),
            'œ' | 'Œ' => out.push_str("OE"),
            'æ' | 'Æ' => out.push_str("AE"),
            other => out.push(other.to_ascii_uppercase()),
        }
    }
    out
}

/// Most characters of an O value (X.520 `ub-organization-name`).
pub const O_MAX: usize = 64;

/// Most characters of an ST value (X.520 `ub-state-name`).
pub const ST_MAX: usize = 128;

/// The O rule: the structure's name in upper case without accents, printable ASCII, at
/// most [`O_MAX`] characters.
pub fn organisation(value: &str) -> Result<(), String> {
    let o = value.trim();
    if o.is_empty() {
        return Err(
            "is empty: the structure's name in upper case without accents is required".into(),
        );
    }
    if o.chars()
        .any(|c| c.is_lowercase() || "ÀÂÄÁÇÉÈÊËÎÏÍÔÖÓÙÛÜÚŸŒÆ".contains(c))
    {
        return Err(format!(
            "O \"{o}\" must be in upper case without accents, e.g. \"{}\"",
            upper_without_accents(o)
        ));
    }
    if let Some(c) = o.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "O \"{}\" contains {c:?}: only unaccented capitals, digits, spaces and ASCII punctuation are accepted",
            o.escape_debug()
        ));
    }
    if o.chars().count() > O_MAX {
        return Err(format!(
            "O \"{o}\" has {} characters: a certificate's O holds at most {O_MAX}; use the structure's short name",
            o.chars().count()
        ));
    }
    Ok(())
}

/// The ST rule: `Département (code)`, the name and a real département code in brackets,
/// without control characters, at most [`ST_MAX`] characters.
pub fn departement(value: &str) -> Result<(), String> {
    const FIX: &str =
        "expected the département's name, a space and its code in brackets, e.g. \"Bas-Rhin (67)\"";
    let st = value.trim();
    if st.chars().any(char::is_control) || st.chars().count() > ST_MAX {
        return Err(format!("ST \"{}\" is malformed; {FIX}", st.escape_debug()));
    }
    let parsed = st
        .strip_suffix(')')
        .and_then(|s| s.rsplit_once(" ("))
        .filter(|(name, _)| !name.trim().is_empty());
    match parsed {
        None => Err(format!("ST \"{st}\" is malformed; {FIX}")),
        Some((_, code)) if !is_departement_code(code) => Err(format!(
            "ST \"{st}\": {code} is not a département code (01-95 except 20, 2A, 2B, 971-976); {FIX}"
        )),
        Some(_) => Ok(()),
    }
}

/// The subject DN checks: CN, OU, O, ST and C, one [`Check`] each. A CN may lie under
/// `mssante.fr` only in one of the `delegated` zones ([`server_name`]).
pub fn check_subject(dn: &SubjectDn, delegated: &[String]) -> Vec<Check> {
    vec![
        check_cn(dn.cn.as_deref(), delegated),
        check_ou(&dn.ou),
        check_o(dn.o.as_deref()),
        check_st(dn.st.as_deref()),
        check_c(dn.c.as_deref()),
    ]
}

/// CN: the mail server's FQDN, by the CN rule ([`server_name`]).
pub fn check_cn(cn: Option<&str>, delegated: &[String]) -> Check {
    const NAME: &str = "certificate.cn";
    match cn {
        None => Check::fail(NAME, "the subject has no CN: order a certificate whose CN is the FQDN of the MSSanté mail server (the MX target)"),
        Some(cn) => match server_name(cn, delegated) {
            Ok(name) if in_zone(&name, MSSANTE_ZONE) => Check::pass(
                NAME,
                format!("CN {cn} is a valid FQDN, in a zone of mssante.fr delegated to our name servers ([operator.dns] method = \"delegation\")"),
            ),
            Ok(_) => Check::pass(NAME, format!("CN {cn} is a valid FQDN")),
            Err(e @ ServerNameError::UnderMssante { .. }) => Check::fail(
                NAME,
                format!("CN {e}; order a certificate for such a name (`mssante-gateway csr` makes the request), or, if ANS delegated that domain to your name servers, declare it: the domain in local_domains and [operator.dns] method = \"delegation\""),
            ),
            Err(e) => Check::fail(NAME, format!("CN {e}; the CN must be the mail server's FQDN (order a new certificate with form 413/414: `mssante-gateway csr` makes the request)")),
        },
    }
}

/// OU: `1` + FINESS or `3` + SIRET.
pub fn check_ou(ou: &[String]) -> Check {
    const NAME: &str = "certificate.ou";
    const FIX: &str = "IGC Santé writes the structure's identifier as OU=1<FINESS> or OU=3<SIRET>: order a certificate with the right identifier";
    let [ou] = ou else {
        return Check::fail(
            NAME,
            format!(
                "the subject has {} OU values, expected exactly one; {FIX}",
                ou.len()
            ),
        );
    };
    let ou = ou.trim();
    let verdict = match ou.split_at_checked(1) {
        Some(("1", id)) => finess(id).map(|()| "FINESS"),
        Some(("3", id)) => siret(id).map(|()| "SIRET"),
        _ => Err(format!(
            "OU \"{ou}\" starts with neither 1 (FINESS) nor 3 (SIRET)"
        )),
    };
    match verdict {
        Ok(kind) => Check::pass(NAME, format!("OU {ou} is a valid {kind}")),
        Err(e) => Check::fail(NAME, format!("{e}; {FIX}")),
    }
}

/// O: the structure's name in upper case without accents ([`organisation`]).
pub fn check_o(o: Option<&str>) -> Check {
    const NAME: &str = "certificate.o";
    let Some(o) = o.map(str::trim).filter(|o| !o.is_empty()) else {
        return Check::fail(
            NAME,
            "the subject has no O: the structure's name in upper case without accents is required",
        );
    };
    match organisation(o) {
        Ok(()) => Check::pass(NAME, format!("O {o} is in upper case without accents")),
        Err(e) => Check::fail(
            NAME,
            format!("{e}: order a certificate with that organisation name"),
        ),
    }
}

/// ST: `Département (code)` with a real département code ([`departement`]).
pub fn check_st(st: Option<&str>) -> Check {
    const NAME: &str = "certificate.st";
    let Some(st) = st.map(str::trim) else {
        return Check::fail(NAME, "the subject has no ST; expected the département's name, a space and its code in brackets, e.g. \"Bas-Rhin (67)\"");
    };
    match departement(st) {
        Ok(()) => Check::pass(NAME, format!("ST {st} names a département")),
        Err(e) => Check::fail(NAME, e),
    }
}

/// C: `FR`.
pub fn check_c(c: Option<&str>) -> Check {
    const NAME: &str = "certificate.c";
    match c.map(str::trim) {
        Some("FR") => Check::pass(NAME, "C is FR"),
        Some(other) => Check::fail(
            NAME,
            format!("C is \"{other}\": IGC Santé certificates carry C=FR"),
        ),
        None => Check::fail(
            NAME,
            "the subject has no C: IGC Santé certificates carry C=FR",
        ),
    }
}

/// Extended key usage: serverAuth and clientAuth.
pub fn check_eku(server_auth: bool, client_auth: bool) -> Check {
    const NAME: &str = "certificate.eku";
    let missing: Vec<&str> = [(server_auth, "serverAuth"), (client_auth, "clientAuth")]
        .iter()
        .filter(|(has, _)| !has)
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        Check::pass(NAME, "extended key usage serverAuth and clientAuth")
    } else {
        Check::fail(NAME, format!("extended key usage lacks {}: the gateway is a TLS server (inbound) and a TLS client (outbound); order an IGC Santé SSL server certificate, which carries both", missing.join(" and ")))
    }
}

/// Key: RSA of at least 2048 bits.
pub fn check_key(rsa_bits: Option<usize>) -> Check {
    const NAME: &str = "certificate.key";
    match rsa_bits {
        Some(bits) if bits >= 2048 => Check::pass(NAME, format!("RSA {bits} bits")),
        Some(bits) => Check::fail(NAME, format!("RSA {bits} bits is too short: generate a new RSA key of 2048 bits or more and order a new certificate")),
        None => Check::fail(NAME, "the key is not RSA: IGC Santé SSL server certificates use RSA keys of 2048 bits or more"),
    }
}

/// Validity: fail when expired or not yet valid, warn within [`EXPIRY_WARNING_DAYS`].
pub fn check_validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Check {
    const NAME: &str = "certificate.validity";
    let date = |t: OffsetDateTime| t.date().to_string();
    if now > not_after {
        Check::fail(NAME, format!("expired on {}: install a renewed IGC Santé certificate (peers refuse an expired one)", date(not_after)))
    } else if now < not_before {
        Check::fail(
            NAME,
            format!(
                "not valid before {}: check the clock or wait",
                date(not_before)
            ),
        )
    } else {
        let days = (not_after - now).whole_days();
        if days < EXPIRY_WARNING_DAYS {
            Check::warn(NAME, format!("expires on {} ({days} days): order the renewal now and declare the new DN if it changes", date(not_after)))
        } else {
            Check::pass(
                NAME,
                format!("valid until {} ({days} days)", date(not_after)),
            )
        }
    }
}

/// Every check on a certificate (DER): subject DN (a CN under `mssante.fr` only in a
/// `delegated` zone), EKU, key, validity at `now`.
pub fn check_certificate(der: &[u8], now: OffsetDateTime, delegated: &[String]) -> Vec<Check> {
    let x509 = match X509Certificate::from_der(der) {
        Ok((_, x)) => x,
        Err(e) => {
            return vec![Check::fail(
                "certificate.parse",
                format!(
                    "the certificate cannot be parsed ({e}): configure a PEM X.509 certificate"
                ),
            )]
        }
    };
    let mut checks = match SubjectDn::from_x509(x509.subject()) {
        Ok(dn) => check_subject(&dn, delegated),
        Err(e) => vec![Check::fail(
            "certificate.subject",
            format!("the subject cannot be read ({e})"),
        )],
    };
    let (server, client) = match x509.extended_key_usage() {
        Ok(Some(ext)) => (ext.value.server_auth, ext.value.client_auth),
        _ => (false, false),
    };
    checks.push(check_eku(server, client));
    let bits = match x509.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => Some(rsa.key_size()),
        _ => None,
    };
    checks.push(check_key(bits));
    checks.push(check_validity(
        x509.validity().not_before.to_datetime(),
        x509.validity().not_after.to_datetime(),
        now,
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn dn(s: &str) -> SubjectDn {
        SubjectDn::parse(s).expect("dn")
    }

    #[test]
    fn a_conforming_subject_passes_every_check() {
        let checks = check_subject(
            &dn("CN=smtp.ch-xyz.fr,OU=1750000010,O=CH XYZ,ST=Bas-Rhin (67),C=FR"),
            &[],
        );
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );
        let siret = check_ou(&["398765432400001".to_string()]);
        assert_eq!(siret.status, Status::Pass);
    }

    #[test]
    fn fqdn_rules_of_the_form() {
        assert!(fqdn("smtp.ch-xyz.fr").is_ok());
        assert!(fqdn(&format!("{}.fr", "a".repeat(61))).is_err()); // 64 characters
        assert!(fqdn(&format!("{}.fr", "a".repeat(60))).is_ok()); // 63
        assert!(fqdn("smtp_1.ch.fr").is_err());
        assert!(fqdn("smtp").is_err());
        assert!(fqdn("a..fr").is_err());
        assert!(fqdn("-a.fr").is_err());
        assert!(fqdn("").is_err());
    }

    #[test]
    fn cn_not_an_fqdn_fails() {
        let c = check_cn(Some("serveur mail"), &[]);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("only letters, digits"), "{}", c.message);
        assert_eq!(check_cn(None, &[]).status, Status::Fail);
    }

    #[test]
    fn the_cn_rule_refuses_mssante_fr_ip_addresses_and_malformed_names() {
        let under = |v: &str| {
            matches!(
                server_name(v, &[]),
                Err(ServerNameError::UnderMssante { .. })
            )
        };
        for v in [
            "mssante.fr",
            "MSSANTE.FR",
            "mssante.fr.",
            "smtp.mssante.fr",
            "Smtp.CH-X.MsSante.Fr.",
            " smtp.ch-x.mssante.fr ",
        ] {
            assert!(under(v), "{v}");
        }
        let invalid = |v: &str| matches!(server_name(v, &[]), Err(ServerNameError::Invalid(_)));
        for v in [
            "192.0.2.25",
            "[2001:db8::25]",
            "2001:db8::25",
            "10.0.0.256",
            "smtp.ch-x.123",
            "smtp",
            "smtp.ch-x.fr..",
            ".smtp.ch-x.fr",
            "smtp..ch-x.fr",
            "-smtp.ch-x.fr",
            "smtp_1.ch-x.fr",
            "smtp.hôpital.fr",
            "smtp.ch-x.fr\n",
            "",
            ".",
            &format!("{}.fr", "a".repeat(61)),
        ] {
            assert!(invalid(v), "{v:?}: {:?}", server_name(v, &[]));
        }
        // Names that only look like ANS's zone are not in it.
        for v in [
            "smtp.notmssante.fr",
            "mssante.fr.example.org",
            "smtp.mssante.fr-x.fr",
            "smtp.mssante.com",
        ] {
            assert_eq!(server_name(v, &[]).as_deref(), Ok(v), "{v}");
        }
        assert_eq!(
            server_name("SMTP.CH-X.FR.", &[]).as_deref(),
            Ok("smtp.ch-x.fr")
        );
        assert_eq!(
            server_name(&format!("{}.fr", "a".repeat(60)), &[]).map(|n| n.len()),
            Ok(63)
        );
    }

    #[test]
    fn a_cn_under_mssante_fr_passes_only_in_a_zone_delegated_to_us() {
        let zones = vec!["ch-x.mssante.fr".to_string()];
        assert_eq!(
            server_name("smtp.ch-x.mssante.fr", &zones).as_deref(),
            Ok("smtp.ch-x.mssante.fr")
        );
        assert!(server_name("ch-x.mssante.fr.", &zones).is_ok());
        for other in [
            "smtp.ch-y.mssante.fr",
            "smtp.xch-x.mssante.fr",
            "mssante.fr",
        ] {
            assert!(server_name(other, &zones).is_err(), "{other}");
        }
        // mssante.fr itself never counts as delegated.
        let all = vec!["mssante.fr".to_string(), "MSSANTE.FR.".to_string()];
        assert!(server_name("smtp.ch-x.mssante.fr", &all).is_err());

        let refused = check_cn(Some("smtp.ch-x.mssante.fr"), &[]);
        assert_eq!(refused.status, Status::Fail);
        assert!(
            refused.message.contains("mssante-gateway csr"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("delegation"),
            "{}",
            refused.message
        );
        let delegated = check_cn(Some("smtp.ch-x.mssante.fr"), &zones);
        assert_eq!(delegated.status, Status::Pass);
        assert!(
            delegated.message.contains("delegated"),
            "{}",
            delegated.message
        );
        // A malformed name under mssante.fr is malformed first.
        let malformed = check_cn(Some("smtp_1.ch-x.mssante.fr"), &zones);
        assert_eq!(malformed.status, Status::Fail);
        assert!(
            malformed.message.contains("only letters"),
            "{}",
            malformed.message
        );
    }

    #[test]
    fn the_delegated_zones_are_our_mssante_domains_under_the_delegation_method() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
        let mut config = Config::load(&path).expect("config/local.toml");
        config.local_domains = vec![
            "gateway.test.mssante.fr".into(),
            "ch-x.example.fr".into(),
            "mssante.fr".into(),
        ];
        assert_eq!(delegated_zones(&config), ["gateway.test.mssante.fr"]);
        if let Some(op) = config.operator.as_mut() {
            op.dns = DnsMethod::Redirection {
                mail_server: "smtp.gateway.test.mssante.fr".into(),
            };
        }
        assert!(delegated_zones(&config).is_empty());
        config.operator = None;
        assert!(delegated_zones(&config).is_empty());
    }

    #[test]
    fn real_identifiers_pass() {
        // From the production liste blanche: CHU de Rouen's FINESS (OU=1760780239) and
        // Capgemini Technology Services' SIRET (OU=347976684200724).
        assert_eq!(finess_or_siret("760780239"), Ok(StructureId::Finess));
        assert_eq!(finess_or_siret("47976684200724"), Ok(StructureId::Siret));
        assert_eq!(check_ou(&["1760780239".into()]).status, Status::Pass);
        assert_eq!(check_ou(&["347976684200724".into()]).status, Status::Pass);
        // La Poste's head office has a Luhn key; its other establishments a digit sum
        // divisible by 5 instead.
        assert!(siret("35600000000048").is_ok());
        assert!(siret("35600000000047").is_ok());
        assert!(siret("35600000000049").is_err());
        // The digit-sum rule is La Poste's only: this one's sum is 50, its Luhn key wrong.
        assert!(siret("12345678900005").is_err());
    }

    #[test]
    fn any_changed_digit_breaks_the_key() {
        for valid in ["760780239", "47976684200724", "750000010"] {
            for i in 0..valid.len() {
                let mut digits: Vec<u8> = valid.bytes().collect();
                digits[i] = b'0' + (digits[i] - b'0' + 1) % 10;
                let changed = String::from_utf8(digits).expect("ASCII");
                assert!(finess_or_siret(&changed).is_err(), "{changed}");
            }
        }
    }

    #[test]
    fn identifiers_of_the_wrong_shape_are_refused_without_panic() {
        for bad in [
            "",
            " 760780239",
            "760780239 ",
            "76078023É",
            "7607802é",
            "2C0000012",
            "2A000001X",
            "4797668420072A",
            "47976684200724\n",
            "١٢٣٤٥٦٧٨٩",
        ] {
            assert!(finess_or_siret(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finess_and_siret_keys() {
        assert!(finess("750000010").is_ok());
        assert!(finess("750000011").is_err());
        assert!(finess("75000001").is_err());
        assert!(finess("2A0000012").is_ok());
        assert!(finess("75000001X").is_err());
        assert!(siret("98765432400001").is_ok());
        assert!(siret("98765432400002").is_err());
        assert!(siret("9876543240000").is_err());
        assert!(siret("35600000000047").is_ok()); // La Poste: digit sum 25
        assert_eq!(finess_or_siret("750000010"), Ok(StructureId::Finess));
        assert_eq!(finess_or_siret("98765432400001"), Ok(StructureId::Siret));
        assert!(finess_or_siret("1234").is_err());
    }

    #[test]
    fn ou_without_prefix_or_with_bad_key_fails() {
        for ou in ["750000010", "2750000010", "1750000011", "398765432400002"] {
            let c = check_ou(&[ou.to_string()]);
            assert_eq!(c.status, Status::Fail, "{ou}");
            assert!(c.message.contains("OU=1<FINESS>"), "{}", c.message);
        }
        assert_eq!(check_ou(&[]).status, Status::Fail);
    }

    #[test]
    fn names_are_written_in_capitals_without_accents() {
        assert_eq!(
            upper_without_accents("Œuvre Hospitalière Sœurs & Cæcilia"),
            "OEUVRE HOSPITALIERE SOEURS & CAECILIA"
        );
        assert!(organisation("OEUVRE HOSPITALIERE").is_ok());
        assert!(organisation("ŒUVRE").is_err());
        assert!(organisation("CH\tX").is_err());
        assert!(organisation("CH X\u{a0}Y").is_err());
        assert!(organisation(&"A".repeat(O_MAX)).is_ok());
        assert!(organisation(&"A".repeat(O_MAX + 1)).is_err());
        assert!(organisation("  ").is_err());
    }

    #[test]
    fn o_in_lower_case_or_with_accents_fails_with_the_fix() {
        let c = check_o(Some("Hôpital Privé"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("\"HOPITAL PRIVE\""), "{}", c.message);
        assert_eq!(check_o(Some("CENTRE HOSPITALIER")).status, Status::Pass);
        assert_eq!(check_o(Some("CH D'ÉPINAL")).status, Status::Fail);
        assert_eq!(check_o(None).status, Status::Fail);
    }

    #[test]
    fn st_needs_name_space_and_real_code() {
        assert_eq!(check_st(Some("Bas-Rhin (67)")).status, Status::Pass);
        assert_eq!(check_st(Some("Corse-du-Sud (2A)")).status, Status::Pass);
        assert_eq!(check_st(Some("La Réunion (974)")).status, Status::Pass);
        for bad in [
            "Paris(75)",
            "Paris",
            "Corse (20)",
            "Nowhere (99)",
            "(75)",
            "Mayotte (977)",
            "Paris\n (75)",
            "Paris (7\u{35}\u{0})",
        ] {
            assert_eq!(check_st(Some(bad)).status, Status::Fail, "{bad}");
        }
        assert_eq!(check_st(None).status, Status::Fail);
    }

    #[test]
    fn c_must_be_fr() {
        assert_eq!(check_c(Some("FR")).status, Status::Pass);
        assert_eq!(check_c(Some("BE")).status, Status::Fail);
        assert_eq!(check_c(None).status, Status::Fail);
    }

    #[test]
    fn eku_and_key_size() {
        assert_eq!(check_eku(true, true).status, Status::Pass);
        let c = check_eku(true, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("clientAuth"));
        assert_eq!(check_key(Some(2048)).status, Status::Pass);
        assert_eq!(check_key(Some(1024)).status, Status::Fail);
        assert_eq!(check_key(None).status, Status::Fail);
    }

    #[test]
    fn validity_warns_within_30_days_and_fails_when_expired() {
        let nb = datetime!(2025-01-01 0:00 UTC);
        let na = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            check_validity(nb, na, datetime!(2025-06-01 0:00 UTC)).status,
            Status::Pass
        );
        assert_eq!(
            check_validity(nb, na, datetime!(2025-12-15 0:00 UTC)).status,
            Status::Warn
        );
        let expired = check_validity(nb, na, datetime!(2026-02-01 0:00 UTC));
        assert_eq!(expired.status, Status::Fail);
        assert!(expired.message.contains("2026-01-01"));
        assert_eq!(
            check_validity(nb, na, datetime!(2024-06-01 0:00 UTC)).status,
            Status::Fail
        );
    }

    #[test]
    fn contacts() {
        assert!(email("a@b.fr").is_ok());
        assert!(email("a b@c.fr").is_err());
        assert!(email("ab.fr").is_err());
        assert!(phone("+33 1 23 45 67 89").is_ok());
        assert!(phone("12").is_err());
        assert!(phone("01 23 45 67 8x").is_err());
        assert!(phone_and_email("01 23 45 67 89, a@b.fr").is_ok());
        assert!(phone_and_email("a@b.fr").is_err());
    }

    #[test]
    fn departement_codes() {
        assert!(is_departement_code("01"));
        assert!(is_departement_code("95"));
        assert!(!is_departement_code("20"));
        assert!(!is_departement_code("00"));
        assert!(!is_departement_code("96"));
        assert!(is_departement_code("971"));
        assert!(is_departement_code("976"));
        assert!(!is_departement_code("977"));
        assert!(!is_departement_code("1"));
    }
}
