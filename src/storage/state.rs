//! Named state blobs: small opaque files in `<data dir>/state/`, each replaced atomically and durably.
//! Spec: `format/README.md` ("Data directory"); what pipelines store there is `format/checkpoint.md`.
//!
//! Invariants:
//! - `state/<name>` only ever holds a whole value that a [`write()`] completed (temporary file written in
//!   full, fsynced, renamed over the name, directory fsynced): a crash at any point leaves the old value or
//!   the new one, never a mix. A write that returns `Ok` is durable.
//! - Names pass [`check_name`], so a name is one plain file name inside `state/` and never the temporary
//!   name (`<name>.tmp`) of another.
//!
//! Every access goes through the [`Vfs`]. Not synchronised: the engine serialises writers of the directory
//! (`Engine::put_state`, `Engine::delete_state`); readers need no lock, since a rename is atomic.

use std::path::{Path, PathBuf};

use crate::storage::error::StorageError;
use crate::storage::io::{tmp_path, OpenMode, Vfs};

/// The directory of state blobs inside the data directory.
pub const STATE_DIR: &str = "state";
/// The longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Checks that `name` can name a state blob: 1 to [`MAX_NAME_BYTES`] bytes; no `/`, `\` or NUL; no `..`;
/// not starting with `.` (so neither `.` nor hidden files); not ending in `.tmp` (the temporary names).
pub fn check_name(name: &str) -> Result<(), StorageError> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 200 bytes"
    } else if name.contains(['/', '\\', '\0']) {
        "it contains '/', '\\' or NUL"
    } else if name.contains("..") {
        "it contains \"..\""
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if name.ends_with(".tmp") {
        "it ends in \".tmp\", which names temporary files"
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(64).collect();
    Err(StorageError::InvalidName { name: shown, why })
}

/// The path of blob `name` in the data directory `data_dir`.
pub fn path_of(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(STATE_DIR).join(name)
}

/// Reads blob `name`; `None` if there is none. The name must pass [`check_name`].
pub fn read(vfs: &dyn Vfs, data_dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    check_name(name)?;
    let path = path_of(data_dir, name);
    let file = match vfs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("open", path, e)),
    };
    file.read_all().map(Some).map_err(|e| StorageError::io("read", path, e))
}

/// Replaces blob `name` with `bytes`: writes `state/<name>.tmp`, fsyncs it, renames it over `state/<name>`,
/// fsyncs `state/` (creating `state/` first, with an fsync of the data directory, if it is missing).
///
/// On `Ok` the new value is durable. On an error the blob holds the old value or the new one, now and after
/// a crash (which one is unknown when the error came from the rename or the directory fsync).
pub fn write(vfs: &dyn Vfs, data_dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    check_name(name)?;
    let dir = data_dir.join(STATE_DIR);
    if !vfs.exists(&dir) {
        vfs.create_dir_all(&dir).map_err(|e| StorageError::io("create dir", &dir, e))?;
        vfs.sync_dir(data_dir).map_err(|e| StorageError::io("fsync dir", data_dir, e))?;
    }
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp).map_err(|e| StorageError::io("remove", &tmp, e))?;
    }
    let file = vfs.open(&tmp, OpenMode::CreateNew).map_err(|e| StorageError::io("create", &tmp, e))?;
    let written = file
        .write_all_at(bytes, 0)
        .map_err(|e| StorageError::io("write", &tmp, e))
        .and_then(|()| file.sync_data().map_err(|e| StorageError::io("fsync", &tmp, e)));
    drop(file);
    if let Err(e) = written {
        // The name still holds the old value; the temporary file is garbage (removed now or by the next write).
        let _ = vfs.remove_file(&tmp);
        return Err(e);
    }
    vfs.rename(&tmp, &path).map_err(|e| StorageError::io("rename", &tmp, e))?;
    vfs.sync_dir(&dir).map_err(|e| StorageError::io("fsync dir", &dir, e))
}

/// Removes blob `name` durably (its directory is fsynced); returns whether there was one.
pub fn remove(vfs: &dyn Vfs, data_dir: &Path, name: &str) -> Result<bool, StorageError> {
    check_name(name)?;
    let dir = data_dir.join(STATE_DIR);
    let path = dir.join(name);
    match vfs.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io("remove", path, e)),
    }
    vfs.sync_dir(&dir).map_err(|e| StorageError::io("fsync dir", &dir, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::sim::SimVfs;

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "..", "a..b", ".", ".hidden", "x.tmp", "a\\b", "a\0b", &"x".repeat(201)] {
            assert!(matches!(check_name(bad), Err(StorageError::InvalidName { .. })), "{bad:?}");
        }
        for good in ["a", "pipeline-1.ckpt", "Grüße", &"x".repeat(200)] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn write_read_replace_remove() {
        let vfs = SimVfs::new();
        let dir = Path::new("/db");
        vfs.create_dir_all(dir).unwrap();
        assert_eq!(read(&vfs, dir, "p").unwrap(), None);
        write(&vfs, dir, "p", b"one").unwrap();
        assert_eq!(read(&vfs, dir, "p").unwrap().as_deref(), Some(&b"one"[..]));
        write(&vfs, dir, "p", b"").unwrap();
        assert_eq!(read(&vfs, dir, "p").unwrap().as_deref(), Some(&b""[..]));
        assert!(remove(&vfs, dir, "p").unwrap());
        assert!(!remove(&vfs, dir, "p").unwrap());
        assert_eq!(read(&vfs, dir, "p").unwrap(), None);
        assert_eq!(vfs.list_dir(&dir.join(STATE_DIR)).unwrap(), Vec::<String>::new());
    }
}
