//! Exclusive XML canonicalisation (<http://www.w3.org/2001/10/xml-exc-c14n#>, without
//! comments) of a [`Document`] tree, limited to what the whitelist and its signature use.
//!
//! Per exc-c14n: only *visibly utilised* namespaces are rendered (the element's own
//! prefix or default namespace, and its attributes' prefixes), and only where the nearest
//! rendered ancestor does not already render the same binding; namespace declarations are
//! sorted by prefix and attributes by (namespace URI, local name); empty elements are
//! expanded; the XML declaration, comments and whitespace outside the document element
//! are dropped; text escapes `& < >` and `\r` (`&#xD;`); attribute values escape
//! `& < "` and `\t \n \r`. The document is canonicalised from the same tree the entries
//! are read from (see [`super::xml`]), with the enveloped signature left out by identity,
//! not by byte range.
pub use super::xml::XmlError as C14nError;
use super::xml::{lookup, Binding, Document, Element, Node, Ns, Pi};

/// Canonicalises the whole document, leaving out `exclude` (the enveloped-signature
/// transform's `Signature` element) where it occurs.
pub(crate) fn canonicalize_document(doc: &Document<'_>, exclude: Option<&Element<'_>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * 1024 * 1024);
    for node in &doc.prolog {
        if let Node::Pi(pi) = node {
            write_pi(pi, &mut out);
            out.push(b'\n');
        }
    }
    let mut rendered = Vec::new();
    write_element(doc, &doc.root, exclude, &mut rendered, &mut out);
    for node in &doc.epilog {
        if let Node::Pi(pi) = node {
            out.push(b'\n');
            write_pi(pi, &mut out);
        }
    }
    out
}

/// Canonicalises the subtree at `element` of `doc` (a document subset: `SignedInfo`). The
/// namespaces its ancestors declared are rendered where visibly utilised, which the
/// element's resolved names already say.
pub(crate) fn canonicalize_element(doc: &Document<'_>, element: &Element<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    write_element(doc, element, None, &mut Vec::new(), &mut out);
    out
}

/// Parses `xml` and canonicalises it whole (signing, and tests).
pub(crate) fn canonicalize(xml: &str) -> Result<Vec<u8>, C14nError> {
    Ok(canonicalize_document(&Document::parse(xml)?, None))
}

fn write_pi(pi: &Pi<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<?");
    out.extend_from_slice(pi.target.as_bytes());
    if !pi.content.is_empty() {
        out.push(b' ');
        out.extend_from_slice(pi.content.as_bytes());
    }
    out.extend_from_slice(b"?>");
}

/// `rendered` holds the bindings written by the output ancestors of `element`.
fn write_element(
    doc: &Document<'_>,
    element: &Element<'_>,
    exclude: Option<&Element<'_>>,
    rendered: &mut Vec<Binding>,
    out: &mut Vec<u8>,
) {
    let mark = rendered.len();
    // Visibly utilised: the element's own prefix, then its attributes' (never `xml`).
    let mut declarations: Vec<Binding> = Vec::new();
    let mut utilise = |prefix: &str, ns: Ns| {
        if declarations.iter().any(|(p, _)| p == prefix) {
            return;
        }
        let needs = if prefix.is_empty() {
            lookup(rendered, "").unwrap_or(Ns::NONE) != ns
        } else {
            lookup(rendered, prefix) != Some(ns)
        };
        if needs {
            declarations.push((prefix.to_string(), ns));
        }
    };
    utilise(element.prefix(), element.ns);
    for attribute in &element.attributes {
        let prefix = super::xml::prefix_of(&attribute.qname);
        if !prefix.is_empty() && prefix != "xml" {
            utilise(prefix, attribute.ns);
        }
    }
    declarations.sort_by(|a, b| a.0.cmp(&b.0));

    let mut attributes: Vec<_> = element.attributes.iter().collect();
    attributes.sort_by(|a, b| (doc.uri(a.ns), a.local()).cmp(&(doc.uri(b.ns), b.local())));

    out.push(b'<');
    out.extend_from_slice(element.qname.as_bytes());
    for (prefix, ns) in &declarations {
        let uri = doc.uri(*ns);
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
    for attribute in attributes {
        out.push(b' ');
        out.extend_from_slice(attribute.qname.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attribute(&attribute.value, out);
        out.push(b'"');
    }
    out.push(b'>');
    rendered.extend(declarations);
    for child in &element.children {
        match child {
            Node::Element(e) if exclude.is_some_and(|x| std::ptr::eq(x, e)) => {}
            Node::Element(e) => write_element(doc, e, exclude, rendered, out),
            Node::Text(text) => escape_text(&text.value, out),
            Node::Pi(pi) => write_pi(pi, out),
            Node::Comment { .. } => {}
        }
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(element.qname.as_bytes());
    out.push(b'>');
    rendered.truncate(mark);
}

fn escape_text(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let replacement = |b: u8| -> &'static [u8] {
        match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            _ => b"&#xD;",
        }
    };
    let mut from = 0;
    // A CR is left in text only by a character reference (`&#13;`): rare, so the common
    // case is a vectorised search for the three others.
    if memchr::memchr(b'\r', bytes).is_none() {
        for i in memchr::memchr3_iter(b'&', b'<', b'>', bytes) {
            out.extend_from_slice(bytes.get(from..i).unwrap_or_default());
            out.extend_from_slice(bytes.get(i).map_or(&[][..], |&b| replacement(b)));
            from = i + 1;
        }
    } else {
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(b, b'&' | b'<' | b'>' | b'\r') {
                out.extend_from_slice(bytes.get(from..i).unwrap_or_default());
                out.extend_from_slice(replacement(b));
                from = i + 1;
            }
        }
    }
    out.extend_from_slice(bytes.get(from..).unwrap_or_default());
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
        match canonicalize(xml) {
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
        let xml = format!(
            "<r xmlns:u='urn:unused'><Signature xmlns=\"{dsig}\"><SignedInfo><Reference URI=\"\"/></SignedInfo></Signature></r>"
        );
        let doc = Document::parse(&xml).expect("parses");
        let signature = doc.root.elements().next().expect("signature");
        let signed_info = signature.elements().next().expect("signed info");
        assert_eq!(
            String::from_utf8(canonicalize_element(&doc, signed_info)).expect("utf-8"),
            format!("<SignedInfo xmlns=\"{dsig}\"><Reference URI=\"\"></Reference></SignedInfo>")
        );
    }

    #[test]
    fn leaves_out_the_excluded_element_only() {
        let doc = Document::parse("<r>\n <a/><s><t/></s>\n</r>").expect("parses");
        let s = doc.root.elements().nth(1).expect("s");
        assert_eq!(
            String::from_utf8(canonicalize_document(&doc, Some(s))).expect("utf-8"),
            "<r>\n <a></a>\n</r>"
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
            canonicalize("<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>"),
            Err(C14nError::Doctype { .. })
        ));
        assert!(matches!(
            canonicalize("<a>&x;</a>"),
            Err(C14nError::UnknownEntity { .. })
        ));
        assert!(matches!(
            canonicalize("<p:a/>"),
            Err(C14nError::UndeclaredPrefix { .. })
        ));
        assert!(matches!(
            canonicalize("<a><b></a>"),
            Err(C14nError::Syntax { .. })
        ));
    }
}
