//! Assembling and running a gateway from a [`Config`]: the binary's `serve` and the
//! integration tests use this same path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::inbound::listener::Listener;
use crate::inbound::InboundContext;
use crate::metrics::{http, Metrics};
use crate::relay::internal::Relay;
use crate::spool::{Spool, SpoolError};
use crate::trust::tls::{server_config, TlsConfigError};
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
    /// Where `/metrics` is served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// The spool this gateway owns (shared with its listener and relay).
    pub spool: Arc<Spool>,
    shutdown: watch::Sender<bool>,
    inbound: JoinHandle<()>,
    relay: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Opens the spool, builds the TLS configuration and starts the listeners.
    pub async fn start(config: &Config) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
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
        let relay = match &config.relay {
            Some(settings) => Some(Arc::new(Relay::new(
                Arc::clone(&spool),
                settings.clone(),
                Arc::clone(&metrics),
                config.hostname.clone(),
                config.local_domains.clone(),
            )?)),
            None => {
                tracing::warn!("no [relay] section: accepted messages stay in the spool");
                None
            }
        };
        let tls = server_config(
            &config.tls.identity,
            Arc::clone(&config.tls.trust),
            config.tls.versions,
        )?;
        let (shutdown, rx) = watch::channel(false);
        let whitelist = start_whitelist(config, &metrics, rx.clone()).await;
        let ctx = Arc::new(InboundContext {
            settings: config.inbound.clone(),
            hostname: config.hostname.clone(),
            local_domains: config.local_domains.clone(),
            whitelist: Arc::clone(&whitelist),
            ehlo_check: config.ehlo_check,
            tls: ArcSwap::new(tls),
            trust: ArcSwap::new(Arc::clone(&config.tls.trust)),
            spool: Arc::clone(&spool),
            metrics: Arc::clone(&metrics),
        });
        let listener = Listener::bind(ctx, "inbound")
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
            let list = Arc::clone(&whitelist);
            Arc::new(move || up.load(Ordering::Acquire) && list.is_loaded())
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
        let relay = relay.map(|r| r.spawn(rx.clone()));
        let inbound = tokio::spawn(listener.run(rx));
        listeners_up.store(true, Ordering::Release);
        Ok(Gateway {
            inbound_addr,
            metrics_addr,
            metrics,
            spool: Arc::clone(&spool),
            shutdown,
            inbound,
            relay,
        })
    }

    /// Stops accepting, lets sessions finish their transaction (they answer 421 4.3.2 at
    /// their next command) and returns once all are closed.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.inbound.await {
            tracing::error!(error = %e, "inbound listener task failed");
        }
        if let Some(relay) = self.relay {
            if let Err(e) = relay.await {
                tracing::error!(error = %e, "relay task failed");
            }
        }
    }
}

/// Loads the cached liste blanche and, when fetching is on, starts the refresher (with an
/// immediate first download when no valid cache exists). The gateway starts even without
/// a list: MAIL is then answered 451 4.7.1 and `/readyz` says not ready.
async fn start_whitelist(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Arc<WhitelistState> {
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
                generated = %list.generated(),
                entries = list.entry_count(),
                domains = list.domain_count(),
                "liste blanche loaded from the cache"
            );
        }
        Ok(false) => {
            tracing::warn!(file = %settings.cache.display(), "no cached liste blanche yet")
        }
        Err(e) => {
            tracing::error!(error = %e, "cached liste blanche unusable; waiting for a download")
        }
    }
    if settings.fetch {
        match Refresher::new(
            Arc::clone(&state),
            Arc::clone(&config.tls.trust),
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
    state
}
