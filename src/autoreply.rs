//! The auto-reply mailbox (`operator.auto_reply`, exigence EX_GBM_4020): the address every
//! operator declares in its Annexe 1 and that ANS writes to when it tests the operator.
//! The gateway answers it itself instead of delivering it to the internal server, so the
//! answer proves the whole chain (DNS, TLS, liste blanche, spool, outbound relay) works.
//!
//! [`reply_for`] decides, without I/O, whether a message gets an answer and builds it; the
//! relay (`relay::auto_reply`) spools the answer and records it in the [`ReplyState`].
//!
//! Loop protection follows RFC 3834: no answer to `<>`, to a message whose
//! `Auto-Submitted:` is anything but `no`, to `Precedence: bulk|list|junk`, to mailing
//! lists (`List-Id`, `List-Unsubscribe`), to system senders (`MAILER-DAEMON`,
//! `postmaster`, `noreply`...), nor more than once per sender within
//! `operator.auto_reply_window`. The answer itself goes from `<>` with
//! `Auto-Submitted: auto-replied`, so no conforming responder answers it back.
//!
//! Who was answered when is kept in memory (at most [`DEFAULT_CAPACITY`] senders) and
//! saved to `autoreply.json` in the spool directory after each answer, so a restart does
//! not answer the same sender twice within the window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::message::{read_headers, HeaderInfo};
use crate::operator::OperatorSettings;
use crate::spool::{unix_ms, Direction, Envelope, StoredMessage};
use mail_builder::headers::text::Text;
use mail_builder::MessageBuilder;

/// The file, in the spool directory, where the state is saved.
pub const STATE_FILE: &str = "autoreply.json";

/// Senders remembered at most; past it, the oldest replies are forgotten first (a flood of
/// distinct senders must not grow memory without bound).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What the auto-reply needs to know of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The auto-reply address (compared case-insensitively).
    pub address: String,
    /// At most one answer per sender within this time.
    pub window: Duration,
    /// Our host name, for the answer's Message-ID.
    pub hostname: String,
}

impl Settings {
    /// Whether `recipient` is the auto-reply address.
    pub fn is_auto_reply(&self, recipient: &str) -> bool {
        recipient.trim().eq_ignore_ascii_case(self.address.trim())
    }
}

/// Why no answer is sent. Each has a stable label, the `outcome` of
/// `mssante_autoreplies_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// The reverse path is `<>` (a bounce, a DSN or another auto-reply).
    NullSender,
    /// `Auto-Submitted:` other than `no`.
    AutoSubmitted,
    /// `Precedence: bulk`, `list` or `junk`.
    Precedence,
    /// `List-Id` or `List-Unsubscribe`: a mailing list.
    MailingList,
    /// A system sender (`MAILER-DAEMON`, `postmaster`, `noreply`, `owner-*`, `*-request`...).
    SystemSender,
    /// The sender is the auto-reply address itself.
    OwnAddress,
    /// This sender was already answered within the window.
    AlreadyReplied,
}

impl Suppressed {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::NullSender => "suppressed_null_sender",
            Suppressed::AutoSubmitted => "suppressed_auto_submitted",
            Suppressed::Precedence => "suppressed_precedence",
            Suppressed::MailingList => "suppressed_mailing_list",
            Suppressed::SystemSender => "suppressed_system_sender",
            Suppressed::OwnAddress => "suppressed_own_address",
            Suppressed::AlreadyReplied => "suppressed_already_replied",
        }
    }
}

/// What to do with a message for the auto-reply address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Spool this answer (then record it in the state).
    Reply {
        /// From `<>` to the original sender, direction outbound.
        envelope: Box<Envelope>,
        /// The answer's bytes.
        message: Vec<u8>,
    },
    /// No answer, for this reason.
    Suppress(Suppressed),
}

/// When each sender was last answered, in memory, bounded.
#[derive(Debug, Clone)]
pub struct ReplyState {
    last: HashMap<String, SystemTime>,
    capacity: usize,
}

impl Default for ReplyState {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl ReplyState {
    /// A state remembering at most `capacity` senders (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        ReplyState {
            last: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// When `sender` was last answered, if remembered.
    pub fn last_reply(&self, sender: &str) -> Option<SystemTime> {
        self.last.get(&sender.to_ascii_lowercase()).copied()
    }

    /// Records an answer to `sender` at `now`. Entries older than `window` are dropped
    /// first; if still full, the oldest one goes.
    pub fn record(&mut self, sender: &str, now: SystemTime, window: Duration) {
        let key = sender.to_ascii_lowercase();
        if !self.last.contains_key(&key) && self.last.len() >= self.capacity {
            self.last
                .retain(|_, t| now.duration_since(*t).map_or(true, |age| age < window));
            if self.last.len() >= self.capacity {
                let oldest = self
                    .last
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.last.remove(&k);
                }
            }
        }
        self.last.insert(key, now);
    }

    /// Forgets the answer to `sender` recorded at `at` (its spooling failed).
    pub fn forget(&mut self, sender: &str, at: SystemTime) {
        let key = sender.to_ascii_lowercase();
        if self.last.get(&key) == Some(&at) {
            self.last.remove(&key);
        }
    }

    /// The state as saved: sender → Unix time of the last answer, in milliseconds.
    pub fn to_json(&self) -> Vec<u8> {
        let map: HashMap<&str, u64> = self
            .last
            .iter()
            .map(|(k, t)| (k.as_str(), unix_ms(*t)))
            .collect();
        serde_json::to_vec(&map).unwrap_or_default()
    }

    /// A state read back from [`ReplyState::to_json`], without the entries already past
    /// `window` at `now`; `None` if the bytes are not such a state.
    pub fn from_json(bytes: &[u8], now: SystemTime, window: Duration) -> Option<ReplyState> {
        let map: HashMap<String, u64> = serde_json::from_slice(bytes).ok()?;
        let mut state = ReplyState::default();
        let mut entries: Vec<(String, SystemTime)> = map
            .into_iter()
            .map(|(k, ms)| (k, SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
            .filter(|(_, t)| now.duration_since(*t).map_or(true, |age| age < window))
            .collect();
        entries.sort_by_key(|(_, t)| *t);
        for (k, t) in entries {
            state.record(&k, t, window);
        }
        Some(state)
    }

    /// Senders remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether nobody is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The running auto-responder: the settings and the state shared by the relay's deliveries.
#[derive(Debug)]
pub struct AutoReplier {
    /// The address, window and host name.
    pub settings: Settings,
    state: Mutex<ReplyState>,
    /// Where the state is saved; `None`: memory only.
    file: Option<PathBuf>,
    /// One save at a time, each taking its snapshot inside, so the last file written is
    /// the newest state.
    saving: tokio::sync::Mutex<()>,
}

impl AutoReplier {
    /// The responder of the operator's `[operator]` section, answering as `hostname`,
    /// its state kept in `spool_dir`.
    pub fn for_operator(op: &OperatorSettings, hostname: &str, spool_dir: &Path) -> AutoReplier {
        let settings = Settings {
            address: op.auto_reply.trim().to_string(),
            window: op.auto_reply_window,
            hostname: hostname.to_string(),
        };
        AutoReplier::with_file(settings, &spool_dir.join(STATE_FILE))
    }

    /// A responder with an empty state, in memory only.
    pub fn new(settings: Settings) -> AutoReplier {
        AutoReplier {
            settings,
            state: Mutex::new(ReplyState::default()),
            file: None,
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// A responder saving its state to `file`, starting from what the file holds (an
    /// unreadable file is logged and replaced: at worst a sender is answered twice).
    pub fn with_file(settings: Settings, file: &Path) -> AutoReplier {
        let state = match std::fs::read(file) {
            Ok(bytes) => ReplyState::from_json(&bytes, SystemTime::now(), settings.window)
                .unwrap_or_else(|| {
                    tracing::warn!(file = %file.display(), "auto-reply state unreadable; starting afresh");
                    ReplyState::default()
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReplyState::default(),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the auto-reply state; starting afresh");
                ReplyState::default()
            }
        };
        AutoReplier {
            settings,
            state: Mutex::new(state),
            file: Some(file.to_path_buf()),
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// Saves the state durably ([`crate::durable::replace`]); a failure is logged, not
    /// fatal.
    pub async fn save(&self) {
        let Some(file) = &self.file else { return };
        let _one_at_a_time = self.saving.lock().await;
        let bytes = self.lock().to_json();
        let written = crate::durable::replace_async(file.clone(), bytes).await;
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the auto-reply state; a restart may answer a sender twice");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplyState> {
        // Inserts and removals cannot leave the map inconsistent: a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides for `message` and, when it is to be answered, records the answer at once,
    /// so that two deliveries from one sender running together answer only once. Call
    /// [`AutoReplier::forget`] if the answer cannot be spooled.
    pub fn decide(&self, message: &StoredMessage, now: SystemTime) -> Decision {
        let mut state = self.lock();
        let decision = reply_for(
            &self.settings,
            &message.envelope,
            &message.body,
            now,
            &state,
        );
        if matches!(decision, Decision::Reply { .. }) {
            state.record(&message.envelope.mail_from, now, self.settings.window);
        }
        decision
    }

    /// Undoes the record made by [`AutoReplier::decide`] at `at` for `sender`.
    pub fn forget(&self, sender: &str, at: SystemTime) {
        self.lock().forget(sender, at);
    }
}

/// Decides whether `message`, received with `envelope`, gets an automatic answer and
/// builds it. Pure: the caller spools the answer and then records it in `state`.
pub fn reply_for(
    settings: &Settings,
    envelope: &Envelope,
    message: &[u8],
    now: SystemTime,
    state: &ReplyState,
) -> Decision {
    let sender = envelope.mail_from.trim();
    if sender.is_empty() {
        return Decision::Suppress(Suppressed::NullSender);
    }
    if settings.is_auto_reply(sender) {
        return Decision::Suppress(Suppressed::OwnAddress);
    }
    if is_system_sender(sender) {
        return Decision::Suppress(Suppressed::SystemSender);
    }
    let headers = read_headers(message);
    if let Some(v) = &headers.auto_submitted {
        if token(v) != "no" {
            return Decision::Suppress(Suppressed::AutoSubmitted);
        }
    }
    if let Some(v) = &headers.precedence {
        if ["bulk", "list", "junk"].contains(&token(v)) {
            return Decision::Suppress(Suppressed::Precedence);
        }
    }
    if headers.list {
        return Decision::Suppress(Suppressed::MailingList);
    }
    if let Some(last) = state.last_reply(sender) {
        if now
            .duration_since(last)
            .map_or(true, |age| age < settings.window)
        {
            return Decision::Suppress(Suppressed::AlreadyReplied);
        }
    }
    let (envelope, message) = build(settings, sender, &headers, now);
    Decision::Reply {
        envelope: Box::new(envelope),
        message,
    }
}

/// Local parts that are never answered (RFC 3834 §2 and common practice).
fn is_system_sender(sender: &str) -> bool {
    let local = sender
        .rsplit_once('@')
        .map_or(sender, |(l, _)| l)
        .to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "mailer-daemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "nepasrepondre",
        "ne-pas-repondre",
        "listserv",
        "majordomo",
        "root",
    ];
    EXACT.contains(&local.as_str())
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-owner")
        || local.ends_with("-bounces")
}

/// The first word of a header value, before any parameter or comment.
fn token(value: &str) -> &str {
    value
        .split([';', '(', ' ', '\t'])
        .find(|w| !w.is_empty())
        .unwrap_or("")
}

/// Without control characters, for one header line.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

const PREFIX: &str = "Réponse automatique:";

/// The answer (RFC 3834): from the auto-reply address, `In-Reply-To`/`References` the
/// original Message-ID, `Auto-Submitted: auto-replied`, a short text in French and English;
/// mail-builder encodes the subject (RFC 2047) and the body (quoted-printable).
fn build(
    settings: &Settings,
    sender: &str,
    headers: &HeaderInfo,
    now: SystemTime,
) -> (Envelope, Vec<u8>) {
    let now_dt = OffsetDateTime::from(now);
    let nonce: u64 = rand::random();
    let address = clean(&settings.address);
    let subject = match headers.subject.as_deref().map(clean) {
        Some(original) if !original.trim().is_empty() => format!("{PREFIX} {}", original.trim()),
        _ => PREFIX.to_string(),
    };
    let text = format!(
        "Bonjour,\r\n\
         \r\n\
         Ceci est une réponse automatique de {address}, la boîte de réponse\r\n\
         automatique de cet opérateur de l'espace de confiance MSSanté.\r\n\
         Votre message a bien été reçu. Cette boîte n'est pas lue :\r\n\
         n'y écrivez pas pour joindre une personne.\r\n\
         \r\n\
         Hello,\r\n\
         \r\n\
         This is an automatic reply from {address}, the auto-reply mailbox\r\n\
         of this operator of the MSSanté espace de confiance.\r\n\
         Your message was received. This mailbox is not read:\r\n\
         do not write to it to reach a person.\r\n"
    );
    let mut builder = MessageBuilder::new()
        .from(address.clone())
        .to(clean(sender))
        .subject(subject)
        .date(now_dt.unix_timestamp())
        .message_id(format!("{nonce:016x}.autoreply@{}", settings.hostname));
    // The original's Message-ID, when it is a plausible one.
    if let Some(orig) = headers.message_id.as_deref().map(clean) {
        let id = orig
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        if !id.is_empty() && id.len() <= 500 && !id.contains([' ', '<', '>']) {
            builder = builder.in_reply_to(id.clone()).references(id);
        }
    }
    let message = builder
        .header("Auto-Submitted", Text::new("auto-replied"))
        .text_body(text)
        .write_to_vec()
        .unwrap_or_default();
    let envelope = Envelope::of_report(
        Direction::Outbound,
        &settings.hostname,
        now_dt.format(&Rfc3339).unwrap_or_default(),
        sender,
    );
    (envelope, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    const SENDER: &str = "alice@peer-a.test.mssante.fr";

    fn settings() -> Settings {
        Settings {
            address: "reponse-automatique@gateway.test.mssante.fr".into(),
            window: Duration::from_secs(86_400),
            hostname: "smtp.gateway.test.mssante.fr".into(),
        }
    }

    fn envelope(from: &str) -> Envelope {
        Envelope {
            direction: Direction::Inbound,
            received_at: "2026-01-02T03:04:05Z".into(),
            peer_addr: "192.0.2.1:1234".into(),
            helo: "smtp.peer-a.test.mssante.fr".into(),
            peer_dn: None,
            peer_cn: None,
            peer_ptr: None,
            tls: None,
            mail_from: from.into(),
            envid: None,
            ret_full: None,
            body_8bitmime: false,
            smtputf8: false,
            recipients: vec![Recipient {
                address: "reponse-automatique@gateway.test.mssante.fr".into(),
                notify: 0,
                orcpt: None,
            }],
        }
    }

    fn decide(from: &str, headers: &str) -> Decision {
        let message = format!("{headers}Subject: test\r\nMessage-ID: <m1@peer-a>\r\n\r\nbody\r\n");
        reply_for(
            &settings(),
            &envelope(from),
            message.as_bytes(),
            SystemTime::now(),
            &ReplyState::default(),
        )
    }

    fn reply_text(d: Decision) -> (Envelope, String) {
        match d {
            Decision::Reply { envelope, message } => (
                *envelope,
                String::from_utf8(message).expect("the reply is UTF-8"),
            ),
            Decision::Suppress(why) => panic!("no reply: {why:?}"),
        }
    }

    #[test]
    fn answers_from_null_sender_to_the_sender_with_rfc3834_headers() {
        let (env, text) = reply_text(decide(SENDER, ""));
        assert_eq!(env.mail_from, "");
        assert_eq!(env.direction, Direction::Outbound);
        assert_eq!(env.recipients.len(), 1);
        assert_eq!(env.recipients[0].address, SENDER);
        assert!(text.contains("From: <reponse-automatique@gateway.test.mssante.fr>\r\n"));
        assert!(text.contains(&format!("To: <{SENDER}>\r\n")));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("In-Reply-To: <m1@peer-a>\r\n"));
        assert!(text.contains("References: <m1@peer-a>\r\n"));
        assert!(text.contains("Date: "));
        assert!(text.contains(".autoreply@smtp.gateway.test.mssante.fr>\r\n"));
        assert!(text.is_ascii(), "the reply must be 7-bit: {text}");
        assert!(text.lines().all(|l| l.len() <= 78), "{text}");
        // Read back by an independent parser: the subject and the text decode to what
        // was meant.
        let parsed = mail_parser::MessageParser::new()
            .parse(text.as_bytes())
            .expect("parses");
        assert_eq!(parsed.subject(), Some("Réponse automatique: test"));
        let body = parsed.body_text(0).expect("a text body");
        assert!(body.contains("Ceci est une réponse automatique"), "{body}");
        assert!(body.contains("This is an automatic reply"), "{body}");
    }

    #[test]
    fn non_ascii_subjects_are_encoded_and_read_back() {
        let settings = settings();
        for (original, expected) in [
            ("Compte rendu été", "Réponse automatique: Compte rendu été"),
            (
                "=?ISO-8859-1?Q?r=E9sultat?=",
                "Réponse automatique: résultat",
            ),
            ("", "Réponse automatique:"),
        ] {
            let message = format!("Subject: {original}\r\nMessage-ID: <m@x>\r\n\r\nx\r\n");
            let headers = read_headers(message.as_bytes());
            let (_, bytes) = build(&settings, SENDER, &headers, SystemTime::now());
            assert!(bytes.is_ascii(), "{}", String::from_utf8_lossy(&bytes));
            let parsed = mail_parser::MessageParser::new()
                .parse(&bytes)
                .expect("parses");
            assert_eq!(parsed.subject(), Some(expected));
        }
        let long = "é".repeat(100);
        let message = format!("Subject: {long}\r\n\r\nx\r\n");
        let (_, bytes) = build(
            &settings,
            SENDER,
            &read_headers(message.as_bytes()),
            SystemTime::now(),
        );
        let text = String::from_utf8(bytes.clone()).expect("ASCII");
        assert!(text.lines().all(|l| l.len() <= 78), "{text}");
        let parsed = mail_parser::MessageParser::new()
            .parse(&bytes)
            .expect("parses");
        assert_eq!(parsed.subject(), Some(format!("{PREFIX} {long}").as_str()));
    }

    #[test]
    fn never_answers_the_null_sender() {
        assert_eq!(decide("", ""), Decision::Suppress(Suppressed::NullSender));
    }

    #[test]
    fn never_answers_automatic_messages() {
        for h in [
            "Auto-Submitted: auto-replied\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "auto-submitted:\r\n  auto-notified; owner-email=\"x@y\"\r\n",
        ] {
            assert_eq!(
                decide(SENDER, h),
                Decision::Suppress(Suppressed::AutoSubmitted),
                "{h}"
            );
        }
        assert!(matches!(
            decide(SENDER, "Auto-Submitted: no\r\n"),
            Decision::Reply { .. }
        ));
    }

    #[test]
    fn never_answers_bulk_list_or_junk() {
        for p in ["bulk", "list", "junk", "Bulk (newsletter)"] {
            assert_eq!(
                decide(SENDER, &format!("Precedence: {p}\r\n")),
                Decision::Suppress(Suppressed::Precedence),
                "{p}"
            );
        }
        assert!(matches!(
            decide(SENDER, "Precedence: first-class\r\n"),
            Decision::Reply { .. }
        ));
    }

    #[test]
    fn never_answers_mailing_lists() {
        for h in [
            "List-Id: <sante.lists.example.fr>\r\n",
            "List-Unsubscribe: <mailto:leave@lists.example.fr>\r\n",
        ] {
            assert_eq!(
                decide(SENDER, h),
                Decision::Suppress(Suppressed::MailingList),
                "{h}"
            );
        }
    }

    #[test]
    fn never_answers_system_senders_or_itself() {
        for s in [
            "MAILER-DAEMON@peer-a.test.mssante.fr",
            "postmaster@peer-a.test.mssante.fr",
            "noreply@peer-a.test.mssante.fr",
            "No-Reply@peer-a.test.mssante.fr",
            "owner-liste@peer-a.test.mssante.fr",
            "liste-request@peer-a.test.mssante.fr",
        ] {
            assert_eq!(
                decide(s, ""),
                Decision::Suppress(Suppressed::SystemSender),
                "{s}"
            );
        }
        assert_eq!(
            decide("Reponse-Automatique@gateway.test.mssante.fr", ""),
            Decision::Suppress(Suppressed::OwnAddress)
        );
    }

    #[test]
    fn answers_a_sender_once_per_window() {
        let s = settings();
        let env = envelope(SENDER);
        let msg = b"Subject: x\r\n\r\nbody\r\n";
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut state = ReplyState::default();
        assert!(matches!(
            reply_for(&s, &env, msg, t0, &state),
            Decision::Reply { .. }
        ));
        state.record(&SENDER.to_ascii_uppercase(), t0, s.window);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            reply_for(&s, &env, msg, later, &state),
            Decision::Suppress(Suppressed::AlreadyReplied)
        );
        let next_day = t0 + s.window;
        assert!(matches!(
            reply_for(&s, &env, msg, next_day, &state),
            Decision::Reply { .. }
        ));
    }

    #[tokio::test]
    async fn the_state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(STATE_FILE);
        let message = StoredMessage {
            id: "0000000000100000001".into(),
            envelope: envelope(SENDER),
            body: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            rest: None,
        };
        let now = SystemTime::now();
        let first = AutoReplier::with_file(settings(), &file);
        assert!(matches!(
            first.decide(&message, now),
            Decision::Reply { .. }
        ));
        first.save().await;
        let second = AutoReplier::with_file(settings(), &file);
        assert_eq!(
            second.decide(&message, now + Duration::from_secs(60)),
            Decision::Suppress(Suppressed::AlreadyReplied)
        );
        std::fs::write(&file, b"not json").expect("write");
        let third = AutoReplier::with_file(settings(), &file);
        assert!(matches!(
            third.decide(&message, now),
            Decision::Reply { .. }
        ));
    }

    #[test]
    fn the_state_is_bounded() {
        let window = Duration::from_secs(100);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut state = ReplyState::with_capacity(3);
        for i in 0..3u64 {
            state.record(&format!("s{i}@x"), t0 + Duration::from_secs(i), window);
        }
        // Full: the oldest sender is forgotten to make room.
        state.record("s3@x", t0 + Duration::from_secs(3), window);
        assert_eq!(state.len(), 3);
        assert!(state.last_reply("s0@x").is_none());
        assert!(state.last_reply("s3@x").is_some());
        // Expired entries go first.
        state.record("s4@x", t0 + Duration::from_secs(500), window);
        assert_eq!(state.len(), 1);
    }
}
