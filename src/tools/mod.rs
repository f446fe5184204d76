//! Operator tooling built on the library's modules (`test-pki`, and later `doctor`,
//! `annexe1`, `probe`).

pub mod test_pki;
