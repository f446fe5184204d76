//! `Session`: the ESMTP server state machine, without I/O.
//!
//! The connection driver feeds it the bytes it reads ([`Session::feed`]), then calls
//! [`Session::poll`] until it returns `None`, acting on each [`Event`]. Replies accumulate in
//! an output buffer that the driver writes in one go before it reads again
//! ([`Session::take_output`]), so the replies to a pipelined batch leave in one write.
//!
//! Events that need a decision from outside (the policy, the spool) leave the session
//! waiting: the driver answers with [`Session::accept`] or [`Session::reject`] (or
//! [`Session::message_stored`] at the end of a message) before it polls again.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

use super::data::DataDecoder;
use super::reply::{Enhanced, Reply};

/// The longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 asks for 512; the
/// extensions' parameters need more, and 4096 is what common servers allow).
pub const MAX_LINE: usize = 4096;

/// What the session needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised as SIZE).
    pub max_message_size: usize,
    /// Most recipients accepted in one transaction.
    pub max_recipients: usize,
    /// Consecutive failed commands before the session is closed with 421.
    pub max_errors: u32,
    /// STARTTLS is offered (a TLS configuration exists for this listener).
    pub tls_available: bool,
    /// MAIL is refused until TLS is active (always true between operators).
    pub require_tls: bool,
    /// Commands that move no mail (NOOP, RSET, HELP, VRFY, EHLO/HELO) accepted in a row
    /// before the session is closed: a client that only keeps its connection busy holds
    /// a slot that real operators need.
    pub max_idle_commands: u32,
}

/// The reverse path and its ESMTP parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// The address, empty for the null reverse path `<>`.
    pub address: String,
    /// SIZE= declared by the client, 0 when absent.
    pub size: usize,
    /// BODY=8BITMIME was declared.
    pub body_8bitmime: bool,
    /// SMTPUTF8 was declared.
    pub smtputf8: bool,
    /// RET=FULL (true) or RET=HDRS (false) of RFC 3461, if given.
    pub ret_full: Option<bool>,
    /// ENVID of RFC 3461, as given (xtext).
    pub envid: Option<String>,
}

/// The transaction in progress: the accepted MAIL and the accepted recipients, owned by
/// the session so that RSET, EHLO, STARTTLS and the end of a message clear it in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The accepted reverse path, once MAIL was accepted.
    pub mail: Option<MailFrom>,
    /// The accepted recipients, in order.
    pub rcpts: Vec<RcptTo>,
}

/// A forward path and its RFC 3461 parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    /// The recipient address.
    pub address: String,
    /// NOTIFY flags (`smtp_proto::RCPT_NOTIFY_*`), 0 when absent.
    pub notify: u64,
    /// ORCPT, as given.
    pub orcpt: Option<String>,
}

/// Why a message body was refused by the session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body grew past the size limit.
    TooLarge,
    /// A bare CR or LF appeared in a DATA body.
    BareNewline,
    /// The message has no content at all (`BDAT 0 LAST` alone).
    Empty,
    /// A BDAT command with more than `BDAT chunk-size [LAST]` (its chunk is read and
    /// dropped, since the client sends it whatever we answer).
    BdatSyntax,
}

impl BodyError {
    /// The stable reason label used in logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::TooLarge => "message_too_large",
            BodyError::BareNewline => "bare_newline",
            BodyError::Empty => "empty_message",
            BodyError::BdatSyntax => "syntax_error",
        }
    }
}

/// What the driver has to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// EHLO or HELO; decide with `accept` (the extensions are sent) or `reject`.
    Helo { host: String, extended: bool },
    /// The 220 to STARTTLS is in the output: write it, then run the TLS handshake and call
    /// [`Session::tls_established`] (or close the connection if the handshake fails).
    StartTls,
    /// MAIL FROM; decide with `accept` or `reject`.
    MailFrom(MailFrom),
    /// RCPT TO; decide with `accept` or `reject`.
    Rcpt(RcptTo),
    /// A message body begins (DATA or the first BDAT); decide with `accept` (the body will
    /// follow as chunks) or `reject`.
    MessageStart,
    /// Some bytes of the body, in order, dot-stuffing removed.
    MessageChunk(&'a [u8]),
    /// The body is complete; answer with [`Session::message_stored`] or `reject`.
    MessageEnd,
    /// The message in progress is refused by the session itself (too large, bare newline)
    /// or abandoned (RSET or EHLO between BDAT chunks): discard what was stored of it. The
    /// refusal reply, if any, is sent once the client has finished sending the body.
    MessageAborted { reason: &'static str },
    /// A command was refused by the session itself; the reply is queued. For logs and
    /// metrics: `stage` is the command (`mail`, `rcpt`, ...; `command` when it could not be
    /// parsed).
    Refused {
        stage: &'static str,
        reason: &'static str,
    },
}

/// What the session waits for from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Helo { extended: bool },
    Mail,
    Rcpt,
    MessageStart,
    MessageEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before EHLO/HELO (or after STARTTLS, which requires a new EHLO).
    Greeted,
    /// EHLO done, no transaction.
    Ready,
    /// MAIL accepted.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
    /// Reading a DATA body.
    Data,
    /// Reading the bytes of a BDAT chunk.
    Bdat { remaining: usize, last: bool },
    /// Between BDAT chunks (more are expected).
    BdatWait,
    /// Closed: no more input is processed.
    Closed,
}

/// What happens to the body bytes of the message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Bytes flow to the driver.
    Accepted,
    /// Bytes are read and dropped; the error, if any, is answered at the end of the body
    /// (none when the refusal was already answered, as for a refused BDAT).
    Discarding(Option<BodyError>),
}

/// The ESMTP server state machine of one connection.
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    pending: Pending,
    /// Unconsumed input, from `pos`.
    input: Vec<u8>,
    pos: usize,
    /// The rest of an over-long command line is being skipped.
    skip_line: bool,
    /// Replies waiting to be written.
    out: Vec<u8>,
    tls_active: bool,
    /// Consecutive refused commands.
    errors: u32,
    /// The transaction in progress.
    transaction: Transaction,
    /// The MAIL or RCPT of the last event, until the driver accepts or rejects it.
    offered_mail: Option<MailFrom>,
    offered_rcpt: Option<RcptTo>,
    /// Body bytes of the message in progress.
    body_len: usize,
    body: Body,
    decoder: DataDecoder,
    /// Line-ending check of BDAT content, across chunks.
    bdat_lines: LineEndings,
    /// EHLO/HELO was accepted (and not voided by STARTTLS since).
    helo_done: bool,
    /// The command being processed, for the stage of refusals.
    stage: &'static str,
    /// Commands that moved no mail since the last accepted MAIL.
    idle_commands: u32,
    /// The transaction's MAIL declared SMTPUTF8 (RFC 6531): non-ASCII addresses allowed.
    smtputf8: bool,
}

/// The result of one processing step inside [`Session::poll`]. It holds no borrow, so the
/// poll loop can go on after a step that produced nothing.
enum Progress {
    /// Nothing more can be done until more input arrives.
    NeedInput,
    /// Something was done; keep going.
    Continue,
    /// An event for the driver.
    Event(Event<'static>),
    /// Body bytes for the driver, as a range of the input buffer.
    Chunk(std::ops::Range<usize>),
}

fn reply(code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) -> Reply {
    Reply::new(code, Enhanced(e.0, e.1, e.2), text)
}

impl BodyError {
    fn reply(self) -> Reply {
        match self {
            BodyError::TooLarge => reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ),
            BodyError::BareNewline => reply(
                550,
                (5, 6, 0),
                "Bare CR or LF in message: lines must end with CRLF",
            ),
            BodyError::Empty => reply(554, (5, 6, 0), "Empty message"),
            BodyError::BdatSyntax => reply(501, (5, 5, 4), "Syntax: BDAT chunk-size [LAST]"),
        }
    }
}

impl Session {
    /// A new session; the greeting is already in the output.
    pub fn new(cfg: SessionConfig) -> Self {
        let greeting = Reply::plain(
            220,
            vec![format!("{} ESMTP mssante-gateway", cfg.hostname).into()],
        );
        let mut s = Self {
            cfg,
            phase: Phase::Greeted,
            pending: Pending::None,
            input: Vec::new(),
            pos: 0,
            skip_line: false,
            out: Vec::new(),
            tls_active: false,
            errors: 0,
            transaction: Transaction::default(),
            offered_mail: None,
            offered_rcpt: None,
            body_len: 0,
            body: Body::Accepted,
            decoder: DataDecoder::new(),
            bdat_lines: LineEndings::default(),
            helo_done: false,
            stage: "command",
            idle_commands: 0,
            smtputf8: false,
        };
        s.push(&greeting);
        s
    }

    /// Adds bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The replies to write now, leaving the buffer empty.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether replies are waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether the session is over (after QUIT, too many errors or a timeout): write the
    /// output and close the connection.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether TLS is active on the connection.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Whether a message body is being received (the driver applies the DATA timeout).
    pub fn in_body(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Bdat { .. })
    }

    /// Whether a mail transaction (MAIL accepted) is in progress.
    pub fn in_transaction(&self) -> bool {
        matches!(
            self.phase,
            Phase::Mail | Phase::Rcpt | Phase::Data | Phase::Bdat { .. } | Phase::BdatWait
        )
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        // A shutdown or timeout during the handshake has closed the session for good.
        if self.phase == Phase::Closed {
            return;
        }
        self.tls_active = true;
        self.helo_done = false;
        self.phase = Phase::Greeted;
        self.reset_transaction();
        // Plaintext the client sent after STARTTLS is dropped: it may have been injected by
        // a man in the middle (CVE-2011-0411) and must not run inside the TLS session.
        self.input.clear();
        self.pos = 0;
        self.skip_line = false;
    }

    /// The read timed out: answer 421 4.4.2 and close.
    pub fn timed_out(&mut self) {
        self.close_with(&reply(421, (4, 4, 2), "Timeout, closing connection"));
    }

    /// The server is shutting down: answer 421 4.3.2 and close.
    pub fn shutting_down(&mut self) {
        self.close_with(&reply(
            421,
            (4, 3, 2),
            "Service shutting down, try again later",
        ));
    }

    /// The transaction in progress (accepted MAIL and recipients); empty between
    /// transactions.
    pub fn transaction(&self) -> &Transaction {
        &self.transaction
    }

    /// Accepts what the last event asked for.
    pub fn accept(&mut self) {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => {}
            Pending::Helo { extended } => {
                self.reset_transaction();
                self.helo_done = true;
                self.phase = Phase::Ready;
                self.errors = 0;
                let r = if extended {
                    self.ehlo_reply()
                } else {
                    Reply::plain(250, vec![self.cfg.hostname.clone().into()])
                };
                self.push(&r);
                self.count_idle();
            }
            Pending::Mail => {
                self.transaction = Transaction {
                    mail: self.offered_mail.take(),
                    rcpts: Vec::new(),
                };
                self.phase = Phase::Mail;
                self.errors = 0;
                self.idle_commands = 0;
                self.push(&reply(250, (2, 1, 0), "Sender OK"));
            }
            Pending::Rcpt => {
                self.phase = Phase::Rcpt;
                self.transaction.rcpts.extend(self.offered_rcpt.take());
                self.errors = 0;
                self.push(&reply(250, (2, 1, 5), "Recipient OK"));
            }
            Pending::MessageStart => {
                self.body = Body::Accepted;
                if self.phase == Phase::Data {
                    self.push(&reply(354, (2, 0, 0), "End data with <CR><LF>.<CR><LF>"));
                }
            }
            Pending::MessageEnd => {
                // `message_stored` is the way to accept a message; a bare accept still
                // answers so the client is never left waiting.
                self.push(&reply(250, (2, 0, 0), "Message accepted"));
                self.end_transaction();
            }
        }
    }

    /// The message is on stable storage under `queue_id`: answer 250.
    pub fn message_stored(&mut self, queue_id: &str) {
        if self.pending == Pending::MessageEnd {
            self.pending = Pending::None;
            self.push(&reply(
                250,
                (2, 0, 0),
                format!("Message accepted for delivery, queued as {queue_id}"),
            ));
            self.end_transaction();
        }
    }

    /// Refuses what the last event asked for with `r`.
    pub fn reject(&mut self, r: Reply) {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        self.offered_mail = None;
        self.offered_rcpt = None;
        self.push(&r);
        match pending {
            Pending::None => {}
            Pending::Helo { .. } | Pending::Mail | Pending::Rcpt => self.count_error(),
            Pending::MessageStart => {
                if self.phase == Phase::Data {
                    // No 354 was sent, so the client sends no body.
                    self.end_transaction();
                } else {
                    // BDAT: the chunk's bytes arrive anyway and are dropped.
                    self.body = Body::Discarding(None);
                }
            }
            Pending::MessageEnd => self.end_transaction(),
        }
    }

    /// Processes buffered input up to the next event; `None` when more input is needed,
    /// when a decision is awaited, or once the session is closed.
    pub fn poll(&mut self) -> Option<Event<'_>> {
        loop {
            if self.pending != Pending::None {
                return None;
            }
            let progress = match self.phase {
                Phase::Closed => return None,
                Phase::Data => self.step_data(),
                Phase::Bdat { .. } => self.step_bdat(),
                _ => self.step_command(),
            };
            match progress {
                Progress::NeedInput => return None,
                Progress::Continue => {}
                Progress::Event(e) => return Some(e),
                Progress::Chunk(range) => return Some(Event::MessageChunk(&self.input[range])),
            }
        }
    }

    fn step_command(&mut self) -> Progress {
        self.stage = "command";
        let rest = &self.input[self.pos..];
        let Some(nl) = memchr::memchr(b'\n', rest) else {
            if self.skip_line {
                self.pos = self.input.len();
            } else if rest.len() >= MAX_LINE {
                self.pos = self.input.len();
                self.skip_line = true;
                return self.command_error(reply(500, (5, 5, 2), "Line too long"), "line_too_long");
            }
            return Progress::NeedInput;
        };
        let start = self.pos;
        self.pos += nl + 1;
        if self.skip_line {
            self.skip_line = false;
            return Progress::Continue;
        }
        if nl + 1 > MAX_LINE {
            return self.command_error(reply(500, (5, 5, 2), "Line too long"), "line_too_long");
        }
        let line = self.input[start..self.pos].to_vec();
        if line.contains(&0) {
            return self.command_error(
                reply(500, (5, 5, 2), "NUL character not allowed in commands"),
                "nul_byte",
            );
        }
        match Request::parse(&mut line.iter()) {
            Ok(req) => {
                self.stage = stage_of(&req);
                if self.phase == Phase::BdatWait
                    && matches!(
                        req,
                        Request::Rset | Request::Quit | Request::Ehlo { .. } | Request::Helo { .. }
                    )
                {
                    // These end the message whose chunks were being received: report
                    // the abandon first, then process the command again from scratch.
                    self.pos = start;
                    self.end_transaction();
                    return Progress::Event(Event::MessageAborted { reason: "reset" });
                }
                self.request(req, &line)
            }
            Err(e) => self.parse_error(e),
        }
    }

    fn parse_error(&mut self, e: ProtoError) -> Progress {
        match e {
            ProtoError::UnknownCommand => self.command_error(
                reply(500, (5, 5, 1), "Command unrecognized"),
                "unknown_command",
            ),
            ProtoError::InvalidSenderAddress => self.command_error(
                reply(501, (5, 1, 7), "Bad sender address syntax"),
                "syntax_error",
            ),
            ProtoError::InvalidRecipientAddress => self.command_error(
                reply(501, (5, 1, 3), "Bad recipient address syntax"),
                "syntax_error",
            ),
            ProtoError::SyntaxError { syntax } => self.command_error(
                reply(501, (5, 5, 4), format!("Syntax: {syntax}")),
                "syntax_error",
            ),
            ProtoError::InvalidParameter { param } => self.command_error(
                reply(
                    501,
                    (5, 5, 4),
                    format!("Invalid value for parameter {param}"),
                ),
                "syntax_error",
            ),
            ProtoError::UnsupportedParameter { param } => self.command_error(
                reply(
                    555,
                    (5, 5, 4),
                    format!("Unsupported parameter {}", truncate(&param, 64)),
                ),
                "unsupported_parameter",
            ),
            _ => self.command_error(reply(500, (5, 5, 2), "Syntax error"), "syntax_error"),
        }
    }

    fn request(&mut self, req: Request<Cow<'_, str>>, line: &[u8]) -> Progress {
        match req {
            Request::Ehlo { host } | Request::Helo { host } if host.trim().is_empty() => self
                .command_error(
                    reply(
                        501,
                        (5, 5, 4),
                        "EHLO and HELO need a domain or address literal",
                    ),
                    "syntax_error",
                ),
            Request::Ehlo { host } => self.helo(host.into_owned(), true),
            Request::Helo { host } => self.helo(host.into_owned(), false),
            Request::StartTls => self.starttls(),
            Request::Mail { from } => self.mail(from, line),
            Request::Rcpt { to } => self.rcpt(to, line),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last, line),
            Request::Rset => {
                self.end_transaction();
                self.errors = 0;
                self.push(&reply(250, (2, 0, 0), "Reset OK"));
                self.count_idle();
                Progress::Continue
            }
            Request::Noop { .. } => {
                self.push(&reply(250, (2, 0, 0), "OK"));
                self.count_idle();
                Progress::Continue
            }
            Request::Help { .. } => {
                self.push(&reply(
                    214,
                    (2, 0, 0),
                    "mssante-gateway: an MSSanté connector; see RFC 5321",
                ));
                self.count_idle();
                Progress::Continue
            }
            Request::Vrfy { .. } => {
                self.push(&reply(
                    252,
                    (2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                self.count_idle();
                Progress::Continue
            }
            Request::Expn { .. } => self.command_error(
                reply(502, (5, 5, 1), "EXPN is not supported"),
                "not_implemented",
            ),
            Request::Quit => {
                self.close_with(&reply(221, (2, 0, 0), "Bye"));
                Progress::Continue
            }
            Request::Lhlo { .. }
            | Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.command_error(
                reply(502, (5, 5, 1), "Command not implemented"),
                "not_implemented",
            ),
        }
    }

    fn helo(&mut self, host: String, extended: bool) -> Progress {
        self.pending = Pending::Helo { extended };
        Progress::Event(Event::Helo { host, extended })
    }

    fn starttls(&mut self) -> Progress {
        if self.tls_active {
            return self.command_error(reply(503, (5, 5, 1), "TLS already active"), "bad_sequence");
        }
        if !self.cfg.tls_available {
            return self.command_error(
                reply(502, (5, 5, 1), "STARTTLS not available"),
                "not_implemented",
            );
        }
        if self.in_transaction() {
            return self.command_error(
                reply(
                    503,
                    (5, 5, 1),
                    "STARTTLS not allowed during a mail transaction",
                ),
                "bad_sequence",
            );
        }
        self.push(&reply(220, (2, 0, 0), "Ready to start TLS"));
        // Whatever follows in plaintext is dropped (see `tls_established`).
        self.input.clear();
        self.pos = 0;
        Progress::Event(Event::StartTls)
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<Cow<'_, str>>, line: &[u8]) -> Progress {
        if self.phase == Phase::Greeted {
            return self.command_error(reply(503, (5, 5, 1), "Send EHLO first"), "bad_sequence");
        }
        if self.phase != Phase::Ready {
            return self
                .command_error(reply(503, (5, 5, 1), "Nested MAIL command"), "bad_sequence");
        }
        if self.cfg.require_tls && !self.tls_active {
            return self.command_error(
                reply(530, (5, 7, 0), "Must issue a STARTTLS command first"),
                "tls_required",
            );
        }
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            return self.command_error(
                reply(555, (5, 5, 4), "BODY=BINARYMIME is not supported"),
                "unsupported_parameter",
            );
        }
        if let Some(param) = unadvertised_mail_parameter(&from) {
            return self.command_error(
                reply(555, (5, 5, 4), format!("Unsupported parameter {param}")),
                "unsupported_parameter",
            );
        }
        if from.size > self.cfg.max_message_size || declared_size_overflows(line) {
            return self.command_error(
                reply(
                    552,
                    (5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ),
                "message_too_large",
            );
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if let Some(refused) = self.eight_bit_problem(line, smtputf8) {
            return refused;
        }
        let ret_full = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(true)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(false)
        } else {
            None
        };
        self.pending = Pending::Mail;
        self.smtputf8 = smtputf8;
        let mail = MailFrom {
            address: as_written(line, from.address),
            size: from.size,
            body_8bitmime: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            ret_full,
            envid: from.env_id.map(Cow::into_owned),
        };
        self.offered_mail = Some(mail.clone());
        Progress::Event(Event::MailFrom(mail))
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<Cow<'_, str>>, line: &[u8]) -> Progress {
        if !matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            return self.command_error(reply(503, (5, 5, 1), "Send MAIL first"), "bad_sequence");
        }
        if self.transaction.rcpts.len() >= self.cfg.max_recipients {
            // Not a client error: RFC 5321 §4.5.3.1.10 lets a client send more recipients
            // than the server takes and retry the rest later, so this 452 must not count
            // towards the error limit that closes the session.
            self.push(&reply(452, (4, 5, 3), "Too many recipients"));
            return Progress::Event(Event::Refused {
                stage: "rcpt",
                reason: "too_many_recipients",
            });
        }
        if to.rrvs != 0 {
            return self.command_error(
                reply(555, (5, 5, 4), "Unsupported parameter RRVS"),
                "unsupported_parameter",
            );
        }
        if let Some(refused) = self.eight_bit_problem(line, self.smtputf8) {
            return refused;
        }
        self.pending = Pending::Rcpt;
        let rcpt = RcptTo {
            address: as_written(line, to.address),
            notify: to.flags
                & (smtp_proto::RCPT_NOTIFY_SUCCESS
                    | smtp_proto::RCPT_NOTIFY_FAILURE
                    | smtp_proto::RCPT_NOTIFY_DELAY
                    | smtp_proto::RCPT_NOTIFY_NEVER),
            orcpt: to.orcpt.map(Cow::into_owned),
        };
        self.offered_rcpt = Some(rcpt.clone());
        Progress::Event(Event::Rcpt(rcpt))
    }

    fn data(&mut self) -> Progress {
        match self.phase {
            Phase::Rcpt => {
                self.phase = Phase::Data;
                self.decoder = DataDecoder::new();
                self.body_len = 0;
                self.body = Body::Accepted;
                self.pending = Pending::MessageStart;
                Progress::Event(Event::MessageStart)
            }
            Phase::Mail => {
                self.command_error(reply(554, (5, 5, 1), "No valid recipients"), "bad_sequence")
            }
            Phase::BdatWait => self.command_error(
                reply(503, (5, 5, 1), "DATA not allowed after BDAT"),
                "bad_sequence",
            ),
            _ => self.command_error(reply(503, (5, 5, 1), "Send RCPT first"), "bad_sequence"),
        }
    }

    fn bdat(&mut self, size: usize, last: bool, line: &[u8]) -> Progress {
        let exact = match bdat_syntax(line) {
            BdatSyntax::Exact => true,
            BdatSyntax::TrailingJunk => false,
            BdatSyntax::Unreadable => {
                // Where the chunk ends is unknown: nothing after it can be read as a command.
                self.close_with(&reply(
                    501,
                    (5, 5, 4),
                    "Syntax: BDAT chunk-size [LAST], closing connection",
                ));
                return Progress::Event(Event::Refused {
                    stage: self.stage,
                    reason: "syntax_error",
                });
            }
        };
        let first = match self.phase {
            Phase::Rcpt => true,
            Phase::BdatWait => false,
            other => {
                // The chunk's bytes follow whatever we answer: read and drop them.
                let msg = if other == Phase::Mail {
                    "No valid recipients"
                } else {
                    "Send RCPT first"
                };
                self.phase = Phase::Bdat {
                    remaining: size,
                    last,
                };
                self.body = Body::Discarding(None);
                return self.command_error(reply(503, (5, 5, 1), msg), "bad_sequence");
            }
        };
        self.phase = Phase::Bdat {
            remaining: size,
            last,
        };
        if first {
            self.body_len = 0;
            self.body = Body::Accepted;
            self.bdat_lines = LineEndings::default();
        }
        let refused = if !exact {
            Some(BodyError::BdatSyntax)
        } else if self.body_len.saturating_add(size) > self.cfg.max_message_size {
            Some(BodyError::TooLarge)
        } else {
            None
        };
        if let (Body::Accepted, Some(error)) = (self.body, refused) {
            self.body = Body::Discarding(Some(error));
            if !exact {
                self.count_error();
            }
            let reason = error.reason();
            // Once a message is under way the driver must drop what it stored of it;
            // before that, it is a plain refusal. The 552 follows the chunk's bytes.
            return Progress::Event(if first {
                Event::Refused {
                    stage: "data",
                    reason,
                }
            } else {
                Event::MessageAborted { reason }
            });
        }
        if first {
            self.pending = Pending::MessageStart;
            return Progress::Event(Event::MessageStart);
        }
        Progress::Continue
    }

    fn step_data(&mut self) -> Progress {
        if self.pos >= self.input.len() {
            return Progress::NeedInput;
        }
        let base = self.pos;
        let step = self.decoder.decode(&self.input[base..]);
        self.pos += step.consumed;
        let body = base + step.body.start..base + step.body.end;
        if self.body != Body::Accepted {
            if step.end {
                self.end_body();
            }
            return Progress::Continue;
        }
        let error = if self.decoder.saw_bare_newline() {
            Some(BodyError::BareNewline)
        } else if self.body_len + body.len() > self.cfg.max_message_size {
            Some(BodyError::TooLarge)
        } else {
            None
        };
        if let Some(e) = error {
            self.body = Body::Discarding(Some(e));
            if step.end {
                self.end_body();
            }
            return Progress::Event(Event::MessageAborted { reason: e.reason() });
        }
        if step.end {
            // The decoder never returns body bytes together with the end: a run stops
            // before the terminating dot.
            self.pending = Pending::MessageEnd;
            return Progress::Event(Event::MessageEnd);
        }
        if body.is_empty() {
            return Progress::Continue;
        }
        self.body_len += body.len();
        Progress::Chunk(body)
    }

    fn step_bdat(&mut self) -> Progress {
        let Phase::Bdat { remaining, last } = self.phase else {
            return Progress::Continue;
        };
        if remaining > 0 {
            let available = self.input.len() - self.pos;
            if available == 0 {
                return Progress::NeedInput;
            }
            let take = remaining.min(available);
            let range = self.pos..self.pos + take;
            self.pos += take;
            self.phase = Phase::Bdat {
                remaining: remaining - take,
                last,
            };
            if self.body == Body::Accepted {
                if self.bdat_lines.scan(&self.input[range.clone()]) {
                    self.body = Body::Discarding(Some(BodyError::BareNewline));
                    return Progress::Event(Event::MessageAborted {
                        reason: BodyError::BareNewline.reason(),
                    });
                }
                self.body_len += take;
                return Progress::Chunk(range);
            }
            return Progress::Continue;
        }
        // A CR ending the last chunk is bare too.
        if last && self.body == Body::Accepted && self.bdat_lines.pending_cr {
            self.body = Body::Discarding(Some(BodyError::BareNewline));
            return Progress::Event(Event::MessageAborted {
                reason: BodyError::BareNewline.reason(),
            });
        }
        // The chunk is complete.
        match self.body {
            Body::Accepted if last && self.body_len == 0 => {
                self.body = Body::Discarding(Some(BodyError::Empty));
                Progress::Event(Event::MessageAborted {
                    reason: BodyError::Empty.reason(),
                })
            }
            Body::Accepted if last => {
                self.pending = Pending::MessageEnd;
                Progress::Event(Event::MessageEnd)
            }
            Body::Accepted => {
                self.phase = Phase::BdatWait;
                let n = self.body_len;
                self.push(&reply(250, (2, 0, 0), format!("{n} octets received")));
                Progress::Continue
            }
            Body::Discarding(_) => {
                self.end_body();
                Progress::Continue
            }
        }
    }

    /// The body of a refused message has been read to its end: answer and end the
    /// transaction.
    fn end_body(&mut self) {
        if let Body::Discarding(Some(e)) = self.body {
            self.push(&e.reply());
        }
        self.end_transaction();
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines: Vec<Cow<'static, str>> = vec![
            self.cfg.hostname.clone().into(),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "SMTPUTF8".into(),
            "DSN".into(),
        ];
        if self.cfg.tls_available && !self.tls_active {
            lines.push("STARTTLS".into());
        }
        Reply::plain(250, lines)
    }

    /// Refuses bytes outside ASCII in a MAIL or RCPT line: invalid UTF-8 always; UTF-8
    /// unless the transaction's MAIL declared SMTPUTF8 (RFC 6531 §3.4).
    fn eight_bit_problem(&mut self, line: &[u8], smtputf8: bool) -> Option<Progress> {
        if line.is_ascii() {
            None
        } else if std::str::from_utf8(line).is_err() {
            Some(self.command_error(
                reply(501, (5, 6, 7), "Invalid UTF-8 in address"),
                "invalid_utf8",
            ))
        } else if !smtputf8 {
            Some(self.command_error(
                reply(553, (5, 6, 7), "Non-ASCII address without SMTPUTF8"),
                "non_ascii_address",
            ))
        } else {
            None
        }
    }

    fn command_error(&mut self, r: Reply, reason: &'static str) -> Progress {
        self.push(&r);
        self.count_error();
        Progress::Event(Event::Refused {
            stage: self.stage,
            reason,
        })
    }

    /// Counts a command that moved no mail; too many in a row close the session.
    fn count_idle(&mut self) {
        self.idle_commands += 1;
        if self.idle_commands > self.cfg.max_idle_commands && self.phase != Phase::Closed {
            self.close_with(&reply(
                421,
                (4, 7, 0),
                "Too many commands without a mail transaction, closing connection",
            ));
        }
    }

    /// Counts a refused command; too many in a row close the session.
    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.close_with(&reply(
                421,
                (4, 7, 0),
                "Too many errors, closing connection",
            ));
        }
    }

    fn close_with(&mut self, r: &Reply) {
        // The final reply is sent once: a shutdown or timeout reaching a session that has
        // already closed (QUIT, too many errors) must not answer after it.
        if self.phase == Phase::Closed {
            return;
        }
        self.push(r);
        self.phase = Phase::Closed;
        self.pending = Pending::None;
    }

    fn reset_transaction(&mut self) {
        self.transaction = Transaction::default();
        self.body_len = 0;
        self.body = Body::Accepted;
    }

    /// Back to the idle phase: ready for MAIL when EHLO was done, else waiting for it.
    fn end_transaction(&mut self) {
        self.reset_transaction();
        if self.phase != Phase::Closed {
            self.phase = if self.helo_done {
                Phase::Ready
            } else {
                Phase::Greeted
            };
        }
    }

    fn push(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }
}

/// Finds bare CR and LF in BDAT content. BDAT needs no terminator, but without
/// BINARYMIME (not offered) content is still made of CRLF-terminated lines (RFC 3030 §3),
/// and a bare `\n.\n` accepted here could end the message early at a lenient next hop
/// when the message is relayed with DATA. So BDAT is held to the same rule as DATA.
#[derive(Debug, Default, Clone, Copy)]
struct LineEndings {
    /// The previous chunk ended with a CR whose LF has not been seen yet.
    pending_cr: bool,
}

impl LineEndings {
    /// Scans the next bytes; true when a bare CR or LF is found.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut i = 0;
        if self.pending_cr {
            if bytes.first().is_some_and(|b| *b != b'\n') {
                return true;
            }
            if bytes.is_empty() {
                return false;
            }
            self.pending_cr = false;
            i = 1;
        }
        while let Some(off) = memchr::memchr2(b'\r', b'\n', &bytes[i..]) {
            let at = i + off;
            if bytes[at] == b'\n' {
                return true;
            }
            match bytes.get(at + 1) {
                Some(b'\n') => i = at + 2,
                Some(_) => return true,
                None => {
                    self.pending_cr = true;
                    return false;
                }
            }
        }
        false
    }
}

/// The metrics and logs label of a command.
fn stage_of<T>(req: &Request<T>) -> &'static str {
    match req {
        Request::Ehlo { .. } | Request::Helo { .. } | Request::Lhlo { .. } => "ehlo",
        Request::Mail { .. } => "mail",
        Request::Rcpt { .. } => "rcpt",
        Request::Data | Request::Bdat { .. } => "data",
        Request::StartTls => "starttls",
        _ => "command",
    }
}

impl<'a> Event<'a> {
    /// Separates body bytes, which borrow the session's buffer, from every other event,
    /// which owns its data and so can be handled while the session is used again.
    pub fn detach(self) -> Result<Event<'static>, &'a [u8]> {
        Ok(match self {
            Event::MessageChunk(bytes) => return Err(bytes),
            Event::Helo { host, extended } => Event::Helo { host, extended },
            Event::StartTls => Event::StartTls,
            Event::MailFrom(m) => Event::MailFrom(m),
            Event::Rcpt(r) => Event::Rcpt(r),
            Event::MessageStart => Event::MessageStart,
            Event::MessageEnd => Event::MessageEnd,
            Event::MessageAborted { reason } => Event::MessageAborted { reason },
            Event::Refused { stage, reason } => Event::Refused { stage, reason },
        })
    }
}

/// A `SIZE=` parameter whose digits do not fit in 64 bits (smtp-proto saturates and then
/// wraps such a number to a small one).
fn declared_size_overflows(line: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    text.split_ascii_whitespace().any(|token| {
        token
            .get(..5)
            .is_some_and(|name| name.eq_ignore_ascii_case("SIZE="))
            && token.len() > 5
            && token[5..].bytes().all(|b| b.is_ascii_digit())
            && token[5..].parse::<u64>().is_err()
    })
}

/// How a BDAT line reads, beyond what smtp-proto checks.
#[derive(Debug, PartialEq, Eq)]
enum BdatSyntax {
    /// `BDAT chunk-size [LAST]`, nothing else.
    Exact,
    /// Something after the size or after LAST: the chunk is read and dropped.
    TrailingJunk,
    /// The size does not fit in 64 bits: where the chunk ends is unknown.
    Unreadable,
}

fn bdat_syntax(line: &[u8]) -> BdatSyntax {
    let text = String::from_utf8_lossy(line);
    let mut tokens = text.split_ascii_whitespace().skip(1);
    match tokens.next().map(str::parse::<u64>) {
        Some(Ok(_)) => {}
        _ => return BdatSyntax::Unreadable,
    }
    match (tokens.next(), tokens.next()) {
        (None, _) => BdatSyntax::Exact,
        (Some(last), None) if last.eq_ignore_ascii_case("LAST") => BdatSyntax::Exact,
        _ => BdatSyntax::TrailingJunk,
    }
}

/// The path between `<` and `>` of a MAIL or RCPT line, as written, without a source
/// route (`@a,@b:`); quotes and their escapes respected.
pub fn raw_path(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let (_, rest) = text.split_once(':')?;
    let rest = rest.trim_start().strip_prefix('<')?;
    let rest = match rest.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => rest,
    };
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in rest.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return rest.get(..i),
            _ => {}
        }
    }
    None
}

/// The address to keep: as written when its local part is quoted (a quoted local part
/// such as `"john doe"` must reach the next hop quoted, RFC 5321 §4.1.2), else as parsed.
fn as_written(line: &[u8], parsed: Cow<'_, str>) -> String {
    match raw_path(line) {
        Some(path) if path.starts_with('"') => path.to_string(),
        _ => parsed.into_owned(),
    }
}

/// The first MAIL parameter that smtp-proto understands but whose extension we do not
/// advertise. RFC 5321 §4.1.1.11 asks for 555 then: accepting REQUIRETLS or HOLDFOR
/// silently would promise a handling the gateway does not give.
fn unadvertised_mail_parameter(from: &smtp_proto::MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    let flags = [
        (smtp_proto::MAIL_REQUIRETLS, "REQUIRETLS"),
        (smtp_proto::MAIL_CONPERM, "CONPERM"),
        (
            smtp_proto::MAIL_BY_NOTIFY | smtp_proto::MAIL_BY_RETURN | smtp_proto::MAIL_BY_TRACE,
            "BY",
        ),
    ];
    let given = [
        (from.by != 0, "BY"),
        (from.hold_for != 0, "HOLDFOR"),
        (from.hold_until != 0, "HOLDUNTIL"),
        (from.mt_priority != 0, "MT-PRIORITY"),
        (from.auth.is_some(), "AUTH"),
        (from.trans_id.is_some(), "TRANSID"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
    ];
    flags
        .into_iter()
        .map(|(flag, name)| (from.flags & flag != 0, name))
        .chain(given)
        .find_map(|(present, name)| present.then_some(name))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
