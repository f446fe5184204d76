//! Loading a liste blanche: whatever the bytes, no panic, and a list that verifies is the
//! signed original, entry for entry. Seeded with the test espace's signed list
//! (`certs-test/whitelist.xml`); any mutation the verifier lets through must leave what
//! the gateway enforces unchanged.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mssante_gateway::trust::pki::TrustStore;
use mssante_gateway::whitelist::{load_and_verify, SignerIdentity, VerifyOptions, Whitelist};
use rustls_pki_types::UnixTime;

const ORIGINAL: &[u8] = include_bytes!("../../certs-test/whitelist.xml");

fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../certs-test/");
        TrustStore::load(
            &[format!("{dir}root-ca.pem")],
            &[format!("{dir}intermediate-ca.pem")],
            &[],
        )
        .expect("the test PKI loads")
    })
}

fn opts() -> VerifyOptions<'static> {
    // 2026-12-01: inside the test signer's validity, whatever the day the fuzzer runs.
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_796_083_200));
    let mut opts = VerifyOptions::new(trust().anchors(), trust().intermediates(), time);
    opts.signer = SignerIdentity {
        cn: "alb.test.mssante.fr".into(),
        o: "TEST SIGNATAIRE LISTE BLANCHE".into(),
    };
    opts
}

/// Every field of every entry, in order, and the generation date.
fn content(list: &Whitelist) -> (String, Vec<[String; 7]>) {
    let entries = list
        .entries()
        .iter()
        .map(|e| {
            [
                e.domain.clone(),
                e.domain_as_written.clone(),
                e.description.clone(),
                e.dn_text.clone(),
                e.responsable_contact.clone(),
                e.support_contact.clone(),
                e.updated_text.clone(),
            ]
        })
        .collect();
    (list.generated().to_string(), entries)
}

fn original() -> &'static (String, Vec<[String; 7]>) {
    static ORIGINAL_CONTENT: OnceLock<(String, Vec<[String; 7]>)> = OnceLock::new();
    ORIGINAL_CONTENT.get_or_init(|| {
        content(&load_and_verify(ORIGINAL, &opts()).expect("the seed list verifies"))
    })
}

fuzz_target!(|data: &[u8]| {
    let expected = original();
    if let Ok(list) = load_and_verify(data, &opts()) {
        assert_eq!(
            &content(&list),
            expected,
            "a list that verifies differs from the signed original"
        );
    }
});
