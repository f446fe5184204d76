//! Operator tooling built on the library's modules (`test-pki`, and later `doctor`,
//! `annexe1`, `probe`).

pub mod annexe1;
pub mod identity_checks;
pub mod sample_whitelist;
pub mod test_pki;
