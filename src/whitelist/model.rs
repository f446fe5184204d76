//! What the whitelist says: one [`Entry`] per (domain, operator certificate DN) pair.
use std::sync::Arc;

use time::OffsetDateTime;

use crate::trust::dn::{DnError, DnKey, SubjectDn};

/// One `Domaine` element: a mail domain served by one operator MTA certificate.
///
/// A domain appears once per certificate of its operator (e.g. `smtp-1` and `smtp-2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `Nom`, normalised: lower case, no trailing dot. The lookup key.
    pub domain: String,
    /// `Nom` as written (trimmed), for display and for reports to ANS.
    pub domain_as_written: String,
    /// `Description`: free text; may name the auto-reply mailbox.
    pub description: String,
    /// `DNCertificatOperateur` as written, for logs that must quote the list.
    pub dn_text: String,
    /// `DNCertificatOperateur` parsed (shared by the entries of one certificate).
    pub dn: Arc<SubjectDn>,
    /// `dn`'s comparison key, computed once.
    pub dn_key: DnKey,
    /// `ResponsableContact`: "phone, e-mail" of the project contact (public).
    pub responsable_contact: String,
    /// `SupportContact`: "phone, e-mail" of the technical contact (public).
    pub support_contact: String,
    /// `DateMAJ` as written.
    pub updated_text: String,
    /// `DateMAJ` parsed (RFC 3339); `None` when absent or unparsable (then a warning).
    pub updated: Option<OffsetDateTime>,
    /// Byte offset of the `<Domaine>` tag, to point at the entry in reports.
    pub position: u64,
}

/// A problem with one entry that does not invalidate the rest of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseWarning {
    /// Byte offset of the entry (or element) concerned.
    pub position: u64,
    /// What is wrong.
    pub kind: WarningKind,
}

/// The kinds of [`ParseWarning`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WarningKind {
    /// `Nom` is not a DNS name (e.g. contains `@`): the entry is dropped.
    #[error("entry dropped: domain {name:?} is invalid: {reason}")]
    InvalidDomain { name: String, reason: &'static str },
    /// `DNCertificatOperateur` does not parse: the entry is dropped.
    #[error("entry dropped: DN {dn:?} does not parse: {error}")]
    InvalidDn { dn: String, error: DnError },
    /// A date does not parse as RFC 3339: the entry is kept with no date.
    #[error("{element} {value:?} is not an RFC 3339 date")]
    InvalidDate {
        element: &'static str,
        value: String,
    },
    /// An element the schema does not have: skipped.
    #[error("unknown element {name:?} skipped")]
    UnknownElement { name: String },
}

impl std::fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.position, self.kind)
    }
}

/// A parsed (not yet indexed) list.
#[derive(Clone, Debug)]
pub struct ParsedList {
    /// `DateDeGeneration`: when ANS produced the list; a newer list must not be replaced
    /// by an older one.
    pub generated: OffsetDateTime,
    /// Valid entries in document order, duplicates included (the real list has some).
    pub entries: Vec<Entry>,
    /// Entries dropped or degraded, and skipped unknown elements.
    pub warnings: Vec<ParseWarning>,
}

/// Normalises a `Nom`: trim, ASCII lower case, no trailing dot; refuses what is not a
/// host name (letters, digits, `-`, labels of 1 to 63 characters, at most 253 in all).
pub fn normalize_domain(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    if name.contains('@') {
        return Err("contains '@' (an address, not a domain)");
    }
    let lower = name.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("character other than letter, digit, '-' or '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_cased_without_trailing_dot() {
        assert_eq!(
            normalize_domain(" UC-CMP.mssante.fr. "),
            Ok("uc-cmp.mssante.fr".to_string())
        );
    }

    #[test]
    fn malformed_domains_are_refused() {
        assert!(normalize_domain("secretariat@ch-x.mssante.fr").is_err());
        assert!(normalize_domain("").is_err());
        assert!(normalize_domain("a..fr").is_err());
        assert!(normalize_domain("-a.fr").is_err());
        assert!(normalize_domain("a b.fr").is_err());
        assert!(normalize_domain(&format!("{}.fr", "a".repeat(64))).is_err());
    }
}
