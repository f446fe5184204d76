//! Exclusive XML canonicalisation (<http://www.w3.org/2001/10/xml-exc-c14n#>, without
//! comments), limited to what the whitelist and its signature use.
//!
//! Supported: elements, attributes, namespace declarations (default and prefixed), text,
//! CDATA (rendered as text), character references and the five predefined entities,
//! processing instructions. Per exc-c14n: only *visibly utilised* namespaces are rendered
//! (the element's own prefix or default namespace, and its attributes' prefixes), and only
//! where the nearest rendered ancestor does not already render the same binding;
//! namespace declarations are sorted by prefix and attributes by (namespace URI, local
//! name); empty elements are expanded; the XML declaration, comments and whitespace
//! outside the document element are dropped; text escapes `& < >` and `\r` (`&#xD;`);
//! attribute values escape `& < "` and `\t \n \r`.
//!
//! Refused: a DOCTYPE (it could declare entities or default attributes that we do not
//! expand, and is an entity-expansion attack surface), undeclared prefixes, unknown
//! entities, and an `InclusiveNamespaces` prefix list (not used by the list).
use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;
use quick_xml::XmlVersion;

/// The XML namespace, implicitly bound to `xml` and never declared in the output.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Why canonicalisation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C14nError {
    /// The input is not well-formed XML.
    #[error("XML syntax error at byte {position}: {message}")]
    Syntax { position: u64, message: String },
    /// A DOCTYPE is present; the list never has one.
    #[error("DOCTYPE at byte {position} is not accepted")]
    Doctype { position: u64 },
    /// A prefix is used without a declaration in scope.
    #[error("undeclared namespace prefix {prefix:?} at byte {position}")]
    UndeclaredPrefix { prefix: String, position: u64 },
    /// An entity other than the five predefined ones.
    #[error("unknown entity &{name}; at byte {position}")]
    UnknownEntity { name: String, position: u64 },
}

/// A namespace binding (prefix, URI); the default namespace has the empty prefix.
pub(crate) type Binding = (String, String);

/// Canonicalises the whole document `xml` (a well-formed XML document, or a fragment
/// holding one element) into bytes. `inherited` are the namespace bindings in scope at the
/// fragment's apex (from ancestors that are not part of the output): exc-c14n renders them
/// only where visibly utilised.
pub(crate) fn canonicalize(xml: &str, inherited: &[Binding]) -> Result<Vec<u8>, C14nError> {
    let mut out = Vec::with_capacity(xml.len());
    canonicalize_into(xml, inherited, &mut out)?;
    Ok(out)
}

/// Namespace bookkeeping: `in_scope` grows with declarations, `rendered` with what we wrote;
/// `marks` remembers the lengths to restore at each end tag.
struct NsState {
    in_scope: Vec<Binding>,
    rendered: Vec<Binding>,
    marks: Vec<(usize, usize)>,
}

impl NsState {
    fn lookup<'a>(list: &'a [Binding], prefix: &str) -> Option<&'a str> {
        list.iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    }
}

fn canonicalize_into(xml: &str, inherited: &[Binding], out: &mut Vec<u8>) -> Result<(), C14nError> {
    let mut reader = Reader::from_str(xml);
    let mut ns = NsState {
        in_scope: inherited.to_vec(),
        rendered: Vec::new(),
        marks: Vec::new(),
    };
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|e| C14nError::Syntax {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(start) => {
                write_start(&start, &mut ns, out, position)?;
                depth += 1;
                seen_root = true;
            }
            Event::Empty(start) => {
                write_start(&start, &mut ns, out, position)?;
                write_end(start.name().as_ref(), &mut ns, out);
                seen_root = true;
            }
            Event::End(end) => {
                write_end(end.name().as_ref(), &mut ns, out);
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) if depth > 0 => escape_text(&text.xml10_content(), out),
            Event::CData(data) if depth > 0 => escape_text(&data.xml10_content(), out),
            Event::GeneralRef(reference) if depth > 0 => {
                let resolved = resolve_reference(&reference, position)?;
                escape_text(&resolved, out);
            }
            Event::PI(pi) => {
                if depth == 0 && seen_root {
                    out.push(b'\n');
                }
                out.extend_from_slice(b"<?");
                out.extend_from_slice(pi.target().as_bytes());
                let content = pi.content().trim_start();
                if !content.is_empty() {
                    out.push(b' ');
                    out.extend_from_slice(content.as_bytes());
                }
                out.extend_from_slice(b"?>");
                if depth == 0 && !seen_root {
                    out.push(b'\n');
                }
            }
            Event::DocType(_) => return Err(C14nError::Doctype { position }),
            Event::Eof if depth > 0 => {
                return Err(C14nError::Syntax {
                    position,
                    message: "document ends inside an element".to_string(),
                })
            }
            Event::Eof => return Ok(()),
            // Declaration, comments, and text or references outside the document element.
            _ => {}
        }
    }
}

/// Resolves a character reference or one of the five predefined entities.
pub(crate) fn resolve_reference(
    reference: &BytesRef<'_>,
    position: u64,
) -> Result<Cow<'static, str>, C14nError> {
    let unknown = || C14nError::UnknownEntity {
        name: reference.to_string(),
        position,
    };
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(ch)) => Ok(Cow::Owned(ch.to_string())),
            _ => Err(unknown()),
        };
    }
    let text = match &**reference {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => return Err(unknown()),
    };
    Ok(Cow::Borrowed(text))
}

fn prefix_of(qname: &str) -> &str {
    qname.split_once(':').map(|(p, _)| p).unwrap_or("")
}

fn local_of(qname: &str) -> &str {
    qname.split_once(':').map(|(_, l)| l).unwrap_or(qname)
}

fn write_start(
    start: &BytesStart<'_>,
    ns: &mut NsState,
    out: &mut Vec<u8>,
    position: u64,
) -> Result<(), C14nError> {
    ns.marks.push((ns.in_scope.len(), ns.rendered.len()));
    let syntax = |message: String| C14nError::Syntax { position, message };
    let mut attributes: Vec<(String, String)> = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| syntax(e.to_string()))?;
        let key = attribute.key.as_ref();
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| syntax(e.to_string()))?;
        if key == "xmlns" {
            ns.in_scope.push((String::new(), value.into_owned()));
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            ns.in_scope.push((prefix.to_string(), value.into_owned()));
        } else {
            attributes.push((key.to_string(), value.into_owned()));
        }
    }

    // Visibly utilised prefixes: the element's own, then its attributes' (never `xml`).
    let name = start.name();
    let qname = name.as_ref();
    let mut utilised: Vec<&str> = vec![prefix_of(qname)];
    for (key, _) in &attributes {
        if key.contains(':') {
            let prefix = prefix_of(key);
            if prefix != "xml" && !utilised.contains(&prefix) {
                utilised.push(prefix);
            }
        }
    }
    let mut declarations: Vec<Binding> = Vec::new();
    for prefix in utilised {
        let uri = match NsState::lookup(&ns.in_scope, prefix) {
            Some(uri) => uri,
            None if prefix.is_empty() => "",
            None => {
                return Err(C14nError::UndeclaredPrefix {
                    prefix: prefix.to_string(),
                    position,
                })
            }
        };
        let already = NsState::lookup(&ns.rendered, prefix).unwrap_or("");
        let needs = if prefix.is_empty() {
            already != uri
        } else {
            NsState::lookup(&ns.rendered, prefix) != Some(uri)
        };
        if needs {
            declarations.push((prefix.to_string(), uri.to_string()));
        }
    }
    declarations.sort();

    // Attributes sorted by (namespace URI, local name); unqualified ones have no namespace.
    let mut sorted: Vec<(String, &str, &str, &str)> = Vec::with_capacity(attributes.len());
    for (key, value) in &attributes {
        let uri = if key.contains(':') {
            let prefix = prefix_of(key);
            if prefix == "xml" {
                XML_NS.to_string()
            } else {
                NsState::lookup(&ns.in_scope, prefix)
                    .ok_or_else(|| C14nError::UndeclaredPrefix {
                        prefix: prefix.to_string(),
                        position,
                    })?
                    .to_string()
            }
        } else {
            String::new()
        };
        sorted.push((uri, local_of(key), key, value));
    }
    sorted.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));

    out.push(b'<');
    out.extend_from_slice(qname.as_bytes());
    for (prefix, uri) in &declarations {
        if prefix.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attribute(uri, out);
        out.push(b'"');
    }
    for (_, _, key, value) in &sorted {
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attribute(value, out);
        out.push(b'"');
    }
    out.push(b'>');
    ns.rendered.extend(declarations);
    Ok(())
}

fn write_end(qname: &str, ns: &mut NsState, out: &mut Vec<u8>) {
    out.extend_from_slice(b"</");
    out.extend_from_slice(qname.as_bytes());
    out.push(b'>');
    if let Some((scope, rendered)) = ns.marks.pop() {
        ns.in_scope.truncate(scope);
        ns.rendered.truncate(rendered);
    }
}

fn escape_text(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let replacement: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(replacement);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

fn escape_attribute(value: &str, out: &mut Vec<u8>) {
    for &b in value.as_bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\t' => out.extend_from_slice(b"&#x9;"),
            b'\n' => out.extend_from_slice(b"&#xA;"),
            b'\r' => out.extend_from_slice(b"&#xD;"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        c14n_in(xml, &[])
    }

    fn c14n_in(xml: &str, inherited: &[Binding]) -> String {
        match canonicalize(xml, inherited) {
            Ok(bytes) => String::from_utf8(bytes).expect("utf-8"),
            Err(e) => panic!("{xml:?}: {e}"),
        }
    }

    #[test]
    fn drops_declaration_and_comments_and_expands_empty_elements() {
        assert_eq!(
            c14n("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c --><a><!-- d --><b/></a>\n"),
            "<a><b></b></a>"
        );
    }

    #[test]
    fn escapes_text_and_resolves_references() {
        assert_eq!(
            c14n("<a>x &amp; y &lt; z &gt; &quot;q&quot; &apos; &#233; &#xE9; &#13;</a>"),
            "<a>x &amp; y &lt; z &gt; \"q\" ' é é &#xD;</a>"
        );
        assert_eq!(c14n("<a><![CDATA[<&>]]></a>"), "<a>&lt;&amp;&gt;</a>");
    }

    #[test]
    fn normalises_literal_line_ends_in_text() {
        assert_eq!(c14n("<a>1\r\n2\r3\n</a>"), "<a>1\n2\n3\n</a>");
    }

    #[test]
    fn sorts_and_escapes_attributes() {
        assert_eq!(
            c14n("<a z='1' b=\"&quot;&lt;&amp;>\" a='x&#9;y&#10;z&#13;'/>"),
            "<a a=\"x&#x9;y&#xA;z&#xD;\" b=\"&quot;&lt;&amp;>\" z=\"1\"></a>"
        );
        // Literal whitespace in attribute values is normalised to spaces first.
        assert_eq!(c14n("<a b='x\ny'/>"), "<a b=\"x y\"></a>");
        // Namespaced attributes sort by namespace URI, after unqualified ones.
        assert_eq!(
            c14n("<a xmlns:z='urn:a' xmlns:y='urn:b' y:k='1' z:k='2' k='3'/>"),
            "<a xmlns:y=\"urn:b\" xmlns:z=\"urn:a\" k=\"3\" z:k=\"2\" y:k=\"1\"></a>"
        );
    }

    #[test]
    fn renders_only_visibly_utilised_namespaces_once() {
        assert_eq!(
            c14n("<r xmlns='urn:d' xmlns:u='urn:unused'><c><d/></c></r>"),
            "<r xmlns=\"urn:d\"><c><d></d></c></r>"
        );
        assert_eq!(
            c14n("<p:r xmlns:p='urn:p' xmlns:q='urn:q'><q:c/><p:c/></p:r>"),
            "<p:r xmlns:p=\"urn:p\"><q:c xmlns:q=\"urn:q\"></q:c><p:c></p:c></p:r>"
        );
    }

    #[test]
    fn undeclares_the_default_namespace_when_a_child_leaves_it() {
        assert_eq!(
            c14n("<r xmlns='urn:d'><c xmlns=''/></r>"),
            "<r xmlns=\"urn:d\"><c xmlns=\"\"></c></r>"
        );
        // No xmlns="" where nothing was rendered.
        assert_eq!(c14n("<r><c xmlns=''/></r>"), "<r><c></c></r>");
    }

    #[test]
    fn a_redeclared_namespace_is_rendered_where_it_changes() {
        assert_eq!(
            c14n("<r xmlns='urn:a'><s xmlns='urn:b'><t/></s><u xmlns='urn:a'/></r>"),
            "<r xmlns=\"urn:a\"><s xmlns=\"urn:b\"><t></t></s><u></u></r>"
        );
    }

    #[test]
    fn renders_inherited_namespace_at_the_apex_of_a_subtree() {
        let dsig = "http://www.w3.org/2000/09/xmldsig#";
        assert_eq!(
            c14n_in(
                "<SignedInfo><Reference URI=\"\"/></SignedInfo>",
                &[(String::new(), dsig.to_string())]
            ),
            format!("<SignedInfo xmlns=\"{dsig}\"><Reference URI=\"\"></Reference></SignedInfo>")
        );
    }

    #[test]
    fn drops_whitespace_outside_the_document_element_but_keeps_it_inside() {
        assert_eq!(
            c14n("\n<a>\n  <b> x </b>\n</a>\n"),
            "<a>\n  <b> x </b>\n</a>"
        );
    }

    #[test]
    fn keeps_processing_instructions() {
        assert_eq!(
            c14n("<?pi a?><a><?p   x?></a><?q?>"),
            "<?pi a?>\n<a><?p x?></a>\n<?q?>"
        );
    }

    #[test]
    fn refuses_doctype_unknown_entities_and_undeclared_prefixes() {
        assert!(matches!(
            canonicalize("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", &[]),
            Err(C14nError::Doctype { .. })
        ));
        assert!(matches!(
            canonicalize("<a>&x;</a>", &[]),
            Err(C14nError::UnknownEntity { .. })
        ));
        assert!(matches!(
            canonicalize("<p:a/>", &[]),
            Err(C14nError::UndeclaredPrefix { .. })
        ));
        assert!(matches!(
            canonicalize("<a><b></a>", &[]),
            Err(C14nError::Syntax { .. })
        ));
    }
}
