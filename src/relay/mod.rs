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
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// The protocol spoken to the internal server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RelayProtocol {
    /// ESMTP (EHLO; one reply after the body).
    #[default]
    Smtp,
    /// LMTP (RFC 2033: LHLO; one reply per recipient after the body).
    Lmtp,
}

/// Delivery to the internal mail server.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The internal server's address.
    pub internal: SocketAddr,
    /// SMTP or LMTP.
    pub protocol: RelayProtocol,
    /// Upgrade with STARTTLS (required when set: no fallback to plaintext).
    pub starttls: bool,
    /// Anchors that the internal server's certificate must chain to (PEM); the
    /// espace's anchors when absent.
    pub tls_ca: Option<PathBuf>,
    /// The name checked in the internal server's certificate.
    pub tls_server_name: String,
    /// AUTH PLAIN credentials (only sent over TLS or to a loopback address).
    pub auth: Option<(String, String)>,
    /// Most simultaneous sessions to the internal server.
    pub internal_concurrency: usize,
    /// An unused session is closed after this long.
    pub idle_timeout: Duration,
    /// Longest wait for any reply of the internal server.
    pub timeout: Duration,
    /// A message carrying this many `Received:` headers is not relayed (our header would
    /// exceed `limits.max_received_headers`): it is bounced as a mail loop.
    pub max_received_headers: usize,
    /// Backoff and expiry of deferred messages.
    pub retry: crate::relay::retry::RetrySchedule,
    /// How long a drain (`mssante-gateway drain`, SIGUSR1) keeps delivering, listeners
    /// closed, before the gateway stops with what is left in its spool.
    pub drain_deadline: Duration,
}
