//! # auditsink-storage
//!
//! The auditsink store, on sled. It holds three things:
//!
//! - **events**: normalized events with the store's keys (`id`,
//!   `received_at`, `source`), in arrival order;
//! - **dedupe**: one entry per event identity (its `sig`, else the SHA-256 of
//!   its raw line), so a replayed event is counted, not stored twice;
//! - **quarantine**: lines (or whole bodies) that could not be read as
//!   events, kept byte-exact with the reason.
//!
//! Writes go through [`Store::append`]: each [`Batch`] is applied atomically
//! (all of it or none of it), and a single writer thread groups the batches
//! that arrive together under one flush to disk (group commit), so a batch's
//! append returns only once it is durable, and N concurrent deliveries do not
//! cost N sequential fsyncs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod keys;
mod record;
mod writer;

pub use error::StoreError;
pub use keys::{format_id, parse_id};
pub use record::{format_ms, QuarantinedLine, StoredEvent, StoredQuarantine};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use auditsink_parser::Event;

/// One delivery's worth of work, appended atomically.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Name of the configured source that received it.
    pub source: String,
    /// Receive time, milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// Events to store (duplicates are detected and skipped).
    pub events: Vec<Event>,
    /// Lines that are not events, kept with their reason.
    pub quarantine: Vec<QuarantinedLine>,
}

/// What [`Store::append`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AppendSummary {
    /// New events stored.
    pub stored: u64,
    /// Events already in the store (or earlier in the same batch).
    pub duplicates: u64,
    /// Quarantined lines stored.
    pub quarantined: u64,
}

/// An open store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: keys::Trees,
    writer: writer::Handle,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails with
    /// [`StoreError::Locked`] if another process has it open.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from the explicit flush of every group
            // commit; the background flusher only bounds the work left for it.
            .flush_every_ms(Some(1000))
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| StoreError::from_open(dir, e))?;
        let trees = keys::Trees::open(&db)?;
        let writer = writer::spawn(db.clone(), trees.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                trees,
                writer,
                path: dir.to_path_buf(),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends a batch atomically and returns once it is on disk.
    pub async fn append(&self, batch: Batch) -> Result<AppendSummary, StoreError> {
        self.inner
            .writer
            .submit(batch)?
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Blocking form of [`Store::append`], for code outside an async runtime.
    pub fn append_blocking(&self, batch: Batch) -> Result<AppendSummary, StoreError> {
        self.inner
            .writer
            .submit(batch)?
            .blocking_recv()
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Stored events in arrival order, starting after `after_id` if given.
    pub fn events(
        &self,
        after_id: Option<u64>,
    ) -> impl Iterator<Item = Result<StoredEvent, StoreError>> + '_ {
        range_after(&self.inner.trees.events, after_id).map(|item| record::decode_event(item?))
    }

    /// Quarantined entries in arrival order, starting after `after_id` if given.
    pub fn quarantine(
        &self,
        after_id: Option<u64>,
    ) -> impl Iterator<Item = Result<StoredQuarantine, StoreError>> + '_ {
        range_after(&self.inner.trees.quarantine, after_id)
            .map(|item| record::decode_quarantine(item?))
    }

    /// Number of stored events (walks the index: O(n)).
    pub fn event_count(&self) -> usize {
        self.inner.trees.events.len()
    }

    /// Number of quarantined entries (O(n)).
    pub fn quarantine_count(&self) -> usize {
        self.inner.trees.quarantine.len()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Group-commit counters since open: (batches appended, flushes to disk).
    pub fn commit_counts(&self) -> (u64, u64) {
        let counters = &self.inner.writer.counters;
        (
            counters.batches.load(std::sync::atomic::Ordering::Relaxed),
            counters.flushes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

/// The entries of an id-keyed tree after `after_id` (all when `None`).
fn range_after(tree: &sled::Tree, after_id: Option<u64>) -> sled::Iter {
    match after_id {
        None => tree.iter(),
        Some(u64::MAX) => tree.range([0xff; 9]..),
        Some(id) => tree.range((id + 1).to_be_bytes()..),
    }
}
