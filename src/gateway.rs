//! Assembling and running a gateway from a [`Config`]: the binary's `serve` and the
//! integration tests use this same path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dns::Resolver;
use crate::inbound::listener::Listener;
use crate::inbound::{InboundContext, Role};
use crate::live::LiveSettings;
use crate::metrics::{http, labels, Metrics};
use crate::relay::outbound::Outbound;
use crate::relay::worker::Relay;
use crate::spool::{Spool, SpoolError};
use crate::trust::pki::TrustStore;
use crate::trust::tls::{server_config, TlsConfigError, TlsInfo};
use crate::whitelist::live::WhitelistState;
use crate::whitelist::refresh::{self, Refresher};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsConfigError),
    /// The spool directory is unusable.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    /// The relay to the internal server could not be built.
    #[error("relay: {0}")]
    Relay(#[from] crate::relay::internal::RelayError),
    /// The DNS resolver for outbound delivery could not be built.
    #[error("outbound DNS: {0}")]
    Dns(#[from] crate::dns::SetupError),
    /// `whitelist.fetch = false` and the fixed list does not load: serving would answer
    /// every peer 451 for ever.
    #[error("whitelist.fetch = false and the fixed liste blanche is unusable: {0}; fix whitelist.cache (or set whitelist.fetch = true)")]
    FixedWhitelist(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}; is another process using the port, or does binding a port below 1024 need CAP_NET_BIND_SERVICE?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Gateway {
    /// Where the inbound listener is bound (the real port when the configuration said 0).
    pub inbound_addr: SocketAddr,
    /// Where the submission listener is bound, when enabled.
    pub submission_addr: Option<SocketAddr>,
    submission_task: Option<JoinHandle<()>>,
    /// Where `/metrics` is served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// The spool this gateway owns (shared with its listener and relay).
    pub spool: Arc<Spool>,
    shutdown: watch::Sender<bool>,
    /// Closes the listeners only (a drain); `shutdown` closes them too.
    listeners_stop: watch::Sender<bool>,
    /// A drain has begun: `/readyz` says not ready.
    draining: Arc<AtomicBool>,
    /// How long a drain may deliver (`None` without a relay: nothing to deliver).
    drain_deadline: Option<std::time::Duration>,
    inbound_task: Option<JoinHandle<()>>,
    inbound: Arc<InboundContext>,
    /// What `/readyz` answers: listeners up, a liste blanche loaded, CRLs when required,
    /// not draining.
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The configuration it started with (the settings a reload cannot change).
    started_with: Config,
    config_path: std::path::PathBuf,
    relay: Option<JoinHandle<()>>,
    /// SIGHUPs handled so far ([`ReloadReport::sequence`]).
    reload_count: AtomicU64,
}

/// The file, in the spool directory, holding the report of the last reload.
pub const RELOAD_REPORT: &str = "reload.json";

/// What a reload did, for the `reload` command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// The gateway process that reloaded.
    pub pid: u32,
    /// Which of its reloads this is, from 1.
    pub sequence: u64,
    /// The configuration was applied to new connections.
    pub applied: bool,
    /// Applied, but these changed settings wait for a restart.
    pub restart_needed: Vec<String>,
    /// Not applied: what is wrong with the configuration.
    pub problems: Vec<String>,
}

impl Gateway {
    /// Opens the spool, builds the TLS configuration and starts the listeners.
    pub async fn start(config: &Config) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
        record_certificate_expiry(&metrics, config);
        // Each suite a peer can get at 0, so that the handshakes are there from the start
        // (the failures' share is read against them).
        for offer in TlsInfo::offered(&config.tls.identity, config.tls.versions) {
            metrics
                .tls_handshakes_total
                .with_label_values(&[offer.version, offer.cipher]);
        }
        let spool = Arc::new(Spool::open(&config.spool_dir)?);
        let recovered = spool.recover()?;
        metrics
            .spool_quarantined_total
            .inc_by(recovered.quarantined.len() as u64);
        tracing::info!(
            requeued = recovered.requeued,
            quarantined = recovered.quarantined.len(),
            tmp_removed = recovered.tmp_removed,
            "spool recovered"
        );
        let (shutdown, rx) = watch::channel(false);
        let (listeners_stop, listeners_rx) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));
        let live = Arc::new(ArcSwap::new(Arc::new(live_settings(config)?)));
        metrics.set_crl_coverage(&live.load().trust);
        let whitelist = start_whitelist(config, &live, &metrics, rx.clone()).await?;
        let relay = match &config.relay {
            Some(settings) => {
                let resolver = Resolver::new(&config.dns)?;
                let outbound = Outbound::new(
                    config.outbound.clone(),
                    resolver,
                    Arc::clone(&whitelist),
                    Arc::clone(&live),
                    Arc::clone(&metrics),
                );
                Some(Arc::new(
                    Relay::new(
                        Arc::clone(&spool),
                        settings.clone(),
                        Arc::clone(&metrics),
                        config.hostname.clone(),
                        config.local_domains.clone(),
                        Some(Arc::new(outbound)),
                    )?
                    .with_auto_reply(config.operator.as_ref().map(|op| {
                        crate::autoreply::AutoReplier::for_operator(
                            op,
                            &config.hostname,
                            &config.spool_dir,
                        )
                    })),
                ))
            }
            None => {
                tracing::warn!("no [relay] section: accepted messages stay in the spool");
                None
            }
        };
        // Also built when the check is off, so a reload may turn it on.
        let resolver = crate::dns::Resolver::new(&config.dns)
            .map_err(|e| tracing::warn!(error = %e, "no DNS resolver: reverse DNS checks of peers will defer"))
            .ok();
        let ctx = Arc::new(InboundContext {
            resolver: resolver.clone(),
            role: Role::Peer,
            settings: config.inbound.clone(),
            live: Arc::clone(&live),
            whitelist: Arc::clone(&whitelist),
            spool: Arc::clone(&spool),
            metrics: Arc::clone(&metrics),
        });
        // Always running: a reload may add CRL sources.
        tokio::spawn(refresh_crls(Arc::clone(&ctx), rx.clone()));
        let submission = match &config.submission {
            None => None,
            Some(sub) => {
                let mut settings = config.inbound.clone();
                settings.listen = sub.listen;
                settings.proxy_trusted = sub.proxy_trusted.clone();
                let sub_ctx = Arc::new(InboundContext {
                    resolver: None,
                    role: Role::Submission {
                        allow: sub.allow.clone(),
                        require_tls: sub.require_tls,
                    },
                    settings,
                    live: Arc::clone(&live),
                    whitelist: Arc::clone(&whitelist),
                    spool: Arc::clone(&spool),
                    metrics: Arc::clone(&metrics),
                });
                let l = Listener::bind(sub_ctx)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: sub.listen,
                        source,
                    })?;
                let addr = l.local_addr().map_err(|source| StartError::Bind {
                    addr: sub.listen,
                    source,
                })?;
                Some((l, addr))
            }
        };
        let listener =
            Listener::bind(Arc::clone(&ctx))
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.inbound.listen,
                    source,
                })?;
        let inbound_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.inbound.listen,
            source,
        })?;
        let listeners_up = Arc::new(AtomicBool::new(false));
        let ready: Arc<dyn Fn() -> bool + Send + Sync> = {
            let up = Arc::clone(&listeners_up);
            let draining = Arc::clone(&draining);
            let list = Arc::clone(&whitelist);
            let live = Arc::clone(&live);
            Arc::new(move || {
                up.load(Ordering::Acquire)
                    && !draining.load(Ordering::Acquire)
                    && list.is_loaded()
                    && live.load().trust.revocation_ready()
            })
        };
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound = l
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                tokio::spawn(http::serve(
                    l,
                    Arc::clone(&metrics),
                    Arc::clone(&ready),
                    rx.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        let submission_addr = submission.as_ref().map(|(_, a)| *a);
        let submission_task = submission.map(|(l, _)| tokio::spawn(l.run(listeners_rx.clone())));
        let relay = relay.map(|r| r.spawn(rx.clone()));
        let inbound_task = Some(tokio::spawn(listener.run(listeners_rx)));
        drop(rx);
        listeners_up.store(true, Ordering::Release);
        Ok(Gateway {
            inbound: ctx,
            config_path: config.path.clone(),
            inbound_addr,
            submission_addr,
            submission_task,
            metrics_addr,
            metrics,
            spool: Arc::clone(&spool),
            shutdown,
            listeners_stop,
            draining,
            drain_deadline: config.relay.as_ref().map(|r| r.drain_deadline),
            ready,
            started_with: config.clone(),
            inbound_task,
            relay,
            reload_count: AtomicU64::new(0),
        })
    }

    /// Applies a new configuration without dropping sessions: certificate and key, trust
    /// anchors, intermediates, CRLs, local domains, host name, policy modes and the
    /// per-address connection limits (`max_connections_per_ip`, `max_connection_rate_per_ip`).
    /// Connections accepted from now on use them; open sessions finish with what they
    /// started with. Every other setting needs a restart: each one that differs from the
    /// configuration the gateway started with is named in the returned notes.
    pub fn reload(&self, config: &Config) -> Result<Vec<String>, StartError> {
        let live = live_settings(config)?;
        let mut notes = restart_needed(&self.started_with, config);
        if config.path != self.config_path {
            notes.push(format!(
                "reloaded from {} (started from {})",
                config.path.display(),
                self.config_path.display()
            ));
        }
        self.inbound.metrics.set_crl_coverage(&live.trust);
        self.inbound.live.store(Arc::new(live));
        record_certificate_expiry(&self.metrics, config);
        tracing::info!(
            hostname = %config.hostname,
            local_domains = %crate::logging::list(&config.local_domains),
            certificate = %config.tls.identity.info().subject_dn,
            certificate_not_after = crate::logging::time(config.tls.identity.info().not_after),
            "configuration reloaded; new connections use it"
        );
        Ok(notes)
    }

    /// A SIGHUP: reads the configuration at `path` again and applies it ([`Gateway::reload`]),
    /// or keeps the running one when it has problems. Counts the outcome, logs it, and
    /// writes the report to [`RELOAD_REPORT`] in the spool directory, where the `reload`
    /// command that sent the signal reads it.
    pub fn reload_from(&self, path: &Path) -> ReloadReport {
        self.reload_count.fetch_add(1, Ordering::Relaxed);
        let outcome = match Config::load(path) {
            Err(errors) => Err(errors.0.iter().map(|e| e.to_string()).collect()),
            Ok(config) => self.reload(&config).map_err(|e| vec![e.to_string()]),
        };
        let report = ReloadReport {
            pid: std::process::id(),
            sequence: self.reload_count.load(Ordering::Relaxed),
            applied: outcome.is_ok(),
            restart_needed: outcome.as_ref().cloned().unwrap_or_default(),
            problems: outcome.err().unwrap_or_default(),
        };
        let counter = &self.metrics.reloads_total;
        if report.applied {
            counter.inc(&[labels::APPLIED]);
            for note in &report.restart_needed {
                tracing::warn!(note = %note, "reload: a changed setting needs a restart");
            }
        } else {
            counter.inc(&[labels::INVALID]);
            for problem in &report.problems {
                tracing::error!(problem = %problem, "reload refused: the running configuration stays");
            }
        }
        let file = self.started_with.spool_dir.join(RELOAD_REPORT);
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::durable::replace(&file, &json).map_err(std::io::Error::other));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot write the reload report; the reload command will not see it");
        }
        report
    }

    /// Readiness as `/readyz` reports it, for a supervisor (systemd's `READY=1`).
    pub fn readiness(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        Arc::clone(&self.ready)
    }

    /// Waits for the listeners, once told to stop, to close their sessions. A task is
    /// forgotten only once it has ended: if this wait is abandoned (SIGTERM during a
    /// drain), the shutdown that follows waits for the rest.
    async fn listeners_closed(&mut self) {
        for (task, name) in [
            (&mut self.inbound_task, "inbound"),
            (&mut self.submission_task, "submission"),
        ] {
            if let Some(handle) = task.as_mut() {
                let ended = handle.await;
                *task = None;
                if let Err(e) = ended {
                    tracing::error!(error = %e, listener = name, "listener task failed");
                }
            }
        }
    }

    /// Takes the gateway out of service without losing its queue: `/readyz` turns not
    /// ready (a balancer moves traffic away), the listeners close (open sessions finish
    /// their transaction, as at shutdown), deferred messages are tried again at once, and
    /// the relay keeps delivering until the queue is empty or `relay.drain_deadline` has
    /// passed. Returns what is left; [`Gateway::shutdown`] then stops the rest.
    pub async fn drain(&mut self) -> DrainReport {
        let started = std::time::Instant::now();
        self.draining.store(true, Ordering::Release);
        let queued = self.spool.summary(std::time::SystemTime::now()).messages;
        tracing::info!(
            queued,
            deadline_s = self.drain_deadline.map(|d| d.as_secs()),
            "draining: /readyz not ready, listeners closing; the queue is delivered before stopping"
        );
        let _ = self.listeners_stop.send(true);
        self.listeners_closed().await;
        let Some(deadline) = self.drain_deadline else {
            let remaining = self.spool.summary(std::time::SystemTime::now()).messages;
            tracing::warn!(
                remaining,
                "drain: no [relay], nothing can be delivered; stopping with the queue in the spool"
            );
            return DrainReport {
                remaining,
                elapsed: started.elapsed(),
                deadline_reached: false,
            };
        };
        self.spool.expedite_all();
        let end = started + deadline;
        let mut last_report = std::time::Instant::now();
        loop {
            let summary = self.spool.summary(std::time::SystemTime::now());
            if summary.messages == 0 {
                tracing::info!(
                    elapsed_s = started.elapsed().as_secs(),
                    "drained: the queue is empty"
                );
                return DrainReport {
                    remaining: 0,
                    elapsed: started.elapsed(),
                    deadline_reached: false,
                };
            }
            if std::time::Instant::now() >= end {
                tracing::warn!(
                    remaining = summary.messages,
                    oldest_age_s = summary.oldest_age.as_secs(),
                    "drain: relay.drain_deadline reached; the rest stays in the spool (start a gateway on it, or move it with `queue export`)"
                );
                return DrainReport {
                    remaining: summary.messages,
                    elapsed: started.elapsed(),
                    deadline_reached: true,
                };
            }
            if last_report.elapsed() >= DRAIN_REPORT_EVERY {
                last_report = std::time::Instant::now();
                tracing::info!(
                    queued = summary.messages,
                    oldest_age_s = summary.oldest_age.as_secs(),
                    "draining"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Stops accepting, lets sessions finish their transaction (they answer 421 4.3.2 at
    /// their next command) and returns once all are closed.
    pub async fn shutdown(mut self) {
        let _ = self.listeners_stop.send(true);
        let _ = self.shutdown.send(true);
        self.listeners_closed().await;
        if let Some(relay) = self.relay.take() {
            if let Err(e) = relay.await {
                tracing::error!(error = %e, "relay task failed");
            }
        }
    }
}

/// How often a drain logs its progress.
const DRAIN_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What a drain left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Messages still in the spool.
    pub remaining: usize,
    /// How long it took.
    pub elapsed: std::time::Duration,
    /// It stopped at `relay.drain_deadline`, not on an empty queue.
    pub deadline_reached: bool,
}

/// Exports when our certificate and the issuers in its chain file expire.
fn record_certificate_expiry(metrics: &Metrics, config: &Config) {
    let gauge = &metrics.certificate_expiry_timestamp_seconds;
    gauge.reset();
    let set = |which: &str, cert: &rustls_pki_types::CertificateDer<'_>| {
        if let Ok(id) = crate::trust::verify::parse_identity(cert) {
            gauge
                .with_label_values(&[which, &id.subject_dn])
                .set(id.not_after.unix_timestamp());
        }
    };
    for (i, cert) in config.tls.identity.chain().iter().enumerate() {
        set(if i == 0 { "ours" } else { "chain" }, cert);
    }
    // The espace's roots and known intermediates expire too (rarely, but all at once).
    for (which, files) in [
        ("anchor", &config.tls.anchor_files),
        ("intermediate", &config.tls.intermediate_files),
    ] {
        for file in files {
            for cert in crate::trust::pki::load_certificates(file).unwrap_or_default() {
                set(which, &cert);
            }
        }
    }
}

/// The reloadable part of the inbound settings, built from a configuration.
fn live_settings(config: &Config) -> Result<LiveSettings, StartError> {
    let tls = server_config(
        &config.tls.identity,
        Arc::clone(&config.tls.trust),
        config.tls.versions,
    )?;
    let client_tls = crate::trust::tls::client_config(&config.tls.identity, config.tls.versions)?;
    Ok(LiveSettings {
        client_tls,
        hostname: config.hostname.clone(),
        local_domains: config.local_domains.clone(),
        tls,
        trust: Arc::clone(&config.tls.trust),
        tls_settings: Arc::new(config.tls.clone()),
        ehlo_check: config.ehlo_check,
        ehlo_names: config.ehlo_names,
        fcrdns: config.fcrdns,
        refuse_routing_addresses: config.refuse_routing_addresses,
        max_connections_per_ip: config.inbound.max_connections_per_ip,
        max_connection_rate_per_ip: config.inbound.max_connection_rate_per_ip,
    })
}

/// What a reload does not apply: each setting the running gateway keeps from its start,
/// named with its old and new value, for the reload's log and notes.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let mut key = |name: &str, a: String, b: String| {
        if a != b {
            notes.push(format!(
                "{name} changed from {a} to {b} but a restart is needed to apply it"
            ));
        }
    };
    macro_rules! keys {
        ($($name:literal => $old:expr, $new:expr;)*) => {
            $(key($name, format!("{:?}", $old), format!("{:?}", $new));)*
        };
    }
    let (o, n) = (&old.inbound, &new.inbound);
    let (ow, nw) = (&old.whitelist, &new.whitelist);
    keys! {
        "inbound.listen" => o.listen, n.listen;
        "inbound.max_connections" => o.max_connections, n.max_connections;
        "inbound.max_pre_tls_connections" => o.max_pre_tls_connections, n.max_pre_tls_connections;
        "inbound.listen_backlog" => o.listen_backlog, n.listen_backlog;
        "inbound.max_idle_commands" => o.max_idle_commands, n.max_idle_commands;
        "inbound.max_session_duration" => o.max_session_duration, n.max_session_duration;
        "inbound.shutdown_grace" => o.shutdown_grace, n.shutdown_grace;
        "inbound.handshake_timeout" => o.handshake_timeout, n.handshake_timeout;
        "inbound.command_timeout" => o.command_timeout, n.command_timeout;
        "inbound.data_timeout" => o.data_timeout, n.data_timeout;
        "inbound.max_message_size" => o.max_message_size, n.max_message_size;
        "inbound.max_recipients" => o.max_recipients, n.max_recipients;
        "inbound.max_errors" => o.max_errors, n.max_errors;
        "inbound.tls_deadline" => o.tls_deadline, n.tls_deadline;
        "inbound.proxy_protocol.trusted" => o.proxy_trusted, n.proxy_trusted;
        "limits.max_received_headers" => o.max_received_headers, n.max_received_headers;
        "spool.dir" => old.spool_dir, new.spool_dir;
        "whitelist.url" => ow.url, nw.url;
        "whitelist.cache" => ow.cache, nw.cache;
        "whitelist.fetch" => ow.fetch, nw.fetch;
        "whitelist.refresh_interval" => ow.refresh_interval, nw.refresh_interval;
        "whitelist.max_age" => ow.max_age, nw.max_age;
        "whitelist.max_shrink" => ow.max_shrink, nw.max_shrink;
        "whitelist.max_size" => ow.max_size, nw.max_size;
        "whitelist.timeout" => ow.timeout, nw.timeout;
        "whitelist.verify_signature" => ow.verify_signature, nw.verify_signature;
        "whitelist.signer_cn/signer_o" => ow.signer, nw.signer;
        "whitelist.client_certificate" => ow.client_identity.is_some(), nw.client_identity.is_some();
        "metrics.listen" => old.metrics_listen, new.metrics_listen;
        "log.format" => old.log_format, new.log_format;
        "log.level" => old.log_level, new.log_level;
    }
    // Whole sections, named without their values (they hold addresses and secrets).
    macro_rules! sections {
        ($($name:literal => $field:ident;)*) => {
            $(
                if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                    notes.push(format!("[{}] changed but a restart is needed to apply it", $name));
                }
            )*
        };
    }
    sections! {
        "submission" => submission;
        "relay" => relay;
        "dns" => dns;
        "outbound" => outbound;
        "operator" => operator;
    }
    notes
}

/// Loads the cached liste blanche and, when fetching is on, starts the refresher (with an
/// immediate first download when no valid cache exists). The gateway starts even without
/// a list: MAIL is then answered 451 4.7.1 and `/readyz` says not ready.
async fn start_whitelist(
    config: &Config,
    live: &Arc<ArcSwap<LiveSettings>>,
    metrics: &Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<WhitelistState>, StartError> {
    let settings = &config.whitelist;
    let state = Arc::new(WhitelistState::new(
        settings.fetch.then_some(settings.max_age),
    ));
    metrics
        .whitelist_signature_verification
        .set(i64::from(settings.verify_signature));
    if !settings.verify_signature {
        tracing::warn!("liste blanche signature verification is DISABLED (whitelist.verify_signature = false): never do this in production");
    }
    match refresh::load_cache(&state, &config.tls.trust, settings, metrics) {
        Ok(true) => {
            let list = state.snapshot();
            tracing::info!(
                file = %settings.cache.display(),
                generated = crate::logging::time(list.generated()),
                entries = list.entry_count(),
                domains = list.domain_count(),
                "liste blanche loaded from the cache"
            );
        }
        Ok(false) if !settings.fetch => {
            return Err(StartError::FixedWhitelist(format!(
                "no file at {}",
                settings.cache.display()
            )))
        }
        Err(e) if !settings.fetch => return Err(StartError::FixedWhitelist(e.to_string())),
        Ok(false) => {
            tracing::warn!(file = %settings.cache.display(), "no cached liste blanche yet; downloading it")
        }
        Err(e) => {
            tracing::error!(error = %e, "cached liste blanche unusable; waiting for a download")
        }
    }
    if settings.fetch {
        // Each refresh verifies against the trust store in force (a reload's anchors).
        let live = Arc::clone(live);
        match Refresher::new(
            Arc::clone(&state),
            Box::new(move || Arc::clone(&live.load().trust)),
            settings.clone(),
            Arc::clone(metrics),
        ) {
            Ok(mut refresher) => {
                if !state.is_loaded() {
                    let _ = refresher.refresh_once().await;
                }
                tokio::spawn(refresher.run(shutdown));
            }
            Err(e) => tracing::error!(error = %e, "cannot build the liste blanche downloader"),
        }
    }
    Ok(state)
}

/// Downloads the espace's CRLs from their distribution points now and then every
/// `crl_refresh_interval`; when one changed, rebuilds the trust store and swaps it in for
/// new connections. A failed download keeps the last valid CRL.
async fn refresh_crls(ctx: Arc<InboundContext>, mut shutdown: watch::Receiver<bool>) {
    use crate::trust::crl;
    let metrics = &ctx.metrics;
    let client = match crl::client(std::time::Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the CRL downloader; CRLs will not be refreshed");
            return;
        }
    };
    loop {
        // The settings in force now: a reload may have changed the CAs or the sources.
        let tls = Arc::clone(&ctx.live.load().tls_settings);
        let cas = tls.trust.ca_certificates();
        let mut changed = false;
        for source in &tls.crl_sources {
            match crl::refresh_source(&client, source, cas, 64 * 1024 * 1024).await {
                Ok(Some(info)) => {
                    changed = true;
                    metrics.crl_fetch_total.inc(&[labels::UPDATED]);
                    let g = &metrics.crl_update_timestamp_seconds;
                    g.with_label_values(&[&info.issuer, "this"])
                        .set(info.this_update);
                    if let Some(next) = info.next_update {
                        g.with_label_values(&[&info.issuer, "next"]).set(next);
                    }
                    tracing::info!(url = %source.url, issuer = %info.issuer, this_update = info.this_update, next_update = info.next_update, "CRL updated");
                }
                Ok(None) => {
                    metrics.crl_fetch_total.inc(&[labels::UNCHANGED]);
                }
                Err(e) => {
                    metrics.crl_fetch_total.inc(&[e.reason()]);
                    tracing::warn!(url = %source.url, reason = e.reason(), error = %e, "CRL refresh failed; keeping the last valid CRL");
                }
            }
        }
        if changed {
            let mut files = tls.crl_files.clone();
            for source in &tls.crl_sources {
                if source.file.is_file() && !files.contains(&source.file) {
                    files.push(source.file.clone());
                }
            }
            // Reading and parsing every CA and CRL file is blocking work.
            let (anchors, intermediates) =
                (tls.anchor_files.clone(), tls.intermediate_files.clone());
            let revocation = tls.trust.revocation();
            let crls = files.len();
            let loaded = tokio::task::spawn_blocking(move || {
                TrustStore::load(&anchors, &intermediates, &files)
                    .map(|store| store.with_revocation(revocation))
            })
            .await;
            match loaded {
                Ok(Ok(store)) => {
                    // Read-copy-update, and only onto the settings the store was built
                    // from: a reload landing meanwhile is not undone (the next round
                    // rebuilds from the reloaded settings).
                    let store = Arc::new(store);
                    ctx.live.rcu(|current| {
                        let mut live = LiveSettings::clone(current);
                        if Arc::ptr_eq(&current.tls_settings, &tls) {
                            live.trust = Arc::clone(&store);
                        }
                        live
                    });
                    // What is in force, installed above or kept by a reload.
                    ctx.metrics.set_crl_coverage(&ctx.live.load().trust);
                    tracing::info!(crls, "trust store rebuilt with the new CRLs");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot rebuild the trust store; keeping the previous one")
                }
                Err(e) => {
                    tracing::error!(error = %e, "trust store rebuild task failed; keeping the previous one")
                }
            }
        }
        let pause = tls
            .crl_refresh_interval
            .mul_f64(1.0 + rand::random::<f64>() * 0.1);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
