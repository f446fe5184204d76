//! The delivery worker: takes due messages from the spool and routes each recipient
//! (the auto-reply mailbox, our own domains to the internal server, the rest to other
//! operators), then settles the outcomes: completed, bounced with a DSN, or deferred.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::dsn::{self, Action, RecipientReport};
use super::internal::{Internal, RelayError};
use super::outbound::{DomainDelivery, Outbound};
use super::received::received_header;
use super::RelaySettings;
use super::{auto_reply, Outcome};
use crate::autoreply::AutoReplier;
use crate::client::{Payload, Transaction};
use crate::metrics::{labels, Metrics};
use crate::smtp::client::Envelope as Sending;
use crate::smtp::Enhanced;
use crate::spool::{id_time_ms, unix_ms, Envelope, Spool, SpoolError, StoredMessage};

/// How often the worker re-reads the spool directories (for `queue retry` / `queue
/// delete` run from another process) and closes idle sessions.
const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// How long in-flight deliveries may run after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything a delivery needs; shared by the worker and its delivery tasks.
pub struct Relay {
    spool: Arc<Spool>,
    settings: RelaySettings,
    /// The internal server's sessions.
    internal: Internal,
    /// Bounds messages in delivery: room for every internal slot plus every outbound one,
    /// so that slow peer operators do not hold the slots that our users' incoming mail
    /// needs.
    workers: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    hostname: String,
    local_domains: Vec<String>,
    /// The auto-reply mailbox, answered here rather than delivered (see `autoreply`).
    auto_reply: Option<AutoReplier>,
    /// Delivery to other operators, for recipients outside `local_domains`; `None` leaves
    /// them queued.
    outbound: Option<Arc<Outbound>>,
}

impl Relay {
    /// Builds the relay (and its TLS client configuration when STARTTLS is asked).
    pub fn new(
        spool: Arc<Spool>,
        settings: RelaySettings,
        metrics: Arc<Metrics>,
        hostname: String,
        local_domains: Vec<String>,
        outbound: Option<Arc<Outbound>>,
    ) -> Result<Relay, RelayError> {
        Ok(Relay {
            internal: Internal::new(&settings, &hostname, metrics.relay_internal_down.clone())?,
            workers: Arc::new(Semaphore::new(
                settings.internal_concurrency + outbound.as_ref().map_or(0, |o| o.concurrency()),
            )),
            spool,
            settings,
            metrics,
            hostname,
            local_domains,
            auto_reply: None,
            outbound,
        })
    }

    /// Answers the auto-reply mailbox itself instead of delivering it.
    pub fn with_auto_reply(mut self, auto_reply: Option<AutoReplier>) -> Relay {
        self.auto_reply = auto_reply;
        self
    }

    /// Starts the worker; it stops when `shutdown` turns true.
    pub fn spawn(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let notify = self.spool.notifier();
        let mut tasks = JoinSet::new();
        let mut last_refresh = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if last_refresh.elapsed() >= REFRESH_EVERY {
                last_refresh = tokio::time::Instant::now();
                let spool = Arc::clone(&self.spool);
                match tokio::task::spawn_blocking(move || spool.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot re-read the spool"),
                    Err(e) => tracing::warn!(error = %e, "spool refresh task failed"),
                }
                self.close_idle_sessions();
            }
            let back = self.internal.probe().await;
            if !back.is_empty() {
                self.spool.expedite(&back);
            }
            let now = SystemTime::now();
            // Only as many messages as there are free delivery slots are claimed: the rest
            // stay in the queue's index, not in tasks waiting for a slot.
            let free = self.workers.available_permits();
            for id in self.spool.claim_due(now, free) {
                let Ok(permit) = Arc::clone(&self.workers).try_acquire_owned() else {
                    self.spool.release(&id);
                    continue;
                };
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    let _permit = permit;
                    me.deliver(&id).await;
                });
            }
            let summary = self.spool.summary(now);
            self.metrics
                .queue_messages
                .set(i64::try_from(summary.messages).unwrap_or(i64::MAX));
            self.metrics
                .queue_oldest_age_seconds
                .set(i64::try_from(summary.oldest_age.as_secs()).unwrap_or(i64::MAX));
            // The log's counters, mirrored (only this loop adds to these two).
            let log = self.spool.log_stats();
            let (syncs, records) = (
                &self.metrics.spool_log_syncs_total,
                &self.metrics.spool_log_records_total,
            );
            syncs.inc_by(log.syncs.saturating_sub(syncs.get()));
            records.inc_by(log.records.saturating_sub(records.get()));
            // With every slot busy, the next due message waits for a delivery to finish
            // (`join_next` below), not for its due time.
            let wait = if self.workers.available_permits() == 0 {
                REFRESH_EVERY
            } else {
                self.spool
                    .time_to_next(SystemTime::now())
                    .unwrap_or(REFRESH_EVERY)
                    .min(REFRESH_EVERY)
                    .max(Duration::from_millis(5))
            };
            // While the internal server is down, wake up to probe it.
            let wait = if self.internal.is_down() {
                wait.min(super::internal::PROBE_EVERY)
            } else {
                wait
            };
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("deliveries still running at shutdown were cut; they will be retried at the next start");
            tasks.shutdown().await;
        }
        self.internal.close_all().await;
        if let Some(outbound) = &self.outbound {
            outbound.close_all().await;
        }
        tracing::info!("relay stopped");
    }

    fn close_idle_sessions(&self) {
        self.internal.close_idle_sessions();
        if let Some(outbound) = &self.outbound {
            outbound.close_idle_sessions();
        }
    }

    fn is_local(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let d = domain.trim_end_matches('.');
        self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d))
    }

    /// One delivery attempt of message `id`; the message ends completed, bounced or
    /// deferred (or released untouched if the spool itself fails).
    async fn deliver(&self, id: &str) {
        let message = match self.spool.load(id).await {
            Ok(Ok(m)) => m,
            Ok(Err(torn)) => {
                // Files reach queue/ only complete; this is a disk fault. Keep it for an
                // operator and retry later rather than lose or deliver garbage.
                tracing::error!(queue_id = %id, error = %torn, "queued file unreadable; kept and retried later");
                let state = self.spool.state(id).await.unwrap_or_default();
                let due = SystemTime::now() + self.settings.retry.max;
                let _ = self.spool.defer(id, state, &torn.to_string(), due).await;
                return;
            }
            Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // Deleted by `queue delete` meanwhile.
                let _ = self.spool.complete(id).await;
                return;
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read a queued message; retried in 30 s");
                self.spool.release_after(id, Duration::from_secs(30));
                return;
            }
        };
        let mut state = match self.spool.state(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read a message's state; retried in 30 s");
                self.spool.release_after(id, Duration::from_secs(30));
                return;
            }
        };
        let env = &message.envelope;
        // `dsn` only for our own reports: a bounce a peer sends us counts as inbound.
        let direction = env.direction.as_str();
        let pending = state.pending_recipients(env);
        // Our Received header would be one too many: the message is looping (RFC 5321
        // §6.3). Bounced, so the sender hears of it now rather than at expiry.
        let received = crate::message::read_headers(&message.body).received;
        if received >= self.settings.max_received_headers {
            self.metrics.reject("relay", labels::MAIL_LOOP);
            tracing::warn!(queue_id = %id, received, max = self.settings.max_received_headers, reason = labels::MAIL_LOOP, "message not relayed: mail loop; bounced");
            let looping = Outcome::Permanent(crate::smtp::Reply::new(
                554,
                Enhanced(5, 4, 6),
                format!("mail loop: the message already carries {received} Received headers"),
            ));
            let outcomes = pending.into_iter().map(|r| (r, looping.clone())).collect();
            self.settle(message, &mut state, outcomes, None, direction, false)
                .await;
            return;
        }
        let (answered, pending): (Vec<String>, Vec<String>) = pending.into_iter().partition(|r| {
            self.auto_reply
                .as_ref()
                .is_some_and(|a| a.settings.is_auto_reply(r))
        });
        let answered_count = answered.len();
        let mut outcomes = match &self.auto_reply {
            Some(responder) if !answered.is_empty() => {
                auto_reply::answer(responder, &self.spool, &self.metrics, &message, answered).await
            }
            _ => Vec::new(),
        };
        let (internal, elsewhere): (Vec<String>, Vec<String>) =
            pending.into_iter().partition(|r| self.is_local(r));
        let mut remote_mta = None;
        let mut waits_for_internal = false;
        if !internal.is_empty() {
            let received = received_header(&message, &self.hostname);
            let t = Transaction {
                envelope: Sending {
                    mail_from: &env.mail_from,
                    eight_bit: env.body_8bitmime,
                    smtputf8: env.smtputf8,
                    recipients: &internal,
                },
                prefix: received.as_bytes(),
                body: Payload::of(&message),
            };
            let delivered = self.internal.deliver(id, &t).await;
            outcomes.extend(delivered.outcomes);
            remote_mta = delivered.server;
            if !delivered.back.is_empty() {
                self.spool.expedite(&delivered.back);
            }
            waits_for_internal = delivered.unreachable;
        }
        let elsewhere_tried = elsewhere.len();
        if !elsewhere.is_empty() {
            let (o, mta) = self.deliver_outbound(&message, elsewhere).await;
            outcomes.extend(o);
            remote_mta = remote_mta.or(mta);
        }
        // Only the internal server's absence held the message: nothing about the message
        // itself needs recording (its state file would cost two fsyncs per message for the
        // whole outage); after a restart it is simply tried again.
        let only_waiting = waits_for_internal && elsewhere_tried == 0 && answered_count == 0;
        self.settle(
            message,
            &mut state,
            outcomes,
            remote_mta,
            direction,
            only_waiting,
        )
        .await;
        // The server came back while this message was being deferred, after the messages
        // waiting for it were made due: this one goes now too.
        if waits_for_internal && !self.internal.is_down() {
            self.spool.expedite(&[id.to_string()]);
        }
    }

    /// Hands recipients outside our domains to the outbound relay: one transaction per
    /// recipient domain. Domains are tried one after the other: most messages go to one or
    /// two domains, and other messages are delivered meanwhile by other tasks.
    async fn deliver_outbound(
        &self,
        message: &StoredMessage,
        recipients: Vec<String>,
    ) -> (Vec<(String, Outcome)>, Option<String>) {
        let Some(outbound) = &self.outbound else {
            tracing::info!(queue_id = %message.id, rcpts = %crate::logging::list(&recipients), "recipients outside our domains wait for the outbound relay, which is not configured; left queued");
            let outcomes = recipients
                .into_iter()
                .map(|r| {
                    (
                        r,
                        Outcome::deferred(Enhanced(4, 4, 1), "waiting for the outbound relay"),
                    )
                })
                .collect();
            return (outcomes, None);
        };
        let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
        for r in recipients {
            let domain = r
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .trim_end_matches('.')
                .to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(r),
                None => by_domain.push((domain, vec![r])),
            }
        }
        let env = &message.envelope;
        let received = received_header(message, &self.hostname);
        let mut outcomes = Vec::new();
        let mut remote_mta = None;
        for (domain, rcpts) in &by_domain {
            let result = outbound
                .deliver(DomainDelivery {
                    queue_id: &message.id,
                    domain,
                    transaction: Transaction {
                        envelope: Sending {
                            mail_from: &env.mail_from,
                            eight_bit: env.body_8bitmime,
                            smtputf8: env.smtputf8,
                            recipients: rcpts,
                        },
                        prefix: received.as_bytes(),
                        body: Payload::of(message),
                    },
                })
                .await;
            outcomes.extend(result.outcomes);
            remote_mta = remote_mta.or(result.remote_mta);
        }
        (outcomes, remote_mta)
    }

    /// Applies one attempt's outcomes: DSNs, then complete, bounce or defer.
    async fn settle(
        &self,
        message: StoredMessage,
        state: &mut crate::spool::MessageState,
        outcomes: Vec<(String, Outcome)>,
        remote_mta: Option<String>,
        direction: &str,
        only_waiting: bool,
    ) {
        let id = message.id.as_str();
        let env = &message.envelope;
        let now = SystemTime::now();
        let received_ms = id_time_ms(id).unwrap_or_else(|| unix_ms(now));
        let age = Duration::from_millis(unix_ms(now).saturating_sub(received_ms));
        let expired = self.settings.retry.expired(age);
        let lmtp = self.internal.lmtp();
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        let mut delays = Vec::new();
        let mut still_pending = Vec::new();
        let mut last_error = String::new();
        let mut delivered = 0usize;
        for (rcpt, outcome) in outcomes {
            let recipient = recipient_of(env, &rcpt);
            match outcome {
                Outcome::Delivered => {
                    delivered += 1;
                    tracing::info!(queue_id = %id, rcpt = %rcpt, "delivered to the next hop");
                    // LMTP's final delivery is ours only for local recipients; a peer
                    // operator's acceptance is a relay.
                    let action = if lmtp && self.is_local(&rcpt) {
                        Action::Delivered
                    } else {
                        Action::Relayed
                    };
                    if dsn::wanted(recipient.notify, action) {
                        successes.push(RecipientReport {
                            recipient,
                            action,
                            status: "2.0.0".into(),
                            diagnostic: None,
                        });
                    }
                }
                Outcome::Permanent(reply) => {
                    tracing::warn!(queue_id = %id, rcpt = %rcpt, reply = %reply, "recipient refused for good");
                    failures.push((
                        RecipientReport {
                            recipient,
                            action: Action::Failed,
                            status: reply.status().to_string(),
                            diagnostic: Some(reply.to_string()),
                        },
                        rcpt,
                    ));
                }
                Outcome::Temporary(why) if expired => {
                    tracing::warn!(queue_id = %id, rcpt = %rcpt, last_error = %why, "message expired undelivered");
                    failures.push((
                        RecipientReport {
                            recipient,
                            action: Action::Failed,
                            status: "4.4.7".into(),
                            diagnostic: Some(format!("delivery time expired; last error: {why}")),
                        },
                        rcpt,
                    ));
                }
                Outcome::Temporary(why) => {
                    if dsn::wanted(recipient.notify, Action::Delayed) && !state.delay_notified {
                        delays.push(RecipientReport {
                            recipient,
                            action: Action::Delayed,
                            status: why.status().to_string(),
                            diagnostic: Some(why.to_string()),
                        });
                    }
                    last_error = why.to_string();
                    still_pending.push(rcpt);
                }
            }
        }
        if delivered > 0 {
            self.metrics.messages_relayed_total.inc(&[direction]);
        }
        let now_dt = OffsetDateTime::now_utc();
        let remote = remote_mta.as_deref().filter(|n| !n.is_empty());
        if !successes.is_empty() {
            self.notify(&message, successes, remote, None, now_dt).await;
        }
        let failed_reports: Vec<RecipientReport> = failures
            .iter()
            .filter(|(r, _)| dsn::wanted(r.recipient.notify, Action::Failed))
            .map(|(r, _)| r.clone())
            .collect();
        let bounced = !failures.is_empty();
        if !failed_reports.is_empty()
            && !self
                .notify(&message, failed_reports, remote, None, now_dt)
                .await
        {
            // The bounce could not be stored: keep those recipients and try again later,
            // so the sender is told eventually.
            still_pending.extend(failures.iter().map(|(_, r)| r.clone()));
        }
        if bounced {
            self.metrics.messages_bounced_total.inc(&[direction]);
        }
        let delay_reported = !delays.is_empty();
        if !delays.is_empty() {
            let until = OffsetDateTime::from_unix_timestamp(
                i64::try_from((received_ms + self.settings.retry.expiry.as_millis() as u64) / 1000)
                    .unwrap_or(0),
            )
            .ok();
            if self.notify(&message, delays, remote, until, now_dt).await {
                state.delay_notified = true;
            }
        }
        let result = if still_pending.is_empty() {
            if delivered > 0 || !bounced {
                let latency = Duration::from_millis(unix_ms(now).saturating_sub(received_ms));
                self.metrics
                    .delivery_latency_seconds
                    .with_label_values(&[message.envelope.direction.as_str()])
                    .observe(latency.as_secs_f64());
            }
            if bounced {
                // The failures were permanent replies, or temporary ones past the expiry.
                let reason = if expired { "expired" } else { "failed" };
                self.spool.bounce(id, reason).await
            } else {
                self.spool.complete(id).await
            }
        } else {
            self.metrics.messages_deferred_total.inc(&[direction]);
            let attempt = state.attempts.saturating_add(1);
            let delay = self.settings.retry.next_delay_random(attempt);
            tracing::info!(queue_id = %id, attempt, retry_in_secs = delay.as_secs(), rcpts = %crate::logging::list(&still_pending), error = %last_error, "delivery deferred");
            state.pending = Some(still_pending);
            if only_waiting && !delay_reported {
                self.spool.defer_in_memory(id, now + delay);
                Ok(())
            } else {
                self.spool
                    .defer(id, state.clone(), &last_error, now + delay)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(queue_id = %id, error = %e, "cannot record the delivery outcome in the spool");
        }
    }

    /// Spools a DSN about `message`; false when it could not be stored.
    async fn notify(
        &self,
        message: &StoredMessage,
        recipients: Vec<RecipientReport>,
        remote_mta: Option<&str>,
        will_retry_until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> bool {
        let action = recipients[0].action;
        let report = dsn::Report {
            reporting_mta: &self.hostname,
            remote_mta,
            original: message,
            recipients,
            will_retry_until,
            now,
        };
        let Some((envelope, bytes)) = dsn::build(&report) else {
            return true;
        };
        let sender = &message.envelope.mail_from;
        match self.store(&envelope, &bytes).await {
            Ok(dsn_id) => {
                self.metrics.dsn_generated_total.inc(&[action.as_str()]);
                if self.is_local(sender) {
                    tracing::info!(queue_id = %message.id, dsn_id = %dsn_id, action = action.as_str(), to = %sender, "DSN queued for the internal server");
                } else {
                    tracing::info!(queue_id = %message.id, dsn_id = %dsn_id, action = action.as_str(), to = %sender, "DSN queued for the outbound relay (its sender is outside our domains)");
                }
                true
            }
            Err(e) => {
                tracing::error!(queue_id = %message.id, error = %e, "cannot spool a DSN");
                false
            }
        }
    }

    async fn store(&self, envelope: &Envelope, bytes: &[u8]) -> Result<String, SpoolError> {
        self.spool.store(envelope, bytes).await
    }
}

/// The envelope's entry for `address` (NOTIFY, ORCPT), or a bare one.
fn recipient_of(env: &Envelope, address: &str) -> crate::spool::Recipient {
    env.recipients
        .iter()
        .find(|r| r.address == address)
        .cloned()
        .unwrap_or(crate::spool::Recipient {
            address: address.to_string(),
            notify: 0,
            orcpt: None,
        })
}
