//! Operator tooling built on the library's modules (`test-pki`, and later `doctor`,
//! `annexe1`, `probe`), and the load generator with its bare limits (`mssante-loadgen`).

pub mod limits;
pub mod loadgen;
pub mod sample_whitelist;
pub mod test_pki;
pub mod whitelist_cmd;
