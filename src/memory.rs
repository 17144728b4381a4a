//! Handing memory the receiver freed back to the operating system.
//!
//! Why: glibc's allocator keeps memory freed by one thread in the arena of
//! the thread that allocated it, and returns an arena's free pages to the
//! system only at its top. The store's pipeline allocates a delivery's
//! buffers on one thread and frees them on another, between sled's
//! long-lived cache pages, so free memory piles up inside the arenas: in
//! the soak benchmark (BENCHMARKS.md) `malloc_trim` on the running receiver
//! took its RSS from 81 MB to 49 MB. Trimming every few seconds keeps that
//! memory in use by nothing out of the RSS, for a few milliseconds of work.

use std::time::Duration;

/// Allocations of at least this many bytes get pages of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAPPED_FROM: i32 = 1024 * 1024;

/// Gives large allocations (a request's body, decompressed text and
/// records) pages of their own, returned to the system when freed. glibc
/// does that from 128 KiB, but raises the threshold to the size of each
/// mapped block it frees (up to 32 MiB), after which a request's buffers
/// come from the arenas and stay there when freed: after 64 gzip bombs and
/// 16 large batches at once, the RSS stayed at 549 MiB. A fixed threshold
/// keeps it where it is (nothing to do with other allocators).
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallopt takes no pointers; glibc applies the setting
        // under its own lock. Called before the runtime starts.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM) };
        if set != 1 {
            tracing::warn!("cannot set glibc's mmap threshold");
        }
    }
}

/// How often the freed memory is handed back.
const EVERY: Duration = Duration::from_secs(5);

/// Starts a thread that trims glibc's heaps every [`EVERY`] (nothing to do
/// with other allocators).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("auditsink-trim".into())
            .spawn(|| loop {
                std::thread::sleep(EVERY);
                trim();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no memory trimming thread");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // heaps, under their locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
