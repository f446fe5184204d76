//! The message log: where messages of up to [`LOGGED_MAX`] bytes are spooled, with group
//! commit.
//!
//! One writer thread appends records to the active segment (`log/<16 hex digits>.log`).
//! Every record handed to it while it waits for the disk goes into the next batch, and a
//! batch costs one `write` per record and one `fdatasync` for them all: at a thousand
//! messages a second the disk sees a few hundred syncs, not a thousand file creations,
//! renames and directory syncs. A commit is answered only after the `fdatasync` of its
//! batch returned, so the contract of the spool is unchanged: 250 only once the message
//! and its envelope are on stable storage.
//!
//! Record: `MSSREC01`, a kind byte, the 19-character queue id, the envelope length (u32
//! little-endian), the body length (u64 little-endian), the envelope (one JSON line), the
//! body, and a CRC-32 of everything after the magic. Kinds: a message, or *done* (the
//! message of that id was delivered, bounced or deleted; its record is dead).
//!
//! Segments are deleted oldest first, and only when no message of theirs is live: a
//! *done* record is only ever needed while the segment of its message exists, and that
//! segment is never newer than the one holding the *done* record. A long-deferred message
//! would pin every later segment; when few bytes of the oldest segment are still live,
//! its live records are appended again at the head and the segment is dropped.
//!
//! At recovery each segment is read in order. A record that does not check ends the
//! segment: if only zeros follow, they are the space of a batch that was never synced
//! (hence never acknowledged) and are dropped; otherwise the rest of the segment (an
//! unsynced batch cut short by a crash, or damage) is copied to `quarantine/` and
//! reported. Reading never resumes past a bad record by searching for the magic, since a
//! message body may contain one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use super::queue::is_message_name;

/// Messages up to this size (envelope and body) are appended to the log; larger ones are
/// written to a file of their own while they arrive, so that a session never holds more
/// than this in memory.
pub(crate) const LOGGED_MAX: usize = 256 * 1024;
/// A segment is closed once it holds this much, and the next record opens a new one.
const SEGMENT_SIZE: u64 = 64 << 20;
/// A batch stops growing at this many bytes (the rest waits for the next sync).
const BATCH_MAX: usize = 16 << 20;
/// The oldest segment is compacted when no more than this share of it is live.
const COMPACT_LIVE_FRACTION: u64 = 8;

const MAGIC: &[u8; 8] = b"MSSREC01";
const ID_LEN: usize = 19;
/// Magic, kind, id, envelope length, body length.
pub(crate) const HEADER_LEN: usize = 8 + 1 + ID_LEN + 4 + 8;
const CRC_LEN: usize = 4;
/// A larger envelope length is not one we wrote.
const ENVELOPE_MAX: u64 = 16 << 20;

const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;

/// Where a record is: its segment, its offset and its whole length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub seg: u64,
    pub offset: u64,
    pub len: u64,
}

/// The start of a message record, before its body: the header (lengths filled in by
/// [`seal`]) and the envelope.
pub(super) fn record_start(id: &str, envelope: &[u8], capacity: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(capacity.max(HEADER_LEN + envelope.len()));
    r.extend_from_slice(MAGIC);
    r.push(KIND_MESSAGE);
    r.extend_from_slice(&id_bytes(id));
    r.extend_from_slice(
        &u32::try_from(envelope.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    r.extend_from_slice(&0u64.to_le_bytes());
    r.extend_from_slice(envelope);
    r
}

/// Completes a record built by [`record_start`] and its body: fills in the body length and
/// appends the CRC.
pub(super) fn seal(record: &mut Vec<u8>, envelope_len: usize) {
    let body_len = (record.len() - HEADER_LEN - envelope_len) as u64;
    record[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&record[MAGIC.len()..]);
    record.extend_from_slice(&crc.to_le_bytes());
}

fn done_record(id: &str) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER_LEN + CRC_LEN);
    r.extend_from_slice(MAGIC);
    r.push(KIND_DONE);
    r.extend_from_slice(&id_bytes(id));
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&r[MAGIC.len()..]);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

/// Queue ids are 19 ASCII hex digits ([`is_message_name`]); anything else (never produced
/// by the spool) is padded or cut so that the layout holds.
fn id_bytes(id: &str) -> [u8; ID_LEN] {
    let mut out = [b'0'; ID_LEN];
    for (o, b) in out.iter_mut().zip(id.bytes()) {
        *o = b;
    }
    out
}

/// A record read back and checked.
#[derive(Debug)]
pub(super) struct Record {
    kind: u8,
    pub id: String,
    pub envelope_len: usize,
    /// The envelope and the body.
    pub payload: Vec<u8>,
}

/// Why a record does not check.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Bad {
    /// The file ends inside the record: a batch cut short.
    Truncated,
    /// Bytes are there but are not a record of ours.
    Corrupt(&'static str),
}

/// Parses the header at the start of `header`: (kind, id, envelope length, body length).
fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, String, u64, u64), Bad> {
    if &header[..8] != MAGIC {
        return Err(Bad::Corrupt("bad record magic"));
    }
    let kind = header[8];
    if kind != KIND_MESSAGE && kind != KIND_DONE {
        return Err(Bad::Corrupt("unknown record kind"));
    }
    let id = std::str::from_utf8(&header[9..9 + ID_LEN])
        .ok()
        .filter(|id| is_message_name(id))
        .ok_or(Bad::Corrupt("bad queue id"))?
        .to_string();
    let mut n4 = [0u8; 4];
    n4.copy_from_slice(&header[28..32]);
    let env_len = u64::from(u32::from_le_bytes(n4));
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&header[32..40]);
    let body_len = u64::from_le_bytes(n8);
    if env_len > ENVELOPE_MAX || (kind == KIND_DONE && env_len + body_len != 0) {
        return Err(Bad::Corrupt("impossible record lengths"));
    }
    Ok((kind, id, env_len, body_len))
}

/// Reads the record at the reader's position; `remaining` is how many bytes the file has
/// from there.
fn read_record(r: &mut impl Read, remaining: u64) -> Result<Record, Bad> {
    if remaining < HEADER_LEN as u64 {
        return Err(Bad::Truncated);
    }
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).map_err(|_| Bad::Truncated)?;
    let (kind, id, env_len, body_len) = parse_header(&header)?;
    let total = (HEADER_LEN as u64)
        .checked_add(env_len)
        .and_then(|n| n.checked_add(body_len))
        .and_then(|n| n.checked_add(CRC_LEN as u64))
        .ok_or(Bad::Corrupt("impossible record lengths"))?;
    if total > remaining {
        return Err(Bad::Truncated);
    }
    let payload_len =
        usize::try_from(env_len + body_len).map_err(|_| Bad::Corrupt("record too large"))?;
    let mut payload = vec![0u8; payload_len];
    r.read_exact(&mut payload).map_err(|_| Bad::Truncated)?;
    let mut crc = [0u8; CRC_LEN];
    r.read_exact(&mut crc).map_err(|_| Bad::Truncated)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&header[MAGIC.len()..]);
    h.update(&payload);
    if h.finalize() != u32::from_le_bytes(crc) {
        return Err(Bad::Corrupt("checksum mismatch"));
    }
    Ok(Record {
        kind,
        id,
        envelope_len: env_len as usize,
        payload,
    })
}

/// Reads the message record at `loc` in `dir`.
pub(super) fn read_at(dir: &Path, loc: Loc) -> io::Result<Record> {
    let file = File::open(segment_path(dir, loc.seg))?;
    let mut reader = io::BufReader::with_capacity(
        (loc.len as usize).min(1 << 20),
        ReadAt {
            file: &file,
            pos: loc.offset,
        },
    );
    match read_record(&mut reader, loc.len) {
        Ok(r) if r.kind == KIND_MESSAGE => Ok(r),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "log record is not a message",
        )),
        Err(Bad::Truncated) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "log record cut short",
        )),
        Err(Bad::Corrupt(why)) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
    }
}

/// A reader at an offset of a file, by `pread`.
struct ReadAt<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Record {
    /// The envelope line.
    pub fn envelope(&self) -> &[u8] {
        &self.payload[..self.envelope_len]
    }

    /// The message bytes, taking the record's buffer (no copy).
    pub fn into_body(mut self) -> Vec<u8> {
        self.payload.drain(..self.envelope_len);
        self.payload
    }
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016X}.log"))
}

fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(n) = segment_number(&entry?.file_name().to_string_lossy()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What a read of the whole log found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Live messages (a message record without a later *done* record), by id.
    pub live: HashMap<String, Loc>,
    /// Every segment seen, with its length.
    pub segments: Vec<(u64, u64)>,
    /// Segments that end in a record that does not check (segment, offset, why), with
    /// bytes other than zeros from there on.
    pub corrupt: Vec<(u64, u64, &'static str)>,
}

/// Reads every segment of the log in `dir` (which need not exist).
pub(super) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut out = Scan::default();
    let segs = match segments(dir) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for seg in segs {
        let path = segment_path(dir, seg);
        let file = match File::open(&path) {
            Ok(f) => f,
            // Dropped by the gateway meanwhile (a `queue list` beside it).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let mut reader = io::BufReader::with_capacity(1 << 20, &file);
        let mut offset = 0u64;
        while offset < size {
            match read_record(&mut reader, size - offset) {
                Ok(r) => {
                    let len = (HEADER_LEN + r.payload.len() + CRC_LEN) as u64;
                    if r.kind == KIND_MESSAGE {
                        out.live.insert(r.id, Loc { seg, offset, len });
                    } else {
                        out.live.remove(&r.id);
                    }
                    offset += len;
                }
                Err(bad) => {
                    // Zeros are space the file system gave a write that never completed:
                    // a batch that was never synced, hence never acknowledged.
                    if !only_zeros(&file, offset, size)? {
                        let why = match bad {
                            Bad::Truncated => "record cut short",
                            Bad::Corrupt(why) => why,
                        };
                        out.corrupt.push((seg, offset, why));
                    }
                    break;
                }
            }
        }
        out.segments.push((seg, size));
    }
    Ok(out)
}

/// Whether `file` holds only zero bytes from `from` to `to` (space the file system gave a
/// write that never completed).
fn only_zeros(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from;
    while pos < to {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Copies the damaged end of a segment to `quarantine/` for an operator; its name.
pub(super) fn quarantine_tail(
    dir: &Path,
    quarantine: &Path,
    seg: u64,
    offset: u64,
) -> io::Result<String> {
    let name = format!("{seg:016X}.log@{offset}");
    let mut from = File::open(segment_path(dir, seg))?;
    std::io::Seek::seek(&mut from, io::SeekFrom::Start(offset))?;
    let mut to = File::create(quarantine.join(&name))?;
    io::copy(&mut from, &mut to)?;
    to.sync_all()?;
    crate::durable::sync_dir(quarantine).map_err(|e| e.source)?;
    Ok(name)
}

/// The live messages of each segment, and where each live message is.
#[derive(Debug, Default)]
struct Book {
    locs: HashMap<String, Loc>,
    /// Every segment not yet deleted, with its live messages.
    members: BTreeMap<u64, HashSet<String>>,
    /// The length of each segment.
    sizes: HashMap<u64, u64>,
    /// The bytes of live records in each segment (kept as records come and go: deciding
    /// whether to compact must not walk a segment's records at every batch).
    live_bytes: HashMap<u64, u64>,
    /// The segment being appended to.
    active: Option<u64>,
}

impl Book {
    fn add(&mut self, id: String, loc: Loc) {
        if let Some(old) = self.locs.insert(id.clone(), loc) {
            self.leave(&id, old);
        }
        *self.live_bytes.entry(loc.seg).or_default() += loc.len;
        self.members.entry(loc.seg).or_default().insert(id);
    }

    fn forget(&mut self, id: &str) {
        if let Some(old) = self.locs.remove(id) {
            self.leave(id, old);
        }
    }

    /// `id` is no longer at `old`.
    fn leave(&mut self, id: &str, old: Loc) {
        if let Some(m) = self.members.get_mut(&old.seg) {
            m.remove(id);
        }
        if let Some(b) = self.live_bytes.get_mut(&old.seg) {
            *b = b.saturating_sub(old.len);
        }
    }

    /// Segments that can go: the oldest ones, up to the first with a live message, never
    /// the active one.
    fn droppable(&self) -> Vec<u64> {
        self.members
            .iter()
            .take_while(|(seg, live)| live.is_empty() && Some(**seg) != self.active)
            .map(|(seg, _)| *seg)
            .collect()
    }

    /// The oldest segment, when it is worth moving its live records to the head: not the
    /// active one, at least two segments behind it, and no more than an eighth of its
    /// bytes live (the stragglers of a segment otherwise delivered, not a backlog, which
    /// would only be copied again and again).
    fn to_compact(&self) -> Option<(u64, Vec<(String, Loc)>)> {
        let (seg, live) = self.members.iter().next()?;
        if Some(*seg) == self.active || self.members.len() < 3 || live.is_empty() {
            return None;
        }
        let bytes = self.live_bytes.get(seg).copied().unwrap_or(0);
        let size = self.sizes.get(seg).copied().unwrap_or(0);
        if bytes.saturating_mul(COMPACT_LIVE_FRACTION) > size {
            return None;
        }
        let locs = live
            .iter()
            .filter_map(|id| self.locs.get(id).map(|l| (id.clone(), *l)))
            .collect();
        Some((*seg, locs))
    }
}

/// A record handed to the writer, and where to say it is durable.
struct Job {
    id: String,
    record: Vec<u8>,
    reply: oneshot::Sender<io::Result<()>>,
}

/// The log of one spool directory.
#[derive(Debug)]
pub(super) struct Log {
    dir: PathBuf,
    /// [`SEGMENT_SIZE`], smaller in tests.
    segment_size: u64,
    book: Arc<Mutex<Book>>,
    /// Started at the first append: `queue` commands open the spool without writing.
    writer: OnceLock<mpsc::Sender<Job>>,
    /// What the writer did so far.
    stats: Arc<Mutex<LogStats>>,
}

/// What the writer did, for the metrics and the benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Syncs of the log (one per batch).
    pub syncs: u64,
    /// Records written.
    pub records: u64,
}

impl Log {
    pub(super) fn new(dir: PathBuf) -> Log {
        Log::with_segment_size(dir, SEGMENT_SIZE)
    }

    fn with_segment_size(dir: PathBuf, segment_size: u64) -> Log {
        Log {
            dir,
            segment_size,
            book: Arc::default(),
            writer: OnceLock::new(),
            stats: Arc::default(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes what recovery found: the live messages and every segment.
    pub(super) fn adopt(&self, scan: &Scan, live: impl Iterator<Item = (String, Loc)>) {
        let mut book = lock(&self.book);
        for (seg, size) in &scan.segments {
            book.members.entry(*seg).or_default();
            book.sizes.insert(*seg, *size);
        }
        for (id, loc) in live {
            book.add(id, loc);
        }
    }

    /// Drops segments with nothing live (at recovery, before the writer runs).
    pub(super) fn drop_dead_segments(&self) -> io::Result<()> {
        let dead = lock(&self.book).droppable();
        delete_segments(&self.dir, &self.book, &dead)
    }

    /// Where the live message `id` is, if it is in the log.
    pub(super) fn loc(&self, id: &str) -> Option<Loc> {
        lock(&self.book).locs.get(id).copied()
    }

    /// Forgets `id` without a record (a `queue delete` tombstone already says it is gone).
    pub(super) fn forget(&self, id: &str) {
        lock(&self.book).forget(id);
    }

    pub(super) fn stats(&self) -> LogStats {
        *lock(&self.stats)
    }

    /// Appends a sealed message record; returns once it is on stable storage.
    pub(super) async fn append_message(&self, id: &str, record: Vec<u8>) -> io::Result<()> {
        self.submit(id, record).await
    }

    /// Records that `id` is done; returns once that is on stable storage.
    pub(super) async fn append_done(&self, id: &str) -> io::Result<()> {
        self.submit(id, done_record(id)).await
    }

    async fn submit(&self, id: &str, record: Vec<u8>) -> io::Result<()> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id: id.to_string(),
            record,
            reply,
        };
        let sender = self.writer()?;
        if sender.send(job).is_err() {
            return Err(io::Error::other("the spool log writer has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the spool log writer has stopped")))
    }

    fn writer(&self) -> io::Result<&mpsc::Sender<Job>> {
        if let Some(w) = self.writer.get() {
            return Ok(w);
        }
        std::fs::create_dir_all(&self.dir)?;
        let first = segments(&self.dir)?.last().map_or(1, |n| n + 1);
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: self.dir.clone(),
            book: Arc::clone(&self.book),
            segment_size: self.segment_size,
            next_seg: first,
            active: None,
            stats: LogStats::default(),
        };
        let shared = Arc::clone(&self.stats);
        std::thread::Builder::new()
            .name("spool-log".into())
            .spawn(move || writer.run(&rx, &shared))?;
        // Only one writer per log: a racing caller's thread finds its channel closed
        // at once and exits.
        let _ = self.writer.set(tx);
        self.writer
            .get()
            .ok_or_else(|| io::Error::other("the spool log writer did not start"))
    }
}

/// Locks `m`. The book and the counters are changed whole under their locks, never left
/// half-updated before a panic could occur, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Deletes `segs` (oldest first) and makes that durable before they leave the book, so
/// that no *done* record disappears before the record it closes.
fn delete_segments(dir: &Path, book: &Mutex<Book>, segs: &[u64]) -> io::Result<()> {
    if segs.is_empty() {
        return Ok(());
    }
    for seg in segs {
        match std::fs::remove_file(segment_path(dir, *seg)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    crate::durable::sync_dir(dir).map_err(|e| e.source)?;
    let mut b = lock(book);
    for seg in segs {
        b.members.remove(seg);
        b.sizes.remove(seg);
        b.live_bytes.remove(seg);
    }
    Ok(())
}

/// The writer thread's own state.
struct Writer {
    dir: PathBuf,
    book: Arc<Mutex<Book>>,
    segment_size: u64,
    next_seg: u64,
    /// The segment being appended to, and its length.
    active: Option<(u64, File, u64)>,
    stats: LogStats,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Job>, shared: &Mutex<LogStats>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].record.len();
            while bytes < BATCH_MAX {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.record.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let written = self.write_batch(&batch);
            if let Ok(mut s) = shared.lock() {
                *s = self.stats;
            }
            match written {
                Ok(locs) => {
                    {
                        let mut book = lock(&self.book);
                        for (job, loc) in batch.iter().zip(locs) {
                            if job.record[8] == KIND_MESSAGE {
                                book.add(job.id.clone(), loc);
                            } else {
                                book.forget(&job.id);
                            }
                        }
                    }
                    for job in batch {
                        let _ = job.reply.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the spool log; the batch is refused and a new segment started");
                    // What was written of the batch is garbage after the last good record:
                    // nothing may follow it in that segment.
                    self.active = None;
                    for job in batch {
                        let _ = job.reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
            if let Err(e) = self.tidy() {
                tracing::warn!(error = %e, "cannot drop or compact old spool log segments; retried after the next batch");
            }
        }
    }

    /// Appends the batch and syncs it once; where each record went.
    fn write_batch(&mut self, batch: &[Job]) -> io::Result<Vec<Loc>> {
        let mut locs = Vec::with_capacity(batch.len());
        for job in batch {
            let (seg, file, len) = self.active_segment()?;
            let seg = *seg;
            let offset = *len;
            file.write_all(&job.record)?;
            *len += job.record.len() as u64;
            locs.push(Loc {
                seg,
                offset,
                len: job.record.len() as u64,
            });
        }
        if let Some((seg, file, len)) = &self.active {
            file.sync_data()?;
            lock(&self.book).sizes.insert(*seg, *len);
        }
        self.stats.syncs += 1;
        self.stats.records += batch.len() as u64;
        Ok(locs)
    }

    /// The segment to append to, opening a new one when there is none or it is full. A new
    /// segment's directory entry is made durable before anything in it is acknowledged.
    fn active_segment(&mut self) -> io::Result<&mut (u64, File, u64)> {
        let full = self
            .active
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.segment_size);
        if full {
            if let Some((seg, file, len)) = self.active.take() {
                // The records of the current batch written to it so far are synced here:
                // the batch's own sync is for the new segment.
                file.sync_data()?;
                lock(&self.book).sizes.insert(seg, len);
            }
            let (seg, file) = loop {
                let seg = self.next_seg;
                self.next_seg += 1;
                match OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(segment_path(&self.dir, seg))
                {
                    Ok(f) => break (seg, f),
                    // Another spool in this directory (never in a running gateway, whose
                    // spool is its own) took that number.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            crate::durable::sync_dir(&self.dir).map_err(|e| e.source)?;
            let mut book = lock(&self.book);
            book.members.entry(seg).or_default();
            book.sizes.insert(seg, 0);
            book.active = Some(seg);
            drop(book);
            self.active = Some((seg, file, 0));
        }
        self.active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active segment"))
    }

    /// Drops dead segments; moves the live records of a mostly dead oldest segment.
    fn tidy(&mut self) -> io::Result<()> {
        let compact = lock(&self.book).to_compact();
        if let Some((seg, live)) = compact {
            let mut jobs = Vec::with_capacity(live.len());
            let old = File::open(segment_path(&self.dir, seg))?;
            for (id, loc) in &live {
                let mut record = vec![0u8; loc.len as usize];
                old.read_exact_at(&mut record, loc.offset)?;
                let (reply, _) = oneshot::channel();
                jobs.push(Job {
                    id: id.clone(),
                    record,
                    reply,
                });
            }
            let locs = self.write_batch(&jobs)?;
            let mut book = lock(&self.book);
            for (job, loc) in jobs.iter().zip(locs) {
                // Only if it is still live and still where it was copied from.
                if book.locs.get(&job.id).is_some_and(|l| l.seg == seg) {
                    book.add(job.id.clone(), loc);
                }
            }
            drop(book);
            tracing::info!(
                segment = seg,
                moved = jobs.len(),
                "spool log segment compacted"
            );
        }
        let dead = lock(&self.book).droppable();
        delete_segments(&self.dir, &self.book, &dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> String {
        format!("{n:019X}")
    }

    fn message(n: usize, body: &[u8]) -> Vec<u8> {
        let envelope = format!("{{\"n\":{n}}}\n");
        let mut r = record_start(&id(n), envelope.as_bytes(), 0);
        r.extend_from_slice(body);
        seal(&mut r, envelope.len());
        r
    }

    fn segment_files(dir: &Path) -> Vec<u64> {
        segments(dir).unwrap()
    }

    #[tokio::test]
    async fn records_read_back_and_a_restart_sees_only_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::new(dir.path().to_path_buf()));
        // Concurrent commits: they share the syncs of the batches they fall into.
        let mut appends = tokio::task::JoinSet::new();
        for n in 0..40 {
            let log = Arc::clone(&log);
            appends.spawn(async move {
                log.append_message(&id(n), message(n, format!("body {n}\r\n").as_bytes()))
                    .await
            });
        }
        while let Some(r) = appends.join_next().await {
            r.unwrap().unwrap();
        }
        for n in (0..40).step_by(2) {
            log.append_done(&id(n)).await.unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.records, 60);
        assert!(stats.syncs >= 1 && stats.syncs <= 60);
        let scan = scan(dir.path()).unwrap();
        assert!(scan.corrupt.is_empty());
        let mut live: Vec<&String> = scan.live.keys().collect();
        live.sort();
        let odd: Vec<String> = (1..40).step_by(2).map(id).collect();
        assert_eq!(live, odd.iter().collect::<Vec<_>>());
        for n in (1..40).step_by(2) {
            let loc = scan.live[&id(n)];
            assert_eq!(log.loc(&id(n)), Some(loc));
            let r = read_at(dir.path(), loc).unwrap();
            assert_eq!(r.envelope(), format!("{{\"n\":{n}}}\n").as_bytes());
            assert_eq!(r.into_body(), format!("body {n}\r\n").into_bytes());
        }
    }

    #[tokio::test]
    async fn dead_segments_are_dropped_oldest_first_and_a_pinned_one_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::with_segment_size(dir.path().to_path_buf(), 8192);
        let body = vec![b'x'; 300];
        for n in 0..100 {
            log.append_message(&id(n), message(n, &body)).await.unwrap();
        }
        let first = log.loc(&id(0)).unwrap().seg;
        assert!(segment_files(dir.path()).len() >= 4);
        // A backlog (every record live) is never copied: only a mostly dead segment is.
        let locs: Vec<Option<Loc>> = (0..100).map(|n| log.loc(&id(n))).collect();
        log.append_done(&id(99)).await.unwrap();
        assert_eq!(
            (0..99).map(|n| log.loc(&id(n))).collect::<Vec<_>>(),
            locs[..99]
        );
        // Everything is delivered but message 0, deferred for days: it alone would pin
        // every segment written after it.
        for n in 1..100 {
            log.append_done(&id(n)).await.unwrap();
        }
        log.append_done(&id(1)).await.unwrap();
        let moved = log.loc(&id(0)).unwrap();
        assert_ne!(moved.seg, first, "the pinned record was moved to the head");
        let left = segment_files(dir.path());
        assert!(left.len() <= 2, "segments left: {left:?}");
        assert!(!left.contains(&first));
        // A restart finds exactly message 0, intact.
        let scan = scan(dir.path()).unwrap();
        assert!(scan.corrupt.is_empty());
        assert_eq!(scan.live.keys().collect::<Vec<_>>(), vec![&id(0)]);
        let r = read_at(dir.path(), scan.live[&id(0)]).unwrap();
        assert_eq!(r.into_body(), body);
    }

    #[tokio::test]
    async fn an_unsynced_tail_is_dropped_and_anything_else_that_does_not_check_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path().to_path_buf());
        // Message 2's body holds a well-formed record of its own: after damage to message
        // 1, reading must not resume there.
        let planted = message(99, b"planted");
        let mut bodies = vec![b"one".to_vec(), b"two".to_vec(), planted.clone()];
        bodies.push(b"four".to_vec());
        for (n, b) in bodies.iter().enumerate() {
            log.append_message(&id(n), message(n, b)).await.unwrap();
        }
        let seg = segment_files(dir.path())[0];
        let path = segment_path(dir.path(), seg);
        let whole = std::fs::read(&path).unwrap();
        drop(log);

        // A batch never synced: zeros the file system gave it are dropped silently; part
        // of a record is reported (it cannot be told from damage).
        for (tail, report) in [
            (vec![0u8; 500], vec![]),
            (
                message(7, b"seven")[..30].to_vec(),
                vec![(seg, whole.len() as u64, "record cut short")],
            ),
        ] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let s = scan(dir.path()).unwrap();
            assert_eq!(s.corrupt, report);
            assert_eq!(s.live.len(), 4);
        }

        // Every single-byte change of message 1 is caught; 0 stays, 1 and later are lost
        // to quarantine, and the planted record is never read.
        let loc1 = scan(dir.path()).unwrap().live[&id(1)];
        for i in loc1.offset..loc1.offset + loc1.len {
            let mut bytes = whole.clone();
            bytes[i as usize] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            let s = scan(dir.path()).unwrap();
            assert!(!s.live.contains_key(&id(1)), "flip at {i} accepted");
            assert!(
                !s.live.contains_key(&id(99)),
                "planted record read (flip at {i})"
            );
            assert!(s.live.contains_key(&id(0)));
            assert_eq!(s.corrupt.len(), 1, "flip at {i}");
            assert_eq!(s.corrupt[0].1, loc1.offset, "flip at {i}");
            assert_eq!(s.live.len(), 1, "flip at {i}");
        }
        let mut bytes = whole.clone();
        bytes[(loc1.offset + loc1.len - 5) as usize] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!(s.corrupt, vec![(seg, loc1.offset, "checksum mismatch")]);
        let q = tempfile::tempdir().unwrap();
        let name = quarantine_tail(dir.path(), q.path(), seg, loc1.offset).unwrap();
        assert_eq!(
            std::fs::read(q.path().join(name)).unwrap(),
            bytes[loc1.offset as usize..]
        );
    }
}
