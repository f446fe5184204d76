//! An immutable, indexed snapshot of one whitelist.
//!
//! Built once per list, never modified. The live list is shared as
//! `arc_swap::ArcSwap<Whitelist>`: SMTP sessions `load()` a snapshot without waiting, and the
//! fetcher `store()`s a new `Arc<Whitelist>` once a downloaded list has been verified and
//! indexed (see [`LiveWhitelist`]).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::model::{normalize_domain, Entry, ParseWarning, ParsedList};
use super::signature::SignerInfo;
use crate::trust::dn::{DnKey, SubjectDn};

/// The shared, atomically replaceable current list.
pub type LiveWhitelist = ArcSwap<Whitelist>;

/// One verified whitelist, indexed for O(1) lookups by domain and by certificate DN.
#[derive(Debug)]
pub struct Whitelist {
    generated: OffsetDateTime,
    signer: Option<SignerInfo>,
    entries: Vec<Entry>,
    warnings: Vec<ParseWarning>,
    /// Normalised domain → indices into `entries` (1 to 5 in practice).
    by_domain: HashMap<String, Vec<usize>>,
    /// DN key → distinct normalised domains served under that certificate subject.
    by_dn: HashMap<DnKey, Vec<String>>,
}

impl Whitelist {
    /// Indexes a parsed list. `signer` is what signature verification returned (`None`
    /// only for lists built without a signature, e.g. in tests).
    pub fn new(list: ParsedList, signer: Option<SignerInfo>) -> Self {
        let mut by_domain: HashMap<String, Vec<usize>> = HashMap::with_capacity(list.entries.len());
        let mut by_dn: HashMap<DnKey, Vec<String>> = HashMap::new();
        for (i, entry) in list.entries.iter().enumerate() {
            // The list repeats some (domain, DN) pairs verbatim: a pair is new when none of
            // the domain's earlier entries (1 to 5) has the same DN.
            // One hash per entry; most domains have a single entry, so the key's copy is
            // rarely wasted.
            let indices = by_domain.entry(entry.domain.clone()).or_default();
            let new_pair = !indices.iter().any(|&j| {
                list.entries
                    .get(j)
                    .is_some_and(|earlier| earlier.dn_key == entry.dn_key)
            });
            indices.push(i);
            if new_pair {
                let domains = match by_dn.get_mut(&entry.dn_key) {
                    Some(domains) => domains,
                    None => by_dn.entry(entry.dn_key.clone()).or_default(),
                };
                domains.push(entry.domain.clone());
            }
        }
        Whitelist {
            generated: list.generated,
            signer,
            entries: list.entries,
            warnings: list.warnings,
            by_domain,
            by_dn,
        }
    }

    /// The list in force before any list was loaded: lists nothing, so every peer and
    /// domain is refused, and dated at the Unix epoch so that any real list replaces it.
    pub fn empty() -> Self {
        Whitelist::new(
            ParsedList {
                generated: OffsetDateTime::UNIX_EPOCH,
                entries: Vec::new(),
                warnings: Vec::new(),
            },
            None,
        )
    }

    /// Wraps the list for sharing between sessions and the fetcher.
    pub fn into_live(self) -> LiveWhitelist {
        ArcSwap::new(Arc::new(self))
    }

    /// Normalises a domain for lookup the way the list's `Nom` is normalised; `None` when it
    /// cannot be a listed domain.
    fn key(domain: &str) -> Option<String> {
        normalize_domain(domain).ok()
    }

    /// The entries of `domain` (case-insensitive, trailing dot ignored); empty if unlisted.
    pub fn entries_for_domain(&self, domain: &str) -> Vec<&Entry> {
        Self::key(domain)
            .and_then(|key| self.by_domain.get(&key))
            .map(|indices| {
                indices
                    .iter()
                    .filter_map(|&i| self.entries.get(i))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `domain` is in the list at all.
    pub fn is_listed_domain(&self, domain: &str) -> bool {
        Self::key(domain).is_some_and(|key| self.by_domain.contains_key(&key))
    }

    /// Whether `domain` is listed with an entry whose DN equals `dn` (normalised): the
    /// check for a peer sending from, or receiving for, `domain`.
    pub fn domain_served_by(&self, domain: &str, dn: &SubjectDn) -> bool {
        self.domain_served_by_key(domain, &dn.normalized_key())
    }

    /// As [`Self::domain_served_by`], with a key computed once per TLS session.
    pub fn domain_served_by_key(&self, domain: &str, key: &DnKey) -> bool {
        // A domain has 1 to 5 entries: comparing their keys is constant time.
        Self::key(domain)
            .and_then(|domain| self.by_domain.get(&domain))
            .is_some_and(|indices| {
                indices
                    .iter()
                    .any(|&i| self.entries.get(i).is_some_and(|e| &e.dn_key == key))
            })
    }

    /// Whether any entry names this certificate subject: the check at TLS accept time.
    pub fn is_listed_dn(&self, dn: &SubjectDn) -> bool {
        self.by_dn.contains_key(&dn.normalized_key())
    }

    /// The distinct domains served by this certificate subject (empty if unlisted).
    pub fn domains_for_dn(&self, dn: &SubjectDn) -> &[String] {
        self.domains_for_key(&dn.normalized_key())
    }

    /// As [`Self::domains_for_dn`], by key.
    pub fn domains_for_key(&self, key: &DnKey) -> &[String] {
        self.by_dn.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every valid entry, in document order (duplicates included).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of valid entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of distinct (normalised) domains.
    pub fn domain_count(&self) -> usize {
        self.by_domain.len()
    }

    /// Number of distinct normalised DNs (fewer than distinct DN strings: quoted and
    /// unquoted spellings of one subject count once).
    pub fn dn_count(&self) -> usize {
        self.by_dn.len()
    }

    /// Number of distinct DN strings as written.
    pub fn dn_text_count(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.dn_text.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// `DateDeGeneration`.
    pub fn generated(&self) -> OffsetDateTime {
        self.generated
    }

    /// The verified signer (`None` for an unsigned test list).
    pub fn signer(&self) -> Option<&SignerInfo> {
        self.signer.as_ref()
    }

    /// Entries dropped or degraded while parsing.
    pub fn warnings(&self) -> &[ParseWarning] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whitelist::parse::parse;

    fn list() -> Whitelist {
        let entry = |nom: &str, dn: &str| {
            format!(
                "<Domaine><Nom>{nom}</Nom><DNCertificatOperateur>{dn}</DNCertificatOperateur></Domaine>"
            )
        };
        let xml = format!(
            "<ListeBlancheMSSante xmlns=\"https://listeblanche.mssante.fr/schema\"><DateDeGeneration>2025-02-28T15:42:07Z</DateDeGeneration>\
             <ListeDomaines>{}{}{}{}</ListeDomaines></ListeBlancheMSSante>",
            entry(
                "15-20.mssante.fr",
                "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"
            ),
            entry(
                "15-20.mssante.fr",
                "CN=smtp-2.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"
            ),
            entry(
                "UC-CMP.mssante.fr",
                "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris(75),C=FR"
            ),
            entry(
                "uc-cmp.mssante.fr",
                "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"
            ),
        );
        Whitelist::new(parse(&xml).expect("parses"), None)
    }

    fn dn(s: &str) -> SubjectDn {
        SubjectDn::parse(s).expect("dn")
    }

    #[test]
    fn counts_entries_domains_and_dns() {
        let wl = list();
        assert_eq!(wl.entry_count(), 4);
        assert_eq!(wl.domain_count(), 2);
        assert_eq!(wl.dn_count(), 2);
        assert_eq!(wl.dn_text_count(), 3);
    }

    #[test]
    fn looks_up_domains_case_insensitively() {
        let wl = list();
        assert!(wl.is_listed_domain("UC-CMP.MSSANTE.FR."));
        assert_eq!(wl.entries_for_domain("15-20.mssante.fr").len(), 2);
        assert!(!wl.is_listed_domain("other.mssante.fr"));
        assert!(!wl.is_listed_domain("a@b"));
    }

    #[test]
    fn a_domain_is_served_only_by_its_listed_certificates() {
        let wl = list();
        let smtp2 = dn("CN=smtp-2.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris(75),C=FR");
        assert!(wl.domain_served_by("15-20.mssante.fr", &smtp2));
        assert!(!wl.domain_served_by("uc-cmp.mssante.fr", &smtp2));
        let other_ou =
            dn("CN=smtp-2.sesan.santnet.com,OU=1750048887,O=GIP SESAN,ST=Paris(75),C=FR");
        assert!(!wl.domain_served_by("15-20.mssante.fr", &other_ou));
        assert!(!wl.is_listed_dn(&other_ou));
        assert!(wl.is_listed_dn(&smtp2));
    }

    #[test]
    fn lists_the_domains_of_a_certificate_once_each() {
        let wl = list();
        let smtp1 =
            dn("CN=smtp-1.sesan.santnet.com, OU=1750048886, O=GIP SESAN, ST=Paris (75), C=FR");
        let mut domains = wl.domains_for_dn(&smtp1).to_vec();
        domains.sort();
        assert_eq!(domains, ["15-20.mssante.fr", "uc-cmp.mssante.fr"]);
    }

    #[test]
    fn snapshots_are_swapped_without_blocking_readers() {
        let live = list().into_live();
        let before = live.load_full();
        live.store(Arc::new(Whitelist::empty()));
        assert_eq!(before.entry_count(), 4);
        assert_eq!(live.load().entry_count(), 0);
    }
}
