//! Delivery workers: messages leave the spool for the internal mail server.
//!
//! `retry` is the backoff schedule, `client` a small SMTP/LMTP client with per-recipient
//! results, `internal` the session pool and the worker loop, `dsn` the delivery status
//! notifications (RFC 3464) sent back to senders.

pub mod client;
pub mod dsn;
pub mod internal;
pub mod retry;
