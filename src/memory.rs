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
