//! The auto-reply mailbox (see `crate::autoreply`): its recipients are answered here
//! rather than delivered.

use std::time::SystemTime;

use super::Outcome;
use crate::autoreply::{AutoReplier, Decision};
use crate::metrics::{labels, Metrics};
use crate::smtp::Enhanced;
use crate::spool::{Spool, StoredMessage};

/// Consumes the recipients that are the auto-reply mailbox: the answer, if one is due, is
/// spooled (from `<>`, outbound) and they count as delivered; if it cannot be spooled they
/// stay pending, so the sender is answered at a later attempt.
pub async fn answer(
    responder: &AutoReplier,
    spool: &Spool,
    metrics: &Metrics,
    message: &StoredMessage,
    answered: Vec<String>,
) -> Vec<(String, Outcome)> {
    let now = SystemTime::now();
    let sender = &message.envelope.mail_from;
    let result = match responder.decide(message, now) {
        Decision::Suppress(why) => {
            tracing::info!(queue_id = %message.id, from = %sender, reason = why.as_str(), "auto-reply mailbox: no answer (loop protection)");
            Ok(why.as_str())
        }
        Decision::Reply {
            envelope,
            message: bytes,
        } => match spool.store(&envelope, &bytes).await {
            Ok(reply_id) => {
                tracing::info!(queue_id = %message.id, reply_id = %reply_id, to = %sender, "auto-reply mailbox: answer queued for the outbound relay");
                responder.save().await;
                Ok(labels::SENT)
            }
            Err(e) => {
                responder.forget(sender, now);
                tracing::error!(queue_id = %message.id, error = %e, "cannot spool the automatic answer; retried later");
                Err(format!("cannot spool the automatic answer: {e}"))
            }
        },
    };
    let outcome = match &result {
        Ok(outcome) => outcome,
        Err(_) => labels::SPOOL_ERROR,
    };
    metrics.autoreplies_total.inc(&[outcome]);
    answered
        .into_iter()
        .map(|r| {
            let o = match &result {
                Ok(_) => Outcome::Delivered,
                Err(e) => Outcome::deferred(Enhanced(4, 4, 1), e.clone()),
            };
            (r, o)
        })
        .collect()
}
