//! The inbound SMTP listener: other operators connect here (port 25).
//!
//! `listener` accepts connections within the limits and shuts down gracefully;
//! `connection` drives one [`crate::smtp::Session`] over the socket, upgrades it to TLS on
//! STARTTLS, asks `policy` at each step and streams bodies into the spool.

pub mod connection;
pub mod listener;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::InboundSettings;
use crate::metrics::Metrics;
use crate::policy::EhloCheck;
use crate::spool::Spool;
use crate::trust::pki::TrustStore;
use crate::whitelist::live::WhitelistState;

/// What every connection of a listener shares. Read-mostly: the TLS configuration and the
/// trust store are swapped atomically on reload, never locked.
pub struct InboundContext {
    /// Limits and timeouts.
    pub settings: InboundSettings,
    /// Our host name, for the greeting and EHLO.
    pub hostname: String,
    /// The domains we accept mail for.
    pub local_domains: Vec<String>,
    /// The rustls server configuration used at STARTTLS.
    pub tls: ArcSwap<rustls::ServerConfig>,
    /// Anchors, intermediates and CRLs used to check client certificates.
    pub trust: ArcSwap<TrustStore>,
    /// The liste blanche in use.
    pub whitelist: Arc<WhitelistState>,
    /// Hostname/CN coherence mode.
    pub ehlo_check: EhloCheck,
    /// Where accepted messages go.
    pub spool: Arc<Spool>,
    /// Metrics of the gateway.
    pub metrics: Arc<Metrics>,
}
