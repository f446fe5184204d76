//! Durable writes: the one way the gateway replaces a whole file it must find again after
//! a crash (the liste blanche cache, CRL files, a message's delivery state, the auto-reply
//! state), and the directory fsync that makes a rename durable (the spool's commit uses
//! it too).
//!
//! [`replace`]: a temporary file of a unique name in the same directory, the bytes, fsync,
//! rename over the target, fsync of the directory. A crash at any point leaves the old
//! file or the new one, never a torn one; a failure leaves the old file and no temporary
//! file behind. [`create`] does the same with chosen permissions (a private key's 0600,
//! set when the file is created) and can refuse to replace an existing file.

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
    replace_via(&temp_beside(path), path, bytes)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file name in the directory of `path`, unique across processes (`queue
/// retry` writes states beside a running gateway) and across threads of this one.
fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` durably and atomically like [`replace`], the file created with
/// permissions `mode` (the umask can only narrow them): a private key written with 0o600
/// is readable by no one else at any moment. Unless `overwrite`, an existing `path` is
/// kept and the write fails (step `link`, [`io::ErrorKind::AlreadyExists`]).
pub fn create(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), WriteError> {
    let temp = temp_beside(path);
    let written = write_temp(&temp, bytes, mode).and_then(|()| {
        if overwrite {
            std::fs::rename(&temp, path).map_err(WriteError::at("rename", path))
        } else {
            // A hard link never replaces its target: an existing file stays as it was.
            std::fs::hard_link(&temp, path).map_err(WriteError::at("link", path))
        }
    });
    // Best effort: after a link or a failure the temporary name is garbage.
    let _ = std::fs::remove_file(&temp);
    written?;
    sync_dir(&parent(path))
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
    sync_dir(&parent(path))
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
    // 0o666: what `File::create` asks for, narrowed by the umask.
    write_temp(temp, bytes, 0o666)?;
    std::fs::rename(temp, path).map_err(WriteError::at("rename", path))
}

/// Creates `temp` (which must not exist) with permissions `mode`, writes `bytes`, fsyncs.
fn write_temp(temp: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(temp).map_err(WriteError::at("create", temp))?;
    file.write_all(bytes)
        .map_err(WriteError::at("write", temp))?;
    file.sync_all().map_err(WriteError::at("fsync", temp))
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

    #[cfg(unix)]
    #[test]
    fn creates_with_the_mode_and_keeps_an_existing_file_unless_told() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.key");
        create(&path, b"secret", 0o600, false).expect("created");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = create(&path, b"other", 0o600, false).expect_err("exists");
        assert_eq!(e.step, "link");
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        create(&path, b"new", 0o600, true).expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["server.key"]);
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
