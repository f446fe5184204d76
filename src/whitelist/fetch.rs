//! Downloads the whitelist over HTTPS and swaps it in when it verifies.
//!
//! ANS's server presents an IGC Santé certificate, not a public-CA one, so the TLS client
//! trusts only the anchors it is given (the espace's), never the system store. Each
//! download is conditional (`If-None-Match` / `If-Modified-Since` from the previous
//! answer), bounded in time and size, and goes through [`load_and_verify`]; only then is
//! the raw signed XML written to the cache ([`super::store`]) and the snapshot swapped.
//! A list older than the current one (by `DateDeGeneration`) is refused, so a replayed
//! old signed list cannot withdraw a recent domain addition or restore a removed one.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::TrustAnchor;

use super::store::{self, StoreError};
use super::{load_and_verify, VerifyOptions, Whitelist, WhitelistError};

/// Where and how to download.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// The espace's list URL (production:
    /// `https://espacedeconfiance.mssante.fr/listeblanchemssante.xml`).
    pub url: String,
    /// Connection establishment limit.
    pub connect_timeout: Duration,
    /// Whole request limit (headers and body).
    pub timeout: Duration,
    /// Largest accepted body; the 2025 list is 3.6 MB.
    pub max_bytes: usize,
    /// Cache file written after each verified download; `None` to keep nothing on disk.
    pub cache_path: Option<PathBuf>,
    /// A list with fewer entries than `(1 - max_shrink)` times the current one is refused
    /// as truncated or damaged upstream (the current list may have been empty: then any
    /// size is accepted).
    pub max_shrink: f64,
    /// Check the XML signature. Off only by an operator's explicit choice
    /// (`verify_signature = false`); the list is then taken as downloaded.
    pub verify_signature: bool,
}

impl FetchConfig {
    /// Sensible limits for `url`: 10 s to connect, 60 s in all, 32 MiB.
    pub fn new(url: impl Into<String>) -> Self {
        FetchConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            max_bytes: super::store::DEFAULT_MAX_BYTES,
            cache_path: None,
            max_shrink: 0.2,
            verify_signature: true,
        }
    }
}

/// Why a download did not produce a new list. The current list stays in use.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built (TLS configuration).
    #[error("HTTP client: {0}")]
    Client(String),
    /// Connection, TLS, timeout or transfer failure.
    #[error("download from {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The client's description of the failure.
        message: String,
    },
    /// The server answered with an unexpected status.
    #[error("download from {url}: HTTP status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeds [`FetchConfig::max_bytes`].
    #[error("the list exceeds {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The downloaded list does not verify.
    #[error("downloaded list refused: {0}")]
    Invalid(#[from] WhitelistError),
    /// The downloaded list lost too many entries compared with the one in use.
    #[error("downloaded list has {received} entries, the current one {current}: more than the allowed {max_shrink} fraction lost; refused as truncated")]
    Shrunk {
        /// Entries of the list in use.
        current: usize,
        /// Entries of the downloaded list.
        received: usize,
        /// The configured fraction.
        max_shrink: f64,
    },
    /// The downloaded list is older than the one in use.
    #[error("downloaded list generated {received} is older than the current one ({current})")]
    Older {
        /// `DateDeGeneration` of the list in use.
        current: time::OffsetDateTime,
        /// `DateDeGeneration` of the downloaded list.
        received: time::OffsetDateTime,
    },
    /// The verified list could not be cached (it is still not swapped in, so that the
    /// cache never lags behind what is served after a restart).
    #[error("caching the list: {0}")]
    Store(#[from] StoreError),
}

/// The result of one successful exchange with the server.
#[derive(Debug)]
pub enum FetchOutcome {
    /// `304 Not Modified`, or a verified list with the current list's generation date.
    Unchanged,
    /// A newer verified list, now cached and swapped in.
    Updated(Arc<Whitelist>),
    /// A newer verified list, swapped in although writing the cache failed: it is used
    /// (throwing a verified list away would leave the gateway without one), but a restart
    /// before the cache is fixed starts from the older file.
    UpdatedNotCached(Arc<Whitelist>, String),
}

/// Downloads the list; keeps the validators of the last answer for conditional requests.
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("url", &self.config.url)
            .field("etag", &self.etag)
            .field("last_modified", &self.last_modified)
            .finish()
    }
}

/// A TLS client configuration trusting only `anchors` (the espace's IGC Santé roots),
/// TLS 1.2 and 1.3, aws-lc-rs.
pub fn tls_config(anchors: &[TrustAnchor<'static>]) -> Result<rustls::ClientConfig, FetchError> {
    tls_config_with_identity(anchors, None)
}

/// As [`tls_config`], presenting `identity` (our IGC Santé certificate) when the espace's
/// server asks for a client certificate.
pub fn tls_config_with_identity(
    anchors: &[TrustAnchor<'static>],
    identity: Option<&crate::trust::pki::OurIdentity>,
) -> Result<rustls::ClientConfig, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(anchors.iter().cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| FetchError::Client(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder
            .with_client_auth_cert(id.chain().to_vec(), id.key().clone_key())
            .map_err(|e| FetchError::Client(e.to_string())),
    }
}

impl Fetcher {
    /// A fetcher using `tls` (see [`tls_config`]; a client certificate may be added to it).
    pub fn new(config: FetchConfig, tls: rustls::ClientConfig) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("mssante-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            config,
            etag: None,
            last_modified: None,
        })
    }

    /// Downloads the raw bytes; `Ok(None)` on `304 Not Modified`.
    pub async fn download(&mut self) -> Result<Option<Vec<u8>>, FetchError> {
        let url = self.config.url.clone();
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.clone(),
            message: error_chain(&e),
        };
        let mut request = self.client.get(&self.config.url);
        if let Some(etag) = &self.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &self.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
        }
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: self.config.url.clone(),
                status: status.as_u16(),
            });
        }
        let limit = self.config.max_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(FetchError::TooLarge { limit });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        // Validators are kept only once the whole body has arrived.
        self.etag = etag;
        self.last_modified = last_modified;
        Ok(Some(body))
    }

    /// Downloads, verifies and caches a list newer than `current`, and returns it: the
    /// caller installs it (the refresher is the one place that does).
    ///
    /// Verification runs on the calling task (tens of milliseconds for the 2025 list): run
    /// the fetcher on its own task, never on a session's.
    pub async fn refresh(
        &mut self,
        current: &Whitelist,
        opts: &VerifyOptions<'_>,
    ) -> Result<FetchOutcome, FetchError> {
        let Some(bytes) = self.download().await? else {
            return Ok(FetchOutcome::Unchanged);
        };
        let result = self.accept(&bytes, current, opts);
        if result.is_err() {
            // Do not let a validator for a refused body suppress the next full download.
            self.etag = None;
            self.last_modified = None;
        }
        result
    }

    fn accept(
        &self,
        bytes: &[u8],
        current: &Whitelist,
        opts: &VerifyOptions<'_>,
    ) -> Result<FetchOutcome, FetchError> {
        let list = if self.config.verify_signature {
            load_and_verify(bytes, opts)?
        } else {
            super::load_unverified(bytes)?
        };
        let floor = (1.0 - self.config.max_shrink) * current.entry_count() as f64;
        if (list.entry_count() as f64) < floor {
            return Err(FetchError::Shrunk {
                current: current.entry_count(),
                received: list.entry_count(),
                max_shrink: self.config.max_shrink,
            });
        }
        if list.generated() < current.generated() {
            return Err(FetchError::Older {
                current: current.generated(),
                received: list.generated(),
            });
        }
        // ANS dates every generation: the same date is the same list.
        if list.generated() == current.generated() {
            return Ok(FetchOutcome::Unchanged);
        }
        let cache_error = match &self.config.cache_path {
            Some(path) => store::save(path, bytes).err().map(|e| e.to_string()),
            None => None,
        };
        let list = Arc::new(list);
        if let Some(error) = cache_error {
            tracing::error!(url = %self.config.url, %error, "whitelist updated but NOT cached: fix whitelist.cache (directory missing or not writable)");
            return Ok(FetchOutcome::UpdatedNotCached(list, error));
        }
        tracing::info!(
            url = %self.config.url,
            generated = crate::logging::time(list.generated()),
            entries = list.entry_count(),
            domains = list.domain_count(),
            "whitelist updated"
        );
        Ok(FetchOutcome::Updated(list))
    }
}

/// The error and its sources, e.g. "error sending request: invalid peer certificate".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
