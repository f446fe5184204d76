//! Delivery to the internal mail server: a small pool of reused sessions (SMTP or LMTP,
//! STARTTLS and AUTH as configured) and one transaction per message with a reply per
//! recipient.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Internal {
    /// The client settings (and TLS client configuration when STARTTLS is asked).
    pub fn new(settings: &RelaySettings, hostname: &str) -> Result<Internal, RelayError> {
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
        })
    }

    /// Whether the internal server speaks LMTP (its acceptance is final delivery).
    pub fn lmtp(&self) -> bool {
        self.options.lmtp
    }

    /// Delivers one message to `recipients` (all in our domains); returns each one's
    /// outcome and the server's name when a session was had.
    pub async fn deliver(
        &self,
        queue_id: &str,
        transaction: &Transaction<'_>,
    ) -> (Vec<(String, Outcome)>, Option<String>) {
        let recipients = transaction.envelope.recipients;
        let all = |o: Outcome| recipients.iter().map(|r| (r.clone(), o.clone())).collect();
        // The semaphore is never closed; if it were, going on unbounded is harmless.
        let _slot = Arc::clone(&self.slots).acquire_owned().await.ok();
        match self.session().await {
            Ok(mut client) => {
                let name = Some(client.caps.name.clone());
                match client.send(transaction).await {
                    Ok(replies) => {
                        if !client.is_broken() {
                            self.give_back(client);
                        }
                        let outcomes = recipients
                            .iter()
                            .zip(replies)
                            .map(|(r, reply)| (r.clone(), Outcome::of_reply(reply)))
                            .collect();
                        (outcomes, name)
                    }
                    Err(e) => {
                        tracing::warn!(queue_id = %queue_id, error = %e, "session to the internal server broke during a transaction");
                        (all(lost(&e)), name)
                    }
                }
            }
            Err(ClientError::Refused(reply)) if reply.is_permanent() => {
                tracing::error!(queue_id = %queue_id, reply = %reply, "the internal server refuses our session; check relay.auth_*");
                (all(Outcome::Temporary(reply)), None)
            }
            Err(e) => {
                tracing::warn!(queue_id = %queue_id, internal = %self.options.addr, error = %e, "internal server unreachable");
                (all(lost(&e)), None)
            }
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // Push and pop cannot leave the vector inconsistent, so a poisoned lock is usable.
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
