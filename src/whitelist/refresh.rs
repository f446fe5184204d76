//! Keeping the liste blanche current: load the cache at start-up, then refresh from the
//! espace's URL every `refresh_interval` (with jitter), keeping the last valid list on any
//! failure. Every outcome is logged and counted in `mssante_whitelist_fetch_total`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::UnixTime;
use tokio::sync::watch;

use super::fetch::{tls_config_with_identity, FetchConfig, FetchError, FetchOutcome, Fetcher};
use super::live::WhitelistState;
use super::store::{self, StoreError};
use super::WhitelistSettings;
use super::{
    load_and_verify, load_unverified, ChainCheck, VerifyOptions, Whitelist, WhitelistError,
};
use crate::metrics::{labels, Metrics};
use crate::trust::pki::TrustStore;

/// Verification options for lists of this espace, checked as of `now`.
pub fn verify_options<'a>(
    trust: &'a TrustStore,
    settings: &WhitelistSettings,
    now: UnixTime,
) -> VerifyOptions<'a> {
    VerifyOptions {
        chain: ChainCheck::Verify {
            anchors: trust.anchors(),
            intermediates: trust.intermediates(),
            time: now,
        },
        signer: settings.signer.clone(),
    }
}

/// Loads and checks raw list bytes as the settings say (signature on or off).
pub fn load(
    xml: &[u8],
    trust: &TrustStore,
    settings: &WhitelistSettings,
) -> Result<Whitelist, WhitelistError> {
    if settings.verify_signature {
        load_and_verify(xml, &verify_options(trust, settings, UnixTime::now()))
    } else {
        load_unverified(xml)
    }
}

/// Why the cache could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading the file failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The cached list does not verify.
    #[error("cached list {path} refused: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        source: WhitelistError,
    },
}

/// Installs the cached list, if there is a valid one; its age counts from the file's
/// modification time (the last time a download confirmed it).
pub fn load_cache(
    state: &WhitelistState,
    trust: &TrustStore,
    settings: &WhitelistSettings,
    metrics: &Metrics,
) -> Result<bool, CacheError> {
    let Some(bytes) = store::load(&settings.cache, settings.max_size)? else {
        return Ok(false);
    };
    let list = load(&bytes, trust, settings).map_err(|source| CacheError::Invalid {
        path: settings.cache.display().to_string(),
        source,
    })?;
    let confirmed = std::fs::metadata(&settings.cache)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    install(state, Arc::new(list), confirmed, metrics);
    Ok(true)
}

fn install(state: &WhitelistState, list: Arc<Whitelist>, at: SystemTime, metrics: &Metrics) {
    metrics.whitelist_entries.set(list.entry_count() as i64);
    metrics.whitelist_domains.set(list.domain_count() as i64);
    metrics
        .whitelist_generated_timestamp_seconds
        .set(list.generated().unix_timestamp());
    state.install(list, at);
    update_age(state, metrics);
}

fn update_age(state: &WhitelistState, metrics: &Metrics) {
    // A fixed file never goes stale: its age (from the file's date) would only raise the
    // staleness alerts for a list the gateway keeps using on purpose.
    if !state.can_go_stale() {
        metrics.whitelist_age_seconds.set(0);
        return;
    }
    if let Some(age) = state.age(SystemTime::now()) {
        metrics
            .whitelist_age_seconds
            .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
    }
}

/// The stable label of a failed refresh, for logs and metrics.
pub fn failure_reason(e: &FetchError) -> &'static str {
    match e {
        FetchError::Client(_) => labels::CLIENT,
        FetchError::Transport { .. } => labels::NETWORK,
        FetchError::Status { .. } => labels::HTTP_STATUS,
        FetchError::TooLarge { .. } => labels::TOO_LARGE,
        FetchError::Invalid(WhitelistError::Signature(_)) => labels::SIGNATURE,
        FetchError::Invalid(_) => labels::PARSE,
        FetchError::Shrunk { .. } => labels::SHRUNK,
        FetchError::Older { .. } => labels::OLDER,
        FetchError::Store(_) => labels::CACHE_WRITE,
    }
}

/// The trust store in force, asked at each refresh so that a reload's anchors apply.
pub type TrustSource = Box<dyn Fn() -> Arc<TrustStore> + Send + Sync>;

/// Downloads the list periodically.
pub struct Refresher {
    fetcher: Fetcher,
    state: Arc<WhitelistState>,
    trust: TrustSource,
    settings: WhitelistSettings,
    metrics: Arc<Metrics>,
}

impl Refresher {
    /// A refresher for the settings' URL. Lists are verified against the trust store
    /// `trust` gives at each refresh; the HTTPS connection trusts the anchors in force now
    /// (a change of those needs a restart).
    pub fn new(
        state: Arc<WhitelistState>,
        trust: TrustSource,
        settings: WhitelistSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Refresher, FetchError> {
        let mut config = FetchConfig::new(settings.url.clone());
        config.timeout = settings.timeout;
        config.max_bytes = settings.max_size;
        config.cache_path = Some(settings.cache.clone());
        config.max_shrink = settings.max_shrink;
        config.verify_signature = settings.verify_signature;
        let identity = settings.client_identity.as_deref();
        let fetcher = Fetcher::new(
            config,
            tls_config_with_identity(trust().anchors(), identity)?,
        )?;
        Ok(Refresher {
            fetcher,
            state,
            trust,
            settings,
            metrics,
        })
    }

    /// One download attempt; the list in use changes only if a valid newer one arrived.
    pub async fn refresh_once(&mut self) -> Result<FetchOutcome, FetchError> {
        let trust = (self.trust)();
        let opts = verify_options(&trust, &self.settings, UnixTime::now());
        let current = self.state.live().load_full();
        let result = self.fetcher.refresh(&current, &opts).await;
        let now = SystemTime::now();
        match &result {
            Ok(FetchOutcome::Unchanged) => {
                self.state.confirm(now);
                self.metrics.whitelist_fetch_total.inc(&[labels::UNCHANGED]);
                tracing::info!(url = %self.settings.url, "whitelist unchanged");
            }
            Ok(FetchOutcome::Updated(list)) => {
                install(&self.state, Arc::clone(list), now, &self.metrics);
                self.metrics.whitelist_fetch_total.inc(&[labels::UPDATED]);
            }
            Ok(FetchOutcome::UpdatedNotCached(list, _)) => {
                install(&self.state, Arc::clone(list), now, &self.metrics);
                for outcome in [labels::UPDATED, labels::CACHE_WRITE] {
                    self.metrics.whitelist_fetch_total.inc(&[outcome]);
                }
            }
            Err(e) => {
                let reason = failure_reason(e);
                self.metrics.whitelist_fetch_total.inc(&[reason]);
                tracing::warn!(url = %self.settings.url, reason, error = %e, "whitelist refresh failed; keeping the previous list");
            }
        }
        update_age(&self.state, &self.metrics);
        result
    }

    /// Refreshes every interval (plus up to 10% jitter, so a fleet of gateways does not
    /// hit the server together) until `shutdown`. When no list is loaded yet, retries
    /// sooner (every minute at most).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let base = if self.state.is_loaded() {
                self.settings.refresh_interval
            } else {
                self.settings.refresh_interval.min(Duration::from_secs(60))
            };
            let jitter = base.mul_f64(rand::random::<f64>() * 0.1);
            let wake = tokio::time::sleep(base + jitter);
            tokio::pin!(wake);
            // Keep the age gauge moving between refreshes.
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => update_age(&self.state, &self.metrics),
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            let _ = self.refresh_once().await;
        }
    }
}
