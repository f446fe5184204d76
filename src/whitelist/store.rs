//! The on-disk cache of the last verified list: the raw signed XML, exactly as downloaded.
//!
//! At start-up the gateway loads this file (and verifies it again, like any list) before
//! the first download, so it can accept mail while ANS's server is unreachable. The file is
//! replaced atomically: a crash leaves either the old or the new list, never a torn one.
//! Keeping the signed bytes (rather than a parsed form) means the cache is re-verified
//! with the same code and cannot be trusted more than the network.
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{load_and_verify, VerifyOptions, Whitelist, WhitelistError};

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted (`write`, `rename`...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is larger than the bound that downloads obey (`whitelist.max_size`).
    #[error("{path} is larger than whitelist.max_size ({limit} bytes): not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: usize,
    },
    /// The cached list no longer verifies (e.g. anchors changed, or the file was edited).
    #[error("cached list {path} refused: {source}")]
    Invalid {
        /// The cache file.
        path: PathBuf,
        /// Why it was refused.
        source: WhitelistError,
    },
}

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `xml` to `path` atomically and durably ([`crate::durable::replace`]). Call it
/// only with bytes that passed [`load_and_verify`].
pub fn save(path: &Path, xml: &[u8]) -> Result<(), StoreError> {
    crate::durable::replace(path, xml).map_err(|e| StoreError::Io {
        action: e.step,
        path: e.path,
        source: e.source,
    })
}

/// The default bound on a list's size, wherever it comes from (download, cache, a file
/// given to `whitelist verify`): the real list is about 4 MB.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Reads a list file of at most `max_bytes`; a larger one is refused without being read
/// whole, like a download.
pub fn read_bounded(path: &Path, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    if bytes.len() > max_bytes {
        return Err(StoreError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Reads the cached bytes (at most `max_bytes`); `Ok(None)` when there is no cache yet.
pub fn load(path: &Path, max_bytes: usize) -> Result<Option<Vec<u8>>, StoreError> {
    match read_bounded(path, max_bytes) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads (at most `max_bytes`) and verifies the cached list; `Ok(None)` when there is no
/// cache yet.
pub fn load_verified(
    path: &Path,
    max_bytes: usize,
    opts: &VerifyOptions<'_>,
) -> Result<Option<Whitelist>, StoreError> {
    let Some(bytes) = load(path, max_bytes)? else {
        return Ok(None);
    };
    load_and_verify(&bytes, opts)
        .map(Some)
        .map_err(|source| StoreError::Invalid {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("liste.xml");
        assert!(load(&path, DEFAULT_MAX_BYTES).expect("load").is_none());
        save(&path, b"first").expect("save");
        save(&path, b"second").expect("save");
        assert_eq!(
            load(&path, DEFAULT_MAX_BYTES).expect("load").as_deref(),
            Some(&b"second"[..])
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("liste.xml")]);
    }

    #[test]
    fn a_file_over_the_bound_is_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("liste.xml");
        std::fs::write(&path, vec![b' '; 1025]).expect("write");
        assert!(matches!(
            load(&path, 1024),
            Err(StoreError::TooLarge { limit: 1024, .. })
        ));
        assert_eq!(
            load(&path, 1025).expect("at the bound").map(|b| b.len()),
            Some(1025)
        );
        assert!(load(&dir.path().join("absent.xml"), 1024)
            .expect("absent")
            .is_none());
    }

    #[test]
    fn save_into_a_missing_directory_fails_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("liste.xml");
        match save(&path, b"x") {
            Err(StoreError::Io { action, .. }) => assert_eq!(action, "create"),
            other => panic!("{other:?}"),
        }
    }
}
