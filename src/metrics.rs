//! Prometheus metrics: one registry per gateway instance, typed handles created once.
//!
//! Names are prefixed `mssante_`, in seconds and bytes; counters end in `_total`; refusals
//! carry the same `reason` labels as the logs. The label values of the counters are listed
//! in [`labels`], and each of their series exists from start-up.

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
    pub connections_total: ListedCounter,
    /// Connections refused before SMTP (limits), by listener and reason.
    pub connections_refused_total: ListedCounter,
    /// Connections currently open.
    pub connections_open: IntGauge,
    /// Completed TLS handshakes, by version and cipher suite.
    pub tls_handshakes_total: IntCounterVec,
    /// Failed TLS handshakes, by reason.
    pub tls_handshake_failures_total: ListedCounter,
    /// Refusals, by SMTP stage and reason.
    pub rejections_total: ListedCounter,
    /// Messages accepted (250 after the spool's fsync), by direction.
    pub messages_received_total: ListedCounter,
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
    pub whitelist_fetch_total: ListedCounter,
    /// 1 when lists are signature-checked, 0 when `verify_signature = false`.
    pub whitelist_signature_verification: IntGauge,
    /// End of validity of our certificate and its chain, by certificate (`which`).
    pub certificate_expiry_timestamp_seconds: IntGaugeVec,
    /// CRL downloads, by outcome (`updated`, `unchanged`, or the failure's reason).
    pub crl_fetch_total: ListedCounter,
    /// thisUpdate and nextUpdate of the downloaded CRLs, by issuer and field.
    pub crl_update_timestamp_seconds: IntGaugeVec,
    /// 1 when a CRL of the issuing CA is loaded, 0 when not (its peers are then deferred
    /// under `tls.revocation = "require"`).
    pub crl_present: IntGaugeVec,
    /// Configuration reloads, by outcome (`applied`, `invalid`).
    pub reloads_total: ListedCounter,
    /// Messages in the spool waiting for delivery.
    pub queue_messages: IntGauge,
    /// 1 while the internal server is marked down (its last session failed), else 0.
    pub relay_internal_down: IntGauge,
    /// Age of the oldest queued message.
    pub queue_oldest_age_seconds: IntGauge,
    /// Messages handed to the next hop (at least one recipient accepted), by direction.
    pub messages_relayed_total: ListedCounter,
    /// Delivery attempts that left recipients for a retry, by direction.
    pub messages_deferred_total: ListedCounter,
    /// Messages with recipients that failed for good (5xx or expiry), by direction.
    pub messages_bounced_total: ListedCounter,
    /// Outbound attempts that did not deliver, by reason (one per MX host tried, or per
    /// domain when no host was tried: not listed, DNS, stale list).
    pub outbound_failures_total: ListedCounter,
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
    pub autoreplies_total: ListedCounter,
    /// Delivery status notifications we wrote and spooled, by action (`failed`,
    /// `delayed`, `delivered`, `relayed`).
    pub dsn_generated_total: ListedCounter,
}

/// A counter family whose series are all listed in [`labels`]: each exists at 0 from
/// start-up, and counting one that is not listed panics in a debug build, so that a test
/// reaching it fails.
pub struct ListedCounter {
    family: IntCounterVec,
    listed: &'static labels::Family,
}

impl ListedCounter {
    /// Counts one event of the series with these label values, in the family's order.
    pub fn inc(&self, values: &[&str]) {
        debug_assert!(
            self.listed.has(values),
            "{} {values:?} is not listed: add it to metrics::labels and explain it in docs/OPERATIONS.md section 6.2",
            self.listed.name
        );
        self.family.with_label_values(values).inc();
    }

    /// The count of the series with these label values.
    pub fn get(&self, values: &[&str]) -> u64 {
        debug_assert!(
            self.listed.has(values),
            "{} {values:?} is not listed",
            self.listed.name
        );
        self.family.with_label_values(values).get()
    }
}

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
        let listed = |family: &'static labels::Family, help: &str| {
            let counter = counter_vec(family.name, help, family.labels);
            // At 0 from the start: a series born at its first event starts at 1, and
            // `increase()` over it, so any alert on it, stays 0.
            for series in family.series() {
                counter.with_label_values(&series);
            }
            ListedCounter {
                family: counter,
                listed: family,
            }
        };
        let connections_total = listed(&labels::CONNECTIONS, "Connections accepted, by listener.");
        let connections_refused_total = listed(
            &labels::CONNECTIONS_REFUSED,
            "Connections refused before SMTP because of a limit, by listener and reason.",
        );
        let tls_handshakes_total = counter_vec(
            "mssante_tls_handshakes_total",
            "Completed TLS handshakes, by protocol version and cipher suite.",
            &["version", "cipher"],
        );
        let tls_handshake_failures_total = listed(
            &labels::TLS_HANDSHAKE_FAILURES,
            "Failed TLS handshakes, by reason.",
        );
        let rejections_total = listed(
            &labels::REJECTIONS,
            "Refused commands and messages, by SMTP stage and reason.",
        );
        let messages_received_total = listed(
            &labels::MESSAGES_RECEIVED,
            "Messages accepted and stored durably, by direction.",
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
        let whitelist_fetch_total = listed(
            &labels::WHITELIST_FETCHES,
            "Liste blanche refresh attempts, by outcome.",
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
        let crl_fetch_total = listed(
            &labels::CRL_FETCHES,
            "CRL downloads from the distribution points, by outcome.",
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
        let reloads_total = listed(
            &labels::RELOADS,
            "Configuration reloads (SIGHUP), by outcome.",
        );
        let queue_messages = gauge(
            "mssante_queue_messages",
            "Messages in the spool waiting for delivery.",
        );
        let relay_internal_down = gauge(
            "mssante_relay_internal_down",
            "1 while the internal server is unreachable (its last session failed; messages for it wait for a probe to succeed), else 0.",
        );
        let queue_oldest_age_seconds = gauge(
            "mssante_queue_oldest_age_seconds",
            "Age of the oldest message in the spool.",
        );
        let messages_relayed_total = listed(
            &labels::MESSAGES_RELAYED,
            "Messages accepted by the next hop for at least one recipient, by direction.",
        );
        let messages_deferred_total = listed(
            &labels::MESSAGES_DEFERRED,
            "Delivery attempts leaving recipients to retry later, by direction.",
        );
        let autoreplies_total = listed(
            &labels::AUTOREPLIES,
            "Messages to the auto-reply mailbox, by outcome: sent, or suppressed_<reason> (loop protection).",
        );
        let dsn_generated_total = listed(
            &labels::DSN_GENERATED,
            "Delivery status notifications written and spooled by the gateway, by action (failed, delayed, delivered, relayed).",
        );
        let messages_bounced_total = listed(
            &labels::MESSAGES_BOUNCED,
            "Messages with recipients failed for good (5xx reply or expiry), by direction.",
        );
        let outbound_failures_total = listed(
            &labels::OUTBOUND_FAILURES,
            "Outbound delivery attempts that failed before or instead of a transaction, by reason.",
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
        for direction in labels::DIRECTIONS {
            accept_latency_seconds.with_label_values(&[direction]);
            delivery_latency_seconds.with_label_values(&[direction]);
        }
        Metrics {
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
            relay_internal_down,
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
        }
    }

    /// Counts one refusal.
    pub fn reject(&self, stage: &str, reason: &str) {
        self.rejections_total.inc(&[stage, reason]);
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

/// Every value the labels of the counters above can take, in one place: [`Metrics::new`]
/// creates each series at 0, [`ListedCounter::inc`] refuses in debug builds a series that
/// is not listed, `tests/metric_labels.rs` checks the label literals of `src/` against
/// these lists, and `tests/docs.rs` that the operations guide explains every value.
///
/// A value produced by a module that uses `metrics` (`inbound`, `relay`, `whitelist`,
/// `gateway`) has a constant here, named after it in capitals, which that module uses.
/// The modules that do not use `metrics`, and should not for a label (`smtp`, `trust`,
/// `policy`, `dns`, `spool`, `autoreply`: `trust` cannot, `metrics` uses it), write theirs
/// as literals, listed here as literals.
pub mod labels {
    /// A counter family and the series it can have.
    #[derive(Debug)]
    pub struct Family {
        /// The metric's name.
        pub name: &'static str,
        /// Its label names, in the order [`super::ListedCounter::inc`] takes the values.
        pub labels: &'static [&'static str],
        /// The values they take.
        pub values: Values,
    }

    /// The label values of a family.
    #[derive(Debug)]
    pub enum Values {
        /// One label: its values.
        One(&'static [&'static str]),
        /// Two labels: each value of the first, with the values of the second that occur
        /// with it (not every combination does).
        Pairs(&'static [(&'static str, &'static [&'static str])]),
    }

    impl Family {
        /// Every series, as label values in the family's order.
        pub fn series(&self) -> Vec<Vec<&'static str>> {
            match self.values {
                Values::One(values) => values.iter().map(|v| vec![*v]).collect(),
                Values::Pairs(pairs) => pairs
                    .iter()
                    .flat_map(|(first, seconds)| seconds.iter().map(|s| vec![*first, *s]))
                    .collect(),
            }
        }

        /// Whether `values` (in the family's order) is one of its series.
        pub fn has(&self, values: &[&str]) -> bool {
            match (&self.values, values) {
                (Values::One(listed), [value]) => listed.contains(value),
                (Values::Pairs(pairs), [first, second]) => pairs
                    .iter()
                    .any(|(f, seconds)| f == first && seconds.contains(second)),
                _ => false,
            }
        }
    }

    // Connection refusals (inbound::listener, inbound::proxy, inbound::connection).
    pub const MAX_CONNECTIONS: &str = "max_connections";
    pub const MAX_CONNECTIONS_PER_IP: &str = "max_connections_per_ip";
    pub const CONNECTION_RATE: &str = "connection_rate";
    pub const PRE_TLS_BUDGET: &str = "pre_tls_budget";
    pub const NOT_ALLOWED: &str = "not_allowed";
    pub const PROXY_MISSING: &str = "proxy_missing";
    pub const PROXY_INVALID: &str = "proxy_invalid";
    pub const PROXY_TIMEOUT: &str = "proxy_timeout";
    pub const PROXY_UNTRUSTED: &str = "proxy_untrusted";

    // TLS handshake failures (inbound::connection).
    pub const TIMEOUT: &str = "timeout";
    pub const EOF: &str = "eof";
    pub const IO: &str = "io";
    pub const NOT_TLS: &str = "not_tls";
    pub const INCOMPATIBLE: &str = "incompatible";
    pub const ALERT_RECEIVED: &str = "alert_received";
    pub const CLIENT_CERT_MISSING: &str = "client_cert_missing";
    pub const CERTIFICATE: &str = "certificate";
    pub const PROTOCOL: &str = "protocol";

    // Refusals of the connection (inbound::connection, relay::worker).
    pub const WRITE_TIMEOUT: &str = "write_timeout";
    pub const SESSION_DURATION: &str = "session_duration";
    pub const TLS_DEADLINE: &str = "tls_deadline";
    pub const SPOOL_ERROR: &str = "spool_error";
    pub const MAIL_LOOP: &str = "mail_loop";

    // Outbound failures (relay::outbound).
    pub const WHITELIST_STALE: &str = "whitelist_stale";
    pub const RECIPIENT_DOMAIN_NOT_LISTED: &str = "recipient_domain_not_listed";
    pub const DOMAIN_BUSY: &str = "domain_busy";
    pub const MX_INVALID_NAME: &str = "mx_invalid_name";
    pub const CONNECT_FAILED: &str = "connect_failed";
    pub const SESSION_REFUSED: &str = "session_refused";
    pub const STARTTLS_UNAVAILABLE: &str = "starttls_unavailable";
    pub const TLS_HANDSHAKE_FAILED: &str = "tls_handshake_failed";
    pub const SESSION_BROKEN: &str = "session_broken";

    // Download outcomes (whitelist::refresh, gateway).
    pub const UPDATED: &str = "updated";
    pub const UNCHANGED: &str = "unchanged";
    pub const CLIENT: &str = "client";
    pub const NETWORK: &str = "network";
    pub const HTTP_STATUS: &str = "http_status";
    pub const TOO_LARGE: &str = "too_large";
    pub const SIGNATURE: &str = "signature";
    pub const PARSE: &str = "parse";
    pub const SHRUNK: &str = "shrunk";
    pub const OLDER: &str = "older";
    pub const CACHE_WRITE: &str = "cache_write";

    // Reloads (gateway).
    pub const APPLIED: &str = "applied";
    pub const INVALID: &str = "invalid";

    // DSN actions (relay::dsn) and auto-replies (relay::auto_reply).
    pub const FAILED: &str = "failed";
    pub const DELAYED: &str = "delayed";
    pub const DELIVERED: &str = "delivered";
    pub const RELAYED: &str = "relayed";
    pub const SENT: &str = "sent";

    /// `listener`: `inbound::Role::listener_name`.
    pub const LISTENERS: &[&str] = &["inbound", "submission"];

    /// `direction`: `spool::Direction::as_str`.
    pub const DIRECTIONS: &[&str] = &["inbound", "outbound", "dsn"];

    pub static CONNECTIONS: Family = Family {
        name: "mssante_connections_total",
        labels: &["listener"],
        values: Values::One(LISTENERS),
    };

    pub static CONNECTIONS_REFUSED: Family = Family {
        name: "mssante_connections_refused_total",
        labels: &["listener", "reason"],
        values: Values::Pairs(&[
            (
                "inbound",
                &[
                    CONNECTION_RATE,
                    MAX_CONNECTIONS,
                    MAX_CONNECTIONS_PER_IP,
                    PRE_TLS_BUDGET,
                    PROXY_MISSING,
                    PROXY_INVALID,
                    PROXY_TIMEOUT,
                    PROXY_UNTRUSTED,
                ],
            ),
            (
                "submission",
                &[
                    NOT_ALLOWED,
                    CONNECTION_RATE,
                    MAX_CONNECTIONS,
                    MAX_CONNECTIONS_PER_IP,
                    PROXY_MISSING,
                    PROXY_INVALID,
                    PROXY_TIMEOUT,
                    PROXY_UNTRUSTED,
                ],
            ),
        ]),
    };

    pub static TLS_HANDSHAKE_FAILURES: Family = Family {
        name: "mssante_tls_handshake_failures_total",
        labels: &["reason"],
        values: Values::One(&[
            TIMEOUT,
            EOF,
            IO,
            NOT_TLS,
            INCOMPATIBLE,
            ALERT_RECEIVED,
            CLIENT_CERT_MISSING,
            CERTIFICATE,
            PROTOCOL,
        ]),
    };

    /// By stage: the session's refusals of commands it cannot take (`smtp::session`, whose
    /// stage is the command, or `command` when it does not parse), the policy's refusals
    /// of MAIL and RCPT (`policy`, with the certificate's `trust::verify` reasons), the
    /// checks only logged (`mail_logged`), and the connection's own limits.
    pub static REJECTIONS: Family = Family {
        name: "mssante_rejections_total",
        labels: &["stage", "reason"],
        values: Values::Pairs(&[
            (
                "connection",
                &[TIMEOUT, WRITE_TIMEOUT, SESSION_DURATION, TLS_DEADLINE],
            ),
            (
                "command",
                &[
                    "unknown_command",
                    "syntax_error",
                    "unsupported_parameter",
                    "line_too_long",
                    "nul_byte",
                    "not_implemented",
                ],
            ),
            ("ehlo", &["syntax_error", "not_implemented"]),
            ("starttls", &["bad_sequence", "not_implemented"]),
            (
                "mail",
                &[
                    "bad_sequence",
                    "tls_required",
                    "unsupported_parameter",
                    "message_too_large",
                    "invalid_utf8",
                    "non_ascii_address",
                    CLIENT_CERT_MISSING,
                    "client_cert_untrusted",
                    "client_cert_expired",
                    "client_cert_not_yet_valid",
                    "client_cert_revoked",
                    "client_cert_wrong_usage",
                    "client_cert_malformed",
                    "client_cert_other",
                    "crl_expired",
                    "crl_unavailable",
                    WHITELIST_STALE,
                    "dn_not_listed",
                    "ehlo_cn_mismatch",
                    "fcrdns_mismatch",
                    "fcrdns_unavailable",
                    "sender_syntax",
                    "sender_domain_not_listed",
                    "sender_dn_mismatch",
                    "sender_not_local",
                ],
            ),
            (
                "mail_logged",
                &["ehlo_cn_mismatch", "fcrdns_mismatch", "fcrdns_unavailable"],
            ),
            (
                "rcpt",
                &[
                    "bad_sequence",
                    "too_many_recipients",
                    "unsupported_parameter",
                    "invalid_utf8",
                    "non_ascii_address",
                    "routing_address",
                    "recipient_syntax",
                    "relay_denied",
                    WHITELIST_STALE,
                    RECIPIENT_DOMAIN_NOT_LISTED,
                ],
            ),
            (
                "data",
                &[
                    "bad_sequence",
                    "syntax_error",
                    "message_too_large",
                    "bare_newline",
                    "empty_message",
                    "reset",
                    SPOOL_ERROR,
                    MAIL_LOOP,
                ],
            ),
            ("relay", &[MAIL_LOOP]),
        ]),
    };

    pub static MESSAGES_RECEIVED: Family = by_direction("mssante_messages_received_total");
    pub static MESSAGES_RELAYED: Family = by_direction("mssante_messages_relayed_total");
    pub static MESSAGES_DEFERRED: Family = by_direction("mssante_messages_deferred_total");
    pub static MESSAGES_BOUNCED: Family = by_direction("mssante_messages_bounced_total");

    const fn by_direction(name: &'static str) -> Family {
        Family {
            name,
            labels: &["direction"],
            values: Values::One(DIRECTIONS),
        }
    }

    /// `policy::judge_server` (with the certificate's `trust::verify` reasons) and
    /// `dns::DnsError::reason` besides `relay::outbound`.
    pub static OUTBOUND_FAILURES: Family = Family {
        name: "mssante_outbound_failures_total",
        labels: &["reason"],
        values: Values::One(&[
            WHITELIST_STALE,
            RECIPIENT_DOMAIN_NOT_LISTED,
            DOMAIN_BUSY,
            "dns_nxdomain",
            "dns_null_mx",
            "dns_no_mail_host",
            "dns_no_address",
            "dns_invalid_name",
            "dns_temporary",
            MX_INVALID_NAME,
            CONNECT_FAILED,
            TIMEOUT,
            SESSION_REFUSED,
            STARTTLS_UNAVAILABLE,
            TLS_HANDSHAKE_FAILED,
            "server_cert_missing",
            "server_cert_untrusted",
            "server_cert_expired",
            "server_cert_not_yet_valid",
            "server_cert_revoked",
            "server_cert_wrong_usage",
            "server_cert_malformed",
            "server_cert_other",
            "crl_expired",
            "crl_unavailable",
            "mx_cn_mismatch",
            "recipient_dn_mismatch",
            "whitelist_unavailable",
            SESSION_BROKEN,
        ]),
    };

    pub static WHITELIST_FETCHES: Family = Family {
        name: "mssante_whitelist_fetch_total",
        labels: &["outcome"],
        values: Values::One(&[
            UPDATED,
            UNCHANGED,
            CLIENT,
            NETWORK,
            HTTP_STATUS,
            TOO_LARGE,
            SIGNATURE,
            PARSE,
            SHRUNK,
            OLDER,
            CACHE_WRITE,
        ]),
    };

    /// The failures are `trust::crl::CrlError::reason`.
    pub static CRL_FETCHES: Family = Family {
        name: "mssante_crl_fetch_total",
        labels: &["outcome"],
        values: Values::One(&[
            UPDATED, UNCHANGED, NETWORK, PARSE, SIGNATURE, OLDER, "write",
        ]),
    };

    pub static RELOADS: Family = Family {
        name: "mssante_reloads_total",
        labels: &["outcome"],
        values: Values::One(&[APPLIED, INVALID]),
    };

    /// The suppressions are `autoreply::Suppressed::as_str`.
    pub static AUTOREPLIES: Family = Family {
        name: "mssante_autoreplies_total",
        labels: &["outcome"],
        values: Values::One(&[
            SENT,
            SPOOL_ERROR,
            "suppressed_null_sender",
            "suppressed_auto_submitted",
            "suppressed_precedence",
            "suppressed_mailing_list",
            "suppressed_system_sender",
            "suppressed_own_address",
            "suppressed_already_replied",
        ]),
    };

    pub static DSN_GENERATED: Family = Family {
        name: "mssante_dsn_generated_total",
        labels: &["action"],
        values: Values::One(&[FAILED, DELAYED, DELIVERED, RELAYED]),
    };

    /// Every family above.
    pub static FAMILIES: [&Family; 14] = [
        &CONNECTIONS,
        &CONNECTIONS_REFUSED,
        &TLS_HANDSHAKE_FAILURES,
        &REJECTIONS,
        &MESSAGES_RECEIVED,
        &MESSAGES_RELAYED,
        &MESSAGES_DEFERRED,
        &MESSAGES_BOUNCED,
        &OUTBOUND_FAILURES,
        &WHITELIST_FETCHES,
        &CRL_FETCHES,
        &RELOADS,
        &AUTOREPLIES,
        &DSN_GENERATED,
    ];
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
