//! Delivery workers: messages leave the spool for the internal mail server or for other
//! operators.
//!
//! `retry` is the backoff schedule (sessions come from [`crate::client`]), `internal` the session pool and the worker loop (which hands recipients outside
//! our domains to `outbound`), `outbound` the delivery to peer operators (MX, STARTTLS,
//! IGC Santé checks), `dsn` the delivery status notifications (RFC 3464) sent back to
//! senders.

pub mod dsn;
pub mod internal;
pub mod outbound;
pub mod retry;

use crate::smtp::{Enhanced, Reply};

/// The fate of one recipient in one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The next hop accepted it.
    Delivered,
    /// Refused for good: a DSN tells the sender.
    Permanent(Reply),
    /// Not now: retried on the schedule. The next hop's reply, or one of ours (451) that
    /// says what went wrong.
    Temporary(Reply),
}

impl Outcome {
    /// Deferred for a reason of ours (no reply from the next hop to quote).
    pub fn deferred(status: Enhanced, why: impl Into<String>) -> Outcome {
        Outcome::Temporary(Reply::new(451, status, why.into()))
    }

    /// The outcome a next hop's reply decides.
    pub fn of_reply(reply: Reply) -> Outcome {
        if reply.is_success() {
            Outcome::Delivered
        } else if reply.is_permanent() {
            Outcome::Permanent(reply)
        } else {
            Outcome::Temporary(reply)
        }
    }
}
