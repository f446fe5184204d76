//! The queue around the message files: per-message delivery state, the in-memory index of
//! due messages, recovery at start and the operations of the relay and of `queue` commands.
//!
//! A message file is written once and never rewritten. What changes during delivery
//! (attempts, next due time, last error, recipients still pending) lives beside it in
//! `state/<id>.json`, replaced atomically (temporary file, fsync, rename, fsync dir).
//! A message without a state file has never been tried and is due at once.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::log::{self, Loc};
use super::{
    io_err, parse_file, parse_record, sync_dir, Envelope, Spool, SpoolError, StoredMessage,
    TornFile,
};

/// Where a queued message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// A file of its own in `queue/`.
    File,
    /// A record of the message log.
    Log(Loc),
}

/// What the relay knows about a message between attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageState {
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (Unix milliseconds); 0 means now.
    pub next_due_unix_ms: u64,
    /// Why the last attempt did not finish the message.
    pub last_error: Option<String>,
    /// Recipients still to deliver; `None` means every recipient of the envelope. Delivered
    /// and bounced recipients are removed, so a retry never delivers twice to the same one.
    pub pending: Option<Vec<String>>,
    /// A "delayed" DSN was already sent for this message (RFC 3464: at most once).
    pub delay_notified: bool,
    /// `queue delete` removed it while another process owned the spool: a record in the
    /// message log cannot be unlinked, so its state says it is gone and it is never
    /// delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl MessageState {
    /// The recipients still to deliver, given the message's envelope.
    pub fn pending_recipients(&self, envelope: &Envelope) -> Vec<String> {
        match &self.pending {
            Some(p) => p.clone(),
            None => envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
        }
    }
}

/// One slot of the in-memory index.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Due time, Unix milliseconds.
    due_ms: u64,
    /// Acceptance time, from the queue id.
    received_ms: u64,
    /// A worker is delivering it: not handed out again until released.
    claimed: bool,
    /// Insertion order, so that a refresh that listed the directory before a commit does
    /// not drop the committed message.
    added_seq: u64,
    /// A state file may exist: false for a message committed by this process and never
    /// deferred, whose state is the default (no file to open at each delivery).
    has_state: bool,
}

/// The index proper: every queued message by id, the unclaimed ones ordered by due time
/// (then age), and all by age. Claiming the next due messages, the time to the next one,
/// the depth and the oldest age cost O(log n) at most: nothing on the message path walks
/// the whole queue, so a large backlog does not slow intake.
#[derive(Debug, Default)]
struct Slots {
    by_id: HashMap<String, Slot>,
    /// (due, received, id) of the unclaimed messages.
    due: BTreeSet<(u64, u64, String)>,
    /// (received, id) of every message.
    by_age: BTreeSet<(u64, String)>,
}

impl Slots {
    fn insert(&mut self, id: String, slot: Slot) {
        if let Some(old) = self.by_id.get(&id).copied() {
            self.forget(&id, old);
        }
        if !slot.claimed {
            self.due.insert((slot.due_ms, slot.received_ms, id.clone()));
        }
        self.by_age.insert((slot.received_ms, id.clone()));
        self.by_id.insert(id, slot);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.forget(id, old);
        }
    }

    /// Drops `id`'s entries from the ordered sets.
    fn forget(&mut self, id: &str, slot: Slot) {
        if !slot.claimed {
            self.due
                .remove(&(slot.due_ms, slot.received_ms, id.to_string()));
        }
        self.by_age.remove(&(slot.received_ms, id.to_string()));
    }

    /// Changes `id`'s slot with `f` (unknown ids are ignored).
    fn update(&mut self, id: &str, f: impl FnOnce(&mut Slot)) {
        if let Some(mut slot) = self.by_id.get(id).copied() {
            f(&mut slot);
            self.insert(id.to_string(), slot);
        }
    }

    /// Claims up to `max` unclaimed messages due at `now`, earliest due first.
    fn claim(&mut self, now: u64, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((due, _, _)) = self.due.first() else {
                break;
            };
            if *due > now {
                break;
            }
            let Some((_, _, id)) = self.due.pop_first() else {
                break;
            };
            if let Some(slot) = self.by_id.get_mut(&id) {
                slot.claimed = true;
            }
            out.push(id);
        }
        out
    }
}

/// Queued messages by id. The lock is held only for map operations, never across I/O.
#[derive(Debug, Default)]
pub(super) struct Index {
    slots: Mutex<Slots>,
    /// Ticks at each commit and at the start of each refresh.
    seq: AtomicU64,
}

impl Index {
    fn with<R>(&self, f: impl FnOnce(&mut Slots) -> R) -> R {
        // A panic while holding this lock cannot leave the sets inconsistent with the map
        // in a way that loses a message (each operation re-inserts what it removed), so a
        // poisoned lock is still usable.
        let mut g = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// A freshly committed message: due now.
    pub(super) fn insert_new(&self, id: &str) {
        let received_ms = id_time_ms(id).unwrap_or_else(|| unix_ms(SystemTime::now()));
        let added_seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.with(|m| {
            m.insert(
                id.to_string(),
                Slot {
                    due_ms: 0,
                    received_ms,
                    claimed: false,
                    added_seq,
                    has_state: false,
                },
            )
        });
    }
}

/// What recovery found at start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Complete messages put back in the queue.
    pub requeued: usize,
    /// Torn files moved to `quarantine/`, with the reason.
    pub quarantined: Vec<(String, String)>,
    /// Files removed from `tmp/` (never acknowledged).
    pub tmp_removed: usize,
}

/// Queue depth and age, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    /// Messages queued.
    pub messages: usize,
    /// Age of the oldest one.
    pub oldest_age: Duration,
}

/// One queued message as `queue list` shows it.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    /// The queue id.
    pub id: String,
    /// File size in bytes.
    pub size: u64,
    /// The envelope, when the file is complete.
    pub envelope: Option<Envelope>,
    /// Why the file is unusable, when it is torn.
    pub torn: Option<String>,
    /// Its delivery state.
    pub state: MessageState,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The acceptance time encoded in a queue id (its first 11 hex digits are Unix ms).
pub fn id_time_ms(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..11)?, 16).ok()
}

/// Whether `name` is a queue id (19 hex digits): anything else is refused by the `queue`
/// commands, so that an id never becomes a path outside the spool.
pub fn is_message_name(name: &str) -> bool {
    name.len() == 19 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Spool {
    pub(super) fn state_path(&self, id: &str) -> std::path::PathBuf {
        self.state.join(format!("{id}.json"))
    }

    /// Where `id` is: the log as this process knows it, a file of its own, or, for a
    /// `queue` command beside a running gateway, the log as it is on disk.
    pub(super) fn place(&self, id: &str) -> Result<Option<Place>, SpoolError> {
        if let Some(loc) = self.log.loc(id) {
            return Ok(Some(Place::Log(loc)));
        }
        if self.queue.join(id).is_file() {
            return Ok(Some(Place::File));
        }
        let scan = log::scan(self.log.dir()).map_err(io_err(self.log.dir()))?;
        Ok(scan.live.get(id).map(|loc| Place::Log(*loc)))
    }

    /// Rebuilds the queue after a start or a crash: removes `tmp/` leftovers (never
    /// acknowledged), re-queues every complete message with its saved state, moves torn
    /// files and damaged log tails into `quarantine/`, drops log segments with nothing
    /// live and removes state files whose message is gone. Run once, by the gateway that
    /// owns the spool, before it accepts or delivers anything.
    pub fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        let mut report = RecoveryReport::default();
        for entry in std::fs::read_dir(&self.tmp).map_err(io_err(&self.tmp))? {
            let entry = entry.map_err(io_err(&self.tmp))?;
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            report.tmp_removed += 1;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.queue).map_err(io_err(&self.queue))? {
            let entry = entry.map_err(io_err(&self.queue))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            match parse_file(&name, &bytes) {
                Ok(_) if is_message_name(&name) => found.push(name),
                other => {
                    let why = match other {
                        Ok(_) => "unexpected file name in the queue".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let dest = self.quarantine.join(&name);
                    std::fs::rename(&path, &dest).map_err(io_err(&dest))?;
                    tracing::warn!(queue_id = %name, reason = %why, quarantine = %dest.display(), "torn spool file quarantined; it will not be delivered");
                    report.quarantined.push((name, why));
                }
            }
        }
        if !report.quarantined.is_empty() {
            sync_dir_blocking(&self.queue)?;
            sync_dir_blocking(&self.quarantine)?;
        }
        let log_dir = self.log.dir();
        let scan = log::scan(log_dir).map_err(io_err(log_dir))?;
        for &(seg, offset, why) in &scan.corrupt {
            let name = log::quarantine_tail(log_dir, &self.quarantine, seg, offset)
                .map_err(io_err(&self.quarantine))?;
            tracing::error!(segment = seg, offset, reason = why, quarantine = %self.quarantine.join(&name).display(), "damaged spool log: the records after this point are copied to quarantine and will not be delivered");
            report.quarantined.push((name, why.to_string()));
        }
        for entry in std::fs::read_dir(&self.state).map_err(io_err(&self.state))? {
            let entry = entry.map_err(io_err(&self.state))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name
                .strip_suffix(".json")
                .is_some_and(|id| scan.live.contains_key(id) || self.queue.join(id).is_file());
            if !keep {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        let mut logged = Vec::new();
        for (id, loc) in &scan.live {
            let state = self.read_state_blocking(id)?;
            if !state.deleted {
                logged.push((id.clone(), *loc, state.next_due_unix_ms));
            }
        }
        self.log
            .adopt(&scan, logged.iter().map(|(id, loc, _)| (id.clone(), *loc)));
        self.log.drop_dead_segments().map_err(io_err(log_dir))?;
        let mut queued = Vec::with_capacity(found.len() + logged.len());
        for id in found {
            let due = self.read_state_blocking(&id)?.next_due_unix_ms;
            queued.push((id, due));
        }
        queued.extend(logged.into_iter().map(|(id, _, due)| (id, due)));
        for (id, due_ms) in queued {
            let received_ms = id_time_ms(&id).unwrap_or(0);
            self.index.with(|m| {
                m.insert(
                    id,
                    Slot {
                        due_ms,
                        received_ms,
                        claimed: false,
                        added_seq: 0,
                        has_state: true,
                    },
                )
            });
            report.requeued += 1;
        }
        Ok(report)
    }

    /// Re-reads the queue and state directories to pick up what `queue retry` and
    /// `queue delete` changed while the gateway runs. Messages being delivered are left
    /// alone.
    pub fn refresh(&self) -> Result<(), SpoolError> {
        let mark = self.index.seq.fetch_add(1, Ordering::SeqCst);
        let mut on_disk = HashMap::new();
        for entry in std::fs::read_dir(&self.queue).map_err(io_err(&self.queue))? {
            let entry = entry.map_err(io_err(&self.queue))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_message_name(&name) {
                let due = self.read_state_blocking(&name)?.next_due_unix_ms;
                on_disk.insert(name, due);
            }
        }
        // Logged messages whose state a `queue` command may have written.
        let mut logged = HashMap::new();
        for entry in std::fs::read_dir(&self.state).map_err(io_err(&self.state))? {
            let entry = entry.map_err(io_err(&self.state))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if self.log.loc(id).is_some() {
                    logged.insert(id.to_string(), self.read_state_blocking(id)?);
                }
            }
        }
        let deleted = self.index.with(|m| {
            let gone: Vec<String> = m
                .by_id
                .iter()
                .filter(|(id, slot)| {
                    !(slot.claimed
                        || slot.added_seq > mark
                        || on_disk.contains_key(*id)
                        || self.log.loc(id).is_some())
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                m.remove(&id);
            }
            for (id, due) in on_disk {
                match m.by_id.get(&id).copied() {
                    Some(slot) if slot.claimed => {}
                    Some(_) => m.update(&id, |s| s.due_ms = due),
                    None => {
                        let received_ms = id_time_ms(&id).unwrap_or(0);
                        m.insert(
                            id,
                            Slot {
                                due_ms: due,
                                received_ms,
                                claimed: false,
                                added_seq: mark,
                                has_state: true,
                            },
                        );
                    }
                }
            }
            let mut deleted = Vec::new();
            for (id, state) in logged {
                match m.by_id.get(&id).copied() {
                    Some(slot) if slot.claimed => {}
                    Some(_) if state.deleted => {
                        m.remove(&id);
                        deleted.push(id);
                    }
                    Some(_) => m.update(&id, |s| {
                        s.due_ms = state.next_due_unix_ms;
                        s.has_state = true;
                    }),
                    None => {}
                }
            }
            deleted
        });
        // Their tombstone is durable: the log needs no record of it.
        for id in deleted {
            self.log.forget(&id);
        }
        Ok(())
    }

    /// Claims every message due at `now`, earliest due first; each stays claimed until
    /// [`Spool::complete`], [`Spool::defer`], [`Spool::bounce`] or [`Spool::release`].
    pub fn next_due(&self, now: SystemTime) -> Vec<String> {
        self.claim_due(now, usize::MAX)
    }

    /// Claims at most `max` messages due at `now` (as many as the relay has free delivery
    /// slots), earliest due first.
    pub fn claim_due(&self, now: SystemTime, max: usize) -> Vec<String> {
        let now = unix_ms(now);
        self.index.with(|m| m.claim(now, max))
    }

    /// How long until the next unclaimed message is due (zero if one is due already).
    pub fn time_to_next(&self, now: SystemTime) -> Option<Duration> {
        let now = unix_ms(now);
        self.index.with(|m| {
            m.due
                .first()
                .map(|(due, _, _)| Duration::from_millis(due.saturating_sub(now)))
        })
    }

    /// Queue depth and the age of the oldest message.
    pub fn summary(&self, now: SystemTime) -> QueueSummary {
        let now = unix_ms(now);
        self.index.with(|m| QueueSummary {
            messages: m.by_id.len(),
            oldest_age: m
                .by_age
                .first()
                .map(|(received, _)| Duration::from_millis(now.saturating_sub(*received)))
                .unwrap_or_default(),
        })
    }

    /// Reads a queued message for delivery: a large one's body stays in its file (see
    /// [`StoredMessage::rest`]).
    pub async fn load(&self, id: &str) -> Result<Result<StoredMessage, TornFile>, SpoolError> {
        if self.log.loc(id).is_none() {
            let path = self.queue.join(id);
            let key = id.to_string();
            let at = path.clone();
            return tokio::task::spawn_blocking(move || super::load_head(&key, &at))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
                .map_err(io_err(&path));
        }
        let log = std::sync::Arc::clone(&self.log);
        let key = id.to_string();
        let dir = self.log.dir().to_path_buf();
        tokio::task::spawn_blocking(move || read_logged(&log, &key))
            .await
            .unwrap_or_else(|e| Err(io_err(&dir)(io::Error::other(e))))
    }

    /// As [`Spool::load`], for callers that may block (`queue` commands).
    pub(super) fn read_blocking(
        &self,
        id: &str,
    ) -> Result<Result<StoredMessage, TornFile>, SpoolError> {
        match self.place(id)? {
            Some(Place::Log(loc)) => Ok(record_at(self.log.dir(), id, loc)?),
            _ => {
                let path = self.queue.join(id);
                let bytes = std::fs::read(&path).map_err(io_err(&path))?;
                Ok(parse_file(id, &bytes))
            }
        }
    }

    /// The delivery state of `id` (the default when it was never tried).
    pub async fn state(&self, id: &str) -> Result<MessageState, SpoolError> {
        // A message this process committed and never deferred has no state file: no
        // open() that can only fail at each first delivery.
        let fresh = self
            .index
            .with(|m| m.by_id.get(id).is_some_and(|s| !s.has_state));
        if fresh {
            return Ok(MessageState::default());
        }
        let path = self.state_path(id);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(queue_id = %id, error = %e, "unreadable state file; the message is retried from its envelope");
                MessageState::default()
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(MessageState::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub(super) fn read_state_blocking(&self, id: &str) -> Result<MessageState, SpoolError> {
        let path = self.state_path(id);
        match std::fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(MessageState::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replaces the state of `id` atomically and durably.
    pub async fn save_state(&self, id: &str, state: &MessageState) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec(state)?;
        crate::durable::replace_async(self.state_path(id), bytes)
            .await
            .map_err(|e| SpoolError::Io {
                path: e.path,
                source: e.source,
            })
    }

    /// Records a failed attempt: `state` (with its pending recipients) gets one more
    /// attempt, `error` and `next_due`; the message is released until then.
    pub async fn defer(
        &self,
        id: &str,
        mut state: MessageState,
        error: &str,
        next_due: SystemTime,
    ) -> Result<(), SpoolError> {
        state.attempts = state.attempts.saturating_add(1);
        state.last_error = Some(error.to_string());
        state.next_due_unix_ms = unix_ms(next_due);
        let saved = self.save_state(id, &state).await;
        // Even if the state could not be saved the message stays queued in memory.
        self.index.with(|m| {
            m.update(id, |s| {
                s.due_ms = state.next_due_unix_ms;
                s.claimed = false;
                s.has_state = true;
            })
        });
        saved
    }

    /// Gives a claimed message back, due at `next_due`, without recording the attempt: for
    /// a message that only waits for its next hop to come back. After a restart it is due
    /// at once.
    pub fn defer_in_memory(&self, id: &str, next_due: SystemTime) {
        let due = unix_ms(next_due);
        self.index.with(|m| {
            m.update(id, |s| {
                s.claimed = false;
                s.due_ms = due;
            })
        });
    }

    /// Gives a claimed message back and makes it due again only after `delay`: for errors
    /// reading it, so that a failing disk or a lack of file descriptors does not turn the
    /// relay into a tight retry loop.
    pub fn release_after(&self, id: &str, delay: Duration) {
        let due = unix_ms(SystemTime::now() + delay);
        self.index.with(|m| {
            m.update(id, |s| {
                s.claimed = false;
                s.due_ms = s.due_ms.max(due);
            })
        });
    }

    /// Makes the unclaimed messages among `ids` due now (what they waited for is back);
    /// ids no longer queued are ignored. Their state files keep the later time: after a
    /// restart they wait for it.
    pub fn expedite(&self, ids: &[String]) {
        let now = unix_ms(SystemTime::now());
        self.index.with(|m| {
            for id in ids {
                m.update(id, |s| {
                    if !s.claimed {
                        s.due_ms = s.due_ms.min(now);
                    }
                })
            }
        });
        self.notify.notify_one();
    }

    /// Makes every unclaimed message due now: a drain tries each once more at once rather
    /// than at its next retry.
    pub fn expedite_all(&self) {
        let ids: Vec<String> = self.index.with(|m| m.by_id.keys().cloned().collect());
        self.expedite(&ids);
    }

    /// Gives a claimed message back unchanged (shutdown, or a worker that cannot run).
    pub fn release(&self, id: &str) {
        self.index.with(|m| m.update(id, |s| s.claimed = false));
    }

    /// Every recipient is done: removes the message and its state.
    pub async fn complete(&self, id: &str) -> Result<(), SpoolError> {
        self.remove(id).await
    }

    /// The message failed for good (its DSN, if any, is already spooled): removes it.
    /// `reason`: `failed` (a permanent refusal) or `expired` (still refused temporarily
    /// at the end of `relay.expiry`).
    pub async fn bounce(&self, id: &str, reason: &str) -> Result<(), SpoolError> {
        tracing::info!(queue_id = %id, reason, "message bounced and removed from the queue");
        self.remove(id).await
    }

    /// Removes `id` durably: a *done* record for a logged message, an unlink and a
    /// directory sync for a file; then its state.
    pub(super) async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        if self.log.loc(id).is_some() {
            self.log
                .append_done(id)
                .await
                .map_err(io_err(self.log.dir()))?;
        } else {
            let path = self.queue.join(id);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            sync_dir(&self.queue).await?;
        }
        let state = self.state_path(id);
        match tokio::fs::remove_file(&state).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&state)(e)),
        }
        self.index.with(|m| m.remove(id));
        Ok(())
    }

    /// Lists the queue from the files and the log, for `queue list` (works whether or not
    /// a gateway is running).
    pub fn list(&self) -> Result<Vec<QueueEntry>, SpoolError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.queue).map_err(io_err(&self.queue))? {
            let entry = entry.map_err(io_err(&self.queue))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !is_message_name(&id) {
                continue;
            }
            match self.file_entry(&id) {
                Ok(e) => out.push(e),
                // Delivered and removed between the listing and the read.
                Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let scan = log::scan(self.log.dir()).map_err(io_err(self.log.dir()))?;
        for (id, loc) in scan.live {
            match self.log_entry(&id, loc) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                // Its segment was compacted or dropped meanwhile.
                Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One queued message with its state, for `queue show`.
    pub fn entry(&self, id: &str) -> Result<QueueEntry, SpoolError> {
        let found = match self.place(id)? {
            Some(Place::Log(loc)) => self.log_entry(id, loc)?,
            _ => Some(self.file_entry(id)?),
        };
        found.ok_or_else(|| not_found(&self.state_path(id)))
    }

    fn file_entry(&self, id: &str) -> Result<QueueEntry, SpoolError> {
        let path = self.queue.join(id);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let (envelope, torn) = match parse_file(id, &bytes) {
            Ok(m) => (Some(m.envelope), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(QueueEntry {
            id: id.to_string(),
            size: bytes.len() as u64,
            envelope,
            torn,
            state: self.read_state_blocking(id)?,
        })
    }

    /// A logged message, unless `queue delete` marked it gone.
    fn log_entry(&self, id: &str, loc: Loc) -> Result<Option<QueueEntry>, SpoolError> {
        let state = self.read_state_blocking(id)?;
        if state.deleted {
            return Ok(None);
        }
        let (envelope, torn) = match record_at(self.log.dir(), id, loc)? {
            Ok(m) => (Some(m.envelope), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Some(QueueEntry {
            id: id.to_string(),
            size: loc.len,
            envelope,
            torn,
            state,
        }))
    }

    /// Makes `id` due now (`queue retry`); a running gateway picks it up at its next
    /// refresh.
    pub async fn retry_now(&self, id: &str) -> Result<(), SpoolError> {
        let mut state = self.state(id).await?;
        if self.place(id)?.is_none() || state.deleted {
            return Err(not_found(&self.queue.join(id)));
        }
        state.next_due_unix_ms = 0;
        self.save_state(id, &state).await?;
        self.index.with(|m| {
            m.update(id, |s| {
                s.due_ms = 0;
                s.has_state = true;
            })
        });
        self.notify.notify_one();
        Ok(())
    }

    /// Removes `id` without delivering it (`queue delete`). A message in the log of
    /// another process (a running gateway) is marked deleted in its state; that gateway
    /// drops it at its next refresh, and never delivers it.
    pub async fn delete(&self, id: &str) -> Result<(), SpoolError> {
        let owned = self.log.loc(id).is_some();
        match self.place(id)? {
            None => Err(not_found(&self.queue.join(id))),
            Some(Place::Log(_)) if !owned => self.mark_deleted(id).await,
            Some(_) => self.remove(id).await,
        }
    }

    /// Marks a logged message that another process owns as gone: a record of the log
    /// cannot be unlinked, so its state says so, and it is never delivered.
    pub(super) async fn mark_deleted(&self, id: &str) -> Result<(), SpoolError> {
        let mut state = self.read_state_blocking(id)?;
        if state.deleted {
            return Err(not_found(&self.queue.join(id)));
        }
        state.deleted = true;
        self.save_state(id, &state).await
    }

    /// The directory torn files are moved to.
    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine
    }
}

fn not_found(path: &Path) -> SpoolError {
    io_err(path)(io::Error::from(io::ErrorKind::NotFound))
}

/// Reads the logged message `id` at `loc`.
pub(super) fn record_at(
    dir: &Path,
    id: &str,
    loc: Loc,
) -> Result<Result<StoredMessage, TornFile>, SpoolError> {
    match log::read_at(dir, loc) {
        Ok(record) => Ok(parse_record(id, record)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(Err(TornFile::BadRecord(e.to_string())))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Reads a message this process's log holds. Compaction may move it, and drop the segment
/// it was in, between the lookup and the read: the lookup is then made again.
fn read_logged(log: &log::Log, id: &str) -> Result<Result<StoredMessage, TornFile>, SpoolError> {
    let mut last = None;
    for _ in 0..3 {
        let Some(loc) = log.loc(id) else {
            return Err(not_found(log.dir()));
        };
        match record_at(log.dir(), id, loc) {
            Err(SpoolError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && log.loc(id) != Some(loc) =>
            {
                last = Some(source);
            }
            other => return other,
        }
    }
    Err(io_err(log.dir())(last.unwrap_or_else(|| {
        io::Error::from(io::ErrorKind::NotFound)
    })))
}

fn sync_dir_blocking(dir: &Path) -> Result<(), SpoolError> {
    crate::durable::sync_dir(dir).map_err(|e| SpoolError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Recipient;

    fn envelope() -> Envelope {
        Envelope {
            direction: Default::default(),
            received_at: "2026-01-01T00:00:00Z".into(),
            peer_addr: "127.0.0.1:1234".into(),
            helo: "smtp.peer-a.test.mssante.fr".into(),
            peer_dn: None,
            peer_cn: None,
            peer_ptr: None,
            tls: None,
            mail_from: "a@peer-a.test.mssante.fr".into(),
            envid: None,
            ret_full: None,
            body_8bitmime: false,
            smtputf8: false,
            recipients: vec![
                Recipient {
                    address: "b@gateway.test.mssante.fr".into(),
                    notify: 0,
                    orcpt: None,
                },
                Recipient {
                    address: "c@gateway.test.mssante.fr".into(),
                    notify: 0,
                    orcpt: None,
                },
            ],
        }
    }

    async fn store(spool: &Spool) -> String {
        let mut m = spool.create(&envelope()).await.unwrap();
        m.write(b"Subject: x\r\n\r\nbody\r\n").await.unwrap();
        m.commit().await.unwrap()
    }

    /// The ordered sets say exactly what the map says.
    fn assert_consistent(m: &Slots) {
        let due: BTreeSet<(u64, u64, String)> = m
            .by_id
            .iter()
            .filter(|(_, s)| !s.claimed)
            .map(|(id, s)| (s.due_ms, s.received_ms, id.clone()))
            .collect();
        let by_age: BTreeSet<(u64, String)> = m
            .by_id
            .iter()
            .map(|(id, s)| (s.received_ms, id.clone()))
            .collect();
        assert_eq!(m.due, due);
        assert_eq!(m.by_age, by_age);
    }

    #[test]
    fn the_index_claims_at_most_what_is_asked_earliest_due_first_and_stays_consistent() {
        let mut m = Slots::default();
        let slot = |due_ms, received_ms| Slot {
            due_ms,
            received_ms,
            claimed: false,
            added_seq: 0,
            has_state: false,
        };
        m.insert("c".into(), slot(0, 30));
        m.insert("a".into(), slot(0, 10));
        m.insert("b".into(), slot(500, 5));
        m.insert("d".into(), slot(100, 40));
        assert_consistent(&m);
        assert_eq!(m.claim(200, 2), ["a", "c"]);
        assert_eq!(m.claim(200, 10), ["d"], "b is not due yet");
        assert_consistent(&m);
        assert_eq!(m.due.first().map(|d| d.0), Some(500));
        assert_eq!(m.by_age.first().map(|a| a.1.as_str()), Some("b"));
        // Released with a later due time, deferred, removed: the sets follow.
        m.update("a", |s| {
            s.claimed = false;
            s.due_ms = 900;
        });
        m.remove("c");
        m.update("zz", |s| s.due_ms = 1);
        assert_consistent(&m);
        assert_eq!(m.claim(1000, 10), ["b", "a"]);
        assert_eq!(m.by_id.len(), 3);
        // A pseudo-random mix of operations never breaks the invariant.
        let mut x: u64 = 42;
        for step in 0..2000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = format!("{:02}", (x >> 33) % 50);
            match (x >> 20) % 4 {
                0 => m.insert(id, slot((x >> 8) % 1000, step)),
                1 => m.remove(&id),
                2 => m.update(&id, |s| {
                    s.claimed = false;
                    s.due_ms = (x >> 12) % 1000;
                }),
                _ => {
                    m.claim((x >> 4) % 1000, 3);
                }
            }
        }
        assert_consistent(&m);
    }

    #[tokio::test]
    async fn committed_message_is_due_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let id = store(&spool).await;
        let now = SystemTime::now();
        assert_eq!(spool.next_due(now), vec![id.clone()]);
        assert!(spool.next_due(now).is_empty(), "claimed");
        assert_eq!(spool.summary(now).messages, 1);
        spool.release(&id);
        assert_eq!(spool.next_due(now), vec![id.clone()]);
        spool.complete(&id).await.unwrap();
        assert_eq!(spool.summary(now).messages, 0);
        assert!(spool.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn deferred_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let spool = Spool::open(dir.path()).unwrap();
            let id = store(&spool).await;
            spool.next_due(SystemTime::now());
            let state = MessageState {
                pending: Some(vec!["c@gateway.test.mssante.fr".into()]),
                ..MessageState::default()
            };
            let later = SystemTime::now() + Duration::from_secs(600);
            spool.defer(&id, state, "451 busy", later).await.unwrap();
            assert!(spool.next_due(SystemTime::now()).is_empty());
            assert!(spool.next_due(later).contains(&id));
            id
        };
        // A new process: recovery finds the message with its state.
        let spool = Spool::open(dir.path()).unwrap();
        let report = spool.recover().unwrap();
        assert_eq!(report.requeued, 1);
        assert!(spool.next_due(SystemTime::now()).is_empty(), "not due yet");
        let state = spool.state(&id).await.unwrap();
        assert_eq!(state.attempts, 1);
        assert_eq!(state.last_error.as_deref(), Some("451 busy"));
        let env = envelope();
        assert_eq!(
            state.pending_recipients(&env),
            vec!["c@gateway.test.mssante.fr".to_string()]
        );
        spool.retry_now(&id).await.unwrap();
        assert_eq!(spool.next_due(SystemTime::now()), vec![id]);
    }

    /// A message too large for the log: a file of its own.
    async fn store_large(spool: &Spool) -> String {
        let mut m = spool.create(&envelope()).await.unwrap();
        m.write(b"Subject: x\r\n\r\n").await.unwrap();
        m.write(&vec![b'y'; log::LOGGED_MAX]).await.unwrap();
        m.commit().await.unwrap()
    }

    #[tokio::test]
    async fn recovery_quarantines_torn_files_and_clears_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let good = store_large(&spool).await;
        let logged = store(&spool).await;
        let torn = store_large(&spool).await;
        let path = dir.path().join("queue").join(&torn);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        std::fs::write(dir.path().join("tmp/leftover"), b"MSSPOOL1\n").unwrap();
        std::fs::write(dir.path().join("state/0000000000000000000.json"), b"{}").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let report = spool.recover().unwrap();
        assert_eq!(report.requeued, 2);
        assert_eq!(report.tmp_removed, 1);
        assert_eq!(report.quarantined.len(), 1);
        assert_eq!(report.quarantined[0].0, torn);
        assert!(dir.path().join("quarantine").join(&torn).is_file());
        assert!(!dir.path().join("state/0000000000000000000.json").exists());
        assert_eq!(spool.next_due(SystemTime::now()), vec![good, logged]);
    }

    #[tokio::test]
    async fn refresh_sees_deletes_by_another_process_and_keeps_fresh_commits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let file = store_large(&spool).await;
        let logged = store(&spool).await;
        let kept = store(&spool).await;
        // `queue delete` in another process: it unlinks the file; the logged message is
        // marked deleted in its state.
        let other = Spool::open(dir.path()).unwrap();
        assert_eq!(other.list().unwrap().len(), 3);
        other.delete(&file).await.unwrap();
        other.delete(&logged).await.unwrap();
        assert!(other.delete(&logged).await.is_err(), "deleted twice");
        assert_eq!(
            other
                .list()
                .unwrap()
                .iter()
                .map(|e| &e.id)
                .collect::<Vec<_>>(),
            vec![&kept]
        );
        spool.refresh().unwrap();
        assert_eq!(spool.next_due(SystemTime::now()), vec![kept.clone()]);
        let fresh = store(&spool).await;
        spool.refresh().unwrap();
        assert_eq!(spool.next_due(SystemTime::now()), vec![fresh.clone()]);
        // And after a restart: neither deleted message comes back.
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.recover().unwrap().requeued, 2);
        assert_eq!(spool.next_due(SystemTime::now()), vec![kept, fresh]);
    }

    #[tokio::test]
    async fn a_delivered_message_stays_done_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (done, left) = {
            let spool = Spool::open(dir.path()).unwrap();
            let done = store(&spool).await;
            let left = store(&spool).await;
            spool.next_due(SystemTime::now());
            spool.complete(&done).await.unwrap();
            (done, left)
        };
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.recover().unwrap().requeued, 1);
        assert_eq!(spool.next_due(SystemTime::now()), vec![left.clone()]);
        assert!(spool.entry(&done).is_err());
        let m = spool.load(&left).await.unwrap().unwrap();
        assert_eq!(m.body, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(m.envelope, envelope());
    }
}
