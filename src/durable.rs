//! Durable writes: the one way the gateway replaces a whole file it must find again after
//! a crash (the liste blanche cache, CRL files, a message's delivery state, the auto-reply
//! state), and the directory fsync that makes a rename durable (the spool's commit uses
//! it too).
//!
//! [`replace`]: a temporary file of a unique name in the same directory, the bytes, fsync,
//! rename over the target, fsync of the directory. A crash at any point leaves the old
//! file or the new one, never a torn one; a failure leaves the old file and no temporary
//! file behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A step of a durable write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct WriteError {
    /// What was attempted (`create`, `write`, `fsync`, `rename`, `fsync directory`).
    pub step: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn at<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> WriteError + 'p {
        move |source| WriteError {
            step,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Replaces `path` with `bytes`, durably and atomically (see the module documentation).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique across processes (`queue retry` writes states beside a running gateway) and
    // across threads of this one.
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    replace_via(&temp, path, bytes)
}

/// As [`replace`], with the temporary file at `temp`, which must not exist and must be on
/// the file system of `path`: a directory of temporary files that start-up clears keeps a
/// crash's leftover out of the target's directory (the spool's `tmp/`).
pub fn replace_via(temp: &Path, path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let written = write_then_rename(temp, path, bytes);
    if written.is_err() {
        // Best effort: the temporary file is garbage whatever happened.
        let _ = std::fs::remove_file(temp);
    }
    written?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// [`replace`] on a blocking thread, for async callers.
pub async fn replace_async(path: PathBuf, bytes: Vec<u8>) -> Result<(), WriteError> {
    let at = path.clone();
    tokio::task::spawn_blocking(move || replace(&path, &bytes))
        .await
        .map_err(|e| WriteError {
            step: "write",
            path: at,
            source: io::Error::other(e),
        })?
}

fn write_then_rename(temp: &Path, path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(WriteError::at("create", temp))?;
    file.write_all(bytes)
        .map_err(WriteError::at("write", temp))?;
    file.sync_all().map_err(WriteError::at("fsync", temp))?;
    drop(file);
    std::fs::rename(temp, path).map_err(WriteError::at("rename", path))
}

/// Makes the renames and creations in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    // Directories can be opened read-only and fsynced on Unix.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WriteError::at("fsync directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        replace(&path, b"one").expect("first write");
        replace(&path, b"two").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        replace(&path, b"old").expect("first write");
        // Renaming a file over a non-empty directory fails after the temporary file was
        // written: the step named is the rename, and nothing is left behind.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("mkdir");
        std::fs::write(blocked.join("x"), b"x").expect("fill");
        let e = replace(&blocked, b"new").expect_err("cannot replace a directory");
        assert_eq!(e.step, "rename");
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert_eq!(names(dir.path()), ["blocked", "state.json"]);
        // A missing directory fails at the first step.
        let e = replace(&dir.path().join("none/state.json"), b"x").expect_err("no directory");
        assert_eq!(e.step, "create");
    }

    #[tokio::test]
    async fn replaces_from_async_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("autoreply.json");
        replace_async(path.clone(), b"{}".to_vec())
            .await
            .expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"{}");
    }
}
