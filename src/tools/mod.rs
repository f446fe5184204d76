//! Operator tooling built on the library's modules (`test-pki`, `doctor`, `annexe1`,
//! `probe`), and the load generator with its bare limits (`mssante-loadgen`).

pub mod annexe1;
pub mod config_checks;
pub mod doctor;
pub mod identity_checks;
pub mod limits;
pub mod loadgen;
pub mod probe;
pub mod sample_whitelist;
pub mod test_pki;
pub mod whitelist_cmd;
