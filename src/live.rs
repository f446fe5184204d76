//! The gateway's live state: what changes while sessions run. The gateway owns it and is
//! the only writer of the settings; everyone else reads the version current when it
//! starts a unit of work:
//!
//! - [`LiveSettings`], in one `ArcSwap`: a reload replaces them whole, and the CRL
//!   refresher swaps in a trust store with new CRLs (keeping whatever a reload changed);
//!   inbound connections, outbound delivery, the whitelist refresher (its trust store)
//!   and the CRL refresher (its sources and CAs) read them;
//! - the liste blanche, in [`crate::whitelist::live::WhitelistState`]: the whitelist
//!   refresher is the one place that installs a new list; sessions and outbound delivery
//!   read a snapshot.

use std::sync::Arc;

use crate::policy::{EhloCheck, EhloNames, FcrdnsCheck};
use crate::trust::pki::TrustStore;

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
    /// The rustls client configuration presenting our certificate to other operators.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Anchors, intermediates and CRLs used to check client certificates.
    pub trust: Arc<TrustStore>,
    /// The `[tls]` settings `trust` was built from: the CRL refresher rebuilds the store
    /// from these (the current ones, so a reload is never undone by a CRL update).
    pub tls_settings: Arc<crate::trust::TlsSettings>,
    /// Hostname/CN coherence mode.
    pub ehlo_check: EhloCheck,
    /// Which certificate names the EHLO name may equal.
    pub ehlo_names: EhloNames,
    /// Forward-confirmed reverse DNS mode.
    pub fcrdns: FcrdnsCheck,
    /// Recipients with routing in their local part are refused (`policy.refuse_routing_addresses`).
    pub refuse_routing_addresses: bool,
    /// Most simultaneous connections from one address (`inbound.max_connections_per_ip`),
    /// applied at accept.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one address (`inbound.max_connection_rate_per_ip`).
    pub max_connection_rate_per_ip: u32,
}
