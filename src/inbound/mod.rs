//! The inbound SMTP listener: other operators connect here (port 25).
//!
//! `listener` accepts connections within the limits and shuts down gracefully;
//! `connection` drives one [`crate::smtp::Session`] over the socket, upgrades it to TLS on
//! STARTTLS, asks `policy` at each step and streams bodies into the spool.

pub(crate) mod connection;
pub(crate) mod listener;
mod proxy;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::live::LiveSettings;
use crate::metrics::Metrics;
use crate::spool::{Direction, Spool};
use crate::whitelist::live::WhitelistState;
use std::net::SocketAddr;
use std::time::Duration;

/// Who connects to a listener, and so which rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Other operators of the espace (port 25): mandatory STARTTLS, an IGC Santé client
    /// certificate, the liste blanche; recipients only in our domains.
    Peer,
    /// Our internal mail server sending mail out: only from allowed addresses, senders in
    /// our domains, recipients in our domains or on the liste blanche.
    Submission {
        /// Networks allowed to connect.
        allow: Vec<AllowedNet>,
        /// MAIL needs STARTTLS first.
        require_tls: bool,
    },
}

impl Role {
    /// The spool direction of the mail accepted here, also a metrics label.
    pub fn direction(&self) -> Direction {
        match self {
            Role::Peer => Direction::Inbound,
            Role::Submission { .. } => Direction::Outbound,
        }
    }

    /// The listener's name in logs and metrics.
    pub fn listener_name(&self) -> &'static str {
        match self {
            Role::Peer => "inbound",
            Role::Submission { .. } => "submission",
        }
    }
}

/// An address range in CIDR notation (`127.0.0.1/32`, `10.0.0.0/8`, `::1/128`; a bare
/// address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedNet {
    addr: IpAddr,
    prefix: u8,
}

impl AllowedNet {
    /// The prefix length (0 for a range that holds every address).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for AllowedNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not an address or a CIDR range such as 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0 to {max}"))?,
        };
        Ok(AllowedNet { addr, prefix })
    }
}

/// What every connection of a listener shares. Read-mostly: the reloadable part is
/// swapped atomically, never locked.
pub struct InboundContext {
    /// Who connects here.
    pub role: Role,
    /// Limits and timeouts (changing them needs a restart).
    pub settings: InboundSettings,
    /// The reloadable settings, shared by every listener.
    pub live: Arc<ArcSwap<LiveSettings>>,
    /// The liste blanche in use.
    pub whitelist: Arc<WhitelistState>,
    /// For reverse DNS checks of peers.
    pub resolver: Option<crate::dns::Resolver>,
    /// Where accepted messages go.
    pub spool: Arc<Spool>,
    /// Metrics of the gateway.
    pub metrics: Arc<Metrics>,
}

/// The submission listener: where our internal mail server hands over outgoing mail.
#[derive(Debug, Clone)]
pub struct SubmissionSettings {
    /// Address to listen on (keep it on an internal interface).
    pub listen: SocketAddr,
    /// Networks allowed to connect (the internal mail servers).
    pub allow: Vec<AllowedNet>,
    /// MAIL needs STARTTLS first.
    pub require_tls: bool,
    /// Load balancers that send a PROXY protocol header (see
    /// [`InboundSettings::proxy_trusted`]).
    pub proxy_trusted: Vec<AllowedNet>,
}

/// The inbound listener's settings.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most simultaneous connections; more are answered 421 and closed.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one IP address (a burst of that size is allowed,
    /// then it refills evenly); 0 turns the limit off.
    pub max_connection_rate_per_ip: u32,
    /// Commands moving no mail (NOOP, RSET, HELP, VRFY, EHLO) accepted in a row before
    /// 421 4.7.0 and close.
    pub max_idle_commands: u32,
    /// Longest a connection may last, whatever it does (then 421 4.4.2).
    pub max_session_duration: Duration,
    /// On shutdown, how long message bodies in progress may take to finish before the
    /// remaining connections are cut (nothing of theirs was acknowledged).
    pub shutdown_grace: Duration,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest wait for a command (RFC 5321 §4.5.3.2 asks for at least 5 minutes).
    pub command_timeout: Duration,
    /// Longest wait for the next block of a message body (§4.5.3.2: 3 minutes at least).
    pub data_timeout: Duration,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Consecutive refused commands before the connection is closed.
    pub max_errors: u32,
    /// Longest time from accept to a verified client certificate (peers): counted in all,
    /// not per read, so a client trickling bytes cannot stretch it.
    pub tls_deadline: Duration,
    /// Most connections not yet past TLS with a verified client certificate (peers), so
    /// that authenticated operators always find slots (default: half of max_connections).
    pub max_pre_tls_connections: usize,
    /// Length of the kernel's queue of connections not yet accepted.
    pub listen_backlog: u32,
    /// More `Received:` headers than this: refused as a mail loop (`limits`).
    pub max_received_headers: usize,
    /// Load balancers in front of the listener that send a PROXY protocol header (v1 or
    /// v2): a connection from one of them must start with the header, and the client
    /// address it carries is the one every check and log uses; a header from any other
    /// address closes the connection.
    pub proxy_trusted: Vec<AllowedNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_nets_match_their_range_only() {
        let net: AllowedNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let host: AllowedNet = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: AllowedNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        let all: AllowedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.7".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<AllowedNet>().is_err());
        assert!("nonsense".parse::<AllowedNet>().is_err());
    }
}
