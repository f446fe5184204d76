//! Prometheus metrics: one registry per gateway instance, typed handles created once.
//!
//! Names are prefixed `mssante_`, in seconds and bytes; counters end in `_total`; refusals
//! carry the same `reason` labels as the logs.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Sub-millisecond to tens of seconds, for latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Ten milliseconds to five days, for delivery (retries included).
const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 432000.0,
];

/// 1 KiB to 64 MiB, for message sizes.
const SIZE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// The gateway's metrics.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Connections accepted, by listener.
    pub connections_total: IntCounterVec,
    /// Connections refused before SMTP (limits), by listener and reason.
    pub connections_refused_total: IntCounterVec,
    /// Connections currently open.
    pub connections_open: IntGauge,
    /// Completed TLS handshakes, by version and cipher suite.
    pub tls_handshakes_total: IntCounterVec,
    /// Failed TLS handshakes, by reason.
    pub tls_handshake_failures_total: IntCounterVec,
    /// Refusals, by SMTP stage and reason.
    pub rejections_total: IntCounterVec,
    /// Messages accepted (250 after the spool's fsync), by direction.
    pub messages_received_total: IntCounterVec,
    /// Size of accepted messages.
    pub message_size_bytes: Histogram,
    /// From the end of the body to the 250 (spool write and fsync included).
    pub accept_latency_seconds: HistogramVec,
    /// Entries of the liste blanche in use.
    pub whitelist_entries: IntGauge,
    /// Distinct domains of the liste blanche in use.
    pub whitelist_domains: IntGauge,
    /// `DateDeGeneration` of the list in use, as a Unix timestamp.
    pub whitelist_generated_timestamp_seconds: IntGauge,
    /// Seconds since the list in use was last confirmed current.
    pub whitelist_age_seconds: IntGauge,
    /// Refresh attempts by outcome (`updated`, `unchanged`, or the failure's reason).
    pub whitelist_fetch_total: IntCounterVec,
    /// 1 when lists are signature-checked, 0 when `verify_signature = false`.
    pub whitelist_signature_verification: IntGauge,
    /// End of validity of our certificate and its chain, by certificate (`which`).
    pub certificate_expiry_timestamp_seconds: IntGaugeVec,
    /// CRL downloads, by outcome (`updated`, `unchanged`, or the failure's reason).
    pub crl_fetch_total: IntCounterVec,
    /// thisUpdate and nextUpdate of the downloaded CRLs, by issuer and field.
    pub crl_update_timestamp_seconds: IntGaugeVec,
    /// 1 when a CRL of the issuing CA is loaded, 0 when not (its peers are then deferred
    /// under `tls.revocation = "require"`).
    pub crl_present: IntGaugeVec,
    /// Configuration reloads, by outcome (`applied`, `invalid`).
    pub reloads_total: IntCounterVec,
    /// Messages in the spool waiting for delivery.
    pub queue_messages: IntGauge,
    /// Age of the oldest queued message.
    pub queue_oldest_age_seconds: IntGauge,
    /// Messages handed to the next hop (at least one recipient accepted), by direction.
    pub messages_relayed_total: IntCounterVec,
    /// Delivery attempts that left recipients for a retry, by direction.
    pub messages_deferred_total: IntCounterVec,
    /// Messages with recipients that failed for good (5xx or expiry), by direction.
    pub messages_bounced_total: IntCounterVec,
    /// Outbound attempts that did not deliver, by reason (one per MX host tried, or per
    /// domain when no host was tried: not listed, DNS, stale list).
    pub outbound_failures_total: IntCounterVec,
    /// From acceptance to the last recipient's delivery.
    pub delivery_latency_seconds: HistogramVec,
    /// Torn spool files moved to quarantine at recovery.
    pub spool_quarantined_total: IntCounter,
    /// Syncs of the spool's message log (one per batch of commits).
    pub spool_log_syncs_total: IntCounter,
    /// Records written to the spool's message log (messages and their completions):
    /// divided by the syncs, the batch size group commit reached.
    pub spool_log_records_total: IntCounter,
    /// Messages to the auto-reply mailbox, by outcome (`sent`, or `suppressed_<reason>`).
    pub autoreplies_total: IntCounterVec,
    /// Delivery status notifications we wrote and spooled, by action (`failed`,
    /// `delayed`, `delivered`, `relayed`).
    pub dsn_generated_total: IntCounterVec,
}

/// The `reason` labels of `mssante_connections_refused_total`.
pub const CONNECTION_REFUSALS: [&str; 9] = [
    "max_connections",
    "max_connections_per_ip",
    "connection_rate",
    "pre_tls_budget",
    "not_allowed",
    "proxy_missing",
    "proxy_invalid",
    "proxy_timeout",
    "proxy_untrusted",
];

impl Metrics {
    /// Shows, per issuing CA, whether its CRL is loaded in `store`.
    pub fn set_crl_coverage(&self, store: &crate::trust::pki::TrustStore) {
        self.crl_present.reset();
        for ca in store.crl_coverage() {
            self.crl_present
                .with_label_values(&[&ca.issuer])
                .set(i64::from(ca.present));
        }
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let connections_total = counter_vec(
            "mssante_connections_total",
            "Connections accepted, by listener.",
            &["listener"],
        );
        let connections_refused_total = counter_vec(
            "mssante_connections_refused_total",
            "Connections refused before SMTP because of a limit, by listener and reason.",
            &["listener", "reason"],
        );
        let tls_handshakes_total = counter_vec(
            "mssante_tls_handshakes_total",
            "Completed TLS handshakes, by protocol version and cipher suite.",
            &["version", "cipher"],
        );
        let tls_handshake_failures_total = counter_vec(
            "mssante_tls_handshake_failures_total",
            "Failed TLS handshakes, by reason.",
            &["reason"],
        );
        let rejections_total = counter_vec(
            "mssante_rejections_total",
            "Refused commands and messages, by SMTP stage and reason.",
            &["stage", "reason"],
        );
        let messages_received_total = counter_vec(
            "mssante_messages_received_total",
            "Messages accepted and stored durably, by direction.",
            &["direction"],
        );
        let connections_open =
            IntGauge::new("mssante_connections_open", "Connections currently open.")
                .expect("metric definitions are static and valid");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("metric names are unique");
        let message_size_bytes = Histogram::with_opts(
            HistogramOpts::new("mssante_message_size_bytes", "Size of accepted messages.")
                .buckets(SIZE_BUCKETS.to_vec()),
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(message_size_bytes.clone()))
            .expect("metric names are unique");
        let accept_latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mssante_accept_latency_seconds",
                "From the end of a message body to the 250 reply (spool write and fsync).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["direction"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(accept_latency_seconds.clone()))
            .expect("metric names are unique");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric definitions are static and valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let whitelist_entries = gauge(
            "mssante_whitelist_entries",
            "Entries of the liste blanche in use.",
        );
        let whitelist_domains = gauge(
            "mssante_whitelist_domains",
            "Distinct domains of the liste blanche in use.",
        );
        let whitelist_generated_timestamp_seconds = gauge(
            "mssante_whitelist_generated_timestamp_seconds",
            "DateDeGeneration of the liste blanche in use (Unix time).",
        );
        let whitelist_age_seconds = gauge(
            "mssante_whitelist_age_seconds",
            "Seconds since the liste blanche in use was last confirmed current.",
        );
        let whitelist_signature_verification = gauge(
            "mssante_whitelist_signature_verification",
            "1 when the liste blanche signature is verified, 0 when verification is disabled.",
        );
        let whitelist_fetch_total = counter_vec(
            "mssante_whitelist_fetch_total",
            "Liste blanche refresh attempts, by outcome.",
            &["outcome"],
        );
        let certificate_expiry_timestamp_seconds = IntGaugeVec::new(
            Opts::new(
                "mssante_certificate_expiry_timestamp_seconds",
                "End of validity (Unix time) of our certificate and of its issuers.",
            ),
            &["which", "subject"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(certificate_expiry_timestamp_seconds.clone()))
            .expect("metric names are unique");
        let crl_fetch_total = counter_vec(
            "mssante_crl_fetch_total",
            "CRL downloads from the distribution points, by outcome.",
            &["outcome"],
        );
        let crl_update_timestamp_seconds = IntGaugeVec::new(
            Opts::new(
                "mssante_crl_update_timestamp_seconds",
                "thisUpdate (field=this) and nextUpdate (field=next) of the CRLs in use, Unix time.",
            ),
            &["issuer", "field"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(crl_update_timestamp_seconds.clone()))
            .expect("metric names are unique");
        let crl_present = IntGaugeVec::new(
            Opts::new(
                "mssante_crl_present",
                "1 when a CRL of this CA (one that issues operators' certificates) is loaded, else 0.",
            ),
            &["issuer"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(crl_present.clone()))
            .expect("metric names are unique");
        let reloads_total = counter_vec(
            "mssante_reloads_total",
            "Configuration reloads (SIGHUP), by outcome.",
            &["outcome"],
        );
        let queue_messages = gauge(
            "mssante_queue_messages",
            "Messages in the spool waiting for delivery.",
        );
        let queue_oldest_age_seconds = gauge(
            "mssante_queue_oldest_age_seconds",
            "Age of the oldest message in the spool.",
        );
        let messages_relayed_total = counter_vec(
            "mssante_messages_relayed_total",
            "Messages accepted by the next hop for at least one recipient, by direction.",
            &["direction"],
        );
        let messages_deferred_total = counter_vec(
            "mssante_messages_deferred_total",
            "Delivery attempts leaving recipients to retry later, by direction.",
            &["direction"],
        );
        let autoreplies_total = counter_vec(
            "mssante_autoreplies_total",
            "Messages to the auto-reply mailbox, by outcome: sent, or suppressed_<reason> (loop protection).",
            &["outcome"],
        );
        let dsn_generated_total = counter_vec(
            "mssante_dsn_generated_total",
            "Delivery status notifications written and spooled by the gateway, by action (failed, delayed, delivered, relayed).",
            &["action"],
        );
        let messages_bounced_total = counter_vec(
            "mssante_messages_bounced_total",
            "Messages with recipients failed for good (5xx reply or expiry), by direction.",
            &["direction"],
        );
        let outbound_failures_total = counter_vec(
            "mssante_outbound_failures_total",
            "Outbound delivery attempts that failed before or instead of a transaction, by reason.",
            &["reason"],
        );
        let delivery_latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mssante_delivery_latency_seconds",
                "From acceptance (250) to delivery of the last recipient, by direction.",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
            &["direction"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(delivery_latency_seconds.clone()))
            .expect("metric names are unique");
        let spool_quarantined_total = IntCounter::new(
            "mssante_spool_quarantined_total",
            "Torn spool files moved to quarantine at recovery (never delivered).",
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(spool_quarantined_total.clone()))
            .expect("metric names are unique");
        let spool_log_syncs_total = IntCounter::new(
            "mssante_spool_log_syncs_total",
            "Syncs (fdatasync) of the spool's message log, one per batch of commits.",
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(spool_log_syncs_total.clone()))
            .expect("metric names are unique");
        let spool_log_records_total = IntCounter::new(
            "mssante_spool_log_records_total",
            "Records written to the spool's message log (messages and completions).",
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(spool_log_records_total.clone()))
            .expect("metric names are unique");
        let build = IntGauge::with_opts(
            Opts::new(
                "mssante_build_info",
                "Build information; the value is always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("metric definitions are static and valid");
        build.set(1);
        registry
            .register(Box::new(build))
            .expect("metric names are unique");
        let metrics = Metrics {
            registry,
            connections_total,
            connections_refused_total,
            connections_open,
            tls_handshakes_total,
            tls_handshake_failures_total,
            rejections_total,
            messages_received_total,
            message_size_bytes,
            accept_latency_seconds,
            whitelist_entries,
            whitelist_domains,
            whitelist_generated_timestamp_seconds,
            whitelist_age_seconds,
            whitelist_fetch_total,
            whitelist_signature_verification,
            certificate_expiry_timestamp_seconds,
            crl_fetch_total,
            crl_update_timestamp_seconds,
            crl_present,
            reloads_total,
            queue_messages,
            queue_oldest_age_seconds,
            messages_relayed_total,
            messages_deferred_total,
            messages_bounced_total,
            outbound_failures_total,
            delivery_latency_seconds,
            spool_quarantined_total,
            spool_log_syncs_total,
            spool_log_records_total,
            autoreplies_total,
            dsn_generated_total,
        };
        metrics.expose_known_labels();
        metrics
    }

    /// Creates at 0 the series whose labels are known in advance. A labelled series
    /// otherwise appears at its first increment, with value 1, and `increase()` over it
    /// stays 0: an alert on the first event (a refused reload, a spool failure) would never
    /// fire. Reasons computed at run time (policy refusals, outbound failures, fetch
    /// errors) still appear at their first use.
    fn expose_known_labels(&self) {
        for outcome in ["applied", "invalid"] {
            self.reloads_total.with_label_values(&[outcome]);
        }
        for (stage, reason) in [
            ("data", "spool_error"),
            ("data", "mail_loop"),
            ("relay", "mail_loop"),
            ("connection", "timeout"),
            ("connection", "write_timeout"),
            ("connection", "session_duration"),
            ("connection", "tls_deadline"),
        ] {
            self.rejections_total.with_label_values(&[stage, reason]);
        }
        for direction in ["inbound", "outbound", "dsn"] {
            for family in [
                &self.messages_received_total,
                &self.messages_relayed_total,
                &self.messages_deferred_total,
                &self.messages_bounced_total,
            ] {
                family.with_label_values(&[direction]);
            }
            self.delivery_latency_seconds
                .with_label_values(&[direction]);
        }
        for listener in ["inbound", "submission"] {
            self.connections_total.with_label_values(&[listener]);
            for reason in CONNECTION_REFUSALS {
                self.connections_refused_total
                    .with_label_values(&[listener, reason]);
            }
        }
        for outcome in ["updated", "unchanged"] {
            self.whitelist_fetch_total.with_label_values(&[outcome]);
            self.crl_fetch_total.with_label_values(&[outcome]);
        }
        for action in ["failed", "delayed", "delivered", "relayed"] {
            self.dsn_generated_total.with_label_values(&[action]);
        }
    }

    /// Counts one refusal.
    pub fn reject(&self, stage: &str, reason: &str) {
        self.rejections_total
            .with_label_values(&[stage, reason])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The HTTP endpoint for Prometheus and orchestrators: `/metrics`, `/healthz` (the process
/// answers) and `/readyz` (200 once `ready` is set: a valid liste blanche is loaded and the
/// listeners are up; 503 before).
pub mod http {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Method, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::Metrics;

    /// Serves until `shutdown` turns true.
    pub async fn serve(
        listener: TcpListener,
        metrics: Arc<Metrics>,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            let ready = Arc::clone(&ready);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let r = respond(&req, &metrics, ready.as_ref());
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                // Scrapers are trusted and short-lived; a stuck one is cut after a minute.
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    }

    fn respond(
        req: &Request<Incoming>,
        metrics: &Metrics,
        ready: &(dyn Fn() -> bool + Send + Sync),
    ) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, content_type: &'static str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if ready() => text(StatusCode::OK, "text/plain", "ready\n".into()),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready: draining, no valid liste blanche loaded yet, listeners not up, or a CA's CRL missing (tls.revocation = \"require\")\n".into(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}
