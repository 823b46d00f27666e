//! How `silt serve` asks glibc's allocator to give memory back (issue #9: resident memory).
//!
//! glibc keeps up to eight arenas per core, each holding on to what its threads freed, and raises its
//! `mmap` threshold every time a large block is freed, so that later large buffers (a compaction's values,
//! a merge's chunks) come from an arena and stay resident after they are freed. Under the peer benchmark
//! that was 130 MiB of resident memory more than the live heap. [`tune`] fixes the threshold and the number
//! of arenas; [`spawn_trimmer`] returns the free memory of the arenas to the system every few seconds.
//!
//! Only `silt serve` does this: the allocator is the process's, and a program that embeds silt decides for
//! itself. Elsewhere than Linux with glibc, both are no-ops.

use std::time::Duration;

/// Allocations at least this large get their own mapping, returned to the system when freed.
pub const MMAP_THRESHOLD: usize = 256 << 10;

/// Free memory at the top of an arena beyond this is returned at once.
pub const TRIM_THRESHOLD: usize = 4 << 20;

/// Arenas at most: two, so that threads share them instead of each keeping its own free memory.
pub const ARENA_MAX: usize = 2;

/// How often [`spawn_trimmer`] returns free memory.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the allocator's thresholds. Call it before threads start; it returns whether glibc took them.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param, value: usize| {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            // SAFETY: mallopt only changes the allocator's parameters; glibc documents it as safe to call
            // at any time, and each value is within the range of its parameter.
            unsafe { libc::mallopt(param, value) == 1 }
        };
        set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            & set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            & set(libc::M_ARENA_MAX, ARENA_MAX)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the free memory of every arena to the system now; returns whether any was.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the arenas' locks itself and only releases pages that hold no
        // allocation; it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Starts a thread that calls [`trim`] every [`TRIM_INTERVAL`] for as long as the process lives.
pub fn spawn_trimmer() -> std::io::Result<()> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Ok(());
    }
    std::thread::Builder::new().name("silt-trim".into()).spawn(|| loop {
        std::thread::sleep(TRIM_INTERVAL);
        trim();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_thresholds_and_a_trim_after_a_large_free_returns_memory() {
        assert!(tune(), "glibc refused a threshold");
        // Many small blocks freed together leave free memory inside an arena that only a trim returns.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        drop(blocks);
        assert!(trim(), "nothing was returned after freeing 20 MB of small blocks");
    }
}
