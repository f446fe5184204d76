//! Forgeries of a signed liste blanche, made the way an attacker would: edit the signed
//! document, then try to make the verifier compare it with a digest of the attacker's
//! choosing.
use mssante_gateway::whitelist::signature::{
    verify_enveloped, ChainCheck, SignatureError, SignerIdentity, VerifyOptions,
};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Byte range of the enveloped `Signature` element of a list signed as ANS signs it.
pub fn signature_range(signed: &str) -> std::ops::Range<usize> {
    let start = signed.find("<Signature ").expect("a Signature element");
    let end = signed.find("</Signature>").expect("its end tag") + "</Signature>".len();
    start..end
}

/// The digest the verifier computes for `xml` (it says so when it refuses the document):
/// what an attacker needs to plant a second `DigestValue`.
pub fn computed_digest(xml: &str) -> String {
    let opts = VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity {
            cn: String::new(),
            o: String::new(),
        },
    };
    match verify_enveloped(xml, &opts) {
        Err(SignatureError::DigestMismatch { computed, .. }) => computed,
        other => panic!("expected a digest mismatch for the edited list, got {other:?}"),
    }
}

/// `signed` edited by `edit`, with `<DigestValue>D</DigestValue>` (D the edited document's
/// digest) inserted by `plant` into the signature's text.
pub fn with_planted_digest(
    signed: &str,
    edit: impl Fn(&str) -> String,
    plant: impl Fn(&str, &str) -> String,
) -> String {
    let edited = edit(signed);
    let digest = computed_digest(&edited);
    let element = format!("<DigestValue>{digest}</DigestValue>");
    let forged = plant(&edited, &element);
    assert_ne!(forged, edited, "the planting point was not found");
    forged
}

/// Plants `element` right after `</SignatureValue>`: the original attack.
pub fn after_signature_value(xml: &str, element: &str) -> String {
    xml.replacen(
        "</SignatureValue>",
        &format!("</SignatureValue>{element}"),
        1,
    )
}
