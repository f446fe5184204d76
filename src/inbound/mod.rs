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

/// What a reload may change, swapped as one value so a connection never sees half of an
/// old configuration and half of a new one. Each connection takes the version current when
/// it is accepted and keeps it to its end: a reload never disturbs an open session.
#[derive(Clone)]
pub struct LiveSettings {
    /// Our host name, for the greeting and EHLO.
    pub hostname: String,
    /// The domains we accept mail for.
    pub local_domains: Vec<String>,
    /// The rustls server configuration used at STARTTLS (our certificate).
    pub tls: Arc<rustls::ServerConfig>,
    /// Anchors, intermediates and CRLs used to check client certificates.
    pub trust: Arc<TrustStore>,
    /// Hostname/CN coherence mode.
    pub ehlo_check: EhloCheck,
}

/// What every connection of a listener shares. Read-mostly: the reloadable part is
/// swapped atomically, never locked.
pub struct InboundContext {
    /// Limits and timeouts (changing them needs a restart).
    pub settings: InboundSettings,
    /// The reloadable settings.
    pub live: ArcSwap<LiveSettings>,
    /// The liste blanche in use.
    pub whitelist: Arc<WhitelistState>,
    /// Where accepted messages go.
    pub spool: Arc<Spool>,
    /// Metrics of the gateway.
    pub metrics: Arc<Metrics>,
}
