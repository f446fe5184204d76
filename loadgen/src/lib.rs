//! `mssante-loadgen`'s library: the load generator ([`run`]) and the bare limits it is
//! compared with ([`limits`]). Built on the gateway's SMTP client core
//! (`mssante_gateway::client`) and TLS settings; not part of the gateway itself.
#![forbid(unsafe_code)]

pub mod limits;
pub mod run;
