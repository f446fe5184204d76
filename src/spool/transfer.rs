//! Moving queued messages from one spool to another: `queue export DIR` takes every
//! message out of a spool no gateway runs on (a replica scaled down, a machine retired),
//! `queue import DIR` puts them into another gateway's spool, running or not.
//!
//! In `DIR` each message is two files: `<id>.msg` in the spool file format (envelope line,
//! whole body, trailer; see [`super::parse_file`]) and `<id>.state.json`, its delivery
//! state (attempts, recipients still pending, next try). Each step is durable before the
//! next begins, and each is safe to repeat, so an interrupted move is finished by running
//! the same command again:
//!
//! - export writes the state, then the message (each fsynced, renamed, directory
//!   fsynced), and only then removes the message from the spool; a message already in
//!   `DIR` is written again, identical;
//! - import validates the file, writes the state, then the message into `queue/` as a
//!   file of its own (through `tmp/`, fsync, rename, directory fsync), and only then
//!   removes it from `DIR`; an id the spool already holds is not imported twice, its copy
//!   in `DIR` is removed. A running gateway picks imported messages up at its next
//!   refresh (15 s).
use std::path::Path;

use super::log;
use super::queue::{record_at, MessageState};
use super::{file_bytes, io_err, is_message_name, parse_file, Spool, SpoolError};
use crate::durable;

/// What an export or import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// Messages moved.
    pub moved: Vec<String>,
    /// Messages the destination already held (an earlier run was interrupted): their copy
    /// in the directory was removed.
    pub already_present: Vec<String>,
    /// Messages left where they were, and why (a torn file, a damaged record).
    pub skipped: Vec<(String, String)>,
}

const MSG: &str = "msg";
const STATE: &str = "state.json";

fn durable_err(e: durable::WriteError) -> SpoolError {
    SpoolError::Io {
        path: e.path,
        source: e.source,
    }
}

// Both transfers make their file system calls in place, blocking: they serve the `queue`
// commands, which run them on a runtime of their own, never on the gateway's.
impl Spool {
    /// Moves every queued message of this spool to `dir` (created if needed). No gateway
    /// may run on this spool meanwhile: its relay could deliver a message being moved.
    pub async fn export(&self, dir: &Path) -> Result<TransferReport, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut report = TransferReport::default();
        // Files of their own, then the log, read once.
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.queue).map_err(io_err(&self.queue))? {
            let name = entry.map_err(io_err(&self.queue))?.file_name();
            let name = name.to_string_lossy();
            if is_message_name(&name) {
                files.push(name.into_owned());
            }
        }
        for id in files {
            let path = self.queue.join(&id);
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            if let Err(e) = parse_file(&id, &bytes) {
                report.skipped.push((id, e.to_string()));
                continue;
            }
            let state = match state_for_move(&self.state_path(&id)) {
                Ok(state) => state,
                Err(why) => {
                    report.skipped.push((id, why));
                    continue;
                }
            };
            write_pair(dir, &id, &state, &bytes)?;
            self.remove(&id).await?;
            report.moved.push(id);
        }
        let scan = log::scan(self.log.dir()).map_err(io_err(self.log.dir()))?;
        let mut logged: Vec<_> = scan.live.into_iter().collect();
        logged.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, loc) in logged {
            let state = match state_for_move(&self.state_path(&id)) {
                Ok(state) => state,
                Err(why) => {
                    report.skipped.push((id, why));
                    continue;
                }
            };
            if state.deleted {
                continue;
            }
            let message = match record_at(self.log.dir(), &id, loc)? {
                Ok(m) => m,
                Err(e) => {
                    report.skipped.push((id, e.to_string()));
                    continue;
                }
            };
            write_pair(
                dir,
                &id,
                &state,
                &file_bytes(&message.envelope, &message.body)?,
            )?;
            self.mark_deleted(&id).await?;
            report.moved.push(id);
        }
        Ok(report)
    }

    /// Moves every message exported to `dir` into this spool.
    pub async fn import(&self, dir: &Path) -> Result<TransferReport, SpoolError> {
        let mut report = TransferReport::default();
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(&format!(".{MSG}")) {
                if is_message_name(id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        for id in ids {
            let msg = dir.join(format!("{id}.{MSG}"));
            let state_file = dir.join(format!("{id}.{STATE}"));
            let bytes = std::fs::read(&msg).map_err(io_err(&msg))?;
            if let Err(e) = parse_file(&id, &bytes) {
                report.skipped.push((id, e.to_string()));
                continue;
            }
            if self.place(&id)?.is_some() {
                remove_pair(dir, &id)?;
                report.already_present.push(id);
                continue;
            }
            let mut state = match state_for_move(&state_file) {
                Ok(state) => state,
                Err(why) => {
                    report.skipped.push((id, why));
                    continue;
                }
            };
            state.deleted = false;
            durable::replace(&self.state_path(&id), &serde_json::to_vec(&state)?)
                .map_err(durable_err)?;
            // Through tmp/ (cleared at start-up), as a commit does, so a crash leaves no
            // partial file in queue/; the name is this run's, so a leftover never blocks
            // the next one.
            let tmp = self.tmp.join(format!("{id}.import.{}", std::process::id()));
            durable::replace_via(&tmp, &self.queue.join(&id), &bytes).map_err(durable_err)?;
            remove_pair(dir, &id)?;
            report.moved.push(id);
        }
        Ok(report)
    }
}

/// The state a message moves with. Without a state file (a message copied by hand) it
/// starts afresh. A damaged or unreadable one is not guessed at: which recipients were
/// served is in it, and a fresh state would deliver to them again; the message stays
/// where it is, with the reason.
fn state_for_move(path: &Path) -> Result<MessageState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!("its state file does not parse ({e}); repair it, or remove it to deliver to every recipient again")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MessageState::default()),
        Err(e) => Err(format!("its state file {} cannot be read: {e}", path.display())),
    }
}

/// Writes `<id>.state.json` then `<id>.msg` in `dir`, each durably.
fn write_pair(dir: &Path, id: &str, state: &MessageState, bytes: &[u8]) -> Result<(), SpoolError> {
    durable::replace(
        &dir.join(format!("{id}.{STATE}")),
        &serde_json::to_vec(state)?,
    )
    .map_err(durable_err)?;
    durable::replace(&dir.join(format!("{id}.{MSG}")), bytes).map_err(durable_err)
}

/// Removes `<id>.msg` then `<id>.state.json` from `dir`, durably.
fn remove_pair(dir: &Path, id: &str) -> Result<(), SpoolError> {
    for name in [format!("{id}.{MSG}"), format!("{id}.{STATE}")] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    durable::sync_dir(dir).map_err(durable_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{read_message, Direction, Envelope, Recipient};

    fn envelope(to: &[&str]) -> Envelope {
        let mut e = Envelope::of_report(
            Direction::Inbound,
            "smtp.gateway.test.mssante.fr",
            "2026-12-05T12:00:00Z".into(),
            to.first().copied().unwrap_or("bob@gateway.test.mssante.fr"),
        );
        e.mail_from = "alice@peer-a.test.mssante.fr".into();
        e.recipients = to
            .iter()
            .map(|a| Recipient {
                address: (*a).to_string(),
                notify: 0,
                orcpt: None,
            })
            .collect();
        e
    }

    /// A spool with two logged messages (one half delivered) and one large one.
    async fn source(dir: &Path) -> (Spool, Vec<(String, Envelope, Vec<u8>)>) {
        let spool = Spool::open(dir).expect("open");
        let mut made = Vec::new();
        for (to, body) in [
            (vec!["bob@x.fr"], b"Subject: a\r\n\r\nsmall\r\n".to_vec()),
            (
                vec!["bob@x.fr", "carol@x.fr"],
                b"Subject: b\r\n\r\ntwo recipients\r\n".to_vec(),
            ),
            (vec!["dan@x.fr"], vec![b'L'; 600 * 1024]),
        ] {
            let env = envelope(&to);
            let id = spool.store(&env, &body).await.expect("store");
            made.push((id, env, body));
        }
        let half = MessageState {
            attempts: 2,
            next_due_unix_ms: 123,
            last_error: Some("451 4.4.1 down".into()),
            pending: Some(vec!["carol@x.fr".into()]),
            delay_notified: true,
            deleted: false,
        };
        spool.save_state(&made[1].0, &half).await.expect("state");
        (spool, made)
    }

    #[tokio::test]
    async fn messages_move_with_their_state_and_nothing_is_left_or_doubled() {
        let (a, b, moving) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (from, made) = source(a.path()).await;
        drop(from);
        // The export runs in another process than the one that wrote the log.
        let from = Spool::open(a.path()).unwrap();
        let out = from.export(moving.path()).await.unwrap();
        assert_eq!(out.moved.len(), 3, "{out:?}");
        assert!(from.list().unwrap().is_empty(), "the source is empty");
        // Recovery of the source finds nothing to deliver either.
        let again = Spool::open(a.path()).unwrap();
        assert_eq!(again.recover().unwrap().requeued, 0);

        let to = Spool::open(b.path()).unwrap();
        let into = to.import(moving.path()).await.unwrap();
        assert_eq!(into.moved.len(), 3, "{into:?}");
        assert_eq!(std::fs::read_dir(moving.path()).unwrap().count(), 0);
        for (id, env, body) in &made {
            let m = read_message(&to, id).unwrap().unwrap();
            assert_eq!(&m.envelope, env);
            assert_eq!(&m.body, body);
        }
        let state = to.read_state_blocking(&made[1].0).unwrap();
        assert_eq!(state.pending, Some(vec!["carol@x.fr".to_string()]));
        assert_eq!(state.attempts, 2);
        assert!(state.delay_notified);
        // The destination's recovery queues all three.
        let restarted = Spool::open(b.path()).unwrap();
        assert_eq!(restarted.recover().unwrap().requeued, 3);
    }

    #[tokio::test]
    async fn an_interrupted_import_finishes_without_duplicates() {
        let (a, b, moving) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (from, made) = source(a.path()).await;
        from.export(moving.path()).await.unwrap();
        // Keep a copy of the exported files, as if the first import stopped after
        // writing into the spool but before removing them.
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(moving.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        let to = Spool::open(b.path()).unwrap();
        to.import(moving.path()).await.unwrap();
        let second = to.import(copy.path()).await.unwrap();
        assert!(second.moved.is_empty(), "{second:?}");
        assert_eq!(second.already_present.len(), made.len());
        assert_eq!(to.list().unwrap().len(), made.len());
        assert_eq!(std::fs::read_dir(copy.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_torn_export_is_not_imported() {
        let (b, moving) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let env = envelope(&["bob@x.fr"]);
        let mut bytes = file_bytes(&env, b"Subject: t\r\n\r\nbody\r\n").unwrap();
        bytes.truncate(bytes.len() - 3);
        let id = "0000000000000000001";
        std::fs::write(moving.path().join(format!("{id}.msg")), &bytes).unwrap();
        let to = Spool::open(b.path()).unwrap();
        let r = to.import(moving.path()).await.unwrap();
        assert_eq!(r.skipped.len(), 1, "{r:?}");
        assert!(r.moved.is_empty());
        assert!(to.list().unwrap().is_empty());
        assert!(
            moving.path().join(format!("{id}.msg")).exists(),
            "left for a look"
        );
    }

    #[tokio::test]
    async fn a_damaged_state_is_not_exported_either() {
        let (a, moving) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, made) = source(a.path()).await;
        let half = &made[1].0;
        std::fs::write(from.state_path(half), b"{\"attempts\": 2, \"pen").unwrap();
        let out = from.export(moving.path()).await.unwrap();
        assert_eq!(out.moved.len(), 2, "{out:?}");
        assert_eq!(&out.skipped[0].0, half, "{out:?}");
        assert!(out.skipped[0].1.contains("state file"), "{out:?}");
        assert_eq!(from.list().unwrap().len(), 1, "left in the spool");
    }

    #[tokio::test]
    async fn a_damaged_state_is_not_replaced_by_a_fresh_one() {
        let (a, b, moving) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (from, made) = source(a.path()).await;
        from.export(moving.path()).await.unwrap();
        let half = &made[1].0;
        let state_file = moving.path().join(format!("{half}.{STATE}"));
        std::fs::write(&state_file, b"{\"attempts\": 2, \"pending\": [\"car").unwrap();
        let to = Spool::open(b.path()).unwrap();
        let r = to.import(moving.path()).await.unwrap();
        assert_eq!(r.moved.len(), 2, "{r:?}");
        assert_eq!(r.skipped.len(), 1, "{r:?}");
        assert_eq!(&r.skipped[0].0, half);
        assert!(r.skipped[0].1.contains("state file"), "{r:?}");
        assert!(to.place(half).unwrap().is_none(), "not imported");
        assert!(state_file.exists(), "left for repair");
        // Without the state file it is imported, for every recipient.
        std::fs::remove_file(&state_file).unwrap();
        let r = to.import(moving.path()).await.unwrap();
        assert_eq!(r.moved, vec![half.clone()]);
        assert_eq!(to.read_state_blocking(half).unwrap().pending, None);
    }
}
