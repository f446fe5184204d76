//! Delivery to other operators of the espace de confiance: one transaction per recipient
//! domain and message, over STARTTLS only, to an MX host whose IGC Santé certificate is
//! checked before anything of the message is sent.
//!
//! For a domain, in order:
//! 1. the liste blanche: the domain must be listed (a stale list defers, an unlisted
//!    domain bounces with `recipient_domain_not_listed`);
//! 2. DNS: the MX hosts by preference ([`Resolver::mx_hosts`]); a permanent DNS error
//!    bounces, a temporary one defers;
//! 3. each MX host in turn, each of its addresses in turn: TCP to `[outbound] port`,
//!    EHLO, STARTTLS (required: a host that does not offer it is skipped, nothing is ever
//!    sent in plaintext), our certificate as the client certificate;
//! 4. after the handshake, before MAIL FROM: the server's chain must verify against the
//!    espace's anchors (`server_cert_*`), its CN or a dNSName must be the MX host name we
//!    connected to (`mx_cn_mismatch`), and its subject DN must be one the liste blanche
//!    lists for the recipient domain (`recipient_dn_mismatch`);
//! 5. MAIL/RCPT/DATA (or BDAT) with per-recipient replies.
//!
//! A connection or trust failure on one host moves on to the next host. When no host
//! could be used, the recipients are deferred, not bounced, whatever the reason:
//! certificate, name or DN problems are nearly always a configuration mistake (an expired
//! certificate, an MX changed before the liste blanche) that the peer operator fixes
//! within hours, and the retry schedule bounces with 4.4.7 at expiry anyway. Bouncing at
//! once would turn an operator's bad afternoon into lost mail for all its users.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::{ServerName, UnixTime};

use tokio::sync::Semaphore;

use super::Outcome;
use crate::client::{Client, ClientError, ClientOptions, Transaction};
use crate::dns::{DnsError, Resolver};
use crate::live::LiveSettings;
use crate::metrics::{labels, Metrics};
use crate::policy::judge_server;
use crate::smtp::{Enhanced, Reply};
use crate::whitelist::live::WhitelistState;

/// How long a session to a peer may wait unused for the next message. Short: a peer's
/// connection slots are shared by every operator of the espace.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// Longest wait for a free slot of a recipient domain (or of the outbound relay): past it
/// the recipients are deferred, so that a burst for one slow operator does not keep every
/// worker waiting while other mail is due.
const DOMAIN_WAIT: Duration = Duration::from_secs(30);

/// What the outbound relay needs; shared by every delivery.
pub struct Outbound {
    settings: OutboundSettings,
    resolver: Resolver,
    whitelist: Arc<WhitelistState>,
    /// The gateway's live settings, for the trust store (anchors and CRLs are refreshed
    /// there, and a reload replaces them).
    live: Arc<ArcSwap<LiveSettings>>,
    metrics: Arc<Metrics>,
    /// Bounds outbound transactions overall.
    slots: Arc<Semaphore>,
    /// One semaphore per recipient domain, created on first use. Domains are those of the
    /// liste blanche (a few thousand at most), so the map stays small.
    per_domain: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Sessions whose last transaction succeeded, by MX host and address, reused with RSET
    /// for the next message to the same host (for any domain it serves: the server checks
    /// are run again on each reuse). At most one per transaction in flight, so bounded by
    /// `concurrency`.
    idle: Mutex<HashMap<(String, IpAddr), Vec<Client>>>,
}

/// One message's recipients at one domain.
pub struct DomainDelivery<'a> {
    /// The queue id, for logs.
    pub queue_id: &'a str,
    /// The recipient domain, lower case.
    pub domain: &'a str,
    /// The transaction (its recipients are all at `domain`).
    pub transaction: Transaction<'a>,
}

/// What one domain's delivery gave: the fate of each recipient and the MX host that
/// answered, for the DSN's Remote-MTA.
pub struct DomainResult {
    /// One outcome per recipient, in the transaction's order.
    pub outcomes: Vec<(String, Outcome)>,
    /// The MX host that took the transaction, when one did.
    pub remote_mta: Option<String>,
}

/// Why one MX host could not be used.
struct HostFailure {
    reason: &'static str,
    detail: String,
}

impl Outbound {
    /// Builds the relay. Our client certificate comes from the live settings (see
    /// `LiveSettings::client_tls`), so a reload changes it for the next connection.
    pub fn new(
        settings: OutboundSettings,
        resolver: Resolver,
        whitelist: Arc<WhitelistState>,
        live: Arc<ArcSwap<LiveSettings>>,
        metrics: Arc<Metrics>,
    ) -> Outbound {
        Outbound {
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            resolver,
            whitelist,
            live,
            metrics,
            per_domain: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Most simultaneous outbound transactions.
    pub fn concurrency(&self) -> usize {
        self.settings.concurrency
    }

    fn domain_slots(&self, domain: &str) -> Arc<Semaphore> {
        // Inserting cannot leave the map inconsistent, so a poisoned lock is usable.
        let mut map = self
            .per_domain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            map.entry(domain.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.concurrency_per_domain))),
        )
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Vec<Client>>> {
        // Push and pop cannot leave the map inconsistent, so a poisoned lock is usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pooled session to `mx` at `ip` that still answers RSET, if any.
    async fn take_idle(&self, mx: &str, ip: IpAddr) -> Option<Client> {
        loop {
            let popped = self
                .lock_idle()
                .get_mut(&(mx.to_string(), ip))
                .and_then(Vec::pop);
            let mut c = popped?;
            if c.last_used.elapsed() >= IDLE_FOR {
                tokio::spawn(c.quit());
                continue;
            }
            if c.rset().await.is_ok() {
                return Some(c);
            }
        }
    }

    fn give_back(&self, mx: &str, ip: IpAddr, c: Client) {
        self.lock_idle()
            .entry((mx.to_string(), ip))
            .or_default()
            .push(c);
    }

    /// Closes sessions unused for too long (the worker calls it now and then).
    pub fn close_idle_sessions(&self) {
        let expired: Vec<Client> = {
            let mut map = self.lock_idle();
            let mut old = Vec::new();
            for sessions in map.values_mut() {
                let (gone, keep): (Vec<Client>, Vec<Client>) = sessions
                    .drain(..)
                    .partition(|c| c.last_used.elapsed() >= IDLE_FOR);
                *sessions = keep;
                old.extend(gone);
            }
            map.retain(|_, v| !v.is_empty());
            old
        };
        for c in expired {
            tokio::spawn(c.quit());
        }
    }

    /// Says QUIT to every pooled session (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Client> = self.lock_idle().drain().flat_map(|(_, v)| v).collect();
        for c in all {
            c.quit().await;
        }
    }

    fn fail(&self, reason: &str) {
        self.metrics.outbound_failures_total.inc(&[reason]);
    }

    /// Delivers `d` and tells each recipient's fate.
    pub async fn deliver(&self, d: DomainDelivery<'_>) -> DomainResult {
        let all = |o: Outcome| -> Vec<(String, Outcome)> {
            d.transaction
                .envelope
                .recipients
                .iter()
                .map(|r| (r.clone(), o.clone()))
                .collect()
        };
        let id = d.queue_id;
        let domain = d.domain;
        let rcpts = d.transaction.envelope.recipients;

        if self.whitelist.is_stale(SystemTime::now()) {
            self.fail(labels::WHITELIST_STALE);
            tracing::warn!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = "deferred", reason = labels::WHITELIST_STALE, "outbound delivery: our liste blanche is out of date");
            return DomainResult {
                outcomes: all(Outcome::deferred(
                    Enhanced(4, 7, 1),
                    "our copy of the liste blanche is out of date",
                )),
                remote_mta: None,
            };
        }
        if !self.whitelist.snapshot().is_listed_domain(domain) {
            self.fail(labels::RECIPIENT_DOMAIN_NOT_LISTED);
            tracing::warn!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = "bounced", reason = labels::RECIPIENT_DOMAIN_NOT_LISTED, "outbound delivery: domain not on the liste blanche");
            let reply = Reply::new(
                550,
                Enhanced(5, 7, 1),
                format!("{domain} is not on the liste blanche: mail may not leave the espace de confiance"),
            );
            return DomainResult {
                outcomes: all(Outcome::Permanent(reply)),
                remote_mta: None,
            };
        }

        let domain_slots = self.domain_slots(domain);
        let permits = tokio::time::timeout(DOMAIN_WAIT, async {
            let p = domain_slots.acquire_owned().await.ok()?;
            let g = Arc::clone(&self.slots).acquire_owned().await.ok()?;
            Some((p, g))
        })
        .await;
        let Ok(Some(_permits)) = permits else {
            // Waiting longer would hold a worker slot that other messages (our users'
            // incoming mail among them) need; the message comes back on the schedule.
            // (The semaphores are never closed, so `None` cannot happen.)
            self.fail(labels::DOMAIN_BUSY);
            tracing::info!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = "deferred", reason = labels::DOMAIN_BUSY, "outbound delivery: every slot for the domain stayed busy");
            return DomainResult {
                outcomes: all(Outcome::deferred(
                    Enhanced(4, 4, 5),
                    format!("too many deliveries to {domain} in progress"),
                )),
                remote_mta: None,
            };
        };

        let hosts = match self.resolver.mx_hosts(domain).await {
            Ok(h) => h,
            Err(e) => {
                self.fail(e.reason());
                let outcome = dns_outcome(&e);
                let verdict = if e.is_permanent() {
                    "bounced"
                } else {
                    "deferred"
                };
                tracing::warn!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = verdict, reason = e.reason(), error = %e, "outbound delivery: MX lookup failed");
                return DomainResult {
                    outcomes: all(outcome),
                    remote_mta: None,
                };
            }
        };

        let mut last: Option<HostFailure> = None;
        // Whether every host failed for a permanent DNS reason (no address at all).
        let mut only_permanent_dns = true;
        for host in &hosts {
            let addresses = match self.resolver.addresses(&host.exchange).await {
                Ok(a) => a,
                Err(e) => {
                    self.fail(e.reason());
                    only_permanent_dns &= e.is_permanent();
                    tracing::warn!(queue_id = %id, domain, mx = %host.exchange, outcome = "next_host", reason = e.reason(), error = %e, "outbound delivery: MX host address lookup failed");
                    last = Some(HostFailure {
                        reason: e.reason(),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            only_permanent_dns = false;
            for ip in addresses {
                match self.try_host(&d, &host.exchange, ip).await {
                    Ok(outcomes) => {
                        return DomainResult {
                            outcomes,
                            remote_mta: Some(host.exchange.clone()),
                        }
                    }
                    Err((failure, next_host)) => {
                        self.fail(failure.reason);
                        last = Some(failure);
                        if next_host {
                            break;
                        }
                    }
                }
            }
        }
        let (reason, detail) = last
            .map(|f| (f.reason, f.detail))
            .unwrap_or(("no_mx_host", "no MX host to try".to_string()));
        if only_permanent_dns {
            tracing::warn!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = "bounced", reason, "outbound delivery: no MX host of the domain has an address");
            let reply = Reply::new(
                550,
                Enhanced(5, 4, 4),
                format!("no mail host of {domain} has an address: {detail}"),
            );
            return DomainResult {
                outcomes: all(Outcome::Permanent(reply)),
                remote_mta: None,
            };
        }
        tracing::warn!(queue_id = %id, domain, rcpts = %crate::logging::list(rcpts), outcome = "deferred", reason, error = %detail, "outbound delivery: no MX host could take the message");
        DomainResult {
            outcomes: all(Outcome::deferred(
                Enhanced(4, 4, 0),
                format!("{reason}: {detail}"),
            )),
            remote_mta: None,
        }
    }

    /// One attempt on one address of one MX host: connect, STARTTLS, trust checks, then the
    /// transaction. `Err((why, next_host))`: this address could not be used; `next_host`
    /// says whether the host's other addresses are pointless (TLS and trust problems are
    /// the host's, not the address's).
    async fn try_host(
        &self,
        d: &DomainDelivery<'_>,
        mx: &str,
        ip: IpAddr,
    ) -> Result<Vec<(String, Outcome)>, (HostFailure, bool)> {
        let addr = SocketAddr::new(ip, self.settings.port);
        let server_name = ServerName::try_from(mx.to_string()).map_err(|e| {
            (
                HostFailure {
                    reason: labels::MX_INVALID_NAME,
                    detail: format!("{mx}: {e}"),
                },
                true,
            )
        })?;
        let opts = ClientOptions {
            addr,
            lmtp: false,
            helo: self.settings.helo.clone(),
            // Read at each connection, so a reloaded certificate is presented at once.
            tls: Some((
                tokio_rustls::TlsConnector::from(Arc::clone(&self.live.load().client_tls)),
                server_name,
            )),
            auth: None,
            timeout: self.settings.timeout,
            connect_timeout: self.settings.connect_timeout,
        };
        let log_failure = |reason: &str, detail: &str, tls: Option<&str>, dn: Option<&str>| {
            tracing::warn!(
                queue_id = %d.queue_id,
                domain = %d.domain,
                mx = %mx,
                ip = %ip,
                tls,
                remote_dn = dn,
                reply = %detail,
                outcome = "host_failed",
                reason,
                "outbound delivery attempt"
            );
        };
        let pooled = self.take_idle(mx, ip).await;
        let reused = pooled.is_some();
        let connected = match pooled {
            Some(c) => Ok(c),
            None => Client::connect(&opts).await,
        };
        let mut client = match connected {
            Ok(c) => c,
            Err(e) => {
                let (reason, next_host) = match &e {
                    ClientError::StartTlsUnavailable => (labels::STARTTLS_UNAVAILABLE, true),
                    ClientError::Handshake(_) => (labels::TLS_HANDSHAKE_FAILED, true),
                    ClientError::Refused(_) => (labels::SESSION_REFUSED, false),
                    ClientError::Timeout(_) => (labels::TIMEOUT, false),
                    ClientError::Io(_) | ClientError::Closed | ClientError::Protocol(_) => {
                        (labels::CONNECT_FAILED, false)
                    }
                };
                let detail = e.to_string();
                log_failure(reason, &detail, None, None);
                return Err((HostFailure { reason, detail }, next_host));
            }
        };
        let tls = client.tls().map(|t| t.to_string()).unwrap_or_default();
        let trust = Arc::clone(&self.live.load().trust);
        let list = self.whitelist.snapshot();
        let judged = judge_server(
            client.peer_certificates(),
            mx,
            d.domain,
            &trust,
            Some(&list),
            UnixTime::now(),
        );
        let identity = match judged.verdict(mx, d.domain) {
            Ok(identity) => identity.subject_dn,
            Err(refusal) => {
                log_failure(
                    refusal.reason,
                    &refusal.detail,
                    Some(&tls),
                    refusal.subject_dn.as_deref(),
                );
                client.quit().await;
                return Err((
                    HostFailure {
                        reason: refusal.reason,
                        detail: refusal.detail,
                    },
                    true,
                ));
            }
        };
        let result = client.send(&d.transaction).await;
        let (outcomes, reply_text, verdict) = match result {
            Ok(replies) => {
                self.give_back(mx, ip, client);
                let summary = replies
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ");
                let mut delivered = 0usize;
                let outcomes: Vec<(String, Outcome)> = d
                    .transaction
                    .envelope
                    .recipients
                    .iter()
                    .zip(replies)
                    .map(|(r, reply)| {
                        let o = Outcome::of_reply(reply);
                        delivered += usize::from(matches!(o, Outcome::Delivered));
                        (r.clone(), o)
                    })
                    .collect();
                let verdict = if delivered == outcomes.len() {
                    "delivered"
                } else if delivered > 0 {
                    "partly_delivered"
                } else {
                    "refused"
                };
                (outcomes, summary, verdict)
            }
            Err(e) => {
                // The session broke mid-transaction: nothing is known of the recipients
                // whose reply was not read, so all are retried (a duplicate is better than a
                // loss). Not tried on another host now, for the same reason.
                self.fail(labels::SESSION_BROKEN);
                let broke =
                    Outcome::deferred(Enhanced(4, 4, 2), format!("session with {mx} broke: {e}"));
                let outcomes = d
                    .transaction
                    .envelope
                    .recipients
                    .iter()
                    .map(|r| (r.clone(), broke.clone()))
                    .collect();
                (outcomes, e.to_string(), "session_broken")
            }
        };
        tracing::info!(
            queue_id = %d.queue_id,
            domain = %d.domain,
            mx = %mx,
            ip = %ip,
            tls = %tls,
            remote_dn = %identity,
            reused,
            rcpts = %crate::logging::list(d.transaction.envelope.recipients),
            reply = %reply_text,
            outcome = verdict,
            "outbound delivery attempt"
        );
        Ok(outcomes)
    }
}

/// How a failed MX lookup ends for the recipients: temporary errors retry; a domain that
/// does not exist or cannot be a name is a bad address (5.1.2), a null MX refuses mail
/// (5.1.10, RFC 7505), a domain without any mail host cannot be routed (5.4.4).
fn dns_outcome(e: &DnsError) -> Outcome {
    let status = match e {
        DnsError::Temporary { .. } => return Outcome::deferred(Enhanced(4, 4, 3), e.to_string()),
        DnsError::NoSuchDomain { .. } | DnsError::InvalidName { .. } => Enhanced(5, 1, 2),
        DnsError::NullMx { .. } => Enhanced(5, 1, 10),
        DnsError::NoMailHost { .. } | DnsError::NoAddress { .. } => Enhanced(5, 4, 4),
    };
    Outcome::Permanent(Reply::new(550, status, e.to_string()))
}

/// Delivery to other operators: the `[outbound]` section.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// The port of the peers' MX hosts: 25 in the espace; tests point it elsewhere.
    pub port: u16,
    /// Longest wait for a TCP connection to one MX address before the next is tried.
    pub connect_timeout: Duration,
    /// Longest wait for any reply of a peer (greeting, each command, end of data).
    pub timeout: Duration,
    /// Most simultaneous outbound transactions, all domains together: the bound on
    /// connections to peers and on the delivery tasks waiting for them.
    pub concurrency: usize,
    /// Most simultaneous transactions to one recipient domain, so that a burst for one
    /// operator neither monopolises the workers nor trips the peer's connection limits.
    pub concurrency_per_domain: usize,
    /// Our name in EHLO; the host name (our certificate's CN) unless set.
    pub helo: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_failures_map_to_bounce_statuses_or_a_retry() {
        let status = |e: DnsError| match dns_outcome(&e) {
            Outcome::Permanent(r) => r.status().to_string(),
            Outcome::Temporary(r) => format!("temporary {} {}", r.code, r.status()),
            Outcome::Delivered => "delivered".into(),
        };
        assert_eq!(status(DnsError::NoSuchDomain { name: "x".into() }), "5.1.2");
        assert_eq!(status(DnsError::NullMx { domain: "x".into() }), "5.1.10");
        assert_eq!(status(DnsError::NoMailHost { domain: "x".into() }), "5.4.4");
        assert_eq!(
            status(DnsError::Temporary {
                name: "x".into(),
                detail: "timeout".into()
            }),
            "temporary 451 4.4.3"
        );
    }
}
