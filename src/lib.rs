//! mssante-gateway: the SMTP connector of a mail operator in the MSSanté espace de confiance.
//!
//! The binary (`src/main.rs`), the integration tests and the benchmarks all use this library.
#![forbid(unsafe_code)]

pub mod trust;
pub mod whitelist;
