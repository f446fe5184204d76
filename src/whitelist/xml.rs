//! The liste blanche read once into a tree: the one view of the document that the
//! signature check canonicalises and digests, and that the entries are read from.
//!
//! Reading twice (a tag scanner to find the signature, a second parser for the entries)
//! lets the two disagree, and a forged list lives in that gap. Here [`Document::parse`]
//! builds the tree with namespaces resolved; [`super::signature`] locates the signature
//! in it structurally and canonicalises it with [`super::c14n`]; [`super::parse`] reads
//! the entries from the same tree.
//!
//! Strict where XML allows surprises: UTF-8 only (a byte-order mark is accepted), XML 1.0,
//! no DOCTYPE (no entity declarations, no default attributes), only the five predefined
//! entities and character references, characters outside XML's `Char` production refused,
//! duplicate attributes refused, undeclared prefixes refused, nesting bounded.
use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use quick_xml::XmlVersion;

use super::parse::LIST_NS;
use super::signature::DSIG_NS;

/// The XML namespace, implicitly bound to `xml`.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The deepest element nesting accepted: the list and its signature need 6 levels; the
/// bound keeps the recursive walks of the tree far from the stack's end on any input.
pub const MAX_DEPTH: usize = 32;

/// The UTF-8 byte-order mark.
const BOM: &str = "\u{feff}";

/// Why a document cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
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
    /// The XML declaration names another encoding or version.
    #[error("the XML declaration says {what} {found:?}; only UTF-8 XML 1.0 is accepted")]
    Declaration { what: &'static str, found: String },
    /// A character that XML 1.0 does not allow (control characters, U+FFFE, U+FFFF).
    #[error("character U+{code:04X} at byte {position} is not allowed in XML")]
    BadCharacter { code: u32, position: u64 },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {MAX_DEPTH} at byte {position}")]
    TooDeep { position: u64 },
}

/// A namespace URI, interned per document: comparing two is comparing two integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Ns(u32);

impl Ns {
    /// No namespace.
    pub const NONE: Ns = Ns(0);
    /// `http://www.w3.org/XML/1998/namespace`, bound to `xml`.
    pub const XML: Ns = Ns(1);
    /// The liste blanche's namespace.
    pub const LIST: Ns = Ns(2);
    /// XML Signature's namespace.
    pub const DSIG: Ns = Ns(3);
}

/// A namespace binding (prefix, namespace); the default namespace has the empty prefix.
pub(crate) type Binding = (String, Ns);

/// A node of the tree. Comments are kept as nodes so that a reader can tell where they
/// were (exclusive C14N without comments drops them).
#[derive(Debug)]
pub(crate) enum Node<'x> {
    Element(Element<'x>),
    /// Character data: text, CDATA and references, adjacent pieces merged, line ends
    /// normalised.
    Text(Text<'x>),
    Comment {
        position: u64,
    },
    Pi(Pi<'x>),
}

/// Character data.
#[derive(Debug)]
pub(crate) struct Text<'x> {
    pub value: Cow<'x, str>,
    /// Byte offset where it starts.
    pub position: u64,
}

/// A processing instruction.
#[derive(Debug)]
pub(crate) struct Pi<'x> {
    pub target: Cow<'x, str>,
    /// Content with leading whitespace removed (as C14N writes it).
    pub content: Cow<'x, str>,
    pub position: u64,
}

/// An attribute other than a namespace declaration.
#[derive(Debug)]
pub(crate) struct Attribute {
    /// Qualified name as written.
    pub qname: String,
    /// Namespace ([`Ns::NONE`] for an unprefixed attribute).
    pub ns: Ns,
    /// Value, normalised and with references resolved.
    pub value: String,
}

impl Attribute {
    pub fn local(&self) -> &str {
        local_of(&self.qname)
    }
}

/// An element.
#[derive(Debug)]
pub(crate) struct Element<'x> {
    /// Qualified name as written (borrowed from the document).
    pub qname: Cow<'x, str>,
    /// Where the local name starts in `qname` (after the prefix's colon, or 0).
    local_at: u32,
    /// Namespace of the element.
    pub ns: Ns,
    /// Attributes other than namespace declarations, in document order.
    pub attributes: Box<[Attribute]>,
    /// Boxed slices, not vectors: the list has 45,000 elements and 130,000 nodes, and the
    /// tree is built by moving nodes, so their size is load time.
    pub children: Box<[Node<'x>]>,
    /// Byte offset of the start tag.
    pub position: u64,
}

impl<'x> Element<'x> {
    /// Local name.
    pub fn local(&self) -> &str {
        self.qname.get(self.local_at as usize..).unwrap_or("")
    }

    /// Prefix (empty for none).
    pub fn prefix(&self) -> &str {
        self.qname
            .get(..(self.local_at as usize).saturating_sub(1))
            .unwrap_or("")
    }

    /// True when this element is `local` in namespace `ns`.
    pub fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local() == local
    }

    /// The unprefixed attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.qname == name)
            .map(|a| a.value.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element<'x>> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }
}

/// A parsed document.
#[derive(Debug)]
pub(crate) struct Document<'x> {
    /// Comments and processing instructions before the document element.
    pub prolog: Vec<Node<'x>>,
    pub root: Element<'x>,
    /// Comments and processing instructions after the document element.
    pub epilog: Vec<Node<'x>>,
    /// Namespace URIs by [`Ns`].
    namespaces: Vec<String>,
    /// How many elements are in the xmldsig namespace, and how many of those are
    /// `Signature`: the signature check's census, taken while parsing.
    pub dsig_elements: usize,
    pub dsig_signatures: usize,
}

pub(crate) fn local_of(qname: &str) -> &str {
    qname.split_once(':').map(|(_, l)| l).unwrap_or(qname)
}

pub(crate) fn prefix_of(qname: &str) -> &str {
    qname.split_once(':').map(|(p, _)| p).unwrap_or("")
}

/// The namespace bound to `prefix` by the innermost binding in `bindings` (in scope order).
pub(crate) fn lookup(bindings: &[Binding], prefix: &str) -> Option<Ns> {
    // Length first: most lookups are of the default namespace (the empty prefix).
    bindings
        .iter()
        .rev()
        .find(|(p, _)| p.len() == prefix.len() && (prefix.is_empty() || p == prefix))
        .map(|(_, ns)| *ns)
}

/// The namespace table of a document being parsed.
struct Interner(Vec<String>);

impl Interner {
    fn new() -> Self {
        Interner(vec![
            String::new(),
            XML_NS.to_string(),
            LIST_NS.to_string(),
            DSIG_NS.to_string(),
        ])
    }

    fn intern(&mut self, uri: String) -> Ns {
        match self.0.iter().position(|u| *u == uri) {
            Some(i) => Ns(i as u32),
            None => {
                self.0.push(uri);
                Ns((self.0.len() - 1) as u32)
            }
        }
    }
}

/// True when `text` is only XML white space (the `S` production: space, tab, CR, LF).
pub(crate) fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Refuses characters outside XML 1.0's `Char` production.
fn check_chars(text: &str, position: u64) -> Result<(), XmlError> {
    // The refused characters are the C0 controls but tab, LF and CR (one byte each in
    // UTF-8) and U+FFFE, U+FFFF (EF BF BE, EF BF BF): a text without those bytes, and
    // without 0xEF, needs no decoding.
    let suspect = |b: &u8| (*b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || *b == 0xef;
    if !text.as_bytes().iter().any(suspect) {
        return Ok(());
    }
    match text
        .chars()
        .find(|&c| matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
    {
        Some(c) => Err(XmlError::BadCharacter {
            code: u32::from(c),
            position,
        }),
        None => Ok(()),
    }
}

/// XML 1.0 `NameStartChar` (Namespaces in XML: no colon here, it is checked apart).
fn name_start(c: char) -> bool {
    matches!(c, 'A'..='Z' | '_' | 'a'..='z' | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}'
        | '\u{f8}'..='\u{2ff}' | '\u{370}'..='\u{37d}' | '\u{37f}'..='\u{1fff}'
        | '\u{200c}'..='\u{200d}' | '\u{2070}'..='\u{218f}' | '\u{2c00}'..='\u{2fef}'
        | '\u{3001}'..='\u{d7ff}' | '\u{f900}'..='\u{fdcf}' | '\u{fdf0}'..='\u{fffd}'
        | '\u{10000}'..='\u{effff}')
}

/// XML 1.0 `NameChar`, colon aside.
fn name_char(c: char) -> bool {
    name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{b7}' | '\u{300}'..='\u{36f}' | '\u{203f}'..='\u{2040}')
}

/// Checks a qualified name: `NCName` or `NCName:NCName`.
fn check_qname(qname: &str, position: u64) -> Result<(), XmlError> {
    let ncname = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(name_start) && chars.all(name_char)
    };
    let valid = match qname.split_once(':') {
        Some((prefix, local)) => ncname(prefix) && ncname(local),
        None => ncname(qname),
    };
    if valid {
        Ok(())
    } else {
        Err(XmlError::Syntax {
            position,
            message: format!("{qname:?} is not a valid XML name"),
        })
    }
}

/// Checks what quick-xml lets through in a start tag's attribute region: whitespace
/// between attributes, no `<` in a value.
fn check_attribute_syntax(tag: &[u8], position: u64) -> Result<(), XmlError> {
    let error = |message: &str| XmlError::Syntax {
        position,
        message: message.to_string(),
    };
    let mut quote: Option<u8> = None;
    let mut just_closed = false;
    for &b in tag {
        match quote {
            Some(q) if b == q => {
                quote = None;
                just_closed = true;
                continue;
            }
            Some(_) if b == b'<' => return Err(error("'<' in an attribute value")),
            Some(_) => {}
            None => {
                if just_closed && !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'/') {
                    return Err(error("attributes not separated by whitespace"));
                }
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                }
            }
        }
        just_closed = false;
    }
    Ok(())
}

/// Resolves a character reference or one of the five predefined entities.
fn resolve_reference(
    reference: &quick_xml::events::BytesRef<'_>,
    position: u64,
) -> Result<Cow<'static, str>, XmlError> {
    let unknown = || XmlError::UnknownEntity {
        name: reference.to_string(),
        position,
    };
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(ch)) => {
                let text = ch.to_string();
                check_chars(&text, position)?;
                Ok(Cow::Owned(text))
            }
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

/// The children of the open elements, each element's after the previous ones': when an
/// element ends, its children move out into a vector of exactly their number (one
/// allocation per element, none for growing).
struct Siblings<'x> {
    nodes: Vec<Node<'x>>,
}

impl<'x> Siblings<'x> {
    /// Appends character data to the children that start at `from`, merging it with a
    /// preceding text node.
    fn push_text(&mut self, from: usize, piece: Cow<'x, str>, position: u64) {
        if self.nodes.len() > from {
            if let Some(Node::Text(last)) = self.nodes.last_mut() {
                last.value.to_mut().push_str(&piece);
                return;
            }
        }
        self.nodes.push(Node::Text(Text {
            value: piece,
            position,
        }));
    }
}

/// An element whose end tag has not been read yet.
struct Open<'x> {
    element: Element<'x>,
    /// Length of the namespace scope before its declarations.
    scope: usize,
    /// Where its children start in [`Siblings`].
    children: usize,
}

impl<'x> Document<'x> {
    /// The URI of an interned namespace.
    pub fn uri(&self, ns: Ns) -> &str {
        self.namespaces
            .get(ns.0 as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Parses `xml` (a byte-order mark is skipped; positions count from after it).
    pub fn parse(xml: &'x str) -> Result<Document<'x>, XmlError> {
        let xml = xml.strip_prefix(BOM).unwrap_or(xml);
        let mut reader = Reader::from_str(xml);
        reader.config_mut().check_comments = true;
        let mut in_scope: Vec<Binding> = Vec::new();
        let mut stack: Vec<Open<'x>> = Vec::with_capacity(MAX_DEPTH);
        let mut siblings = Siblings {
            nodes: Vec::with_capacity(64),
        };
        let mut prolog = Vec::new();
        let mut epilog = Vec::new();
        let mut root: Option<Element<'x>> = None;
        let mut first = true;
        let mut names = Interner::new();
        let (mut dsig_elements, mut dsig_signatures) = (0, 0);
        loop {
            let position = reader.buffer_position();
            let event = reader.read_event().map_err(|e| XmlError::Syntax {
                position: reader.error_position(),
                message: e.to_string(),
            })?;
            let at_start = std::mem::replace(&mut first, false);
            let syntax = |message: &str| XmlError::Syntax {
                position,
                message: message.to_string(),
            };
            match event {
                Event::Decl(decl) => {
                    if !at_start {
                        return Err(syntax("XML declaration not at the start"));
                    }
                    let version = decl.version().map_err(|e| syntax(&e.to_string()))?;
                    if &*version != "1.0" {
                        return Err(XmlError::Declaration {
                            what: "version",
                            found: version.into_owned(),
                        });
                    }
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding.map_err(|e| syntax(&e.to_string()))?;
                        let encoding = encoding.into_owned();
                        if !encoding.eq_ignore_ascii_case("UTF-8") {
                            return Err(XmlError::Declaration {
                                what: "encoding",
                                found: encoding,
                            });
                        }
                    }
                }
                Event::Start(_) | Event::Empty(_) if root.is_some() => {
                    return Err(syntax("content after the document element"));
                }
                Event::Start(start) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep { position });
                    }
                    let scope = in_scope.len();
                    let element = element(xml, &start, &mut in_scope, &mut names, position)?;
                    count_dsig(&element, &mut dsig_elements, &mut dsig_signatures);
                    stack.push(Open {
                        element,
                        scope,
                        children: siblings.nodes.len(),
                    });
                }
                Event::Empty(start) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep { position });
                    }
                    let scope = in_scope.len();
                    let element = element(xml, &start, &mut in_scope, &mut names, position)?;
                    count_dsig(&element, &mut dsig_elements, &mut dsig_signatures);
                    in_scope.truncate(scope);
                    if stack.is_empty() {
                        root = Some(element);
                    } else {
                        siblings.nodes.push(Node::Element(element));
                    }
                }
                Event::End(_) => {
                    let Some(mut open) = stack.pop() else {
                        return Err(syntax("unbalanced end tag"));
                    };
                    in_scope.truncate(open.scope);
                    open.element.children =
                        siblings.nodes.split_off(open.children).into_boxed_slice();
                    if stack.is_empty() {
                        root = Some(open.element);
                    } else {
                        siblings.nodes.push(Node::Element(open.element));
                    }
                }
                Event::Text(text) => {
                    if text.contains("]]>") {
                        return Err(syntax("']]>' in text"));
                    }
                    let value = text.xml10_content();
                    check_chars(&value, position)?;
                    match stack.last() {
                        Some(open) => siblings.push_text(open.children, value, position),
                        None if is_blank(&value) => {}
                        None => return Err(syntax("text outside the document element")),
                    }
                }
                Event::CData(data) => {
                    let value = data.xml10_content();
                    check_chars(&value, position)?;
                    match stack.last() {
                        Some(open) => siblings.push_text(open.children, value, position),
                        None => return Err(syntax("CDATA outside the document element")),
                    }
                }
                Event::GeneralRef(reference) => {
                    let value = resolve_reference(&reference, position)?;
                    match stack.last() {
                        Some(open) => siblings.push_text(open.children, value, position),
                        None => return Err(syntax("reference outside the document element")),
                    }
                }
                Event::Comment(comment) => {
                    check_chars(&comment.xml10_content(), position)?;
                    let node = Node::Comment { position };
                    match (stack.is_empty(), &root) {
                        (false, _) => siblings.nodes.push(node),
                        (true, None) => prolog.push(node),
                        (true, Some(_)) => epilog.push(node),
                    }
                }
                Event::PI(pi) => {
                    let target = pi.target();
                    if target.eq_ignore_ascii_case("xml") {
                        return Err(syntax("processing instruction named xml"));
                    }
                    let content = pi.content();
                    check_chars(content, position)?;
                    let node = Node::Pi(Pi {
                        target: Cow::Owned(target.to_string()),
                        content: Cow::Owned(content.trim_start().to_string()),
                        position,
                    });
                    match (stack.is_empty(), &root) {
                        (false, _) => siblings.nodes.push(node),
                        (true, None) => prolog.push(node),
                        (true, Some(_)) => epilog.push(node),
                    }
                }
                Event::DocType(_) => return Err(XmlError::Doctype { position }),
                Event::Eof => {
                    if !stack.is_empty() {
                        return Err(syntax("document ends inside an element"));
                    }
                    let root = root.ok_or_else(|| syntax("no document element"))?;
                    return Ok(Document {
                        prolog,
                        root,
                        epilog,
                        namespaces: names.0,
                        dsig_elements,
                        dsig_signatures,
                    });
                }
            }
        }
    }
}

fn count_dsig(element: &Element<'_>, elements: &mut usize, signatures: &mut usize) {
    if element.ns == Ns::DSIG {
        *elements += 1;
        if element.local() == "Signature" {
            *signatures += 1;
        }
    }
}

/// Builds an element from its start tag at `position` in `xml`, pushing its declarations
/// onto `in_scope`.
fn element<'x>(
    xml: &'x str,
    start: &BytesStart<'_>,
    in_scope: &mut Vec<Binding>,
    names: &mut Interner,
    position: u64,
) -> Result<Element<'x>, XmlError> {
    let syntax = |message: String| XmlError::Syntax { position, message };
    let name = start.name();
    let name = name.as_ref();
    // The name as it stands in the document, right after `<`: no copy.
    let at = usize::try_from(position)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let qname = match xml.get(at..at.saturating_add(name.len())) {
        Some(written) if written == name => Cow::Borrowed(written),
        _ => Cow::Owned(name.to_string()),
    };
    check_qname(&qname, position)?;
    check_attribute_syntax(start.attributes_raw().as_bytes(), position)?;
    let local_at = qname.find(':').map(|i| i + 1).unwrap_or(0);
    let local_at = u32::try_from(local_at).map_err(|_| syntax("name too long".to_string()))?;
    let mut raw: Vec<(String, String)> = Vec::new();
    for attribute in start.attributes().with_checks(true) {
        let attribute = attribute.map_err(|e| syntax(e.to_string()))?;
        let key = attribute.key.as_ref();
        check_qname(key, position)?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| syntax(format!("attribute {key}: {e}")))?
            .into_owned();
        check_chars(&value, position)?;
        if key == "xmlns" {
            let ns = names.intern(value);
            in_scope.push((String::new(), ns));
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(syntax(format!("prefix {prefix:?} bound to no namespace")));
            }
            if prefix == "xml" || prefix == "xmlns" {
                return Err(syntax(format!("prefix {prefix:?} cannot be declared")));
            }
            let ns = names.intern(value);
            in_scope.push((prefix.to_string(), ns));
        } else {
            raw.push((key.to_string(), value));
        }
    }
    let resolve = |prefix: &str| -> Result<Ns, XmlError> {
        if prefix == "xml" {
            return Ok(Ns::XML);
        }
        match lookup(in_scope, prefix) {
            Some(ns) => Ok(ns),
            None if prefix.is_empty() => Ok(Ns::NONE),
            None => Err(XmlError::UndeclaredPrefix {
                prefix: prefix.to_string(),
                position,
            }),
        }
    };
    let ns = resolve(
        qname
            .get(..(local_at as usize).saturating_sub(1))
            .unwrap_or(""),
    )?;
    let mut attributes = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let ns = if key.contains(':') {
            resolve(prefix_of(&key))?
        } else {
            Ns::NONE
        };
        // Two attributes with different prefixes bound to one namespace are the same
        // attribute in the namespace-aware view.
        if ns != Ns::NONE
            && attributes
                .iter()
                .any(|a: &Attribute| a.ns == ns && a.local() == local_of(&key))
        {
            return Err(syntax(format!("duplicate attribute {key}")));
        }
        attributes.push(Attribute {
            qname: key,
            ns,
            value,
        });
    }
    Ok(Element {
        qname,
        local_at,
        ns,
        attributes: attributes.into_boxed_slice(),
        children: Box::default(),
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_tree_with_namespaces_resolved() {
        let doc = Document::parse(
            "<?xml version='1.0' encoding='utf-8'?><!--c--><r xmlns='urn:d' xmlns:p='urn:p'>\
             a&amp;<![CDATA[<b>]]>&#233;<p:c p:x='1' y='2'/><?pi  z?></r>",
        )
        .expect("parses");
        assert_eq!(doc.prolog.len(), 1);
        assert_eq!(doc.uri(doc.root.ns), "urn:d");
        let Node::Text(text) = &doc.root.children[0] else {
            panic!("text first")
        };
        assert_eq!(text.value, "a&<b>\u{e9}");
        let child = doc.root.elements().next().expect("child");
        assert_eq!(doc.uri(child.ns), "urn:p");
        assert_eq!(child.local(), "c");
        assert_eq!(child.prefix(), "p");
        assert_eq!(child.attributes[0].ns, child.ns);
        assert_eq!(child.attribute("y"), Some("2"));
        assert!(matches!(&doc.root.children[2], Node::Pi(pi) if pi.content == "z"));
    }

    #[test]
    fn characters_near_the_refused_ones_are_accepted() {
        // Same lead byte as U+FFFE / U+FFFF, or next to the refused controls.
        for text in [
            "\u{f000}",
            "\u{fffd}",
            "\u{efff}",
            "\t\n",
            "\u{7f}\u{80}",
            " ",
        ] {
            let xml = format!("<r a='{text}'>{text}</r>");
            assert!(Document::parse(&xml).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let doc = Document::parse("\u{feff}<?xml version=\"1.0\"?><r/>").expect("parses");
        assert_eq!(doc.root.qname, "r");
    }

    #[test]
    fn refuses_what_the_list_never_needs() {
        let refused = [
            "<?xml version='1.0' encoding='ISO-8859-1'?><r/>",
            "<?xml version='1.1'?><r/>",
            "<r/><?xml version='1.0'?>",
            "<!DOCTYPE r [<!ENTITY x 'y'>]><r>&x;</r>",
            "<r>&x;</r>",
            "<r>\u{1}</r>",
            "<r>&#1;</r>",
            "<r a='1' a='2'/>",
            "<r xmlns:p='urn:a' xmlns:q='urn:a' p:a='1' q:a='2'/>",
            "<p:r/>",
            "<r/><s/>",
            "<r/>text",
            "<r><!-- a -- b --></r>",
            "<r></s>",
            "<r>",
            "",
            "<r xmlns:p=''/>",
            "<r a='<'/>",
            "<r a='1'b='2'/>",
            "<1r/>",
            "<r:a:b xmlns:r='u'/>",
            "<r\u{0}/>",
            "<r 1a='x'/>",
            "<r>]]></r>",
            "<r>\u{fffe}</r>",
            "<r>a\u{ffff}</r>",
            "<r a='\u{fffe}'/>",
            "<r>\u{1f}</r>",
            "<r><!--\u{ffff}--></r>",
        ];
        for xml in refused {
            assert!(Document::parse(xml).is_err(), "{xml:?}");
        }
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(
            Document::parse(&deep),
            Err(XmlError::TooDeep { .. })
        ));
    }
}
