//! The whitelist's enveloped XML signature: verification and (for test lists) signing.
//!
//! ANS signs the list with exactly one profile, which is the only one accepted here, and
//! it is checked on the document's structure (the tree of [`super::xml`]), never by
//! scanning for tag names:
//! - the document element is `ListeBlancheMSSante` in the list's namespace;
//! - exactly one `Signature` (namespace `http://www.w3.org/2000/09/xmldsig#`), the
//!   document element's last element child, with only whitespace or comments after it;
//!   no other xmldsig element anywhere else;
//! - `Signature` holds exactly `SignedInfo`, `SignatureValue`, `KeyInfo` in that order;
//!   `SignedInfo` exactly `CanonicalizationMethod`, `SignatureMethod`, `Reference`; the
//!   `Reference` exactly `Transforms`, `DigestMethod`, `DigestValue`; no other element,
//!   attribute (`Id` aside), text or processing instruction anywhere in it;
//! - `SignedInfo` is canonicalised with exclusive C14N without comments and signed with
//!   RSA PKCS#1 v1.5 SHA-256 (`xmldsig-more#rsa-sha256`);
//! - exactly one `Reference`, `URI=""` (the whole document), transforms
//!   `enveloped-signature` then exclusive C14N, digest SHA-256 (`xmlenc#sha256`);
//! - `KeyInfo/X509Data/X509Certificate` carries the signer's leaf certificate only.
//!
//! The digest value, method, URI and transforms are read only from the `Reference` of the
//! `SignedInfo` whose signature is checked. Verification recomputes the digest of the
//! document tree without that one `Signature` element (left out by identity),
//! checks the `SignatureValue` with the leaf's key, checks the signer's identity (CN and O)
//! and, unless explicitly skipped, builds a path from the leaf to the configured IGC Santé
//! anchors with webpki at a caller-given time.
use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::Reader;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;

use super::c14n;
use super::parse::LIST_NS;
use super::xml::{is_blank, Document, Element, Node, Ns, XmlError};
use crate::trust::dn::{normalize_value, SubjectDn};

/// XML Signature namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Exclusive canonicalisation without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// RSA PKCS#1 v1.5 with SHA-256.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// SHA-256 digest.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// Enveloped-signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Who must have signed the list: compared, normalised as in [`crate::trust::dn`], with
/// the signer certificate's subject CN and O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerIdentity {
    /// Expected subject CN.
    pub cn: String,
    /// Expected subject O.
    pub o: String,
}

impl SignerIdentity {
    /// The production signer as of 2025 (certificate valid until 2026-08-23): when ANS
    /// renews it under another name, configuration must say so.
    pub fn production() -> Self {
        SignerIdentity {
            cn: "alb.mssante.fr".to_string(),
            o: "CAPGEMINI TECHNOLOGY SERVICES".to_string(),
        }
    }

    fn matches(&self, subject: &SubjectDn) -> bool {
        let same = |want: &str, got: &Option<String>| {
            got.as_deref()
                .is_some_and(|got| normalize_value(got) == normalize_value(want))
        };
        same(&self.cn, &subject.cn) && same(&self.o, &subject.o)
    }
}

/// How the signer certificate is tied to the trust anchors.
#[derive(Clone, Debug)]
pub enum ChainCheck<'a> {
    /// Build a path from the signer's certificate to one of `anchors` (through
    /// `intermediates`) valid at `time`. Any extended key usage is accepted: the real
    /// signer's certificate carries `emailProtection` only.
    Verify {
        /// The espace's IGC Santé roots (never mix test and production).
        anchors: &'a [TrustAnchor<'a>],
        /// Intermediate CAs, e.g. `AC IGC-SANTE ELEMENTAIRE ORGANISATIONS`.
        intermediates: &'a [CertificateDer<'a>],
        /// Validation time: a parameter so that a list can be checked as of its date and
        /// tests do not depend on the clock.
        time: UnixTime,
    },
    /// Do not check the chain. Only for inspecting a list offline when the IGC Santé root
    /// is not at hand (the repository's tests of the real production file do this): the
    /// digest, signature value and signer identity are still checked, but anyone could
    /// have made such a certificate.
    SkipInsecure,
}

/// Everything verification needs besides the document.
#[derive(Clone, Debug)]
pub struct VerifyOptions<'a> {
    /// Chain policy.
    pub chain: ChainCheck<'a>,
    /// Expected signer.
    pub signer: SignerIdentity,
}

impl<'a> VerifyOptions<'a> {
    /// Full verification against `anchors` at `time`, expecting the production signer.
    pub fn new(
        anchors: &'a [TrustAnchor<'a>],
        intermediates: &'a [CertificateDer<'a>],
        time: UnixTime,
    ) -> Self {
        VerifyOptions {
            chain: ChainCheck::Verify {
                anchors,
                intermediates,
                time,
            },
            signer: SignerIdentity::production(),
        }
    }
}

/// What is known of the signer once the signature is verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// Subject of the signer certificate.
    pub subject: SubjectDn,
    /// Issuer of the signer certificate, RFC 4514 text.
    pub issuer: String,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// End of the signer certificate's validity: when ANS must have switched signer.
    pub not_after: OffsetDateTime,
    /// False when verified with [`ChainCheck::SkipInsecure`].
    pub chain_verified: bool,
    /// The certificate as found in `KeyInfo`.
    pub certificate_der: Vec<u8>,
}

impl std::fmt::Debug for SignerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerInfo")
            .field("subject", &self.subject.to_string())
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("chain_verified", &self.chain_verified)
            .field("certificate_der_len", &self.certificate_der.len())
            .finish()
    }
}

/// Why a signature was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Signature` element in the xmldsig namespace.
    #[error("the document has no XML signature")]
    MissingSignature,
    /// More than one `Signature` element.
    #[error("the document has more than one XML signature")]
    MultipleSignatures,
    /// `Signature` is not a child of the document element.
    #[error("the signature at byte {position} is not a child of the document element")]
    NotEnveloped { position: u64 },
    /// A required signature element is absent (`SignedInfo`, `DigestValue`...).
    #[error("the signature has no {element}")]
    MissingElement { element: &'static str },
    /// An algorithm, transform list or reference outside the profile described above.
    #[error("unsupported {what}: {found:?}")]
    Unsupported { what: &'static str, found: String },
    /// Base64 that does not decode.
    #[error("{element} is not valid base64")]
    BadBase64 { element: &'static str },
    /// The document is not well-formed, or uses what this reader refuses.
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// An element, attribute or text out of the signed profile's place.
    #[error("{path}: {problem}")]
    Profile {
        /// Where: the element concerned.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The document was modified after signing.
    #[error("digest mismatch: signed {expected}, computed {computed}")]
    DigestMismatch {
        /// Base64 `DigestValue` found in the signature.
        expected: String,
        /// Base64 digest of the document as received.
        computed: String,
    },
    /// `SignatureValue` does not verify with the `KeyInfo` certificate's key.
    #[error("the signature value does not verify with the signer certificate's key")]
    BadSignatureValue,
    /// The `KeyInfo` certificate cannot be parsed.
    #[error("the signer certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The signer certificate does not chain to the configured anchors at the given time.
    #[error("the signer certificate is not trusted: {0}")]
    SignerNotTrusted(String),
    /// The signer certificate is trusted but is not the expected signer.
    #[error("the list is signed by {found:?}, expected CN={expected_cn:?} O={expected_o:?}")]
    SignerMismatch {
        /// Subject of the certificate found.
        found: String,
        /// Configured CN.
        expected_cn: String,
        /// Configured O.
        expected_o: String,
    },
    /// Signing: the document already carries a signature.
    #[error("the document is already signed")]
    AlreadySigned,
    /// Signing: the key cannot be used.
    #[error("the signing key is not a usable RSA PKCS#8 key: {0}")]
    BadKey(String),
}

/// The signature's parts, found at the one place the profile allows. Everything the
/// verification uses comes from here: the digest is read from the `Reference` of the very
/// `SignedInfo` whose signature is checked.
struct Located<'d, 'x> {
    /// The `Signature` element, left out by the enveloped-signature transform.
    signature: &'d Element<'x>,
    /// The `SignedInfo` element, canonicalised and checked against `signature_value`.
    signed_info: &'d Element<'x>,
    digest_value: String,
    signature_value: String,
    certificate: String,
}

fn profile(path: &str, problem: impl Into<String>) -> SignatureError {
    SignatureError::Profile {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// The first element of the xmldsig namespace under `element` (itself included) that is
/// not inside `signature`.
fn dsig_outside<'d, 'x>(
    element: &'d Element<'x>,
    signature: Option<&Element<'x>>,
) -> Option<&'d Element<'x>> {
    if signature.is_some_and(|s| std::ptr::eq(s, element)) {
        return None;
    }
    if element.ns == Ns::DSIG {
        return Some(element);
    }
    element.elements().find_map(|e| dsig_outside(e, signature))
}

/// The first xmldsig `Signature` element in `element`'s subtree.
fn find_signature<'d, 'x>(element: &'d Element<'x>) -> Option<&'d Element<'x>> {
    if element.is(Ns::DSIG, "Signature") {
        return Some(element);
    }
    element.elements().find_map(find_signature)
}

/// How many elements of the xmldsig namespace `element`'s subtree holds.
fn dsig_count(element: &Element<'_>) -> usize {
    usize::from(element.ns == Ns::DSIG) + element.elements().map(dsig_count).sum::<usize>()
}

/// Checks that `element` has only the attributes `allowed` (unqualified).
fn only_attributes(
    element: &Element<'_>,
    path: &str,
    allowed: &[&str],
) -> Result<(), SignatureError> {
    match element
        .attributes
        .iter()
        .find(|a| a.ns != Ns::NONE || !allowed.contains(&a.qname.as_str()))
    {
        Some(a) => Err(profile(path, format!("unexpected attribute {}", a.qname))),
        None => Ok(()),
    }
}

/// The element children of `element`, which must be exactly `expected` (xmldsig local
/// names, in order); between them only whitespace and comments.
fn children<'d, 'x>(
    element: &'d Element<'x>,
    path: &str,
    expected: &[&'static str],
) -> Result<Vec<&'d Element<'x>>, SignatureError> {
    let mut found = Vec::with_capacity(expected.len());
    for node in &element.children {
        match node {
            Node::Element(child) => {
                if child.local() == "InclusiveNamespaces" {
                    return Err(SignatureError::Unsupported {
                        what: "InclusiveNamespaces",
                        found: child
                            .attribute("PrefixList")
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
                let wanted = expected.get(found.len());
                if child.ns != Ns::DSIG || wanted != Some(&child.local()) {
                    return Err(profile(
                        path,
                        match wanted {
                            Some(w) => format!("found {} where {w} is expected", child.qname),
                            None => format!("unexpected element {}", child.qname),
                        },
                    ));
                }
                found.push(child);
            }
            Node::Text(text) if is_blank(&text.value) => {}
            Node::Text(text) => {
                return Err(profile(
                    path,
                    format!("unexpected text at byte {}", text.position),
                ))
            }
            Node::Comment { .. } => {}
            Node::Pi(pi) => {
                return Err(profile(
                    path,
                    format!("unexpected processing instruction at byte {}", pi.position),
                ))
            }
        }
    }
    if let Some(missing) = expected.get(found.len()) {
        return Err(SignatureError::MissingElement { element: missing });
    }
    Ok(found)
}

/// The text of a leaf element: character data only (no element, comment or PI inside),
/// and no attribute but `allowed`.
fn leaf_text(
    element: &Element<'_>,
    path: &str,
    allowed: &[&str],
) -> Result<String, SignatureError> {
    only_attributes(element, path, allowed)?;
    let mut text = String::new();
    for node in &element.children {
        match node {
            Node::Text(t) => text.push_str(&t.value),
            _ => return Err(profile(path, "only text is allowed here")),
        }
    }
    Ok(text)
}

/// The `Algorithm` of an element that has nothing else.
fn algorithm<'d>(
    element: &'d Element<'_>,
    what: &'static str,
    path: &str,
    want: &str,
) -> Result<&'d str, SignatureError> {
    only_attributes(element, path, &["Algorithm"])?;
    children(element, path, &[])?;
    match element.attribute("Algorithm") {
        Some(found) if found == want => Ok(found),
        other => Err(SignatureError::Unsupported {
            what,
            found: other.unwrap_or("(none)").to_string(),
        }),
    }
}

/// Finds the one enveloped signature the profile allows, or says what is out of place.
/// `Ok(None)`: the document has no xmldsig content at all.
fn locate<'d, 'x>(doc: &'d Document<'x>) -> Result<Option<Located<'d, 'x>>, SignatureError> {
    // The parser counted the xmldsig elements: the tree is walked only to explain a
    // refusal, never to find what is accepted.
    let signature = match doc.dsig_signatures {
        0 => {
            return match dsig_outside(&doc.root, None) {
                Some(stray) => Err(profile(
                    &stray.qname,
                    format!(
                        "xmldsig element at byte {} outside a Signature",
                        stray.position
                    ),
                )),
                None => Ok(None),
            }
        }
        1 => match doc.root.elements().find(|e| e.is(Ns::DSIG, "Signature")) {
            Some(signature) => signature,
            None => {
                let position = find_signature(&doc.root).map_or(0, |s| s.position);
                return Err(SignatureError::NotEnveloped { position });
            }
        },
        _ => return Err(SignatureError::MultipleSignatures),
    };
    if dsig_count(signature) != doc.dsig_elements {
        if let Some(stray) = dsig_outside(&doc.root, Some(signature)) {
            return Err(profile(
                &stray.qname,
                format!(
                    "xmldsig element at byte {} outside the Signature",
                    stray.position
                ),
            ));
        }
    }
    // The Signature is the document element's last child: whitespace and comments only
    // after it, so nothing can hide in the region the transform leaves out.
    let root = &doc.root;
    let after = root
        .children
        .iter()
        .skip_while(|n| !matches!(n, Node::Element(e) if std::ptr::eq(e, signature)))
        .skip(1);
    for node in after {
        match node {
            Node::Text(t) if is_blank(&t.value) => {}
            Node::Comment { .. } => {}
            _ => return Err(profile(&root.qname, "content after the Signature")),
        }
    }

    only_attributes(signature, "Signature", &["Id"])?;
    let [signed_info, signature_value, key_info] = children(
        signature,
        "Signature",
        &["SignedInfo", "SignatureValue", "KeyInfo"],
    )?[..] else {
        return Err(profile("Signature", "unexpected children"));
    };
    only_attributes(signed_info, "SignedInfo", &["Id"])?;
    let [c14n_method, signature_method, reference] = children(
        signed_info,
        "SignedInfo",
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?[..] else {
        return Err(profile("SignedInfo", "unexpected children"));
    };
    algorithm(
        c14n_method,
        "CanonicalizationMethod",
        "SignedInfo/CanonicalizationMethod",
        EXC_C14N,
    )?;
    algorithm(
        signature_method,
        "SignatureMethod",
        "SignedInfo/SignatureMethod",
        RSA_SHA256,
    )?;
    only_attributes(reference, "Reference", &["URI", "Id"])?;
    match reference.attribute("URI") {
        Some("") => {}
        other => {
            return Err(SignatureError::Unsupported {
                what: "Reference URI",
                found: other.unwrap_or("(none)").to_string(),
            })
        }
    }
    let [transforms, digest_method, digest_value] = children(
        reference,
        "Reference",
        &["Transforms", "DigestMethod", "DigestValue"],
    )?[..] else {
        return Err(profile("Reference", "unexpected children"));
    };
    only_attributes(transforms, "Transforms", &[])?;
    let listed: Vec<&str> = transforms
        .elements()
        .map(|t| t.attribute("Algorithm").unwrap_or("(none)"))
        .collect();
    if listed != [ENVELOPED, EXC_C14N] {
        return Err(SignatureError::Unsupported {
            what: "Transforms",
            found: listed.join(" "),
        });
    }
    let [enveloped, exclusive] =
        children(transforms, "Transforms", &["Transform", "Transform"])?[..]
    else {
        return Err(profile("Transforms", "unexpected children"));
    };
    algorithm(enveloped, "Transforms", "Transforms/Transform", ENVELOPED)?;
    algorithm(exclusive, "Transforms", "Transforms/Transform", EXC_C14N)?;
    algorithm(
        digest_method,
        "DigestMethod",
        "Reference/DigestMethod",
        SHA256,
    )?;
    let digest_value = leaf_text(digest_value, "Reference/DigestValue", &[])?;

    let signature_value = leaf_text(signature_value, "SignatureValue", &["Id"])?;
    only_attributes(key_info, "KeyInfo", &["Id"])?;
    let [x509_data] = children(key_info, "KeyInfo", &["X509Data"])?[..] else {
        return Err(profile("KeyInfo", "unexpected children"));
    };
    only_attributes(x509_data, "X509Data", &[])?;
    let certificates = x509_data.elements().count();
    if certificates > 1
        && x509_data
            .elements()
            .all(|e| e.is(Ns::DSIG, "X509Certificate"))
    {
        return Err(SignatureError::Unsupported {
            what: "number of X509Certificate",
            found: certificates.to_string(),
        });
    }
    let [certificate] = children(x509_data, "X509Data", &["X509Certificate"])?[..] else {
        return Err(profile("X509Data", "unexpected children"));
    };
    let certificate = leaf_text(certificate, "X509Data/X509Certificate", &[])?;
    Ok(Some(Located {
        signature,
        signed_info,
        digest_value,
        signature_value,
        certificate,
    }))
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decode_b64(text: &str, element: &'static str) -> Result<Vec<u8>, SignatureError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    b64()
        .decode(compact.as_bytes())
        .map_err(|_| SignatureError::BadBase64 { element })
}

/// Accepts any extended key usage (see [`ChainCheck::Verify`]).
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// Verifies the enveloped signature of `xml` as described in the module documentation.
pub fn verify_enveloped(xml: &str, opts: &VerifyOptions<'_>) -> Result<SignerInfo, SignatureError> {
    verify_document(&Document::parse(xml)?, opts)
}

/// Verifies the enveloped signature of a parsed list: the tree the entries are then read
/// from (see [`super::load_and_verify`]).
pub(crate) fn verify_document(
    doc: &Document<'_>,
    opts: &VerifyOptions<'_>,
) -> Result<SignerInfo, SignatureError> {
    if !doc.root.is(Ns::LIST, "ListeBlancheMSSante") {
        return Err(profile(
            &doc.root.qname,
            format!("the document element must be ListeBlancheMSSante in {LIST_NS}"),
        ));
    }
    let loc = locate(doc)?.ok_or(SignatureError::MissingSignature)?;
    let expected_digest = decode_b64(&loc.digest_value, "DigestValue")?;
    let signature_value = decode_b64(&loc.signature_value, "SignatureValue")?;
    let certificate_der = decode_b64(&loc.certificate, "X509Certificate")?;

    // 1. The document has not changed since it was signed.
    let document = c14n::canonicalize_document(doc, Some(loc.signature));
    let computed = sha256(&document);
    if computed != expected_digest {
        return Err(SignatureError::DigestMismatch {
            expected: b64().encode(&expected_digest),
            computed: b64().encode(&computed),
        });
    }

    // 2. SignedInfo (which holds that digest) was signed by the KeyInfo certificate's key.
    let signed_info = c14n::canonicalize_element(doc, loc.signed_info);
    let cert = CertificateDer::from(certificate_der.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| SignatureError::BadCertificate(e.to_string()))?;
    end_entity
        .verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            &signed_info,
            &signature_value,
        )
        .map_err(|_| SignatureError::BadSignatureValue)?;

    // 3. That certificate is the expected signer's and chains to the espace's anchors.
    let (_, parsed) = x509_parser::parse_x509_certificate(&certificate_der)
        .map_err(|e| SignatureError::BadCertificate(e.to_string()))?;
    let subject = SubjectDn::from_x509(parsed.subject())
        .map_err(|e| SignatureError::BadCertificate(e.to_string()))?;
    let chain_verified = match &opts.chain {
        ChainCheck::Verify {
            anchors,
            intermediates,
            time,
        } => {
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    anchors,
                    intermediates,
                    *time,
                    AnyEku,
                    None,
                    None,
                )
                .map_err(|e| SignatureError::SignerNotTrusted(e.to_string()))?;
            true
        }
        ChainCheck::SkipInsecure => false,
    };
    if !opts.signer.matches(&subject) {
        return Err(SignatureError::SignerMismatch {
            found: subject.to_string(),
            expected_cn: opts.signer.cn.clone(),
            expected_o: opts.signer.o.clone(),
        });
    }
    let not_after = OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
        .map_err(|e| SignatureError::BadCertificate(e.to_string()))?;
    Ok(SignerInfo {
        subject,
        issuer: crate::trust::verify::rfc4514(parsed.issuer()),
        serial: parsed.raw_serial_as_string(),
        not_after,
        chain_verified,
        certificate_der,
    })
}

/// An RSA private key that signs test whitelists (the test-pki tool's signer).
pub struct SigningKey(aws_lc_rs::signature::RsaKeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(RSA)")
    }
}

impl SigningKey {
    /// Loads a PKCS#8 DER RSA key (what `rcgen::KeyPair::serialize_der` writes).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignatureError> {
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der)
            .map(SigningKey)
            .map_err(|e| SignatureError::BadKey(e.to_string()))
    }
}

/// Signs `xml` (an unsigned whitelist) the way ANS does: an enveloped signature appended as
/// the document element's last child, with the profile this module verifies.
pub fn sign_enveloped(
    xml: &str,
    key: &SigningKey,
    certificate_der: &[u8],
) -> Result<String, SignatureError> {
    let doc = Document::parse(xml)?;
    if dsig_outside(&doc.root, None).is_some() {
        return Err(SignatureError::AlreadySigned);
    }
    let insert_at = root_end_tag(xml)?;
    let digest = sha256(&c14n::canonicalize_document(&doc, None));
    let signed_info = format!(
        "<SignedInfo><CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>\
         <SignatureMethod Algorithm=\"{RSA_SHA256}\"/><Reference URI=\"\"><Transforms>\
         <Transform Algorithm=\"{ENVELOPED}\"/><Transform Algorithm=\"{EXC_C14N}\"/>\
         </Transforms><DigestMethod Algorithm=\"{SHA256}\"/><DigestValue>{}</DigestValue>\
         </Reference></SignedInfo>",
        b64().encode(digest)
    );
    let canonical = c14n::canonicalize(&signed_info.replacen(
        "<SignedInfo>",
        &format!("<SignedInfo xmlns=\"{DSIG_NS}\">"),
        1,
    ))?;
    let mut signature = vec![0u8; key.0.public_modulus_len()];
    key.0
        .sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            &canonical,
            &mut signature,
        )
        .map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let mut out = String::with_capacity(xml.len() + 4096);
    out.push_str(xml.get(..insert_at).unwrap_or(""));
    out.push_str(&format!(
        "<Signature xmlns=\"{DSIG_NS}\">{signed_info}<SignatureValue>{}</SignatureValue>\
         <KeyInfo><X509Data><X509Certificate>{}</X509Certificate></X509Data></KeyInfo>\
         </Signature>",
        b64().encode(&signature),
        b64().encode(certificate_der)
    ));
    out.push_str(xml.get(insert_at..).unwrap_or(""));
    Ok(out)
}

/// Byte offset of the document element's end tag.
fn root_end_tag(xml: &str) -> Result<usize, SignatureError> {
    let syntax = |reader: &Reader<&[u8]>, message: String| XmlError::Syntax {
        position: reader.error_position(),
        message,
    };
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader
            .read_event()
            .map_err(|e| syntax(&reader, e.to_string()))?
        {
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(before);
                }
            }
            Event::Eof => {
                return Err(syntax(&reader, "no document element to sign".to_string()).into())
            }
            _ => {}
        }
    }
}
