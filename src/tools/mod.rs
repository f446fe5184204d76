//! Operator tooling built on the library's modules (`test-pki`, `doctor`, `annexe1`,
//! `probe`, `csr`). The load generator is a crate of its own (`loadgen/`).

pub mod annexe1;
pub mod config_checks;
pub mod csr;
pub mod doctor;
pub mod identity_checks;
pub mod probe;
pub mod sample_whitelist;
pub mod test_pki;
pub mod whitelist_cmd;
