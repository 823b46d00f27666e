//! The real file system, with `memmap2` for maps and `File::lock` for the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{DirLock, MappedRegion, OpenMode, OwnedBytes, ReadRegion, VFile, Vfs};

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdVfs;

struct StdFile(File);

impl VFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

struct StdRegion {
    map: memmap2::MmapRaw,
    words: usize,
}

impl MappedRegion for StdRegion {
    #[expect(unsafe_code, reason = "viewing a shared mapping as atomic words is the one way to read it")]
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `map` is a shared read-write mapping of `words * 8` bytes that lives as long as `self`,
        // and the returned slice borrows `self`, so it cannot outlive the mapping. Mappings start on a page
        // boundary, so the pointer is aligned for `AtomicU64`. The file is never truncated while mapped and the
        // data directory is locked exclusively, so the memory stays valid and no other process of ours writes
        // it. All access from this process goes through `AtomicU64`, which permits shared mutation, so
        // concurrent loads and stores are not data races.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().cast::<AtomicU64>(), self.words) }
    }
    fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }
    #[expect(unsafe_code, reason = "MADV_DONTNEED is an unchecked advice in memmap2")]
    fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `map` is a *shared* mapping of a file (`MmapRaw::map_raw`), for which MADV_DONTNEED only
        // drops this process's page-table entries: the page cache keeps the bytes, dirty ones included, and the
        // next access maps them again with the same contents. So no store is lost and every `&[AtomicU64]`
        // borrowed from `words` stays valid and reads the same values (it is never private or anonymous memory,
        // where DONTNEED would zero the pages). memmap2 checks the range against the mapping.
        unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }
    }
    fn will_need(&self, offset: usize, len: usize) {
        if let Some((offset, len)) = clamp(offset, len, self.map.len()) {
            // A hint: a refusal changes nothing, so it is not reported.
            let _ = self.map.advise_range(memmap2::Advice::WillNeed, offset, len);
        }
    }
}

/// `offset..offset + len` clamped to a map of `map_len` bytes, `None` if nothing of it is left.
fn clamp(offset: usize, len: usize, map_len: usize) -> Option<(usize, usize)> {
    let end = offset.saturating_add(len).min(map_len);
    (offset < end).then(|| (offset, end - offset))
}

struct StdLock(#[allow(dead_code)] File);
impl DirLock for StdLock {}

/// A read-only map of a block file.
struct StdReadRegion(memmap2::Mmap);

impl ReadRegion for StdReadRegion {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn will_need(&self, offset: usize, len: usize) {
        if let Some((offset, len)) = clamp(offset, len, self.0.len()) {
            // A hint: a refusal changes nothing, so it is not reported.
            let _ = self.0.advise_range(memmap2::Advice::WillNeed, offset, len);
        }
    }
}

impl Vfs for StdVfs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
        };
        Ok(Box::new(StdFile(opts.open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedRegion>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len == 0 || len % 4096 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map {}: length {len} is not a non-zero multiple of 4096", path.display()),
            ));
        }
        let words = usize::try_from(len / 8)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        // Not populated: a page becomes resident when first touched, so that a head file holds memory for the
        // pages in use, not for all of it (the blocks are allocated on disk already, so a first store never
        // needs space).
        let map = memmap2::MmapOptions::new().map_raw(&file)?;
        Ok(Arc::new(StdRegion { map, words }))
    }

    fn map_read(&self, path: &Path) -> io::Result<Arc<dyn ReadRegion>> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Arc::new(OwnedBytes(Vec::new()))); // an empty map is an error; nothing to map anyway
        }
        // SAFETY: a read-only, private mapping of a block file. Block files are written in full under a
        // temporary name, synced and renamed into place before they are mapped, and silt never writes,
        // truncates or renames a published block (it only unlinks it, which leaves mapped pages intact); the
        // data directory is locked, so no other silt process writes it either. The bytes are therefore
        // immutable while mapped, and `Mmap` ties their lifetime to the returned region.
        #[expect(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Arc::new(StdReadRegion(map)))
    }

    fn create_allocated(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        let len = libc::off_t::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file length exceeds off_t"))?;
        // Reserve the blocks without writing them: much faster than writing zeros, and as safe for maps.
        let rc = allocate(&file, len);
        if rc != 0 {
            // Not every file system supports it (e.g. some network ones): fall back to writing zeros.
            if rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
                return Err(io::Error::from_raw_os_error(rc));
            }
            super::write_zeros(&StdFile(file.try_clone()?), 0, len_bytes)?;
        }
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process", path.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// `posix_fallocate(fd, 0, len)`; returns 0 or an errno.
#[expect(unsafe_code, reason = "posix_fallocate has no safe wrapper in std")]
fn allocate(file: &File, len: libc::off_t) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open and owned by `file` for the whole call; posix_fallocate only reads its
    // integer arguments and touches no memory of ours.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) }
}

/// Lowers the calling thread's scheduling priority by `nice` (Linux, where the nice value is per
/// thread; elsewhere nothing). Raising the nice value needs no privilege; failure is ignored (the thread
/// then keeps its priority).
pub(crate) fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
        #[expect(unsafe_code)]
        unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, now.saturating_add(nice).min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// How many times the calling thread has waited for the disk to read: its major page faults plus its block
/// input operations (`getrusage(RUSAGE_THREAD)`, Linux; elsewhere 0). A query compares it before and after
/// reading some series to tell whether their data was in the page cache.
pub(crate) fn thread_disk_reads() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a valid, writable `rusage` that the call fills in; RUSAGE_THREAD asks about the
        // calling thread only. On failure (it cannot fail with these arguments) the zeroed value is read.
        #[expect(unsafe_code)]
        let usage = unsafe {
            libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
            usage.assume_init()
        };
        (usage.ru_majflt as u64).wrapping_add(usage.ru_inblock as u64)
    }
    #[cfg(not(target_os = "linux"))]
    0
}
