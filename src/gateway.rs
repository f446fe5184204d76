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
use crate::spool::{Spool, SpoolError};
use crate::trust::tls::{server_config, TlsConfigError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsConfigError),
    /// The spool directory is unusable.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
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
    shutdown: watch::Sender<bool>,
    inbound: JoinHandle<()>,
}

impl Gateway {
    /// Opens the spool, builds the TLS configuration and starts the listeners.
    pub async fn start(config: &Config) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
        let spool = Arc::new(Spool::open(&config.spool_dir)?);
        let tls = server_config(
            &config.tls.identity,
            Arc::clone(&config.tls.trust),
            config.tls.versions,
        )?;
        let ctx = Arc::new(InboundContext {
            settings: config.inbound.clone(),
            hostname: config.hostname.clone(),
            local_domains: config.local_domains.clone(),
            tls: ArcSwap::new(tls),
            trust: ArcSwap::new(Arc::clone(&config.tls.trust)),
            spool,
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
        let (shutdown, rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
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
        let inbound = tokio::spawn(listener.run(rx));
        ready.store(true, Ordering::Release);
        Ok(Gateway {
            inbound_addr,
            metrics_addr,
            metrics,
            shutdown,
            inbound,
        })
    }

    /// Stops accepting, lets sessions finish their transaction (they answer 421 4.3.2 at
    /// their next command) and returns once all are closed.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.inbound.await {
            tracing::error!(error = %e, "inbound listener task failed");
        }
    }
}
