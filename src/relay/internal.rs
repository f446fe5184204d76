//! Delivery to the internal mail server: a small pool of reused sessions (SMTP or LMTP,
//! STARTTLS and AUTH as configured) and one transaction per message with a reply per
//! recipient.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::Outcome;
use super::{RelayProtocol, RelaySettings};
use crate::client::{Client, ClientError, ClientOptions, Transaction};
use crate::smtp::Enhanced;

/// Why the relay could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The TLS client configuration for STARTTLS could not be built.
    #[error("relay TLS: {0}")]
    Tls(String),
}

/// The internal server's sessions.
pub struct Internal {
    options: ClientOptions,
    idle_timeout: Duration,
    /// Idle sessions, most recently used last. Locked only to push or pop.
    pool: Mutex<Vec<Client>>,
    /// Bounds simultaneous transactions (and so sessions) with the internal server to
    /// `internal_concurrency`.
    slots: Arc<Semaphore>,
    /// The last session attempt failed: the server is down (or unreachable). Deliveries
    /// then do not try to connect: [`Internal::probe`] tries every [`PROBE_EVERY`].
    down: AtomicBool,
    /// When the server was last tried while down.
    last_try: Mutex<Instant>,
    /// Messages deferred because the server was down: due again as soon as a session
    /// succeeds, rather than at their retry time (minutes to an hour away).
    waiting: Mutex<HashSet<String>>,
    /// `mssante_relay_internal_down`, set where `down` changes.
    down_gauge: prometheus::IntGauge,
}

/// What one delivery to the internal server gave.
pub struct Delivered {
    /// Each recipient's outcome.
    pub outcomes: Vec<(String, Outcome)>,
    /// The server's name, when a session was had.
    pub server: Option<String>,
    /// The server was down and this delivery reached it: the messages that waited for it
    /// can go now.
    pub back: Vec<String>,
    /// No session could be had: the message waits for the server.
    pub unreachable: bool,
}

impl Internal {
    /// The client settings (and TLS client configuration when STARTTLS is asked).
    /// `down_gauge` shows whether the server is marked down.
    pub fn new(
        settings: &RelaySettings,
        hostname: &str,
        down_gauge: prometheus::IntGauge,
    ) -> Result<Internal, RelayError> {
        let tls = if settings.starttls {
            Some(tls_connector(settings)?)
        } else {
            None
        };
        Ok(Internal {
            options: ClientOptions {
                addr: settings.internal,
                lmtp: settings.protocol == RelayProtocol::Lmtp,
                helo: hostname.to_string(),
                tls,
                auth: settings.auth.clone(),
                timeout: settings.timeout,
                connect_timeout: settings.timeout,
            },
            idle_timeout: settings.idle_timeout,
            pool: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(settings.internal_concurrency)),
            down: AtomicBool::new(false),
            last_try: Mutex::new(Instant::now()),
            waiting: Mutex::new(HashSet::new()),
            down_gauge,
        })
    }

    /// Whether the internal server speaks LMTP (its acceptance is final delivery).
    pub fn lmtp(&self) -> bool {
        self.options.lmtp
    }

    /// Delivers one message to `recipients` (all in our domains): each one's outcome, the
    /// server's name when a session was had, and the messages to make due again when this
    /// delivery found the server back after an outage.
    pub async fn deliver(&self, queue_id: &str, transaction: &Transaction<'_>) -> Delivered {
        let recipients = transaction.envelope.recipients;
        let all = |o: Outcome| recipients.iter().map(|r| (r.clone(), o.clone())).collect();
        // The semaphore is never closed; if it were, going on unbounded is harmless.
        let _slot = Arc::clone(&self.slots).acquire_owned().await.ok();
        if self.is_down() {
            // Known down: no connection per message (with a server that drops packets, each
            // would hold a slot for the connect timeout). The message waits for the probe.
            lock(&self.waiting).insert(queue_id.to_string());
            return Delivered {
                outcomes: all(Outcome::deferred(
                    Enhanced(4, 4, 1),
                    "the internal server is unreachable; waiting for it to come back",
                )),
                server: None,
                back: Vec::new(),
                unreachable: true,
            };
        }
        match self.session().await {
            Ok(mut client) => {
                let back = self.reached();
                let server = Some(client.caps.name.clone());
                let outcomes = match client.send(transaction).await {
                    Ok(replies) => {
                        if !client.is_broken() {
                            self.give_back(client);
                        }
                        recipients
                            .iter()
                            .zip(replies)
                            .map(|(r, reply)| (r.clone(), Outcome::of_reply(reply)))
                            .collect()
                    }
                    Err(e) => {
                        tracing::warn!(queue_id = %queue_id, error = %e, "session to the internal server broke during a transaction");
                        all(lost(&e))
                    }
                };
                Delivered {
                    outcomes,
                    server,
                    back,
                    unreachable: false,
                }
            }
            Err(ClientError::Refused(reply)) if reply.is_permanent() => {
                tracing::error!(queue_id = %queue_id, reply = %reply, "the internal server refuses our session; check relay.auth_*");
                Delivered {
                    outcomes: all(Outcome::Temporary(reply)),
                    server: None,
                    back: Vec::new(),
                    unreachable: false,
                }
            }
            Err(e) => {
                *lock(&self.last_try) = Instant::now();
                {
                    // The flag and its gauge change under the `waiting` lock, as in
                    // `reached`, so they cannot disagree after two transitions race.
                    let mut waiting = lock(&self.waiting);
                    if !self.down.swap(true, Ordering::SeqCst) {
                        tracing::warn!(internal = %self.options.addr, error = %e, "internal server unreachable: messages for it wait until a session succeeds");
                    }
                    self.down_gauge.set(1);
                    waiting.insert(queue_id.to_string());
                }
                tracing::debug!(queue_id = %queue_id, internal = %self.options.addr, error = %e, "internal server unreachable");
                Delivered {
                    outcomes: all(lost(&e)),
                    server: None,
                    back: Vec::new(),
                    unreachable: true,
                }
            }
        }
    }

    /// A session succeeded: if the server was down, it is back, and every message that
    /// waited for it is handed back to be made due.
    fn reached(&self) -> Vec<String> {
        if !self.is_down() {
            return Vec::new();
        }
        let back: Vec<String> = {
            let mut waiting = lock(&self.waiting);
            if !self.down.swap(false, Ordering::SeqCst) {
                return Vec::new();
            }
            self.down_gauge.set(0);
            waiting.drain().collect()
        };
        tracing::info!(internal = %self.options.addr, waiting = back.len(), "internal server reachable again: the messages that waited for it are due now");
        back
    }

    /// The last session attempt failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// While the server is down, tries a session every [`PROBE_EVERY`]; when one succeeds,
    /// the messages that waited for it, to be made due now.
    pub async fn probe(&self) -> Vec<String> {
        if !self.is_down() {
            return Vec::new();
        }
        {
            let mut last = lock(&self.last_try);
            if last.elapsed() < PROBE_EVERY {
                return Vec::new();
            }
            *last = Instant::now();
        }
        match self.session().await {
            Ok(client) => {
                self.give_back(client);
                self.reached()
            }
            Err(e) => {
                tracing::debug!(internal = %self.options.addr, error = %e, "internal server still unreachable");
                Vec::new()
            }
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // Push and pop cannot leave the vector inconsistent, so a poisoned lock is usable.
        lock(&self.pool)
    }

    /// Says QUIT to the sessions idle for longer than `idle_timeout`.
    pub fn close_idle_sessions(&self) {
        let idle = self.idle_timeout;
        let expired: Vec<Client> = {
            let mut pool = self.lock_pool();
            let (old, keep): (Vec<Client>, Vec<Client>) =
                pool.drain(..).partition(|c| c.last_used.elapsed() >= idle);
            *pool = keep;
            old
        };
        for c in expired {
            tokio::spawn(c.quit());
        }
    }

    /// Says QUIT to every idle session (shutdown).
    pub async fn close_all(&self) {
        let sessions: Vec<Client> = std::mem::take(&mut *self.lock_pool());
        for s in sessions {
            s.quit().await;
        }
    }

    /// A session ready for a transaction: a pooled one that answers RSET, or a new one.
    async fn session(&self) -> Result<Client, ClientError> {
        loop {
            let pooled = self.lock_pool().pop();
            let Some(mut c) = pooled else {
                return Client::connect(&self.options).await;
            };
            if c.last_used.elapsed() >= self.idle_timeout {
                tokio::spawn(c.quit());
                continue;
            }
            if c.rset().await.is_ok() {
                return Ok(c);
            }
        }
    }

    fn give_back(&self, c: Client) {
        self.lock_pool().push(c);
    }
}

/// How often a down internal server is tried again.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The values behind these locks are replaced whole: a poisoned one is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A session that failed or broke: its recipients wait for the next attempt.
fn lost(e: &ClientError) -> Outcome {
    Outcome::deferred(Enhanced(4, 4, 1), e.to_string())
}

fn tls_connector(
    settings: &RelaySettings,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    RelayError,
> {
    use rustls_pki_types::pem::PemObject;
    let ca = settings
        .tls_ca
        .as_ref()
        .ok_or_else(|| RelayError::Tls("relay.tls_ca is needed with starttls".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| RelayError::Tls(format!("{}: {e}", ca.display())))?
    {
        let cert = cert.map_err(|e| RelayError::Tls(format!("{}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| RelayError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RelayError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(settings.tls_server_name.clone())
        .map_err(|e| RelayError::Tls(format!("relay.tls_server_name: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}
