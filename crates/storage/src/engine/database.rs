//! The engine's open database: sled's database and tree, the segment log
//! beside it, and the flush that makes both durable, with the poisoning a
//! failed one causes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::engine::durability::Durability;
use crate::engine::log::SegmentLog;
use crate::engine::poison::{Gate, Wake};
use crate::error::{StoreError, WriteFailure, WriteStep};

/// The sled database, its one tree and the segment log, as one store's
/// writers and readers share them.
pub(crate) struct Database {
    db: sled::Db,
    tree: sled::Tree,
    log: Arc<SegmentLog>,
    durability: Durability,
    /// Set by a failed flush: everything after it is refused.
    poisoned: Mutex<Option<WriteFailure>>,
    /// Closed with the poisoning: readers stop.
    gate: Arc<Gate>,
    /// Told of the poisoning: the supervisor reopens the store.
    wake: mpsc::Sender<Wake>,
    /// Flushes run one at a time (see [`Database::flush`]).
    flush_lock: Mutex<()>,
    /// The next id of the writes applied to sled so far.
    applied_next_id: AtomicU64,
    /// Every id below it was flushed: readers see only these (a write
    /// applied but not yet flushed may still fail, and be gone after the
    /// reopening).
    durable_next_id: AtomicU64,
    /// Why the last group that had something to store failed, until one
    /// succeeds (an empty write, such as a readiness probe, proves little:
    /// it appends nothing to the log).
    write_error: Mutex<Option<String>>,
}

impl Database {
    /// The database in `dir` over its opened sled database, tree and log,
    /// with every id below `next_id` on disk (the open flushes it).
    pub fn new(
        dir: &Path,
        db: sled::Db,
        tree: sled::Tree,
        log: Arc<SegmentLog>,
        next_id: u64,
        wake: mpsc::Sender<Wake>,
    ) -> Result<Database, StoreError> {
        Ok(Database {
            durability: Durability::open(dir)?,
            db,
            tree,
            log,
            poisoned: Mutex::new(None),
            gate: Gate::new(),
            wake,
            flush_lock: Mutex::new(()),
            applied_next_id: AtomicU64::new(next_id),
            durable_next_id: AtomicU64::new(next_id),
            write_error: Mutex::new(None),
        })
    }

    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The store's one sled tree.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The segment log.
    pub fn log(&self) -> &Arc<SegmentLog> {
        &self.log
    }

    /// Closed with the poisoning: readers stop.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Every id below it was flushed: readers see only these.
    pub fn durable_next_id(&self) -> u64 {
        self.durable_next_id.load(Ordering::Acquire)
    }

    /// Records that every id below `next_id` is applied to sled (the next
    /// flush covers it).
    pub fn applied(&self, next_id: u64) {
        self.applied_next_id.fetch_max(next_id, Ordering::AcqRel);
    }

    /// Why the last write that had something to store failed, until one
    /// succeeds.
    pub fn last_write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the outcome of a write that had something to store.
    pub fn set_write_error(&self, error: Option<String>) {
        *self.write_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Syncs the log; a failure poisons the store (Linux reports a
    /// write-back error to one fsync only).
    pub fn sync_log(&self) -> Result<(), StoreError> {
        self.log
            .sync()
            .map_err(|e| self.set_poison(WriteFailure::new(WriteStep::SyncLog, e)))
    }

    /// Refuses every later write and read, for `why`, and has the store
    /// reopened (see [`crate::recover`]).
    /// Returns the failure as the error of the step that failed.
    pub fn set_poison(&self, why: WriteFailure) -> StoreError {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if poisoned.is_none() {
            *poisoned = Some(why.clone());
            self.gate.close();
            let _ = self.wake.send(Wake::Poisoned);
        }
        StoreError::Flush(why)
    }

    /// Makes everything written so far durable: sled's flush, then what it
    /// leaves out (see [`Durability`]). One at a time, and the first failure
    /// poisons the store: every later flush (and write) fails. A failed
    /// group's entries stay in sled's memory (a retry would count as a
    /// duplicate), and Linux reports a write-back error to one fsync only:
    /// a later successful one, here or in another thread, proves nothing
    /// about the data before it. Only reading what is on disk again
    /// recovers: the store is closed and reopened (see [`crate::recover`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        let _one = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = self.poison() {
            return Err(StoreError::Flush(e));
        }
        // Everything applied before the flush starts is covered by it.
        let covered = self.applied_next_id.load(Ordering::Acquire);
        match self
            .db
            .flush()
            .map_err(StoreError::from)
            .and_then(|_| self.durability.sync())
        {
            Ok(()) => {
                self.durable_next_id.fetch_max(covered, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => Err(self.set_poison(WriteFailure::new(WriteStep::Flush, e))),
        }
    }

    /// Why the store takes no more writes, if a write or flush failed.
    pub fn poison(&self) -> Option<WriteFailure> {
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
