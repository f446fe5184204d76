//! The durable spool: a message is acknowledged only once its bytes and its envelope are on
//! stable storage.
//!
//! Messages of up to [`log::LOGGED_MAX`] bytes are held in memory while they arrive, then
//! appended to the message log (`log/`), where concurrent commits share one `fdatasync`
//! (see [`log`]). Larger ones get a file of their own: written under `tmp/` as they
//! arrive, completed with a trailer, flushed with `fsync`, renamed into `queue/` and the
//! directory `fsync`ed. Only then may the caller answer 250. A file in `queue/` without a
//! valid trailer, or a log record whose checksum fails, is torn and never delivered.
//!
//! File layout: a magic line, the envelope as one JSON line, the message bytes exactly as
//! received (dot-stuffing removed), then a 24-byte trailer: `MSSEND01`, the envelope
//! length and the body length as little-endian u64.

mod log;
mod queue;
mod transfer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use tokio::sync::Notify;

pub use log::LogStats;
use queue::Index;
pub use queue::{
    id_time_ms, is_message_name, unix_ms, MessageState, QueueEntry, QueueSummary, RecoveryReport,
};
pub use transfer::TransferReport;

const MAGIC: &[u8] = b"MSSPOOL1\n";
const TRAILER_MAGIC: &[u8; 8] = b"MSSEND01";
const TRAILER_LEN: usize = 24;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From another operator, for our users: relayed to the internal server.
    #[default]
    Inbound,
    /// From our internal server: our users' mail to other operators (local recipients
    /// still go to the internal server).
    Outbound,
    /// A delivery status notification the gateway wrote (a bounce a peer sends us, from
    /// `<>`, is `Inbound`).
    Dsn,
}

impl Direction {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Dsn => "dsn",
        }
    }
}

/// Body bytes gathered in memory before they are written to the file: large writes, and
/// few trips to the blocking thread pool.
const WRITE_BATCH: usize = 64 * 1024;

/// What we know of a message besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// Where the message came from, hence where it goes.
    #[serde(default)]
    pub direction: Direction,
    /// When the message was accepted (RFC 3339).
    pub received_at: String,
    /// The peer's IP address and port.
    pub peer_addr: String,
    /// The name the peer gave in EHLO/HELO.
    pub helo: String,
    /// The peer certificate's subject DN, when TLS with a client certificate was used.
    pub peer_dn: Option<String>,
    /// The CN of that certificate, as the certificate parser read it (absent in messages
    /// spooled by versions before it was recorded).
    #[serde(default)]
    pub peer_cn: Option<String>,
    /// The peer address's reverse-DNS name, when one was looked up and forward-confirmed.
    #[serde(default)]
    pub peer_ptr: Option<String>,
    /// What the session's TLS negotiated.
    pub tls: Option<SessionTls>,
    /// The reverse path (empty for `<>`).
    pub mail_from: String,
    /// ENVID (RFC 3461).
    pub envid: Option<String>,
    /// RET=FULL (true) or RET=HDRS (false).
    pub ret_full: Option<bool>,
    /// BODY=8BITMIME was declared.
    pub body_8bitmime: bool,
    /// SMTPUTF8 was declared.
    pub smtputf8: bool,
    /// The accepted recipients.
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// The envelope of a report the gateway writes itself (a DSN, an automatic answer):
    /// from `<>`, to `to` alone with NOTIFY=NEVER (a report is never reported on),
    /// accepted now by `hostname`.
    pub fn of_report(
        direction: Direction,
        hostname: &str,
        received_at: String,
        to: &str,
    ) -> Envelope {
        Envelope {
            direction,
            received_at,
            peer_addr: "local".into(),
            helo: hostname.to_string(),
            peer_dn: None,
            peer_cn: None,
            peer_ptr: None,
            tls: None,
            mail_from: String::new(),
            envid: None,
            ret_full: None,
            body_8bitmime: false,
            smtputf8: false,
            recipients: vec![Recipient {
                address: to.to_string(),
                notify: smtp_proto::RCPT_NOTIFY_NEVER,
                orcpt: None,
            }],
        }
    }
}

/// The TLS of the session a message came in by.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "TlsRecord")]
pub struct SessionTls {
    /// Protocol version, e.g. `TLSv1_3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// How [`SessionTls`] is stored: two fields, or, in messages spooled by earlier versions,
/// one `"version cipher"` string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TlsRecord {
    Fields { version: String, cipher: String },
    Text(String),
}

impl From<TlsRecord> for SessionTls {
    fn from(record: TlsRecord) -> SessionTls {
        match record {
            TlsRecord::Fields { version, cipher } => SessionTls { version, cipher },
            TlsRecord::Text(text) => {
                let (version, cipher) = text.split_once(' ').unwrap_or((&text, "unknown"));
                SessionTls {
                    version: version.to_string(),
                    cipher: cipher.trim().to_string(),
                }
            }
        }
    }
}

/// One accepted recipient and its DSN parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// NOTIFY flags (smtp-proto's `RCPT_NOTIFY_*` bits).
    pub notify: u64,
    /// ORCPT, as given.
    pub orcpt: Option<String>,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file system operation failed.
    #[error("spool I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The envelope could not be serialised.
    #[error("cannot serialise the envelope: {0}")]
    Envelope(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool directory: `log/` (the message log, see [`log`]), `tmp/` (large messages
/// being written, never acknowledged), `queue/` (complete large messages, each file
/// written once and never rewritten), `state/` (one small JSON file per message that has
/// been tried or changed by a `queue` command: attempts, next due time, pending
/// recipients), `quarantine/` (torn files and damaged log tails found at recovery, kept
/// for inspection, never delivered).
#[derive(Debug)]
pub struct Spool {
    tmp: PathBuf,
    queue: PathBuf,
    state: PathBuf,
    quarantine: PathBuf,
    log: Arc<log::Log>,
    counter: AtomicU32,
    /// Which messages are queued, when each is due and whether a worker holds it. Shared
    /// with [`Incoming`] so that a commit makes the message visible at once.
    index: Arc<Index>,
    /// Woken after each commit so that the relay delivers without waiting for a poll.
    notify: Arc<Notify>,
}

impl Spool {
    /// Opens (creating if needed) the spool under `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let tmp = dir.join("tmp");
        let queue = dir.join("queue");
        let state = dir.join("state");
        let quarantine = dir.join("quarantine");
        let log_dir = dir.join("log");
        for d in [&tmp, &queue, &state, &quarantine, &log_dir] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(Spool {
            tmp,
            queue,
            state,
            quarantine,
            log: Arc::new(log::Log::new(log_dir)),
            counter: AtomicU32::new(rand::random()),
            index: Arc::new(Index::default()),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Woken each time a message is committed.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// The directory of complete large messages.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }

    /// Syncs and records written to the message log by this process.
    pub fn log_stats(&self) -> LogStats {
        self.log.stats()
    }

    /// A new queue id: time-ordered, unique within the process and across restarts.
    fn next_id(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{ms:011X}{n:08X}")
    }

    /// Stores a whole message we wrote ourselves (a DSN, an automatic answer): create,
    /// write, commit; its queue id.
    pub async fn store(&self, envelope: &Envelope, bytes: &[u8]) -> Result<String, SpoolError> {
        let mut incoming = self.create(envelope).await?;
        incoming.write(bytes).await?;
        incoming.commit().await
    }

    /// Starts storing a message with `envelope`; its body follows with
    /// [`Incoming::write`]. Nothing touches the disk until the message outgrows
    /// [`log::LOGGED_MAX`] or is committed.
    pub async fn create(&self, envelope: &Envelope) -> Result<Incoming, SpoolError> {
        let id = self.next_id();
        let mut env = serde_json::to_vec(envelope)?;
        env.push(b'\n');
        let envelope_len = env.len();
        Ok(Incoming {
            tmp_path: self.tmp.join(&id),
            body: Body::Memory(log::record_start(&id, &env, 4096)),
            id,
            queue_dir: self.queue.clone(),
            log: Arc::clone(&self.log),
            index: Arc::clone(&self.index),
            notify: Arc::clone(&self.notify),
            envelope_len,
            body_len: 0,
        })
    }
}

/// Runs file system calls on the blocking thread pool, in one trip: each trip costs two
/// thread switches, which at thousands of messages a second is most of the spool's CPU.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(io_err(path))
}

/// Makes a rename in `dir` durable ([`crate::durable::sync_dir`]).
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    let d = dir.to_path_buf();
    blocking(dir, move || {
        crate::durable::sync_dir(&d).map_err(|e| e.source)
    })
    .await
}

/// Where the body of a message being received goes.
enum Body {
    /// A log record being built: header, envelope, body so far.
    Memory(Vec<u8>),
    /// A file of its own under `tmp/`, and the bytes not yet written to it (up to
    /// [`WRITE_BATCH`]). The file is `None` only after a failed write (the message is then
    /// lost and can only be discarded).
    File(Option<File>, Vec<u8>),
}

/// A message being written to the spool.
pub struct Incoming {
    id: String,
    body: Body,
    tmp_path: PathBuf,
    queue_dir: PathBuf,
    log: Arc<log::Log>,
    index: Arc<Index>,
    notify: Arc<Notify>,
    envelope_len: usize,
    body_len: u64,
}

impl Incoming {
    /// The queue id the message will have.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Body bytes received so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Appends body bytes.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.body_len += chunk.len() as u64;
        match &mut self.body {
            Body::Memory(record) if record.len() + chunk.len() <= log::LOGGED_MAX => {
                record.extend_from_slice(chunk);
                return Ok(());
            }
            Body::Memory(record) => {
                // Too large for the log: it continues in a file of its own.
                let mut start = Vec::with_capacity(WRITE_BATCH.max(record.len()));
                start.extend_from_slice(MAGIC);
                start.extend_from_slice(&record[log::HEADER_LEN..]);
                start.extend_from_slice(chunk);
                let path = self.tmp_path.clone();
                let (file, mut buf) = blocking(&self.tmp_path, move || {
                    let mut file = File::create(&path)?;
                    file.write_all(&start)?;
                    Ok((file, start))
                })
                .await?;
                buf.clear();
                self.body = Body::File(Some(file), buf);
                return Ok(());
            }
            Body::File(file, buf) => {
                buf.extend_from_slice(chunk);
                if buf.len() < WRITE_BATCH {
                    return Ok(());
                }
                let mut f = take_file(file, &self.tmp_path)?;
                let bytes = std::mem::take(buf);
                let (f, mut bytes) = blocking(&self.tmp_path, move || {
                    f.write_all(&bytes)?;
                    Ok((f, bytes))
                })
                .await?;
                bytes.clear();
                *file = Some(f);
                *buf = bytes;
            }
        }
        Ok(())
    }

    /// Completes the message, makes it durable and queues it. Only after this returns may
    /// the message be acknowledged.
    ///
    /// A logged message is sealed and handed to the log writer, which answers after the
    /// `fdatasync` of its batch. A file of its own gets the remaining body, the trailer,
    /// `fdatasync`, the rename and the directory `fsync` in one trip to the blocking pool,
    /// in that order.
    pub async fn commit(mut self) -> Result<String, SpoolError> {
        match std::mem::replace(&mut self.body, Body::Memory(Vec::new())) {
            Body::Memory(mut record) => {
                log::seal(&mut record, self.envelope_len);
                self.log
                    .append_message(&self.id, record)
                    .await
                    .map_err(io_err(self.log.dir()))?;
            }
            Body::File(file, mut buf) => {
                let trailer = trailer(self.envelope_len as u64, self.body_len);
                let Some(mut file) = file else {
                    let _ = tokio::fs::remove_file(&self.tmp_path).await;
                    return Err(lost_file(&self.tmp_path));
                };
                buf.extend_from_slice(&trailer);
                let path = self.tmp_path.clone();
                let dest = self.queue_dir.join(&self.id);
                let queue_dir = self.queue_dir.clone();
                blocking(&self.tmp_path, move || {
                    let sealed = file.write_all(&buf).and_then(|()| file.sync_data());
                    drop(file);
                    if let Err(e) = sealed.and_then(|()| std::fs::rename(&path, &dest)) {
                        // Nothing was acknowledged: the partial file must not fill the disk.
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                    // Makes the rename durable; if that fails the client is told to try
                    // again, so this copy must not be delivered later as well.
                    if let Err(e) = crate::durable::sync_dir(&queue_dir) {
                        let _ = std::fs::remove_file(&dest);
                        return Err(e.source);
                    }
                    Ok(())
                })
                .await?;
            }
        }
        self.index.insert_new(&self.id);
        self.notify.notify_one();
        Ok(self.id)
    }

    /// Abandons the message: its temporary file, if it has one, is removed.
    pub async fn discard(self) {
        if let Body::File(file, _) = self.body {
            drop(file);
            if let Err(e) = tokio::fs::remove_file(&self.tmp_path).await {
                tracing::warn!(path = %self.tmp_path.display(), error = %e, "cannot remove abandoned spool file");
            }
        }
    }
}

/// The file of a message being written, or the error of the write that lost it.
fn take_file(file: &mut Option<File>, path: &Path) -> Result<File, SpoolError> {
    file.take().ok_or_else(|| lost_file(path))
}

fn lost_file(path: &Path) -> SpoolError {
    SpoolError::Io {
        path: path.to_path_buf(),
        source: io::Error::other("an earlier write to this file failed"),
    }
}

/// A complete message read back from the spool.
#[derive(Debug)]
pub struct StoredMessage {
    /// The queue id (the file name).
    pub id: String,
    /// The envelope.
    pub envelope: Envelope,
    /// The message bytes; only the first [`HEAD`] of them when `rest` is set.
    pub body: Vec<u8>,
    /// For a large message loaded for delivery ([`Spool::load`]): the whole body, left in
    /// its spool file and read piece by piece as it is sent. `body` then holds its head,
    /// which is enough for the header section.
    pub rest: Option<Spilled>,
}

/// How much of a large message [`Spool::load`] reads into memory: its head, for the
/// header section (what the loop check, the auto-reply and DSNs read).
pub const HEAD: usize = log::LOGGED_MAX;

/// A message body left in its spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled {
    /// The spool file.
    pub path: PathBuf,
    /// Where the body starts in it.
    pub offset: u64,
    /// The body's length.
    pub len: u64,
}

/// Reads a large message's envelope and head and checks its trailer, leaving the body in
/// the file (see [`StoredMessage::rest`]); a file of at most [`HEAD`] body bytes is read
/// whole.
fn load_head(id: &str, path: &Path) -> io::Result<Result<StoredMessage, TornFile>> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let fixed = (MAGIC.len() + TRAILER_LEN) as u64;
    if size < fixed {
        return Ok(Err(TornFile::BadTrailer));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, size - TRAILER_LEN as u64)?;
    if &trailer[..8] != TRAILER_MAGIC {
        return Ok(Err(TornFile::BadTrailer));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&trailer[8..16]);
    let env_len = u64::from_le_bytes(n);
    n.copy_from_slice(&trailer[16..24]);
    let body_len = u64::from_le_bytes(n);
    if env_len
        .checked_add(body_len)
        .and_then(|x| x.checked_add(fixed))
        != Some(size)
    {
        return Ok(Err(TornFile::BadTrailer));
    }
    if body_len <= HEAD as u64 {
        return Ok(parse_file_owned(id, std::fs::read(path)?));
    }
    let start = MAGIC.len() as u64 + env_len;
    let mut front = vec![0u8; (start as usize).saturating_add(HEAD)];
    file.read_exact_at(&mut front, 0)?;
    if !front.starts_with(MAGIC) {
        return Ok(Err(TornFile::BadMagic));
    }
    let envelope: Envelope = match serde_json::from_slice(&front[MAGIC.len()..start as usize]) {
        Ok(e) => e,
        Err(e) => return Ok(Err(TornFile::BadEnvelope(e.to_string()))),
    };
    front.drain(..start as usize);
    Ok(Ok(StoredMessage {
        id: id.to_string(),
        envelope,
        body: front,
        rest: Some(Spilled {
            path: path.to_path_buf(),
            offset: start,
            len: body_len,
        }),
    }))
}

/// The end of a spool file: it says the file was written whole.
fn trailer(envelope_len: u64, body_len: u64) -> [u8; TRAILER_LEN] {
    let mut trailer = [0u8; TRAILER_LEN];
    trailer[..8].copy_from_slice(TRAILER_MAGIC);
    trailer[8..16].copy_from_slice(&envelope_len.to_le_bytes());
    trailer[16..].copy_from_slice(&body_len.to_le_bytes());
    trailer
}

/// A whole spool file: magic, envelope line, body, trailer (what [`parse_file`] reads).
fn file_bytes(envelope: &Envelope, body: &[u8]) -> Result<Vec<u8>, SpoolError> {
    let mut env = serde_json::to_vec(envelope)?;
    env.push(b'\n');
    let mut out = Vec::with_capacity(MAGIC.len() + env.len() + body.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&env);
    out.extend_from_slice(body);
    out.extend_from_slice(&trailer(env.len() as u64, body.len() as u64));
    Ok(out)
}

/// Why a spool file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TornFile {
    /// The file does not start with the spool's magic line.
    #[error("not a spool file (bad magic)")]
    BadMagic,
    /// The trailer is missing or inconsistent: the file was not completely written.
    #[error("torn file: trailer missing or inconsistent with the file length")]
    BadTrailer,
    /// The envelope line is not valid JSON.
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    /// A record of the message log does not check (checksum, lengths, kind).
    #[error("damaged log record: {0}")]
    BadRecord(String),
}

/// Parses a spool file's bytes, checking its structure.
pub fn parse_file(id: &str, bytes: &[u8]) -> Result<StoredMessage, TornFile> {
    let (envelope, env_len, body_len) = parse_parts(bytes)?;
    let start = MAGIC.len() + env_len;
    Ok(StoredMessage {
        id: id.to_string(),
        envelope,
        body: bytes[start..start + body_len].to_vec(),
        rest: None,
    })
}

/// As [`parse_file`], taking the file's bytes and keeping the body in the same buffer
/// (no second copy of a large message when it is delivered).
pub fn parse_file_owned(id: &str, mut bytes: Vec<u8>) -> Result<StoredMessage, TornFile> {
    let (envelope, env_len, body_len) = parse_parts(&bytes)?;
    let start = MAGIC.len() + env_len;
    bytes.truncate(start + body_len);
    bytes.drain(..start);
    Ok(StoredMessage {
        id: id.to_string(),
        envelope,
        body: bytes,
        rest: None,
    })
}

/// Checks a spool file's structure: its envelope and the lengths of the envelope line and
/// of the body (which follows the magic line and the envelope).
fn parse_parts(bytes: &[u8]) -> Result<(Envelope, usize, usize), TornFile> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(TornFile::BadMagic)?;
    if rest.len() < TRAILER_LEN {
        return Err(TornFile::BadTrailer);
    }
    let (content, trailer) = rest.split_at(rest.len() - TRAILER_LEN);
    if &trailer[..8] != TRAILER_MAGIC {
        return Err(TornFile::BadTrailer);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&trailer[8..16]);
    let env_len = u64::from_le_bytes(n) as usize;
    n.copy_from_slice(&trailer[16..24]);
    let body_len = u64::from_le_bytes(n) as usize;
    if env_len.checked_add(body_len) != Some(content.len()) {
        return Err(TornFile::BadTrailer);
    }
    let envelope: Envelope = serde_json::from_slice(&content[..env_len])
        .map_err(|e| TornFile::BadEnvelope(e.to_string()))?;
    Ok((envelope, env_len, body_len))
}

/// Reads the message `id` from the queue.
pub fn read_message(
    spool: &Spool,
    id: &str,
) -> Result<Result<StoredMessage, TornFile>, SpoolError> {
    spool.read_blocking(id)
}

/// Parses a message record of the log.
fn parse_record(id: &str, record: log::Record) -> Result<StoredMessage, TornFile> {
    let envelope: Envelope = serde_json::from_slice(record.envelope())
        .map_err(|e| TornFile::BadEnvelope(e.to_string()))?;
    Ok(StoredMessage {
        id: id.to_string(),
        envelope,
        body: record.into_body(),
        rest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            direction: Direction::Inbound,
            received_at: "2026-01-01T00:00:00Z".into(),
            peer_addr: "127.0.0.1:1234".into(),
            helo: "smtp.peer-a.test.mssante.fr".into(),
            peer_dn: Some("CN=smtp.peer-a.test.mssante.fr".into()),
            peer_cn: Some("smtp.peer-a.test.mssante.fr".into()),
            peer_ptr: None,
            tls: Some(SessionTls {
                version: "TLSv1_3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
            }),
            mail_from: "a@peer-a.test.mssante.fr".into(),
            envid: None,
            ret_full: None,
            body_8bitmime: true,
            smtputf8: false,
            recipients: vec![Recipient {
                address: "b@gateway.test.mssante.fr".into(),
                notify: 0,
                orcpt: None,
            }],
        }
    }

    #[tokio::test]
    async fn committed_message_reads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut m = spool.create(&envelope()).await.unwrap();
        let body: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        m.write(&body[..1000]).await.unwrap();
        m.write(&body[1000..]).await.unwrap();
        let id = m.commit().await.unwrap();
        let stored = read_message(&spool, &id).unwrap().unwrap();
        assert_eq!(stored.envelope, envelope());
        assert_eq!(stored.body, body);
        assert!(std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn envelopes_spooled_before_typed_tls_still_read() {
        let mut json = serde_json::to_value(envelope()).unwrap();
        json["tls"] = "TLSv1_2 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into();
        json.as_object_mut().unwrap().remove("peer_cn");
        let old: Envelope = serde_json::from_value(json).unwrap();
        let tls = old.tls.expect("tls kept");
        assert_eq!(tls.version, "TLSv1_2");
        assert_eq!(tls.cipher, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        assert_eq!(old.peer_cn, None);
        let typed = serde_json::to_value(envelope()).unwrap();
        assert_eq!(typed["tls"]["version"], "TLSv1_3");
    }

    #[tokio::test]
    async fn every_truncation_of_a_file_of_its_own_is_detected_as_torn() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut m = spool.create(&envelope()).await.unwrap();
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        body.resize(log::LOGGED_MAX + 1, b'y');
        m.write(&body[..100]).await.unwrap();
        m.write(&body[100..]).await.unwrap();
        let id = m.commit().await.unwrap();
        let bytes = std::fs::read(spool.queue_dir().join(&id)).unwrap();
        assert!(parse_file(&id, &bytes).is_ok());
        let owned = parse_file_owned(&id, bytes.clone()).unwrap();
        assert_eq!(owned.body, parse_file(&id, &bytes).unwrap().body);
        assert_eq!(owned.body, body);
        for cut in 0..bytes.len() {
            assert!(parse_file(&id, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn discarded_message_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut m = spool.create(&envelope()).await.unwrap();
        m.write(b"partial").await.unwrap();
        m.discard().await;
        assert!(std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::read_dir(dir.path().join("queue"))
            .unwrap()
            .next()
            .is_none());
    }
}
