//! File access for the whole engine: the [`Vfs`] trait and its two implementations.
//!
//! Every byte the engine reads or writes goes through a [`Vfs`], so that the crash suite can swap the real
//! file system ([`StdVfs`]) for a simulated one ([`sim::SimVfs`]) that loses unsynced data, tears writes and
//! undoes directory operations that were not synced.
//!
//! This module is the only place in the crate that may use `unsafe` (the `silt` binary has its own, for the
//! allocator): for memory maps, and for the few system calls std has no wrapper for (`posix_fallocate`,
//! `madvise`, a thread's nice value and resource usage), all in `std_vfs.rs`. The rules that make the maps sound:
//! - the data directory is locked exclusively ([`Vfs::lock_dir`]), so no other process of ours maps the same
//!   files;
//! - a mapped file is never truncated or shrunk while mapped ([`VFile::set_len`] is only called on files
//!   that are not mapped, and head files are allocated at their full size before they are mapped);
//! - mapped memory is only ever seen as `&[AtomicU64]` borrowed from the [`MappedRegion`], never as
//!   `&[f64]` or `&'static`, so concurrent readers and the single writer never race on plain memory;
//! - a read-only map ([`Vfs::map_read`], seen as `&[u8]`) is only made of a block file, which silt writes
//!   in full under a temporary name, syncs and renames into place before it maps it, and never writes,
//!   truncates or renames again while mapped (it is deleted only after the last map of it is dropped, and
//!   unlinking does not change mapped pages).

mod std_vfs;

pub mod sim;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use std_vfs::StdVfs;
pub(crate) use std_vfs::{lower_thread_priority, thread_disk_reads};

/// How [`Vfs::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create a new, empty file; fails if it exists.
    CreateNew,
}

/// One open file. Offsets are absolute; there is no cursor.
pub trait VFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's contents durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Sets the file's length. Never called on a file that is mapped.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    /// Reads the whole file.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len =
            usize::try_from(self.len()?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// A whole file mapped read-write into memory, seen as 64-bit words.
///
/// Stores become visible to every reader of the region at once; they reach the disk at some unspecified
/// time, or at the latest when [`MappedRegion::flush`] returns.
pub trait MappedRegion: Send + Sync {
    /// The mapped file as words. Its length is the file length divided by 8.
    fn words(&self) -> &[AtomicU64];
    /// Writes every modified page back to the file and waits for the disk (`msync(MS_SYNC)`).
    fn flush(&self) -> io::Result<()>;
    /// Lets go of the memory behind bytes `offset..offset + len` (multiples of 4096): the process no longer
    /// holds those pages resident, and the next access reads them again from the file, which keeps every byte
    /// stored (`madvise(MADV_DONTNEED)` on a shared file mapping). Nothing else changes. By default nothing
    /// is let go.
    fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Asks for bytes `offset..offset + len` (clamped to the region) to be read into the page cache ahead of
    /// use, without waiting for them (`madvise(MADV_WILLNEED)`). Only a hint: nothing else changes, and it is
    /// not an error if it is not taken. By default nothing is asked.
    fn will_need(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// An immutable file (a block) seen as bytes: mapped read-only by [`StdVfs`], copied by the simulation.
pub trait ReadRegion: Send + Sync {
    /// The whole file.
    fn bytes(&self) -> &[u8];
    /// As [`MappedRegion::will_need`]: asks for bytes `offset..offset + len` to be read ahead, without
    /// waiting. By default (bytes held in memory) nothing is asked.
    fn will_need(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// A [`ReadRegion`] held in memory.
pub struct OwnedBytes(pub Vec<u8>);

impl ReadRegion for OwnedBytes {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Guard of an exclusive lock on a directory; dropping it releases the lock.
pub trait DirLock: Send + Sync {}

/// The file system as the engine sees it.
pub trait Vfs: Send + Sync + 'static {
    /// Creates a directory and its parents. Directories are treated as durable once created.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>>;
    /// Removes a file (durable once the parent directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file within one directory, replacing `to` atomically (durable once the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the files in a directory (not recursive), sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Maps an existing file whose length is a non-zero multiple of 4096 bytes.
    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedRegion>>;
    /// Maps a file that nobody writes any more (a published block) read-only. The default reads it into
    /// memory.
    fn map_read(&self, path: &Path) -> io::Result<Arc<dyn ReadRegion>> {
        Ok(Arc::new(OwnedBytes(self.open(path, OpenMode::Read)?.read_all()?)))
    }
    /// Creates a file of `len_bytes` zero bytes whose blocks are allocated on disk (so later stores through a
    /// map never meet a full disk), synced with its directory. The default writes the zeros.
    fn create_allocated(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        let file = self.open(path, OpenMode::CreateNew)?;
        write_zeros(&*file, 0, len_bytes)?;
        file.sync_data()?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }
    /// Takes an exclusive lock on a directory (a `LOCK` file inside it); fails if another holder has it.
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// Creates a file of `len_bytes` zero bytes, written out (not sparse) so that later stores through a map
/// never meet a full disk, then syncs it and its directory.
pub fn create_zeroed(vfs: &dyn Vfs, path: &Path, len_bytes: u64) -> io::Result<()> {
    vfs.create_allocated(path, len_bytes)
}

/// Writes `len_bytes` zero bytes at `offset`, a megabyte at a time.
pub fn write_zeros(file: &dyn VFile, offset: u64, len_bytes: u64) -> io::Result<()> {
    let chunk = vec![0u8; (1usize << 20).min(usize::try_from(len_bytes).unwrap_or(usize::MAX))];
    let mut off = 0u64;
    while off < len_bytes {
        let n = (len_bytes - off).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], offset + off)?;
        off += n as u64;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp)?;
    }
    let file = vfs.open(&tmp, OpenMode::CreateNew)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    vfs.rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        vfs.sync_dir(dir)?;
    }
    Ok(())
}

/// The temporary name [`write_atomic`] uses for `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
