//! Accepting connections: limits, back-off on accept errors, graceful shutdown.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::connection;
use super::proxy;
use super::{InboundContext, Role};
use crate::metrics::labels;

/// Counts open connections per IP address; the count drops with the guard.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a slot for `ip` unless it already has `max` connections.
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// New connections per IP address and minute, as token buckets: each address may open
/// `per_minute` connections at once, then one more every `60 / per_minute` seconds. The
/// rate is given at each call: a reload changes it for the next connection.
#[derive(Default)]
struct ConnectionRate {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl ConnectionRate {
    /// Whether `ip` may open a connection now at `per_minute` (and takes a token if so).
    fn allow(&self, ip: IpAddr, now: Instant, per_minute: u32) -> bool {
        if per_minute == 0 {
            return true;
        }
        let capacity = f64::from(per_minute);
        let refill_per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forget addresses whose bucket has refilled: they behave as new ones.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * refill_per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * refill_per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A bound inbound listener.
pub struct Listener {
    listener: TcpListener,
    ctx: Arc<InboundContext>,
    name: &'static str,
}

impl Listener {
    /// Binds the address in the context's settings.
    pub async fn bind(ctx: Arc<InboundContext>) -> io::Result<Listener> {
        let name = ctx.role.listener_name();
        let addr = ctx.settings.listen;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(ctx.settings.listen_backlog)?;
        Ok(Listener {
            listener,
            ctx,
            name,
        })
    }

    /// The address actually bound (useful when the port was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` turns true, then waits for the open sessions to
    /// finish (each answers 421 at its next command, or once its transaction is over).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let settings = &self.ctx.settings;
        let admission = Arc::new(Admission {
            ctx: Arc::clone(&self.ctx),
            name: self.name,
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            // Peers not yet past TLS with a verified certificate hold at most this many of
            // the slots: a crowd of idle or slow connections cannot lock authenticated
            // peers out.
            pre_tls: Arc::new(Semaphore::new(settings.max_pre_tls_connections)),
            per_ip: Arc::new(PerIp::default()),
            rate: ConnectionRate::default(),
        });
        let mut tasks = JoinSet::new();
        let mut stop = shutdown.clone();
        let mut backoff = Duration::from_millis(10);
        tracing::info!(listener = self.name, addr = %settings.listen, proxy_protocol_trusted = settings.proxy_trusted.len(), "listening");
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = stop.wait_for(|s| *s) => break,
                // Reap finished sessions so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait and try again rather than
                    // stopping the listener.
                    tracing::error!(listener = self.name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let shutdown = shutdown.clone();
            if settings.proxy_trusted.iter().any(|n| n.contains(peer.ip())) {
                // A balancer: the client's address comes in its header, which may take a
                // moment; read it in the connection's own task, then admit the client. The
                // connection holds its place among `max_connections` while it waits, so
                // a balancer that opens many and sends nothing cannot exceed the limit.
                let Ok(slot) = Arc::clone(&admission.slots).try_acquire_owned() else {
                    tracing::warn!(listener = admission.name, balancer = %peer, reason = labels::MAX_CONNECTIONS, "connection refused");
                    admission.refused(labels::MAX_CONNECTIONS);
                    tokio::spawn(refuse(stream, TOO_MANY_CONNECTIONS));
                    continue;
                };
                let admission = Arc::clone(&admission);
                tasks.spawn(async move {
                    let mut stream = stream;
                    let limit = admission.ctx.settings.handshake_timeout;
                    match proxy::read_header(&mut stream, limit).await {
                        Ok(client) => {
                            let client = client.unwrap_or(peer);
                            if let Some(admitted) = admission.admit(stream, client, Some(slot)) {
                                admission.run(admitted, client, Some(peer), shutdown).await;
                            }
                        }
                        Err(refusal) => {
                            let reason = refusal.reason();
                            admission.refused(reason);
                            tracing::warn!(listener = admission.name, balancer = %peer, reason, error = %refusal, "connection closed before SMTP");
                        }
                    }
                });
                continue;
            }
            if let Some(admitted) = admission.admit(stream, peer, None) {
                let admission = Arc::clone(&admission);
                tasks.spawn(async move { admission.run(admitted, peer, None, shutdown).await });
            }
        }
        tracing::info!(
            listener = self.name,
            open = tasks.len(),
            "stopped accepting; waiting for open sessions"
        );
        let grace = settings.shutdown_grace;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(listener = self.name, open = tasks.len(), grace_s = grace.as_secs(), "sessions still open after inbound.shutdown_grace; closing them (nothing of theirs was acknowledged)");
            tasks.shutdown().await;
        }
        tracing::info!(listener = self.name, "all sessions closed");
    }
}

/// The answer to a connection over `max_connections`.
const TOO_MANY_CONNECTIONS: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";

/// A connection that passed the listener's limits, with the places it holds.
struct Admitted {
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    ip_slot: PerIpGuard,
    pre_tls_slot: Option<OwnedSemaphorePermit>,
}

/// The listener's limits, applied to the client's address: the TCP peer's, or the one a
/// trusted balancer's PROXY header names.
struct Admission {
    ctx: Arc<InboundContext>,
    name: &'static str,
    slots: Arc<Semaphore>,
    pre_tls: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    rate: ConnectionRate,
}

impl Admission {
    fn refused(&self, reason: &str) {
        self.ctx
            .metrics
            .connections_refused_total
            .inc(&[self.name, reason]);
    }

    /// Applies the limits to a connection from `client`; a refused one is answered and
    /// closed in a task of its own. `held`: the place among `max_connections` a
    /// balancer's connection took while its header was read.
    fn admit(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        held: Option<OwnedSemaphorePermit>,
    ) -> Option<Admitted> {
        let name = self.name;
        // The per-address limits are reloadable: the values current at this accept.
        let live = self.ctx.live.load();
        let refuse = |reason: &str, reply: &'static [u8], stream: TcpStream| {
            self.refused(reason);
            tokio::spawn(refuse(stream, reply));
            None
        };
        if let Role::Submission { allow, .. } = &self.ctx.role {
            if !allow.iter().any(|net| net.contains(client.ip())) {
                tracing::warn!(listener = name, peer = %client, reason = labels::NOT_ALLOWED, "connection refused: address not in submission.allow");
                return refuse(labels::NOT_ALLOWED, b"554 5.7.1 Access denied\r\n", stream);
            }
        }
        if !self
            .rate
            .allow(client.ip(), Instant::now(), live.max_connection_rate_per_ip)
        {
            tracing::warn!(listener = name, peer = %client, reason = labels::CONNECTION_RATE, "connection refused");
            return refuse(
                labels::CONNECTION_RATE,
                b"421 4.7.0 Too many new connections from your address, slow down\r\n",
                stream,
            );
        }
        let slot = match held {
            Some(slot) => slot,
            None => match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    tracing::warn!(listener = name, peer = %client, reason = labels::MAX_CONNECTIONS, "connection refused");
                    return refuse(labels::MAX_CONNECTIONS, TOO_MANY_CONNECTIONS, stream);
                }
            },
        };
        let Some(ip_slot) = self
            .per_ip
            .try_take(client.ip(), live.max_connections_per_ip)
        else {
            tracing::warn!(listener = name, peer = %client, reason = labels::MAX_CONNECTIONS_PER_IP, "connection refused");
            return refuse(
                labels::MAX_CONNECTIONS_PER_IP,
                b"421 4.7.0 Too many connections from your address, try again later\r\n",
                stream,
            );
        };
        let pre_tls_slot = match &self.ctx.role {
            Role::Peer => match Arc::clone(&self.pre_tls).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(listener = name, peer = %client, reason = labels::PRE_TLS_BUDGET, "connection refused: inbound.max_pre_tls_connections connections are still before TLS");
                    return refuse(
                        labels::PRE_TLS_BUDGET,
                        b"421 4.7.0 Too many connections not yet authenticated, try again later\r\n",
                        stream,
                    );
                }
            },
            Role::Submission { .. } => None,
        };
        Some(Admitted {
            stream,
            slot,
            ip_slot,
            pre_tls_slot,
        })
    }

    /// Serves an admitted connection to its end, then gives its places back.
    async fn run(
        &self,
        admitted: Admitted,
        client: SocketAddr,
        via: Option<SocketAddr>,
        shutdown: watch::Receiver<bool>,
    ) {
        self.ctx.metrics.connections_total.inc(&[self.name]);
        let Admitted {
            stream,
            slot,
            ip_slot,
            pre_tls_slot,
        } = admitted;
        connection::serve(
            stream,
            client,
            via,
            Arc::clone(&self.ctx),
            shutdown,
            pre_tls_slot,
        )
        .await;
        drop(ip_slot);
        drop(slot);
    }
}

/// Answers a connection over a limit and closes it, without waiting long for a slow peer.
async fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_rate_allows_a_burst_then_refills() {
        let rate = ConnectionRate::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(rate.allow(ip, t0, 60));
        }
        assert!(!rate.allow(ip, t0, 60));
        assert!(rate.allow(other, t0, 60), "limits are per address");
        assert!(!rate.allow(ip, t0 + Duration::from_millis(500), 60));
        assert!(
            rate.allow(ip, t0 + Duration::from_millis(1100), 60),
            "one token per second"
        );
    }

    #[test]
    fn a_new_rate_applies_at_the_next_connection() {
        let rate = ConnectionRate::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..5).all(|_| rate.allow(ip, t0, 60)));
        // Lowered by a reload to 3 a minute: the 55 tokens left are capped at the new
        // burst of 3, then refused.
        assert!((0..3).all(|_| rate.allow(ip, t0, 3)));
        assert!(!rate.allow(ip, t0, 3));
        // Raised again: it refills at the new rate, one a second at 60 a minute.
        assert!(!rate.allow(ip, t0, 60));
        assert!(rate.allow(ip, t0 + Duration::from_millis(1100), 60));
    }

    #[test]
    fn zero_disables_the_rate_limit() {
        let rate = ConnectionRate::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| rate.allow(ip, t0, 0)));
    }
}
