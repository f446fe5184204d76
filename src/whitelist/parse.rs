//! Streaming parser of the whitelist XML (namespace `https://listeblanche.mssante.fr/schema`).
//!
//! Strict on structure: the document element must be `ListeBlancheMSSante`, with exactly
//! one `DateDeGeneration` (RFC 3339) and exactly one `ListeDomaines`; each `Domaine` must have a `Nom`
//! and a `DNCertificatOperateur`. Those failures are [`ParseError`]s with a byte position:
//! such a list is not used at all (the caller keeps its previous one).
//!
//! Tolerant on content: unknown elements are skipped (with a warning); an entry whose `Nom`
//! is not a host name or whose DN does not parse is dropped with a [`ParseWarning`] and the
//! rest is kept; `Description`, the contacts and `DateMAJ` may be absent (empty). Element
//! names are matched by local name. Text may hold entities, character references,
//! non-ASCII characters and newlines; `Nom` and the DN are trimmed, other fields are kept
//! as written (line ends normalised).
//!
//! This module does not check the signature: see [`super::signature`] and
//! [`super::load_and_verify`].
use quick_xml::events::Event;
use quick_xml::name::QName;
use quick_xml::Reader;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::c14n;
use super::model::{normalize_domain, Entry, ParseWarning, ParsedList, WarningKind};
use crate::trust::dn::SubjectDn;

/// Why a list could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not well-formed XML (or a DOCTYPE, which the list never has).
    #[error("XML syntax error at byte {position}: {message}")]
    Syntax { position: u64, message: String },
    /// The document element is not `ListeBlancheMSSante`.
    #[error("document element is {found:?}, expected ListeBlancheMSSante")]
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
}

type XmlReader<'x> = Reader<&'x [u8]>;

fn syntax(reader: &XmlReader<'_>, message: impl std::fmt::Display) -> ParseError {
    ParseError::Syntax {
        position: reader.error_position(),
        message: message.to_string(),
    }
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// Reads the text content of the element just opened (`name`), skipping nested elements.
fn read_text(reader: &mut XmlReader<'_>, name: QName<'_>) -> Result<String, ParseError> {
    let mut text = String::new();
    loop {
        let position = reader.buffer_position();
        match reader.read_event().map_err(|e| syntax(reader, e))? {
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved =
                    c14n::resolve_reference(&r, position).map_err(|e| ParseError::Syntax {
                        position,
                        message: e.to_string(),
                    })?;
                text.push_str(&resolved);
            }
            Event::Start(start) => {
                reader
                    .read_to_end(start.name())
                    .map_err(|e| syntax(reader, e))?;
            }
            Event::End(end) if end.name() == name => return Ok(text),
            Event::Eof => return Err(syntax(reader, "document ends inside an element")),
            _ => {}
        }
    }
}

/// Skips the element just opened, recording it as unknown.
fn skip_unknown(
    reader: &mut XmlReader<'_>,
    name: QName<'_>,
    position: u64,
    warnings: &mut Vec<ParseWarning>,
) -> Result<(), ParseError> {
    warnings.push(ParseWarning {
        position,
        kind: WarningKind::UnknownElement {
            name: name.as_ref().to_string(),
        },
    });
    reader.read_to_end(name).map_err(|e| syntax(reader, e))?;
    Ok(())
}

/// Parses a whitelist document.
pub fn parse(xml: &str) -> Result<ParsedList, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut warnings = Vec::new();
    // Document element.
    let root_position;
    loop {
        let position = reader.buffer_position();
        match reader.read_event().map_err(|e| syntax(&reader, e))? {
            Event::Start(start) => {
                let name = start.name();
                if local(name.as_ref()) != "ListeBlancheMSSante" {
                    return Err(ParseError::UnexpectedRoot {
                        found: name.as_ref().to_string(),
                    });
                }
                root_position = position;
                break;
            }
            Event::Empty(start) => {
                let found = start.name().as_ref().to_string();
                if local(&found) == "ListeBlancheMSSante" {
                    return Err(ParseError::MissingElement {
                        element: "DateDeGeneration",
                        parent: "ListeBlancheMSSante",
                        position,
                    });
                }
                return Err(ParseError::UnexpectedRoot { found });
            }
            Event::DocType(_) => {
                return Err(ParseError::Syntax {
                    position,
                    message: "DOCTYPE is not accepted".to_string(),
                })
            }
            Event::Eof => {
                return Err(ParseError::UnexpectedRoot {
                    found: String::new(),
                })
            }
            _ => {}
        }
    }

    let mut generated: Option<OffsetDateTime> = None;
    let mut entries: Option<Vec<Entry>> = None;
    loop {
        let position = reader.buffer_position();
        match reader.read_event().map_err(|e| syntax(&reader, e))? {
            Event::Start(start) => match local(start.name().as_ref()) {
                "DateDeGeneration" if generated.is_some() => {
                    return Err(ParseError::DuplicateElement {
                        element: "DateDeGeneration",
                        position,
                    })
                }
                "ListeDomaines" if entries.is_some() => {
                    return Err(ParseError::DuplicateElement {
                        element: "ListeDomaines",
                        position,
                    })
                }
                "DateDeGeneration" => {
                    let value = read_text(&mut reader, start.name())?;
                    let date = OffsetDateTime::parse(value.trim(), &Rfc3339).map_err(|_| {
                        ParseError::BadGenerationDate {
                            value: value.clone(),
                            position,
                        }
                    })?;
                    generated = Some(date);
                }
                "ListeDomaines" => {
                    entries = Some(parse_domains(&mut reader, start.name(), &mut warnings)?)
                }
                // The signature is checked by `signature`, on the raw document.
                "Signature" => {
                    reader
                        .read_to_end(start.name())
                        .map_err(|e| syntax(&reader, e))?;
                }
                _ => skip_unknown(&mut reader, start.name(), position, &mut warnings)?,
            },
            Event::Empty(start) if local(start.name().as_ref()) == "ListeDomaines" => {
                if entries.is_some() {
                    return Err(ParseError::DuplicateElement {
                        element: "ListeDomaines",
                        position,
                    });
                }
                entries = Some(Vec::new())
            }
            Event::End(_) => break,
            Event::Eof => return Err(syntax(&reader, "document ends inside an element")),
            _ => {}
        }
    }
    // Nothing but comments, PIs and whitespace may follow; quick-xml checks the rest.
    loop {
        match reader.read_event().map_err(|e| syntax(&reader, e))? {
            Event::Eof => break,
            Event::Start(_) | Event::Empty(_) => {
                return Err(syntax(&reader, "content after the document element"))
            }
            _ => {}
        }
    }
    let missing = |element| ParseError::MissingElement {
        element,
        parent: "ListeBlancheMSSante",
        position: root_position,
    };
    Ok(ParsedList {
        generated: generated.ok_or_else(|| missing("DateDeGeneration"))?,
        entries: entries.ok_or_else(|| missing("ListeDomaines"))?,
        warnings,
    })
}

fn parse_domains(
    reader: &mut XmlReader<'_>,
    name: QName<'_>,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::with_capacity(8192);
    loop {
        let position = reader.buffer_position();
        match reader.read_event().map_err(|e| syntax(reader, e))? {
            Event::Start(start) if local(start.name().as_ref()) == "Domaine" => {
                if let Some(entry) = parse_entry(reader, start.name(), position, warnings)? {
                    entries.push(entry);
                }
            }
            Event::Empty(start) if local(start.name().as_ref()) == "Domaine" => {
                return Err(ParseError::MissingElement {
                    element: "Nom",
                    parent: "Domaine",
                    position,
                })
            }
            Event::Start(start) => skip_unknown(reader, start.name(), position, warnings)?,
            Event::End(end) if end.name() == name => return Ok(entries),
            Event::Eof => return Err(syntax(reader, "document ends inside ListeDomaines")),
            _ => {}
        }
    }
}

/// Parses one `Domaine`; `Ok(None)` when it is dropped with a warning.
fn parse_entry(
    reader: &mut XmlReader<'_>,
    name: QName<'_>,
    position: u64,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Option<Entry>, ParseError> {
    let mut nom = None;
    let mut dn = None;
    let mut description = String::new();
    let mut responsable = String::new();
    let mut support = String::new();
    let mut updated_text = String::new();
    loop {
        let child_position = reader.buffer_position();
        match reader.read_event().map_err(|e| syntax(reader, e))? {
            Event::Start(start) => {
                let field = match local(start.name().as_ref()) {
                    "Nom" => &mut nom,
                    "DNCertificatOperateur" => &mut dn,
                    "Description" => {
                        description = read_text(reader, start.name())?;
                        continue;
                    }
                    "ResponsableContact" => {
                        responsable = read_text(reader, start.name())?;
                        continue;
                    }
                    "SupportContact" => {
                        support = read_text(reader, start.name())?;
                        continue;
                    }
                    "DateMAJ" => {
                        updated_text = read_text(reader, start.name())?;
                        continue;
                    }
                    _ => {
                        skip_unknown(reader, start.name(), child_position, warnings)?;
                        continue;
                    }
                };
                *field = Some(read_text(reader, start.name())?);
            }
            Event::Empty(start) => match local(start.name().as_ref()) {
                "Nom" => nom = Some(String::new()),
                "DNCertificatOperateur" => dn = Some(String::new()),
                _ => {}
            },
            Event::End(end) if end.name() == name => break,
            Event::Eof => return Err(syntax(reader, "document ends inside Domaine")),
            _ => {}
        }
    }
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
    let parsed_dn = match SubjectDn::parse(&dn_text) {
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
        dn_key: parsed_dn.normalized_key(),
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
            parse("<ListeBlancheMSSante><ListeDomaines/></ListeBlancheMSSante>"),
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
        assert!(matches!(parse(&xml), Err(ParseError::Syntax { .. })));
        let truncated = &doc(&entry("a.fr", DN))[..200];
        assert!(matches!(parse(truncated), Err(ParseError::Syntax { .. })));
        assert!(parse("<!DOCTYPE x><ListeBlancheMSSante/>").is_err());
    }
}
