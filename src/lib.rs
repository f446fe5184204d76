//! mssante-gateway: the SMTP connector of a mail operator in the MSSanté espace de confiance.
//!
//! The binary (`src/main.rs`), the integration tests and the benchmarks all use this library.
#![forbid(unsafe_code)]

pub mod autoreply;
pub mod client;
pub mod config;
pub mod dns;
pub mod durable;
pub mod duration;
pub mod gateway;
pub(crate) mod inbound;
pub(crate) mod live;
pub mod logging;
pub mod message;
pub mod metrics;
pub(crate) mod operator;
pub(crate) mod policy;
pub mod relay;
pub mod smtp;
pub mod spool;
pub mod tools;
pub mod trust;
pub mod whitelist;
