//! Operator tooling built on the library's modules: `test-pki`, `doctor`, `annexe1`,
//! `probe`.

pub mod annexe1;
pub mod doctor;
pub mod identity_checks;
pub mod probe;
pub mod sample_whitelist;
pub mod test_pki;
pub mod whitelist_cmd;
