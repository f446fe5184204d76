//! Certificate subject distinguished names, compared the way the MSSanté whitelist writes them.
//!
//! The whitelist's `DNCertificatOperateur` strings are typed by hand and are not normalised:
//! `", "` separators, a trailing space after a CN, `ST=Paris(75)` beside `ST=Paris (75)`,
//! RFC 1779 quotes (`O="C H U  DE  LIMOGES"`) beside the same value unquoted, runs of spaces.
//! A peer's certificate subject, on the other hand, comes from DER. Both sides are parsed
//! into a [`SubjectDn`] and compared through its [`DnKey`].
//!
//! # What is equivalent
//! Two DNs have the same [`DnKey`] exactly when, attribute by attribute:
//! - **values** are equal after: leading and trailing whitespace removed, every run of
//!   whitespace collapsed to one space, whitespace immediately before an opening
//!   parenthesis removed (`Paris(75)` = `Paris (75)`), Unicode lower-casing
//!   (`MSS.CH-X.FR` = `mss.ch-x.fr`). Quoting and escaping are syntax, not value:
//!   `O="C.H. DE  CADILLAC"` = `O=C.H. DE CADILLAC`, `O=A\, B` = `O="A, B"`. No accent
//!   folding and no Unicode normalisation form is applied (`Rhône` ≠ `Rhone`).
//! - **attribute types** are case-insensitive and aliases are merged (`ST`/`S`, and the
//!   OIDs `2.5.4.3` CN, `2.5.4.11` OU, `2.5.4.10` O, `2.5.4.8` ST, `2.5.4.6` C, `2.5.4.7` L;
//!   `E`/`emailAddress`/`1.2.840.113549.1.9.1` and a few other common types likewise).
//! - **order** between different attribute types is irrelevant (`CN=a,O=b` = `O=b,CN=a`),
//!   because DN writers disagree on RDN order (RFC 4514 strings list the last DER RDN
//!   first). Several `OU` values are compared as a multiset for the same reason: the
//!   `ou` field keeps them in written order, the key sorts them.
//! - Every attribute counts: a DN that differs only by an `OU`, or that has an extra
//!   attribute (`L=`, `emailAddress=`, a second `CN`), is **not** equivalent.
//!
//! Multi-valued RDNs (`+`) are flattened: `CN=a+OU=b` = `CN=a,OU=b`.
use std::fmt;

use x509_parser::x509::X509Name;

/// A certificate subject as the whitelist and the TLS layer both see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectDn {
    /// Common name: the FQDN of the operator's MSSanté mail server.
    pub cn: Option<String>,
    /// Organisational units, in written order: `1`+FINESS or `3`+SIRET in IGC Santé certs.
    pub ou: Vec<String>,
    /// Organisation: the structure's name.
    pub o: Option<String>,
    /// State or province: the département, e.g. `Bas-Rhin (67)`.
    pub st: Option<String>,
    /// Country, `FR` in practice.
    pub c: Option<String>,
    /// Locality, rarely present; kept so that a DN with an `L` differs from one without.
    pub l: Option<String>,
    /// Any other attribute (`emailAddress`, `SERIALNUMBER`, a second `CN`...), as
    /// (upper-case type or dotted OID, value), in written order. They take part in the key.
    pub others: Vec<(String, String)>,
}

/// The normalised comparison key of a [`SubjectDn`]: hash-map key for DN lookups.
///
/// Its text is an RFC 4514-like rendering (`cn=...,ou=...,o=...`) of the normalised values,
/// in a fixed attribute order, readable in logs. Shared, not copied, when cloned (a list
/// holds one per entry, a few hundred distinct).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnKey(std::sync::Arc<str>);

impl DnKey {
    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a DN string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// The string holds no attribute at all.
    #[error("empty distinguished name")]
    Empty,
    /// An attribute has no `=` between type and value.
    #[error("attribute {index} has no '=': {text:?}")]
    MissingEquals { index: usize, text: String },
    /// An attribute type is empty (`=value`).
    #[error("attribute {index} has an empty type")]
    EmptyType { index: usize },
    /// A quoted value is not closed, or is followed by something else than a separator.
    #[error("attribute {index} has a badly quoted value")]
    BadQuoting { index: usize },
    /// A `\` escape is incomplete or not valid UTF-8 once decoded.
    #[error("attribute {index} has a bad escape sequence")]
    BadEscape { index: usize },
    /// A certificate attribute value is not a string type that can be compared.
    #[error("certificate attribute {oid} is not a string")]
    NotAString { oid: String },
}

impl SubjectDn {
    /// Parses an RFC 4514 / RFC 1779 string as found in the whitelist.
    ///
    /// Separators are `,` (also `;`, RFC 1779) between RDNs and `+` inside an RDN, each
    /// possibly surrounded by spaces. A value is either `"quoted"` (with `\` escapes) or
    /// raw up to the next unescaped separator; raw values keep embedded quotes as text
    /// (`O=CENTRE HOSPITALIER "FRANCK-JOLY"`, seen in the list). `\XX` hex pairs are
    /// decoded as UTF-8 bytes.
    pub fn parse(input: &str) -> Result<Self, DnError> {
        let mut dn = SubjectDn::default();
        let bytes = input.as_bytes();
        let mut pos = 0;
        let mut index = 0;
        let mut any = false;
        loop {
            while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos >= bytes.len() {
                break;
            }
            // Attribute type, up to '='.
            let type_start = pos;
            while pos < bytes.len() && !matches!(bytes[pos], b'=' | b',' | b';' | b'+') {
                pos += 1;
            }
            if pos >= bytes.len() || bytes[pos] != b'=' {
                return Err(DnError::MissingEquals {
                    index,
                    text: input[type_start..pos].to_string(),
                });
            }
            let attr_type = input[type_start..pos].trim();
            if attr_type.is_empty() {
                return Err(DnError::EmptyType { index });
            }
            pos += 1;
            let (value, next) = parse_value(input, pos, index)?;
            pos = next;
            dn.push(attr_type, value);
            any = true;
            index += 1;
            // `pos` is at a separator or at the end.
            if pos < bytes.len() {
                pos += 1;
            }
        }
        if any {
            Ok(dn)
        } else {
            Err(DnError::Empty)
        }
    }

    /// Reads a certificate subject, in RFC 4514 order (last DER RDN first) so that `ou`
    /// keeps the order a whitelist string would show.
    pub fn from_x509(name: &X509Name<'_>) -> Result<Self, DnError> {
        let mut dn = SubjectDn::default();
        let rdns: Vec<_> = name.iter().collect();
        for rdn in rdns.into_iter().rev() {
            for attr in rdn.iter() {
                let oid = attr.attr_type().to_id_string();
                let value = attr
                    .as_str()
                    .map_err(|_| DnError::NotAString { oid: oid.clone() })?;
                dn.push(&oid, value.to_string());
            }
        }
        if dn == SubjectDn::default() {
            return Err(DnError::Empty);
        }
        Ok(dn)
    }

    fn push(&mut self, attr_type: &str, value: String) {
        let upper = attr_type.to_ascii_uppercase();
        let slot = match upper.as_str() {
            "CN" | "2.5.4.3" => &mut self.cn,
            "O" | "2.5.4.10" => &mut self.o,
            "ST" | "S" | "2.5.4.8" => &mut self.st,
            "C" | "2.5.4.6" => &mut self.c,
            "L" | "2.5.4.7" => &mut self.l,
            "OU" | "2.5.4.11" => {
                self.ou.push(value);
                return;
            }
            _ => {
                self.others
                    .push((other_type_name(&upper).to_string(), value));
                return;
            }
        };
        if slot.is_none() {
            *slot = Some(value);
        } else {
            // A repeated single-valued type must still count in the comparison.
            let name = match upper.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.8" | "S" => "ST".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                _ => upper,
            };
            self.others.push((name, value));
        }
    }

    /// The comparison key; see the module documentation for what it makes equivalent.
    pub fn normalized_key(&self) -> DnKey {
        let mut out = String::with_capacity(96);
        let mut field = |name: &str, value: &str| {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
            out.push('=');
            escape_into(&normalize_value(value), &mut out);
        };
        if let Some(v) = &self.cn {
            field("cn", v);
        }
        let mut ous: Vec<String> = self.ou.iter().map(|v| normalize_value(v)).collect();
        ous.sort();
        for v in &ous {
            field("ou", v);
        }
        if let Some(v) = &self.o {
            field("o", v);
        }
        if let Some(v) = &self.l {
            field("l", v);
        }
        if let Some(v) = &self.st {
            field("st", v);
        }
        if let Some(v) = &self.c {
            field("c", v);
        }
        let mut others: Vec<(String, String)> = self
            .others
            .iter()
            .map(|(t, v)| (t.to_lowercase(), normalize_value(v)))
            .collect();
        others.sort();
        for (t, v) in &others {
            field(t, v);
        }
        DnKey(out.into())
    }

    /// True when both DNs have the same [`DnKey`].
    pub fn matches(&self, other: &SubjectDn) -> bool {
        self.normalized_key() == other.normalized_key()
    }
}

impl fmt::Display for SubjectDn {
    /// RFC 4514 rendering of the values as parsed (not normalised).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<(String, &str)> = Vec::new();
        if let Some(v) = &self.cn {
            parts.push(("CN".into(), v));
        }
        for v in &self.ou {
            parts.push(("OU".into(), v));
        }
        if let Some(v) = &self.o {
            parts.push(("O".into(), v));
        }
        if let Some(v) = &self.l {
            parts.push(("L".into(), v));
        }
        if let Some(v) = &self.st {
            parts.push(("ST".into(), v));
        }
        if let Some(v) = &self.c {
            parts.push(("C".into(), v));
        }
        for (t, v) in &self.others {
            parts.push((t.clone(), v));
        }
        for (i, (t, v)) in parts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let mut escaped = String::new();
            escape_into(v, &mut escaped);
            write!(f, "{t}={escaped}")?;
        }
        Ok(())
    }
}

/// One name for the attribute types seen in certificates beside the main six, whether
/// written by name (list strings) or by OID (certificates); unknown types stay as given.
fn other_type_name(upper: &str) -> &str {
    match upper {
        "E" | "EMAIL" | "EMAILADDRESS" | "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "SERIALNUMBER" | "2.5.4.5" => "SERIALNUMBER",
        "STREET" | "2.5.4.9" => "STREET",
        "T" | "TITLE" | "2.5.4.12" => "TITLE",
        "GN" | "GIVENNAME" | "2.5.4.42" => "GIVENNAME",
        "SN" | "SURNAME" | "2.5.4.4" => "SURNAME",
        "ORGANIZATIONIDENTIFIER" | "2.5.4.97" => "ORGANIZATIONIDENTIFIER",
        "DC" | "0.9.2342.19200300.100.1.25" => "DC",
        "UID" | "0.9.2342.19200300.100.1.1" => "UID",
        other => other,
    }
}

/// Parses one value starting at `pos`; returns it (unescaped, unquoted, not yet
/// normalised) and the position of the separator that ends it (or the end).
fn parse_value(input: &str, mut pos: usize, index: usize) -> Result<(String, usize), DnError> {
    let bytes = input.as_bytes();
    while pos < bytes.len() && bytes[pos] == b' ' {
        pos += 1;
    }
    let mut raw: Vec<u8> = Vec::new();
    if pos < bytes.len() && bytes[pos] == b'"' {
        pos += 1;
        loop {
            match bytes.get(pos) {
                None => return Err(DnError::BadQuoting { index }),
                Some(b'"') => {
                    pos += 1;
                    break;
                }
                Some(b'\\') => {
                    pos = unescape(bytes, pos, &mut raw).ok_or(DnError::BadEscape { index })?;
                }
                Some(&b) => {
                    raw.push(b);
                    pos += 1;
                }
            }
        }
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos < bytes.len() && !matches!(bytes[pos], b',' | b';' | b'+') {
            return Err(DnError::BadQuoting { index });
        }
    } else {
        while let Some(&b) = bytes.get(pos) {
            match b {
                b',' | b';' | b'+' => break,
                b'\\' => {
                    pos = unescape(bytes, pos, &mut raw).ok_or(DnError::BadEscape { index })?;
                }
                _ => {
                    raw.push(b);
                    pos += 1;
                }
            }
        }
    }
    let value = String::from_utf8(raw).map_err(|_| DnError::BadEscape { index })?;
    Ok((value, pos))
}

/// Decodes the escape at `bytes[pos] == b'\\'` into `out`; returns the next position.
fn unescape(bytes: &[u8], pos: usize, out: &mut Vec<u8>) -> Option<usize> {
    let next = *bytes.get(pos + 1)?;
    if next.is_ascii_hexdigit() {
        let low = *bytes.get(pos + 2)?;
        let hex = [next, low];
        let text = std::str::from_utf8(&hex).ok()?;
        out.push(u8::from_str_radix(text, 16).ok()?);
        Some(pos + 3)
    } else {
        out.push(next);
        Some(pos + 2)
    }
}

/// Normalises one attribute value: trim, collapse whitespace runs, drop whitespace before
/// `(`, Unicode lower-case (see the module documentation).
pub fn normalize_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    for ch in value.trim().chars() {
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && ch != '(' {
            out.push(' ');
        }
        pending_space = false;
        out.extend(ch.to_lowercase());
    }
    out
}

/// RFC 4514 escaping of the characters that would make the key or display ambiguous.
fn escape_into(value: &str, out: &mut String) {
    for ch in value.chars() {
        if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(ch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> DnKey {
        match SubjectDn::parse(s) {
            Ok(dn) => dn.normalized_key(),
            Err(e) => panic!("{s:?} does not parse: {e}"),
        }
    }

    #[test]
    fn parses_the_plain_form_of_the_list() {
        let dn = SubjectDn::parse(
            "CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR",
        )
        .expect("parses");
        assert_eq!(dn.cn.as_deref(), Some("medimail-asip.mipih.fr"));
        assert_eq!(dn.ou, vec!["318310021300028".to_string()]);
        assert_eq!(dn.o.as_deref(), Some("GIP MIPIH"));
        assert_eq!(dn.st.as_deref(), Some("Haute-Garonne (31)"));
        assert_eq!(dn.c.as_deref(), Some("FR"));
        assert!(dn.others.is_empty());
    }

    #[test]
    fn comma_space_separators_are_the_same_dn() {
        assert_eq!(
            key("CN=mailin.interop-mssante.apicrypt.org, OU=343975235300037, O=APICEM, ST=Nord (59), C=FR"),
            key("CN=mailin.interop-mssante.apicrypt.org,OU=343975235300037,O=APICEM,ST=Nord (59),C=FR"),
        );
    }

    #[test]
    fn trailing_space_in_cn_is_ignored() {
        assert_eq!(
            key("CN=smtp-1.mssante.adista.fr ,OU=332315971500305,O=ADISTA,ST=Meurthe et Moselle(54),C=FR"),
            key("CN=smtp-1.mssante.adista.fr,OU=332315971500305,O=ADISTA,ST=Meurthe et Moselle (54),C=FR"),
        );
        assert_eq!(
            key("CN=mssante.clinique-sainthilaire.fr,OU=1760780619,O=CLINIQUE SAINT-HILAIRE ,ST=Seine-Maritime (76),C=FR"),
            key("CN=mssante.clinique-sainthilaire.fr,OU=1760780619,O=CLINIQUE SAINT-HILAIRE,ST=Seine-Maritime (76),C=FR"),
        );
    }

    #[test]
    fn space_before_parenthesis_is_optional() {
        assert_eq!(
            key("CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris(75),C=FR"),
            key("CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"),
        );
        // But the hyphens of "Meurthe-et-Moselle" are not spaces.
        assert_ne!(
            key("CN=a,ST=Meurthe et Moselle(54)"),
            key("CN=a,ST=Meurthe-et-Moselle (54)")
        );
    }

    #[test]
    fn quoted_values_and_runs_of_spaces_compare_as_unquoted_single_spaces() {
        assert_eq!(
            key("CN=mss.chu-limoges.fr,OU=1870000015,O=\"C H U  DE  LIMOGES\",ST=Haute-Vienne (87),C=FR"),
            key("CN=mss.chu-limoges.fr,OU=1870000015,O=C H U DE LIMOGES,ST=Haute-Vienne (87),C=FR"),
        );
        assert_eq!(
            key("CN=mss.ch-orthez.fr,OU=1640780813,O=\"CENTRE HOSPITALIER   ORTHEZ\",ST=Pyrénées-Atlantiques (64),C=FR"),
            key("CN=mss.ch-orthez.fr,OU=1640780813,O=CENTRE HOSPITALIER   ORTHEZ,ST=Pyrénées-Atlantiques (64),C=FR"),
        );
    }

    #[test]
    fn quotes_inside_a_raw_value_are_text() {
        let dn = SubjectDn::parse(
            "CN=mssante.ch-ouestguyane.fr,OU=1970300083,O=CENTRE HOSPITALIER \"FRANCK-JOLY\",ST=Guyane (973),C=FR",
        )
        .expect("parses");
        assert_eq!(dn.o.as_deref(), Some("CENTRE HOSPITALIER \"FRANCK-JOLY\""));
        assert_ne!(
            dn.normalized_key(),
            key("CN=mssante.ch-ouestguyane.fr,OU=1970300083,O=\"CENTRE HOSPITALIER  FRANCK-JOLY\",ST=Guyane (973),C=FR")
        );
    }

    #[test]
    fn case_is_ignored_in_values_and_types_including_non_ascii() {
        assert_eq!(
            key("CN=MSS.CH-X.FR,OU=1,O=CH X,ST=Bouches-du-Rhône (13),C=FR"),
            key("cn=mss.ch-x.fr,ou=1,o=ch x,st=BOUCHES-DU-RHÔNE (13),c=fr"),
        );
        assert_ne!(key("CN=a,ST=Rhône (69)"), key("CN=a,ST=Rhone (69)"));
    }

    #[test]
    fn a_dn_differing_only_in_ou_is_another_dn() {
        assert_ne!(
            key("CN=mss.x.fr,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"),
            key("CN=mss.x.fr,OU=1750048887,O=GIP SESAN,ST=Paris (75),C=FR"),
        );
        assert_ne!(
            key("CN=mss.x.fr,OU=1750048886,O=GIP SESAN,C=FR"),
            key("CN=mss.x.fr,O=GIP SESAN,C=FR"),
        );
    }

    #[test]
    fn extra_attributes_make_another_dn() {
        assert_ne!(key("CN=a,O=b,C=FR"), key("CN=a,O=b,L=Paris,C=FR"));
        assert_ne!(key("CN=a,O=b"), key("CN=a,O=b,emailAddress=x@y.fr"));
        assert_ne!(key("CN=a,O=b"), key("CN=a,CN=c,O=b"));
    }

    #[test]
    fn attribute_order_and_aliases_do_not_matter() {
        assert_eq!(
            key("C=FR,ST=Paris (75),O=GIP SESAN,OU=1750048886,CN=smtp-1.sesan.santnet.com"),
            key("CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"),
        );
        assert_eq!(key("2.5.4.3=a,S=Nord (59)"), key("CN=a,ST=Nord (59)"));
        assert_eq!(key("CN=a,OU=1,OU=2"), key("CN=a,OU=2,OU=1"));
        assert_eq!(
            key("CN=a,E=x@y.fr"),
            key("CN=a,1.2.840.113549.1.9.1=X@Y.FR")
        );
    }

    #[test]
    fn escapes_are_decoded() {
        let dn = SubjectDn::parse(r"CN=a,O=A\, B \C3\A9,OU=x\+y").expect("parses");
        assert_eq!(dn.o.as_deref(), Some("A, B é"));
        assert_eq!(dn.ou, vec!["x+y".to_string()]);
        assert_eq!(dn.normalized_key(), key("CN=a,O=\"A, B é\",OU=\"x+y\""));
    }

    #[test]
    fn malformed_strings_are_refused() {
        assert_eq!(SubjectDn::parse("   "), Err(DnError::Empty));
        assert!(matches!(
            SubjectDn::parse("CN=a,garbage"),
            Err(DnError::MissingEquals { index: 1, .. })
        ));
        assert!(matches!(
            SubjectDn::parse("CN=\"open"),
            Err(DnError::BadQuoting { .. })
        ));
        assert!(matches!(
            SubjectDn::parse("CN=\"a\"b"),
            Err(DnError::BadQuoting { .. })
        ));
        assert!(matches!(
            SubjectDn::parse("CN=a\\"),
            Err(DnError::BadEscape { .. })
        ));
        assert!(matches!(
            SubjectDn::parse("=a"),
            Err(DnError::EmptyType { .. })
        ));
    }

    #[test]
    fn display_round_trips_through_parse() {
        let dn = SubjectDn::parse("CN=a,O=\"A, B\",ST=Paris (75),C=FR").expect("parses");
        let again = SubjectDn::parse(&dn.to_string()).expect("parses");
        assert_eq!(dn, again);
    }

    #[test]
    fn certificate_subject_compares_like_the_list() {
        let mut params = rcgen::CertificateParams::default();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CountryName, "FR");
        name.push(rcgen::DnType::StateOrProvinceName, "Paris (75)");
        name.push(rcgen::DnType::OrganizationName, "GIP SESAN");
        name.push(rcgen::DnType::OrganizationalUnitName, "1750048886");
        name.push(rcgen::DnType::CommonName, "smtp-1.sesan.santnet.com");
        params.distinguished_name = name;
        let key_pair = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key_pair).expect("cert");
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert.der()).expect("parse generated certificate");
        let from_cert = SubjectDn::from_x509(parsed.subject()).expect("subject");
        assert_eq!(from_cert.cn.as_deref(), Some("smtp-1.sesan.santnet.com"));
        assert_eq!(
            from_cert.normalized_key(),
            key("CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris(75),C=FR")
        );
    }
}
