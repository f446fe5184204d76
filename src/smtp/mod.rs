//! The SMTP protocol without I/O: command parsing, DATA decoding, replies and the session
//! state machine. Sockets and TLS live in `inbound`.

pub mod data;
pub mod reply;
pub mod session;

pub use reply::{Enhanced, Reply};
pub use session::{BodyError, Event, MailFrom, RcptTo, Session, SessionConfig, MAX_LINE};
