//! The whitelist as an operator meets it: the real signed production list of 2025-02-28,
//! tampered copies, and lists signed by a generated test PKI.
use mssante_gateway::whitelist::signature::{
    verify_enveloped, ChainCheck, SignatureError, SignerIdentity, VerifyOptions,
};

const REAL: &str = include_str!("fixtures/whitelist/listeblanchemssante-2025-02-28-signed.xml");
const TRUNCATED: &str = include_str!("fixtures/whitelist/truncated-bad-digest.xml");

/// The IGC Santé production root is not in the repository, so the real file is checked
/// without the chain: digest, signature value and signer identity only.
fn without_chain() -> VerifyOptions<'static> {
    VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity::production(),
    }
}

#[test]
fn real_production_list_signature_verifies() {
    let signer = verify_enveloped(REAL, &without_chain()).expect("the real list verifies");
    assert_eq!(signer.subject.cn.as_deref(), Some("alb.mssante.fr"));
    assert_eq!(
        signer.subject.o.as_deref(),
        Some("CAPGEMINI TECHNOLOGY SERVICES")
    );
    assert!(!signer.chain_verified);
    assert_eq!(signer.not_after.year(), 2026);
}

#[test]
fn truncated_list_with_stale_digest_is_refused() {
    match verify_enveloped(TRUNCATED, &without_chain()) {
        Err(SignatureError::DigestMismatch { expected, computed }) => {
            assert_eq!(expected, "JZO4I3vo9nf8Pl6G2h0ecqHNng8EKEfNjoMa6kQ3NyQ=");
            assert_ne!(expected, computed);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn real_list_with_one_dn_edited_is_refused() {
    let original = "O=GIP SESAN,ST=Paris(75)";
    assert!(REAL.contains(original));
    let edited = REAL.replacen(original, "O=GIP SESAN,ST=Paris (75)", 1);
    assert!(matches!(
        verify_enveloped(&edited, &without_chain()),
        Err(SignatureError::DigestMismatch { .. })
    ));
}

#[test]
fn real_list_signed_by_someone_else_is_refused() {
    let opts = VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity {
            cn: "alb.mssante.fr".into(),
            o: "SOMEONE ELSE".into(),
        },
    };
    assert!(matches!(
        verify_enveloped(REAL, &opts),
        Err(SignatureError::SignerMismatch { .. })
    ));
}

#[test]
fn real_list_without_its_signature_is_refused() {
    let start = REAL.find("<Signature ").expect("signature");
    let end = REAL.find("</Signature>").expect("signature end") + "</Signature>".len();
    let unsigned = format!("{}{}", &REAL[..start], &REAL[end..]);
    assert_eq!(
        verify_enveloped(&unsigned, &without_chain()).err(),
        Some(SignatureError::MissingSignature)
    );
}

#[test]
fn real_list_with_altered_signature_value_is_refused() {
    let edited = REAL.replacen("<SignatureValue>SjYpc4O/", "<SignatureValue>SjYpc4P/", 1);
    assert_eq!(
        verify_enveloped(&edited, &without_chain()).err(),
        Some(SignatureError::BadSignatureValue)
    );
}
