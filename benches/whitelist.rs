//! Whitelist costs on the real 2025-02-28 production list (6,494 entries): the full
//! load (signature + parse + index) done once per download, and the lookups done on
//! every SMTP session.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mssante_gateway::trust::dn::SubjectDn;
use mssante_gateway::whitelist::{
    load_and_verify, parse::parse, verify_enveloped, ChainCheck, SignerIdentity, VerifyOptions,
};

const REAL: &str =
    include_str!("../tests/fixtures/whitelist/listeblanchemssante-2025-02-28-signed.xml");

/// The production root is not in the repository: the chain check is skipped (it is a
/// few RSA verifications, negligible next to the rest).
fn opts() -> VerifyOptions<'static> {
    VerifyOptions {
        chain: ChainCheck::SkipInsecure,
        signer: SignerIdentity::production(),
    }
}

fn load(c: &mut Criterion) {
    let opts = opts();
    c.bench_function("load_and_verify real list", |b| {
        // The list returned is dropped outside the timing: in service the previous list
        // is freed after the swap, off the load.
        b.iter_with_large_drop(|| load_and_verify(black_box(REAL.as_bytes()), &opts))
    });
    c.bench_function("verify_enveloped real list", |b| {
        b.iter(|| verify_enveloped(black_box(REAL), &opts))
    });
    c.bench_function("parse real list", |b| b.iter(|| parse(black_box(REAL))));
}

fn lookups(c: &mut Criterion) {
    let wl = match load_and_verify(REAL.as_bytes(), &opts()) {
        Ok(wl) => wl,
        Err(e) => panic!("the real list must load: {e}"),
    };
    let dn = match SubjectDn::parse(
        "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR",
    ) {
        Ok(dn) => dn,
        Err(e) => panic!("{e}"),
    };
    let key = dn.normalized_key();
    c.bench_function("is_listed_domain hit", |b| {
        b.iter(|| wl.is_listed_domain(black_box("15-20.mssante.fr")))
    });
    c.bench_function("is_listed_domain miss", |b| {
        b.iter(|| wl.is_listed_domain(black_box("absent.mssante.fr")))
    });
    c.bench_function("domain_served_by (DN parsed, key computed)", |b| {
        b.iter(|| wl.domain_served_by(black_box("15-20.mssante.fr"), black_box(&dn)))
    });
    c.bench_function("domain_served_by_key (key precomputed)", |b| {
        b.iter(|| wl.domain_served_by_key(black_box("15-20.mssante.fr"), black_box(&key)))
    });
    c.bench_function("is_listed_dn", |b| {
        b.iter(|| wl.is_listed_dn(black_box(&dn)))
    });
    c.bench_function("domains_for_key", |b| {
        b.iter(|| wl.domains_for_key(black_box(&key)).len())
    });
}

criterion_group!(benches, load, lookups);
criterion_main!(benches);
