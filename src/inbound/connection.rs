//! One inbound connection: the read loop, STARTTLS, policy questions and the spool.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls_pki_types::UnixTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::{InboundContext, Role};
use crate::live::LiveSettings;
use crate::metrics::labels;
use crate::policy::{self, PeerCertificate};
use crate::smtp::{Enhanced, Event, MailFrom, RcptTo, Reply, Session, SessionConfig};
use crate::spool::{Envelope, Incoming, Recipient, SessionTls};
use crate::trust::verify::{verify_chain, Usage};
use crate::trust::TlsInfo;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

/// How a pass of the read loop ended.
enum Pass {
    /// The client asked for STARTTLS and the 220 was written.
    StartTls,
    /// The session is over.
    Closed,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Serves one connection to its end.
/// `peer` is the client: the TCP peer, or the client a trusted balancer's PROXY header
/// named (`via` is then the balancer).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    via: Option<SocketAddr>,
    ctx: Arc<InboundContext>,
    shutdown: watch::Receiver<bool>,
    pre_tls_slot: Option<OwnedSemaphorePermit>,
) {
    let id = format!(
        "{:x}-{:x}",
        std::process::id(),
        SESSION_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let span = match via {
        Some(via) => tracing::info_span!("session", session = %id, peer = %peer, via = %via),
        None => tracing::info_span!("session", session = %id, peer = %peer),
    };
    ctx.metrics.connections_open.inc();
    let metrics = Arc::clone(&ctx.metrics);
    async move {
        tracing::debug!("connected");
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(peer, ctx, shutdown, pre_tls_slot);
        conn.run(stream).await;
        conn.abandon_message().await;
        // One line per session, whatever happened in it: what a sysadmin counts and
        // greps (the span adds the session id and the peer).
        tracing::info!(
            outcome = conn.end,
            duration_ms = u64::try_from(conn.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_in = conn.bytes_in,
            messages = conn.messages,
            tls_version = conn.tls.as_ref().map(|t| t.version),
            peer_dn = conn.peer_dn().as_deref(),
            "session closed"
        );
    }
    .instrument(span)
    .await;
    metrics.connections_open.dec();
}

/// The state of one connection around its SMTP session.
struct Connection {
    ctx: Arc<InboundContext>,
    /// The reloadable settings as they were when the connection was accepted.
    live: Arc<LiveSettings>,
    peer: SocketAddr,
    session: Session,
    shutdown: watch::Receiver<bool>,
    /// The server is stopping: close as soon as no message body is being received.
    draining: bool,
    /// When the session is closed whatever it is doing: `tls_deadline` after accept until
    /// a peer's certificate is verified, then `max_session_duration` after accept.
    deadline: tokio::time::Instant,
    /// When the session started, for `max_session_duration`.
    started: tokio::time::Instant,
    /// The peer's place among connections not yet past TLS (`max_pre_tls_connections`),
    /// given back once its certificate is verified.
    pre_tls_slot: Option<OwnedSemaphorePermit>,
    /// The peer address's forward-confirmed names, looked up at the first MAIL.
    reverse_dns: Option<policy::ReverseDns>,
    /// EHLO/HELO name.
    helo: String,
    /// TLS version and cipher, once TLS is up.
    tls: Option<TlsInfo>,
    /// The client certificate as verified after the handshake.
    peer_cert: PeerCertificate,
    /// The message being written to the spool.
    incoming: Option<Incoming>,
    /// The first bytes of the message being received, where its header section is: read
    /// at its end for the `Received:` count (loop detection).
    head: Vec<u8>,
    /// A spool write failed during the body: the message is answered 451 at its end.
    spool_failed: bool,
    /// Nothing has been read from the client yet (a PROXY header would be there).
    first_read: bool,
    /// How the session ended, for its closing log line: `closed` (QUIT or closed by us
    /// after a reply), `peer_closed`, `timeout`, `connection_lost`, `tls_failed`,
    /// `proxy_untrusted`.
    end: &'static str,
    /// Bytes read from the client (after TLS, the decrypted ones).
    bytes_in: u64,
    /// Messages accepted (250 after DATA or BDAT LAST) in this session.
    messages: u64,
}

impl Connection {
    fn new(
        peer: SocketAddr,
        ctx: Arc<InboundContext>,
        shutdown: watch::Receiver<bool>,
        pre_tls_slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let s = &ctx.settings;
        let started = tokio::time::Instant::now();
        let session_end = started + s.max_session_duration;
        let deadline = if pre_tls_slot.is_some() {
            session_end.min(started + s.tls_deadline)
        } else {
            session_end
        };
        let live = ctx.live.load_full();
        let session = Session::new(SessionConfig {
            hostname: live.hostname.clone(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            tls_available: true,
            max_idle_commands: s.max_idle_commands,
            require_tls: match &ctx.role {
                Role::Peer => true,
                Role::Submission { require_tls, .. } => *require_tls,
            },
        });
        Connection {
            ctx,
            live,
            peer,
            session,
            shutdown,
            draining: false,
            deadline,
            started,
            pre_tls_slot,
            reverse_dns: None,
            helo: String::new(),
            tls: None,
            peer_cert: None,
            incoming: None,
            head: Vec::new(),
            spool_failed: false,
            first_read: true,
            end: "closed",
            bytes_in: 0,
            messages: 0,
        }
    }

    async fn run(&mut self, mut stream: TcpStream) {
        match self.drive(&mut stream).await {
            Ok(Pass::Closed) => return,
            Ok(Pass::StartTls) => {}
            Err(e) => {
                tracing::debug!(error = %e, "connection lost");
                self.end = "connection_lost";
                return;
            }
        }
        let config = Arc::clone(&self.live.tls);
        let handshake = TlsAcceptor::from(config).accept(stream);
        // The handshake counts towards the TLS deadline too.
        let limit = self.ctx.settings.handshake_timeout.min(
            self.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        );
        let mut tls = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let reason = handshake_failure_reason(&e);
                self.ctx.metrics.tls_handshake_failures_total.inc(&[reason]);
                tracing::warn!(reason, error = %e, "TLS handshake failed; connection closed");
                self.end = "tls_failed";
                return;
            }
            Err(_) => {
                self.ctx
                    .metrics
                    .tls_handshake_failures_total
                    .inc(&[labels::TIMEOUT]);
                tracing::warn!(
                    reason = labels::TIMEOUT,
                    "TLS handshake timed out; connection closed"
                );
                self.end = "tls_failed";
                return;
            }
        };
        let (_, conn) = tls.get_ref();
        let info = TlsInfo::of(conn);
        let (version, cipher) = (info.version, info.cipher);
        self.ctx
            .metrics
            .tls_handshakes_total
            .with_label_values(&[version, cipher])
            .inc();
        self.tls = Some(info);
        let chain = conn.peer_certificates().unwrap_or(&[]);
        let checked = verify_chain(chain, &self.live.trust, UnixTime::now(), Usage::Client);
        match &checked {
            Ok(id) => {
                // Authenticated: out of the pre-TLS budget, and only the session length
                // limits it from now on.
                if self.pre_tls_slot.take().is_some() {
                    self.deadline = self.started + self.ctx.settings.max_session_duration;
                }
                tracing::info!(tls_version = version, cipher, peer_dn = %id.subject_dn, "TLS established; client certificate verified")
            }
            Err(e) => {
                // Which certificate was refused, so the operator can tell which peer
                // failed (the subject alone may be shared by an old and a new one).
                let leaf = chain.first();
                let id = leaf.and_then(|c| crate::trust::verify::parse_identity(c).ok());
                let fingerprint = leaf.map(crate::trust::verify::sha256_fingerprint);
                tracing::warn!(
                    tls_version = version,
                    cipher,
                    reason = e.client_reason(),
                    error = %e,
                    peer_subject = id.as_ref().map(|i| i.subject_dn.as_str()),
                    peer_issuer = id.as_ref().map(|i| i.issuer_dn.as_str()),
                    peer_serial = id.as_ref().map(|i| i.serial_hex.as_str()),
                    peer_sha256 = fingerprint.as_deref(),
                    "TLS established; client certificate not acceptable"
                )
            }
        }
        self.peer_cert = Some(checked);
        self.session.tls_established();
        match self.drive(&mut tls).await {
            Ok(_) => {
                // Best effort close_notify; the peer may already be gone.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), tls.shutdown()).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection lost");
                self.end = "connection_lost";
            }
        }
    }

    /// The read loop: handle events, write the replies of the batch in one write, read.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> io::Result<Pass> {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            while let Some(ev) = self.session.poll() {
                let ev = match ev.detach() {
                    Err(chunk) => {
                        keep_head(&mut self.head, chunk);
                        store_chunk(&mut self.incoming, &mut self.spool_failed, chunk).await;
                        continue;
                    }
                    Ok(ev) => ev,
                };
                if self.on_event(ev).await {
                    self.write_output(stream).await?;
                    return Ok(Pass::StartTls);
                }
            }
            // Stopping: a message body being received may finish (its client gets its
            // 250); anything else is told to come back later, nothing being acknowledged.
            if self.draining && !self.session.in_body() && !self.session.is_closed() {
                self.session.shutting_down();
            }
            if self.session.has_output() {
                self.write_output(stream).await?;
            }
            if self.session.is_closed() {
                return Ok(Pass::Closed);
            }
            let timeout = if self.session.in_body() {
                self.ctx.settings.data_timeout
            } else {
                self.ctx.settings.command_timeout
            };
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, stream.read(&mut buf)) => r,
                _ = self.shutdown.wait_for(|s| *s), if !self.draining => {
                    self.draining = true;
                    continue;
                }
                // An overall limit, so a peer cannot hold a slot forever by sending a
                // NOOP or a byte of its body just before each timeout.
                _ = tokio::time::sleep_until(self.deadline) => {
                    if self.pre_tls_slot.is_some() {
                        tracing::info!(reason = labels::TLS_DEADLINE, "no verified client certificate within inbound.tls_deadline; closing");
                        self.ctx.metrics.reject("connection", labels::TLS_DEADLINE);
                    } else {
                        tracing::info!(reason = labels::SESSION_DURATION, "session longer than inbound.max_session_duration; closing");
                        self.ctx.metrics.reject("connection", labels::SESSION_DURATION);
                    }
                    self.session.timed_out();
                    self.end = "timeout";
                    continue;
                }
            };
            match read {
                Ok(Ok(0)) => {
                    tracing::debug!("peer closed the connection");
                    self.end = "peer_closed";
                    return Ok(Pass::Closed);
                }
                Ok(Ok(n)) => {
                    self.bytes_in += n as u64;
                    let bytes = buf.get(..n).unwrap_or_default();
                    if std::mem::take(&mut self.first_read)
                        && self.tls.is_none()
                        && super::proxy::looks_like_a_header(bytes)
                    {
                        // A balancer this listener does not trust, or one sending a second
                        // header: its address claim is not taken, and what follows would
                        // not be SMTP.
                        let reason = labels::PROXY_UNTRUSTED;
                        self.ctx
                            .metrics
                            .connections_refused_total
                            .inc(&[self.ctx.role.listener_name(), reason]);
                        tracing::warn!(reason, "PROXY protocol header from an address not in proxy_protocol.trusted; connection closed");
                        self.end = reason;
                        return Ok(Pass::Closed);
                    }
                    self.session.feed(bytes)
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tracing::info!(
                        reason = labels::TIMEOUT,
                        in_body = self.session.in_body(),
                        "idle past the timeout; closing"
                    );
                    self.ctx.metrics.reject("connection", labels::TIMEOUT);
                    self.session.timed_out();
                    self.end = "timeout";
                }
            }
        }
    }

    /// Writes the replies waiting in the session, within the command timeout: a peer that
    /// pipelines commands and never reads the replies would otherwise block the write, and
    /// with it the session, its connection slots and graceful shutdown, forever.
    async fn write_output<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> io::Result<()> {
        let out = self.session.take_output();
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.ctx.settings.command_timeout, write).await {
            Ok(written) => written,
            Err(_) => {
                self.ctx.metrics.reject("connection", labels::WRITE_TIMEOUT);
                tracing::info!(
                    reason = labels::WRITE_TIMEOUT,
                    "peer not reading its replies past the timeout; closing"
                );
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer not reading its replies",
                ))
            }
        }
    }

    /// Handles one event; returns true when the caller must switch to TLS.
    async fn on_event(&mut self, ev: Event<'static>) -> bool {
        match ev {
            Event::Helo { host, extended } => {
                tracing::debug!(helo = %host, extended, "greeting");
                self.helo = host;
                self.abandon_message().await;
                self.session.accept();
            }
            Event::StartTls => return true,
            Event::MailFrom(m) => self.on_mail(m).await,
            Event::Rcpt(r) => self.on_rcpt(r),
            Event::MessageStart => self.on_message_start().await,
            Event::MessageChunk(_) => {}
            Event::MessageEnd => self.on_message_end().await,
            Event::MessageAborted { reason } => {
                self.ctx.metrics.reject("data", reason);
                tracing::info!(
                    stage = "data",
                    verdict = "reject",
                    reason,
                    mail_from = self.mail_from(),
                    "message refused"
                );
                self.abandon_message().await;
            }
            Event::Refused { stage, reason } => {
                self.ctx.metrics.reject(stage, reason);
                // A refusal never ends a message in progress by itself (a 503 to DATA
                // between BDAT chunks leaves the chunks coming): the session says so
                // with MessageAborted when it does.
                tracing::info!(stage, verdict = "reject", reason, "command refused");
            }
        }
        false
    }

    async fn on_mail(&mut self, m: MailFrom) {
        if let Role::Submission { .. } = self.ctx.role {
            let verdict = policy::check_internal_sender(&m.address, &self.live.local_domains);
            return self.decide_mail(m, verdict.map(|()| policy::Accepted::default()));
        }
        let whitelist = self.ctx.whitelist.snapshot();
        let ctx = policy::SenderContext {
            peer: &self.peer_cert,
            helo: &self.helo,
            whitelist: &whitelist,
            whitelist_stale: self.ctx.whitelist.is_stale(SystemTime::now()),
            ehlo_check: self.live.ehlo_check,
            ehlo_names: self.live.ehlo_names,
        };
        let verdict = policy::check_sender(&ctx, &m.address);
        drop(whitelist);
        let verdict = match verdict {
            Ok(accepted) => self.reverse_dns(accepted).await,
            refused => refused,
        };
        self.decide_mail(m, verdict);
    }

    /// Forward-confirmed reverse DNS of the peer against its certificate, when configured.
    async fn reverse_dns(
        &mut self,
        mut accepted: policy::Accepted,
    ) -> Result<policy::Accepted, policy::Refusal> {
        let mode = self.live.fcrdns;
        let Some(Ok(id)) = &self.peer_cert else {
            return Ok(accepted);
        };
        if mode == policy::FcrdnsCheck::Off {
            return Ok(accepted);
        }
        // Once per connection, and bounded: a zone that never answers must not hold MAIL.
        if self.reverse_dns.is_none() {
            let answer = match &self.ctx.resolver {
                Some(r) => match tokio::time::timeout(
                    std::time::Duration::from_secs(15),
                    r.confirmed_names(self.peer.ip()),
                )
                .await
                {
                    Ok(Ok(names)) => policy::ReverseDns::Names(names),
                    Ok(Err(e)) => policy::ReverseDns::Unavailable(e.to_string()),
                    Err(_) => policy::ReverseDns::Unavailable("no answer within 15 s".into()),
                },
                None => policy::ReverseDns::Unavailable("no resolver".into()),
            };
            self.reverse_dns = Some(answer);
        }
        let Some(dns) = &self.reverse_dns else {
            return Ok(accepted);
        };
        if let Some(noted) = policy::check_fcrdns(mode, dns, id)? {
            accepted.noted.push(noted);
        }
        Ok(accepted)
    }

    fn decide_mail(&mut self, m: MailFrom, verdict: Result<policy::Accepted, policy::Refusal>) {
        match verdict {
            Ok(accepted) => {
                for reason in &accepted.noted {
                    self.ctx.metrics.reject("mail_logged", reason);
                }
                tracing::info!(stage = "mail", verdict = "accept", noted = %crate::logging::list(&accepted.noted), helo = %self.helo, peer_dn = self.peer_dn(), mail_from = %m.address, "sender accepted");
                self.session.accept();
            }
            Err(r) => {
                self.ctx.metrics.reject("mail", r.reason);
                tracing::info!(stage = "mail", verdict = "reject", reason = r.reason, helo = %self.helo, peer_dn = self.peer_dn(), mail_from = %m.address, reply = %r.reply, "sender refused");
                self.session.reject(r.reply);
            }
        }
    }

    fn on_rcpt(&mut self, r: RcptTo) {
        let routing = if self.live.refuse_routing_addresses {
            policy::check_routing(&r.address)
        } else {
            Ok(())
        };
        let verdict = routing.and_then(|()| match self.ctx.role {
            Role::Peer => policy::check_recipient(&r.address, &self.live.local_domains),
            Role::Submission { .. } => policy::check_outbound_recipient(
                &r.address,
                &self.live.local_domains,
                &self.ctx.whitelist.snapshot(),
                self.ctx.whitelist.is_stale(SystemTime::now()),
            ),
        });
        match verdict {
            Ok(()) => {
                tracing::info!(stage = "rcpt", verdict = "accept", rcpt = %r.address, "recipient accepted");
                self.session.accept();
            }
            Err(refusal) => {
                self.ctx.metrics.reject("rcpt", refusal.reason);
                tracing::info!(stage = "rcpt", verdict = "reject", reason = refusal.reason, rcpt = %r.address, reply = %refusal.reply, "recipient refused");
                self.session.reject(refusal.reply);
            }
        }
    }

    async fn on_message_start(&mut self) {
        self.abandon_message().await;
        let transaction = self.session.transaction();
        let Some(mail) = &transaction.mail else {
            // The session only starts a body after an accepted MAIL and RCPT.
            self.session.reject(local_error());
            return;
        };
        let envelope = Envelope {
            direction: self.ctx.role.direction(),
            received_at: now_rfc3339(),
            peer_addr: self.peer.to_string(),
            helo: self.helo.clone(),
            peer_dn: self.peer_dn(),
            peer_cn: match &self.peer_cert {
                Some(Ok(id)) => id.cn.clone(),
                _ => None,
            },
            peer_ptr: match &self.reverse_dns {
                Some(policy::ReverseDns::Names(names)) => names.first().cloned(),
                _ => None,
            },
            tls: self.tls.map(|info| SessionTls {
                version: info.version.to_string(),
                cipher: info.cipher.to_string(),
            }),
            mail_from: mail.address.clone(),
            envid: mail.envid.clone(),
            ret_full: mail.ret_full,
            body_8bitmime: mail.body_8bitmime,
            smtputf8: mail.smtputf8,
            recipients: transaction
                .rcpts
                .iter()
                .map(|r| Recipient {
                    address: r.address.clone(),
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                })
                .collect(),
        };
        match self.ctx.spool.create(&envelope).await {
            Ok(incoming) => {
                self.incoming = Some(incoming);
                self.spool_failed = false;
                self.head.clear();
                self.session.accept();
            }
            Err(e) => {
                self.ctx.metrics.reject("data", labels::SPOOL_ERROR);
                tracing::error!(error = %e, "cannot create a spool file; message deferred");
                self.session.reject(local_error());
            }
        }
    }

    async fn on_message_end(&mut self) {
        let started = Instant::now();
        let Some(incoming) = self.incoming.take() else {
            self.session.reject(local_error());
            return;
        };
        if self.spool_failed {
            incoming.discard().await;
            self.ctx.metrics.reject("data", labels::SPOOL_ERROR);
            self.session.reject(local_error());
            return;
        }
        // RFC 5321 §6.3: a message that went through too many hops is looping.
        let received = crate::message::read_headers(&self.head).received;
        let max = self.ctx.settings.max_received_headers;
        if received > max {
            incoming.discard().await;
            self.ctx.metrics.reject("data", labels::MAIL_LOOP);
            tracing::warn!(
                stage = "data",
                verdict = "reject",
                reason = labels::MAIL_LOOP,
                received,
                max,
                mail_from = self.mail_from(),
                "message refused: mail loop"
            );
            self.session.reject(Reply::new(
                554,
                Enhanced(5, 4, 6),
                format!("Too many Received headers ({received}, at most {max}): mail loop"),
            ));
            return;
        }
        let size = incoming.body_len();
        match incoming.commit().await {
            Ok(queue_id) => {
                let m = &self.ctx.metrics;
                let direction = self.ctx.role.direction().as_str();
                m.messages_received_total.inc(&[direction]);
                m.message_size_bytes.observe(size as f64);
                m.accept_latency_seconds
                    .with_label_values(&[direction])
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    stage = "data",
                    verdict = "accept",
                    queue_id = %queue_id,
                    size,
                    mail_from = self.mail_from(),
                    rcpts = %crate::logging::list(self.session.transaction().rcpts.iter().map(|r| r.address.as_str())),
                    peer_dn = self.peer_dn(),
                    "message accepted and spooled"
                );
                self.session.message_stored(&queue_id);
                self.messages += 1;
            }
            Err(e) => {
                self.ctx.metrics.reject("data", labels::SPOOL_ERROR);
                tracing::error!(error = %e, "cannot commit a spool file; message deferred");
                self.session.reject(local_error());
            }
        }
    }

    /// Drops a message that was being stored and will not be acknowledged.
    async fn abandon_message(&mut self) {
        if let Some(incoming) = self.incoming.take() {
            incoming.discard().await;
        }
    }

    /// The current transaction's sender, for the log.
    fn mail_from(&self) -> Option<&str> {
        self.session
            .transaction()
            .mail
            .as_ref()
            .map(|m| m.address.as_str())
    }

    fn peer_dn(&self) -> Option<String> {
        match &self.peer_cert {
            Some(Ok(id)) => Some(id.subject_dn.clone()),
            _ => None,
        }
    }
}

/// Most bytes kept of a message's start for its header section: 51 `Received:` headers
/// of a few hundred bytes each fit with room to spare.
const HEAD_BYTES: usize = 64 * 1024;

/// Keeps the first [`HEAD_BYTES`] of a message.
fn keep_head(head: &mut Vec<u8>, chunk: &[u8]) {
    let room = HEAD_BYTES.saturating_sub(head.len());
    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

async fn store_chunk(incoming: &mut Option<Incoming>, failed: &mut bool, chunk: &[u8]) {
    if *failed {
        return;
    }
    if let Some(m) = incoming {
        if let Err(e) = m.write(chunk).await {
            tracing::error!(error = %e, "spool write failed; the message will be answered 451");
            *failed = true;
        }
    }
}

/// Our own trouble (spool full or failing): the peer keeps the message and tries later.
fn local_error() -> Reply {
    Reply::new(
        451,
        Enhanced(4, 3, 0),
        "Local error in processing, try again later",
    )
}

fn handshake_failure_reason(e: &io::Error) -> &'static str {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => labels::EOF,
            _ => labels::IO,
        };
    };
    match inner {
        rustls::Error::InvalidMessage(_) => labels::NOT_TLS,
        rustls::Error::PeerIncompatible(_) => labels::INCOMPATIBLE,
        rustls::Error::AlertReceived(_) => labels::ALERT_RECEIVED,
        rustls::Error::NoCertificatesPresented => labels::CLIENT_CERT_MISSING,
        rustls::Error::InvalidCertificate(_) => labels::CERTIFICATE,
        _ => labels::PROTOCOL,
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
