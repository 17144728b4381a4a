//! The event store's write state and counters: what the write lock guards,
//! and what is counted since open.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the single tree holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub events: u64,
    pub quarantine: u64,
}

impl Counts {
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.events.to_be_bytes());
        out[8..].copy_from_slice(&self.quarantine.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Counts> {
        Some(Counts {
            events: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            quarantine: u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

/// State only writers touch, under the write lock.
#[derive(Debug)]
pub(crate) struct WriteState {
    pub next_id: u64,
    pub counts: Counts,
    /// Every event id below it was removed by retention: entries in the
    /// runs for such ids are ignored (and dropped when merged).
    pub horizon: u64,
}

/// Monotonic counters since open.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub flushes: AtomicU64,
    pub events_stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub retention_runs: AtomicU64,
    pub retention_events_removed: AtomicU64,
    pub retention_quarantine_removed: AtomicU64,
    /// Expired events the last retention run kept for a sink.
    pub retention_events_held: AtomicU64,
    /// ms since the epoch of the last finished retention run (0: none).
    pub retention_last_ms: AtomicU64,
    /// Counts mirrored for lock-free reads.
    pub events: AtomicU64,
    pub quarantine: AtomicU64,
    /// [`WriteState::horizon`] mirrored for readers.
    pub horizon: AtomicU64,
}

impl Counters {
    /// Mirrors `counts` for lock-free reads.
    pub fn mirror(&self, counts: Counts) {
        self.events.store(counts.events, Ordering::Relaxed);
        self.quarantine.store(counts.quarantine, Ordering::Relaxed);
    }
}
