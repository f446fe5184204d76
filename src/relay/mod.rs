//! Delivery workers: messages leave the spool for the internal mail server or for other
//! operators.
//!
//! `retry` is the backoff schedule, `client` a small SMTP/LMTP client with per-recipient
//! results, `internal` the session pool and the worker loop (which hands recipients outside
//! our domains to `outbound`), `outbound` the delivery to peer operators (MX, STARTTLS,
//! IGC Santé checks), `dsn` the delivery status notifications (RFC 3464) sent back to
//! senders.

pub mod client;
pub mod dsn;
pub mod internal;
pub mod outbound;
pub mod retry;

/// The fate of one recipient in one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The next hop accepted it.
    Delivered,
    /// Refused for good: a DSN tells the sender.
    Permanent(client::Reply),
    /// Not now: retried on the schedule (the text is the reply or the error).
    Temporary(String),
}
