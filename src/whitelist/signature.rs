//! The whitelist's enveloped XML signature: verification and (for test lists) signing.
//!
//! ANS signs the list with exactly one profile, which is the only one accepted here:
//! - `Signature` (namespace `http://www.w3.org/2000/09/xmldsig#`) is a child of the
//!   document element, and there is exactly one;
//! - `SignedInfo` is canonicalised with exclusive C14N without comments and signed with
//!   RSA PKCS#1 v1.5 SHA-256 (`xmldsig-more#rsa-sha256`);
//! - exactly one `Reference`, `URI=""` (the whole document), transforms
//!   `enveloped-signature` then exclusive C14N, digest SHA-256 (`xmlenc#sha256`);
//! - `KeyInfo/X509Data/X509Certificate` carries the signer's leaf certificate only.
//!
//! Verification recomputes the digest of the document without the `Signature` element,
//! checks the `SignatureValue` with the leaf's key, checks the signer's identity (CN and O)
//! and, unless explicitly skipped, builds a path from the leaf to the configured IGC Santé
//! anchors with webpki at a caller-given time.
use std::ops::Range;

use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;

use super::c14n::{self, Binding, C14nError};
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
    /// The document is not well-formed, or uses what canonicalisation refuses.
    #[error("canonicalisation failed: {0}")]
    Canonicalization(#[from] C14nError),
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

/// The parts of the signature, located in the document.
struct Located<'x> {
    /// Byte range of the `Signature` element (removed by the enveloped transform).
    signature: Range<usize>,
    /// The `SignedInfo` element's text and the bindings in scope at it.
    signed_info: &'x str,
    signed_info_inherited: Vec<Binding>,
    canonicalization: Option<String>,
    signature_method: Option<String>,
    references: Vec<Reference>,
    signature_value: Option<String>,
    certificates: Vec<String>,
}

#[derive(Default)]
struct Reference {
    uri: Option<String>,
    transforms: Vec<String>,
    digest_method: Option<String>,
    digest_value: Option<String>,
}

fn syntax(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> SignatureError {
    SignatureError::Canonicalization(C14nError::Syntax {
        position: reader.error_position(),
        message: e.to_string(),
    })
}

fn attribute(start: &BytesStart<'_>, name: &str) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

fn prefix(qname: &str) -> &str {
    qname.split_once(':').map(|(p, _)| p).unwrap_or("")
}

/// Finds the (single) enveloped signature and reads its fields.
fn locate(xml: &str) -> Result<Option<Located<'_>>, SignatureError> {
    let mut reader = Reader::from_str(xml);
    let mut in_scope: Vec<Binding> = Vec::new();
    // Per open element: (qname, in_scope length before its declarations).
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut found: Option<Located<'_>> = None;
    let mut signature_depth: Option<usize> = None;
    let mut signed_info_start: Option<(usize, Vec<Binding>)> = None;
    let mut text = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| syntax(&reader, e))?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                let mark = in_scope.len();
                for a in start.attributes().flatten() {
                    let key = a.key.as_ref();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| syntax(&reader, e))?
                        .into_owned();
                    if key == "xmlns" {
                        in_scope.push((String::new(), value));
                    } else if let Some(p) = key.strip_prefix("xmlns:") {
                        in_scope.push((p.to_string(), value));
                    }
                }
                let qname = start.name().as_ref().to_string();
                let ns = in_scope
                    .iter()
                    .rev()
                    .find(|(p, _)| p == prefix(&qname))
                    .map(|(_, u)| u.as_str())
                    .unwrap_or("");
                let name = local(&qname);
                let in_dsig = ns == DSIG_NS;
                if in_dsig && name == "Signature" {
                    if found.is_some() || signature_depth.is_some() {
                        return Err(SignatureError::MultipleSignatures);
                    }
                    if stack.len() != 1 {
                        return Err(SignatureError::NotEnveloped {
                            position: before as u64,
                        });
                    }
                    signature_depth = Some(stack.len());
                    found = Some(Located {
                        signature: before..before,
                        signed_info: "",
                        signed_info_inherited: Vec::new(),
                        canonicalization: None,
                        signature_method: None,
                        references: Vec::new(),
                        signature_value: None,
                        certificates: Vec::new(),
                    });
                }
                if let (Some(_), Some(loc)) = (signature_depth, found.as_mut()) {
                    match (in_dsig, name) {
                        (true, "SignedInfo") => {
                            signed_info_start = Some((before, in_scope[..mark].to_vec()))
                        }
                        (true, "CanonicalizationMethod") => {
                            loc.canonicalization = attribute(start, "Algorithm")
                        }
                        // An InclusiveNamespaces prefix list (under either transform or
                        // CanonicalizationMethod) changes exc-c14n; we do not implement it.
                        (_, "InclusiveNamespaces") => {
                            return Err(SignatureError::Unsupported {
                                what: "InclusiveNamespaces",
                                found: attribute(start, "PrefixList").unwrap_or_default(),
                            })
                        }
                        (true, "SignatureMethod") => {
                            loc.signature_method = attribute(start, "Algorithm")
                        }
                        (true, "Reference") => loc.references.push(Reference {
                            uri: attribute(start, "URI"),
                            ..Reference::default()
                        }),
                        (true, "Transform") => {
                            if let Some(r) = loc.references.last_mut() {
                                r.transforms
                                    .push(attribute(start, "Algorithm").unwrap_or_default());
                            }
                        }
                        (true, "DigestMethod") => {
                            if let Some(r) = loc.references.last_mut() {
                                r.digest_method = attribute(start, "Algorithm");
                            }
                        }
                        _ => {}
                    }
                }
                text.clear();
                if is_empty {
                    in_scope.truncate(mark);
                } else {
                    stack.push((qname, mark));
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                text.push_str(&c14n::resolve_reference(&r, before as u64)?);
            }
            Event::End(_) => {
                let Some((qname, mark)) = stack.pop() else {
                    return Err(syntax(&reader, "unbalanced end tag"));
                };
                if let (Some(depth), Some(loc)) = (signature_depth, found.as_mut()) {
                    match local(&qname) {
                        "SignedInfo" => {
                            if let Some((start, inherited)) = signed_info_start.take() {
                                loc.signed_info = xml.get(start..after).unwrap_or("");
                                loc.signed_info_inherited = inherited;
                            }
                        }
                        "DigestValue" => {
                            if let Some(r) = loc.references.last_mut() {
                                r.digest_value = Some(text.clone());
                            }
                        }
                        "SignatureValue" => loc.signature_value = Some(text.clone()),
                        "X509Certificate" => loc.certificates.push(text.clone()),
                        "Signature" if stack.len() == depth => {
                            loc.signature.end = after;
                            signature_depth = None;
                        }
                        _ => {}
                    }
                }
                in_scope.truncate(mark);
                text.clear();
            }
            Event::DocType(_) => {
                return Err(C14nError::Doctype {
                    position: before as u64,
                }
                .into())
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(syntax(&reader, "document ends inside an element"));
    }
    Ok(found)
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

/// The document as the enveloped-signature transform sees it: without `range`.
fn without(xml: &str, range: &Range<usize>) -> String {
    let mut doc = String::with_capacity(xml.len());
    doc.push_str(xml.get(..range.start).unwrap_or(""));
    doc.push_str(xml.get(range.end..).unwrap_or(""));
    doc
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
    let loc = locate(xml)?.ok_or(SignatureError::MissingSignature)?;
    if loc.signed_info.is_empty() {
        return Err(SignatureError::MissingElement {
            element: "SignedInfo",
        });
    }
    let expect = |what: &'static str, found: Option<&str>, want: &str| match found {
        Some(f) if f == want => Ok(()),
        other => Err(SignatureError::Unsupported {
            what,
            found: other.unwrap_or("(none)").to_string(),
        }),
    };
    expect(
        "CanonicalizationMethod",
        loc.canonicalization.as_deref(),
        EXC_C14N,
    )?;
    expect(
        "SignatureMethod",
        loc.signature_method.as_deref(),
        RSA_SHA256,
    )?;
    let reference = match loc.references.as_slice() {
        [one] => one,
        [] => {
            return Err(SignatureError::MissingElement {
                element: "Reference",
            })
        }
        more => {
            return Err(SignatureError::Unsupported {
                what: "number of References",
                found: more.len().to_string(),
            })
        }
    };
    expect("Reference URI", reference.uri.as_deref(), "")?;
    if reference.transforms != [ENVELOPED, EXC_C14N] {
        return Err(SignatureError::Unsupported {
            what: "Transforms",
            found: reference.transforms.join(" "),
        });
    }
    expect("DigestMethod", reference.digest_method.as_deref(), SHA256)?;
    let digest_text = reference
        .digest_value
        .as_deref()
        .ok_or(SignatureError::MissingElement {
            element: "DigestValue",
        })?;
    let expected_digest = decode_b64(digest_text, "DigestValue")?;
    let signature_value = decode_b64(
        loc.signature_value
            .as_deref()
            .ok_or(SignatureError::MissingElement {
                element: "SignatureValue",
            })?,
        "SignatureValue",
    )?;
    let certificate_der = match loc.certificates.as_slice() {
        [one] => decode_b64(one, "X509Certificate")?,
        [] => {
            return Err(SignatureError::MissingElement {
                element: "X509Certificate",
            })
        }
        more => {
            return Err(SignatureError::Unsupported {
                what: "number of X509Certificate",
                found: more.len().to_string(),
            })
        }
    };

    // 1. The document has not changed since it was signed.
    let document = c14n::canonicalize(&without(xml, &loc.signature), &[])?;
    let computed = sha256(&document);
    if computed != expected_digest {
        return Err(SignatureError::DigestMismatch {
            expected: b64().encode(&expected_digest),
            computed: b64().encode(&computed),
        });
    }

    // 2. SignedInfo (which holds that digest) was signed by the KeyInfo certificate's key.
    let signed_info = c14n::canonicalize(loc.signed_info, &loc.signed_info_inherited)?;
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
        issuer: parsed.issuer().to_string(),
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
    if locate(xml)?.is_some() {
        return Err(SignatureError::AlreadySigned);
    }
    let insert_at = root_end_tag(xml)?;
    let digest = sha256(&c14n::canonicalize(xml, &[])?);
    let signed_info = format!(
        "<SignedInfo><CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>\
         <SignatureMethod Algorithm=\"{RSA_SHA256}\"/><Reference URI=\"\"><Transforms>\
         <Transform Algorithm=\"{ENVELOPED}\"/><Transform Algorithm=\"{EXC_C14N}\"/>\
         </Transforms><DigestMethod Algorithm=\"{SHA256}\"/><DigestValue>{}</DigestValue>\
         </Reference></SignedInfo>",
        b64().encode(digest)
    );
    let canonical = c14n::canonicalize(&signed_info, &[(String::new(), DSIG_NS.to_string())])?;
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
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader.read_event().map_err(|e| syntax(&reader, e))? {
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(before);
                }
            }
            Event::Eof => return Err(syntax(&reader, "no document element to sign")),
            _ => {}
        }
    }
}
