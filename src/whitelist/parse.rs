//! Reader of the whitelist's data (namespace `https://listeblanche.mssante.fr/schema`)
//! from the parsed tree of [`super::xml`]: the same tree, and so the same view of the
//! bytes, that the signature check digested (see [`super::load_and_verify`]).
//!
//! Strict on structure, and ambiguity is refused, never resolved: the document element
//! must be `ListeBlancheMSSante`, with exactly one `DateDeGeneration` (RFC 3339) and
//! exactly one `ListeDomaines`; each `Domaine` has exactly one `Nom` and one
//! `DNCertificatOperateur`, and at most one of each other field; a text field holds text
//! only (an element, comment or processing instruction inside it is refused); every data
//! element is in the list's namespace; text between elements is whitespace. Those failures
//! are [`ParseError`]s with a byte position: such a list is not used at all (the caller
//! keeps its previous one).
//!
//! Tolerant on content: unknown elements *of the list's namespace* are skipped (with a
//! warning: ANS may extend the schema); an entry whose `Nom` is not a host name or whose
//! DN does not parse is dropped with a [`ParseWarning`] and the rest is kept;
//! `Description`, the contacts and `DateMAJ` may be absent (empty). Text may hold
//! entities, character references, non-ASCII characters and newlines; `Nom` and the DN are
//! trimmed, other fields are kept as written (line ends normalised).
//!
//! This module does not check the signature: see [`super::signature`].
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::model::{normalize_domain, Entry, ParseWarning, ParsedList, WarningKind};
use super::xml::{is_blank, Document, Element, Node, Ns, XmlError};
use crate::trust::dn::{DnError, DnKey, SubjectDn};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Each distinct `DNCertificatOperateur` text parsed and keyed once: the real list has
/// 391 distinct DNs for 6,494 entries (one operator certificate serves many domains).
type DnMemo = HashMap<String, Result<(Arc<SubjectDn>, DnKey), DnError>>;

/// The list's XML namespace.
pub const LIST_NS: &str = "https://listeblanche.mssante.fr/schema";

/// Why a list could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not well-formed XML, or what the reader refuses (DOCTYPE, other encodings...).
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// The document element is not `ListeBlancheMSSante` in the list's namespace.
    #[error("document element is {found:?}, expected ListeBlancheMSSante in {LIST_NS}")]
    UnexpectedRoot { found: String },
    /// A required element is missing.
    #[error("{parent} at byte {position} has no {element}")]
    MissingElement {
        element: &'static str,
        parent: &'static str,
        position: u64,
    },
    /// An element that must appear once appears again.
    #[error("second {element} at byte {position}")]
    DuplicateElement {
        element: &'static str,
        position: u64,
    },
    /// `DateDeGeneration` does not parse.
    #[error("DateDeGeneration {value:?} at byte {position} is not an RFC 3339 date")]
    BadGenerationDate { value: String, position: u64 },
    /// A data element outside the list's namespace.
    #[error("element {name} at byte {position} is in namespace {namespace:?}, not the list's")]
    ForeignElement {
        name: String,
        namespace: String,
        position: u64,
    },
    /// Content where the schema has none: text between elements, an element, comment or
    /// processing instruction inside a text field.
    #[error("{parent} at byte {position}: unexpected {what}")]
    UnexpectedContent {
        parent: &'static str,
        what: String,
        position: u64,
    },
}

/// What a child node of a data element is, once checked.
enum Child<'d, 'x> {
    /// An element of the list's namespace, by local name.
    Data(&'d Element<'x>),
    /// The enveloped signature (checked by [`super::signature`]).
    Signature,
}

/// The checked children of a container element (`ListeBlancheMSSante`, `ListeDomaines`,
/// `Domaine`): whitespace and comments between elements, data elements in the list's
/// namespace; `Signature` only under the document element.
fn children<'d, 'x>(
    doc: &'d Document<'x>,
    element: &'d Element<'x>,
    parent: &'static str,
) -> impl Iterator<Item = Result<Child<'d, 'x>, ParseError>> {
    element.children.iter().filter_map(move |node| match node {
        Node::Element(e) if e.ns == Ns::LIST => Some(Ok(Child::Data(e))),
        Node::Element(e) if parent == "ListeBlancheMSSante" && e.is(Ns::DSIG, "Signature") => {
            Some(Ok(Child::Signature))
        }
        Node::Element(e) => Some(Err(ParseError::ForeignElement {
            name: e.qname.to_string(),
            namespace: doc.uri(e.ns).to_string(),
            position: e.position,
        })),
        Node::Text(t) if is_blank(&t.value) => None,
        Node::Text(t) => Some(Err(ParseError::UnexpectedContent {
            parent,
            what: "text".to_string(),
            position: t.position,
        })),
        Node::Comment { .. } => None,
        Node::Pi(pi) => Some(Err(ParseError::UnexpectedContent {
            parent,
            what: format!("processing instruction {}", pi.target),
            position: pi.position,
        })),
    })
}

/// The text of a field: character data only (borrowed in the usual case of one text node:
/// the tree merges adjacent character data).
fn text<'d>(element: &'d Element<'_>, field: &'static str) -> Result<Cow<'d, str>, ParseError> {
    if let [Node::Text(t)] = &*element.children {
        return Ok(Cow::Borrowed(&t.value));
    }
    let mut value = String::new();
    for node in &element.children {
        match node {
            Node::Text(t) => value.push_str(&t.value),
            Node::Element(e) => {
                return Err(ParseError::UnexpectedContent {
                    parent: field,
                    what: format!("element {}", e.qname),
                    position: e.position,
                })
            }
            Node::Comment { position } => {
                return Err(ParseError::UnexpectedContent {
                    parent: field,
                    what: "comment".to_string(),
                    position: *position,
                })
            }
            Node::Pi(pi) => {
                return Err(ParseError::UnexpectedContent {
                    parent: field,
                    what: format!("processing instruction {}", pi.target),
                    position: pi.position,
                })
            }
        }
    }
    Ok(Cow::Owned(value))
}

/// Sets a once-only field, refusing a second occurrence.
fn once<'d>(
    slot: &mut Option<Cow<'d, str>>,
    element: &'d Element<'_>,
    field: &'static str,
) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::DuplicateElement {
            element: field,
            position: element.position,
        });
    }
    *slot = Some(text(element, field)?);
    Ok(())
}

fn unknown(element: &Element<'_>, warnings: &mut Vec<ParseWarning>) {
    warnings.push(ParseWarning {
        position: element.position,
        kind: WarningKind::UnknownElement {
            name: element.qname.to_string(),
        },
    });
}

/// Parses a whitelist document (without checking its signature).
pub fn parse(xml: &str) -> Result<ParsedList, ParseError> {
    from_document(&Document::parse(xml)?)
}

/// Reads the list from a parsed document.
pub(crate) fn from_document(doc: &Document<'_>) -> Result<ParsedList, ParseError> {
    let root = &doc.root;
    if !root.is(Ns::LIST, "ListeBlancheMSSante") {
        return Err(ParseError::UnexpectedRoot {
            found: if root.ns == Ns::NONE {
                root.qname.to_string()
            } else {
                format!("{} in {}", root.qname, doc.uri(root.ns))
            },
        });
    }
    let mut warnings = Vec::new();
    let mut generated: Option<(String, u64)> = None;
    let mut domains: Option<&Element<'_>> = None;
    for child in children(doc, root, "ListeBlancheMSSante") {
        let Child::Data(element) = child? else {
            continue;
        };
        match element.local() {
            "DateDeGeneration" if generated.is_some() => {
                return Err(ParseError::DuplicateElement {
                    element: "DateDeGeneration",
                    position: element.position,
                })
            }
            "DateDeGeneration" => {
                generated = Some((
                    text(element, "DateDeGeneration")?.into_owned(),
                    element.position,
                ))
            }
            "ListeDomaines" if domains.is_some() => {
                return Err(ParseError::DuplicateElement {
                    element: "ListeDomaines",
                    position: element.position,
                })
            }
            "ListeDomaines" => domains = Some(element),
            _ => unknown(element, &mut warnings),
        }
    }
    let missing = |element| ParseError::MissingElement {
        element,
        parent: "ListeBlancheMSSante",
        position: root.position,
    };
    let (value, position) = generated.ok_or_else(|| missing("DateDeGeneration"))?;
    let generated = OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map_err(|_| ParseError::BadGenerationDate { value, position })?;
    let domains = domains.ok_or_else(|| missing("ListeDomaines"))?;
    let mut entries = Vec::with_capacity(domains.children.len() / 2);
    let mut dns = DnMemo::new();
    for child in children(doc, domains, "ListeDomaines") {
        let Child::Data(element) = child? else {
            continue;
        };
        if element.local() == "Domaine" {
            if let Some(entry) = parse_entry(doc, element, &mut dns, &mut warnings)? {
                entries.push(entry);
            }
        } else {
            unknown(element, &mut warnings);
        }
    }
    Ok(ParsedList {
        generated,
        entries,
        warnings,
    })
}

/// Parses one `Domaine`; `Ok(None)` when it is dropped with a warning.
fn parse_entry(
    doc: &Document<'_>,
    domaine: &Element<'_>,
    dns: &mut DnMemo,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Option<Entry>, ParseError> {
    let position = domaine.position;
    let mut nom = None;
    let mut dn = None;
    let mut description = None;
    let mut responsable = None;
    let mut support = None;
    let mut updated_text = None;
    for child in children(doc, domaine, "Domaine") {
        let Child::Data(element) = child? else {
            continue;
        };
        match element.local() {
            "Nom" => once(&mut nom, element, "Nom")?,
            "DNCertificatOperateur" => once(&mut dn, element, "DNCertificatOperateur")?,
            "Description" => once(&mut description, element, "Description")?,
            "ResponsableContact" => once(&mut responsable, element, "ResponsableContact")?,
            "SupportContact" => once(&mut support, element, "SupportContact")?,
            "DateMAJ" => once(&mut updated_text, element, "DateMAJ")?,
            _ => unknown(element, warnings),
        }
    }
    let description = description.unwrap_or_default().into_owned();
    let responsable = responsable.unwrap_or_default().into_owned();
    let support = support.unwrap_or_default().into_owned();
    let updated_text = updated_text.unwrap_or_default();
    let missing = |element| ParseError::MissingElement {
        element,
        parent: "Domaine",
        position,
    };
    let nom = nom.ok_or_else(|| missing("Nom"))?;
    let dn_text = dn.ok_or_else(|| missing("DNCertificatOperateur"))?;
    let domain_as_written = nom.trim().to_string();
    let domain = match normalize_domain(&domain_as_written) {
        Ok(domain) => domain,
        Err(reason) => {
            warnings.push(ParseWarning {
                position,
                kind: WarningKind::InvalidDomain {
                    name: domain_as_written,
                    reason,
                },
            });
            return Ok(None);
        }
    };
    let dn_text = dn_text.trim().to_string();
    let parsed = match dns.get(&dn_text) {
        Some(parsed) => parsed.clone(),
        None => {
            let parsed = SubjectDn::parse(&dn_text).map(|dn| {
                let key = dn.normalized_key();
                (Arc::new(dn), key)
            });
            dns.insert(dn_text.clone(), parsed.clone());
            parsed
        }
    };
    let (parsed_dn, dn_key) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            warnings.push(ParseWarning {
                position,
                kind: WarningKind::InvalidDn { dn: dn_text, error },
            });
            return Ok(None);
        }
    };
    let updated_text = updated_text.trim().to_string();
    let updated = if updated_text.is_empty() {
        None
    } else {
        match OffsetDateTime::parse(&updated_text, &Rfc3339) {
            Ok(date) => Some(date),
            Err(_) => {
                warnings.push(ParseWarning {
                    position,
                    kind: WarningKind::InvalidDate {
                        element: "DateMAJ",
                        value: updated_text.clone(),
                    },
                });
                None
            }
        }
    };
    Ok(Some(Entry {
        domain,
        domain_as_written,
        description,
        dn_key,
        dn: parsed_dn,
        dn_text,
        responsable_contact: responsable,
        support_contact: support,
        updated_text,
        updated,
        position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(domains: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListeBlancheMSSante \
             xmlns=\"https://listeblanche.mssante.fr/schema\">\n    \
             <DateDeGeneration>2025-02-28T15:42:07Z</DateDeGeneration>\n    \
             <ListeDomaines>{domains}</ListeDomaines>\n</ListeBlancheMSSante>"
        )
    }

    fn entry(nom: &str, dn: &str) -> String {
        format!(
            "<Domaine><Nom>{nom}</Nom><Description>d</Description>\
             <DNCertificatOperateur>{dn}</DNCertificatOperateur>\
             <ResponsableContact>01, a@b.fr</ResponsableContact>\
             <SupportContact>02, c@d.fr</SupportContact><DateMAJ>2024-06-07T10:24:42Z</DateMAJ>\
             </Domaine>"
        )
    }

    const DN: &str = "CN=mss.x.fr,OU=1,O=X,ST=Paris (75),C=FR";

    #[test]
    fn reads_every_field() {
        let list = parse(&doc(&entry("UC-CMP.mssante.fr", DN))).expect("parses");
        assert_eq!(list.generated.year(), 2025);
        assert_eq!(list.entries.len(), 1);
        let e = &list.entries[0];
        assert_eq!(e.domain, "uc-cmp.mssante.fr");
        assert_eq!(e.domain_as_written, "UC-CMP.mssante.fr");
        assert_eq!(e.dn.cn.as_deref(), Some("mss.x.fr"));
        assert_eq!(e.dn_text, DN);
        assert_eq!(e.responsable_contact, "01, a@b.fr");
        assert_eq!(e.support_contact, "02, c@d.fr");
        assert!(e.updated.is_some());
        assert!(list.warnings.is_empty());
    }

    #[test]
    fn entities_non_ascii_and_newlines_survive() {
        let xml = doc(
            "<Domaine><Nom>a.mssante.fr</Nom><Description>AGE &amp; VIE \u{e9} &#233; L\u{2019}EVEIL\r\n</Description>\
             <DNCertificatOperateur>CN=a,O=\"C H U  DE  LIMOGES\",ST=Rh\u{f4}ne (69)</DNCertificatOperateur>\
             <ResponsableContact>04 42 70 38 15, mssante@wraptor.fr\n            </ResponsableContact></Domaine>",
        );
        let list = parse(&xml).expect("parses");
        let e = &list.entries[0];
        assert_eq!(e.description, "AGE & VIE \u{e9} \u{e9} L\u{2019}EVEIL\n");
        assert_eq!(e.dn.o.as_deref(), Some("C H U  DE  LIMOGES"));
        assert_eq!(
            e.responsable_contact,
            "04 42 70 38 15, mssante@wraptor.fr\n            "
        );
        assert!(e.updated.is_none());
    }

    #[test]
    fn a_malformed_entry_is_a_warning_with_its_position_and_the_rest_is_kept() {
        let bad = entry("secretariat@ch-x.mssante.fr", DN);
        let xml = doc(&format!(
            "{}{}{}",
            entry("a.mssante.fr", DN),
            bad,
            entry("b.mssante.fr", DN)
        ));
        let list = parse(&xml).expect("parses");
        let domains: Vec<_> = list.entries.iter().map(|e| e.domain.as_str()).collect();
        assert_eq!(domains, ["a.mssante.fr", "b.mssante.fr"]);
        assert_eq!(list.warnings.len(), 1);
        let w = &list.warnings[0];
        assert!(matches!(w.kind, WarningKind::InvalidDomain { .. }));
        let at = usize::try_from(w.position).expect("position");
        assert!(xml[at..].starts_with(&bad));
    }

    #[test]
    fn an_unparsable_dn_is_a_warning() {
        let list = parse(&doc(&entry("a.mssante.fr", "CN=\"open"))).expect("parses");
        assert!(list.entries.is_empty());
        assert!(matches!(
            list.warnings[0].kind,
            WarningKind::InvalidDn { .. }
        ));
    }

    #[test]
    fn a_dn_read_once_serves_every_entry_that_repeats_it_and_its_errors_too() {
        let dn = "CN=mss.x.fr,OU=1750048886,O=X,ST=Paris (75),C=FR";
        let xml = doc(&format!(
            "{}{}{}{}{}",
            entry("a.mssante.fr", dn),
            entry("b.mssante.fr", "CN=\"open"),
            entry("c.mssante.fr", &format!("  {dn}\n")),
            entry("d.mssante.fr", "CN=\"open"),
            entry(
                "e.mssante.fr",
                "cn=MSS.X.FR,ou=1750048886,o=x,st=paris (75),c=fr"
            ),
        ));
        let list = parse(&xml).expect("parses");
        let names: Vec<_> = list.entries.iter().map(|e| e.domain.as_str()).collect();
        assert_eq!(names, ["a.mssante.fr", "c.mssante.fr", "e.mssante.fr"]);
        let (a, c, e) = (&list.entries[0], &list.entries[1], &list.entries[2]);
        // Same text (once trimmed): one parse, shared.
        assert!(std::sync::Arc::ptr_eq(&a.dn, &c.dn));
        assert_eq!(a.dn_text, c.dn_text);
        // Other text, same DN once normalised: parsed apart, equal keys, own text kept.
        assert!(!std::sync::Arc::ptr_eq(&a.dn, &e.dn));
        assert_eq!(a.dn_key, e.dn_key);
        assert!(e.dn_text.starts_with("cn=MSS.X.FR"));
        // Each entry with the bad DN has its own warning at its own position.
        let bad: Vec<u64> = list
            .warnings
            .iter()
            .filter(|w| matches!(w.kind, WarningKind::InvalidDn { .. }))
            .map(|w| w.position)
            .collect();
        assert_eq!(bad.len(), 2);
        assert_ne!(bad[0], bad[1]);
    }

    #[test]
    fn unknown_elements_are_skipped() {
        let xml = doc(&format!(
            "<Futur><x/></Futur><Domaine><Nouveau>1</Nouveau><Nom>a.fr</Nom>\
             <DNCertificatOperateur>{DN}</DNCertificatOperateur></Domaine>"
        ));
        let list = parse(&xml).expect("parses");
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].description, "");
        assert_eq!(list.warnings.len(), 2);
    }

    #[test]
    fn required_elements_are_enforced_with_position() {
        let xml = doc("<Domaine><Nom>a.fr</Nom></Domaine>");
        let at = xml.find("<Domaine>").expect("entry") as u64;
        assert_eq!(
            parse(&xml).err(),
            Some(ParseError::MissingElement {
                element: "DNCertificatOperateur",
                parent: "Domaine",
                position: at
            })
        );
        assert!(matches!(
            parse(&format!(
                "<ListeBlancheMSSante xmlns=\"{LIST_NS}\"><ListeDomaines/></ListeBlancheMSSante>"
            )),
            Err(ParseError::MissingElement {
                element: "DateDeGeneration",
                ..
            })
        ));
        assert!(matches!(
            parse(&doc("").replace("</ListeDomaines>", "</ListeDomaines><ListeDomaines/>")),
            Err(ParseError::DuplicateElement {
                element: "ListeDomaines",
                ..
            })
        ));
        assert!(matches!(
            parse("<Autre/>"),
            Err(ParseError::UnexpectedRoot { .. })
        ));
        assert!(matches!(
            parse(&doc("").replace("2025-02-28T15:42:07Z", "hier")),
            Err(ParseError::BadGenerationDate { .. })
        ));
    }

    #[test]
    fn malformed_xml_is_an_error_with_position() {
        let xml = doc(&entry("a.fr", DN)).replace("</Nom>", "</Nam>");
        assert!(matches!(parse(&xml), Err(ParseError::Xml(_))));
        let truncated = &doc(&entry("a.fr", DN))[..200];
        assert!(matches!(parse(truncated), Err(ParseError::Xml(_))));
        assert!(parse("<!DOCTYPE x><ListeBlancheMSSante/>").is_err());
    }
}
