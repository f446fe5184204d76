//! Delivery: messages leave the spool for the internal mail server or for other
//! operators. One module per route:
//!
//! - `worker`: takes due messages from the spool, sends each recipient on its route and
//!   settles the outcomes (completed, bounced with a DSN, deferred on the `retry`
//!   schedule);
//! - `internal`: our own domains, to the internal server (a pool of sessions);
//! - `outbound`: other operators' domains (liste blanche, MX, STARTTLS, IGC Santé checks);
//! - `auto_reply`: the auto-reply mailbox, answered instead of delivered;
//! - `dsn`: the delivery status notifications (RFC 3464) sent back to senders;
//! - `received`: the `Received:` header added on every route.
//!
//! Sessions come from [`crate::client`].

pub(crate) mod auto_reply;
pub mod dsn;
pub(crate) mod internal;
pub(crate) mod outbound;
pub(crate) mod received;
pub(crate) mod retry;
pub(crate) mod worker;

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
