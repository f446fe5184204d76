//! IGC Santé trust: certificate subjects, anchors and TLS verification.

pub mod dn;
