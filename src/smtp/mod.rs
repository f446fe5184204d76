//! The SMTP protocol without I/O: command parsing, DATA decoding, replies and the session
//! state machine of the server side; reply reading and the transaction exchange of the
//! client side. Sockets and TLS live in `inbound` (server) and `client` (client).

pub mod client;
pub mod data;
pub(crate) mod reply;
pub(crate) mod session;

pub use reply::{Enhanced, Reply};
pub use session::{
    BodyError, Event, MailFrom, RcptTo, Session, SessionConfig, Transaction, MAX_LINE,
};
