//! The event store's shared state over the engine: the database, the write
//! lock over [`WriteState`], the dedupe and `trace_id` runs with the Bloom
//! filter in front of the dedupe runs, and the counters. Its fields are its
//! own: the write state is reached only through a [`WriteGuard`], which
//! staging, commit and apply take as proof that the write lock is held.

use std::path::Path;
use std::sync::{mpsc, Arc};

use crate::engine::database::Database;
use crate::engine::filter::KeyFilter;
use crate::engine::log::SegmentLog;
use crate::engine::poison::{Gate, Wake};
use crate::engine::runs::Runs;
use crate::engine::write_lock::{self, WriteLock};
use crate::error::{StoreError, WriteFailure};
use crate::events::state::{Counters, WriteState};

/// The dedupe filter: the engine's key filter in front of the dedupe runs.
pub(crate) type DedupeFilter = KeyFilter;

/// The write lock held on a [`Core`] (see [`WriteLock`]).
pub(crate) type WriteGuard<'a> = write_lock::WriteGuard<'a, Core, WriteState>;

/// The open store and what writers share.
pub(crate) struct Core {
    database: Database,
    state: WriteLock<WriteState>,
    /// Shared with the store's later openings (see [`crate::recover`]).
    counters: Arc<Counters>,
    filter: DedupeFilter,
    dedupe: Arc<Runs>,
    traces: Runs,
}

impl Core {
    /// A store's shared state over its opened database, tree, runs and event
    /// log, with the write state found on open.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: &Path,
        db: sled::Db,
        tree: sled::Tree,
        state: WriteState,
        counters: Arc<Counters>,
        (dedupe, traces): (Runs, Runs),
        log: Arc<SegmentLog>,
        wake: mpsc::Sender<Wake>,
    ) -> Result<Core, StoreError> {
        // What is there on open is on disk (the open flushes it).
        let next_id = state.next_id;
        Ok(Core {
            database: Database::new(dir, db, tree, log, next_id, wake)?,
            state: WriteLock::new(state),
            counters,
            filter: DedupeFilter::new(),
            dedupe: Arc::new(dedupe),
            traces,
        })
    }

    /// The engine's database (sled, the event log, durability, poisoning).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The write lock over the write state, for the group-commit pipeline
    /// (maintenance takes it with [`Core::lock`]).
    pub fn write_lock(&self) -> &WriteLock<WriteState> {
        &self.state
    }

    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        self.database.db()
    }

    /// The store's one sled tree.
    pub fn tree(&self) -> &sled::Tree {
        self.database.tree()
    }

    /// Counters since the first opening.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The Bloom filter in front of the dedupe runs.
    pub fn filter(&self) -> &DedupeFilter {
        &self.filter
    }

    /// The dedupe entries' runs.
    pub fn dedupe(&self) -> &Arc<Runs> {
        &self.dedupe
    }

    /// The `trace_id` entries' runs.
    pub fn traces(&self) -> &Runs {
        &self.traces
    }

    /// The event log.
    pub fn log(&self) -> &Arc<SegmentLog> {
        self.database.log()
    }

    /// Closed with the poisoning: readers stop.
    pub fn gate(&self) -> &Arc<Gate> {
        self.database.gate()
    }

    /// Every id below it was flushed: readers see only these.
    pub fn durable_next_id(&self) -> u64 {
        self.database.durable_next_id()
    }

    /// The next id to give, as it stands (for the closing of a store no
    /// writer uses any more).
    pub fn next_id(&self) -> u64 {
        self.state.lock_now(self).next_id
    }

    /// Why the last append that had something to store failed, until one
    /// succeeds.
    pub fn last_write_error(&self) -> Option<String> {
        self.database.last_write_error()
    }

    /// The write lock, for maintenance (see [`WriteLock::lock`]): once no
    /// group is in flight and the merger is idle, so that what it reads of
    /// sled, the runs and the event log is all there is and nothing else
    /// changes the runs.
    pub fn lock(&self) -> WriteGuard<'_> {
        self.state.lock(self)
    }

    /// Syncs the event log; a failure poisons the store.
    pub fn sync_log(&self) -> Result<(), StoreError> {
        self.database.sync_log()
    }

    /// Makes everything written so far durable (see [`Database::flush`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.database.flush()
    }

    /// Why the store takes no more writes, if a write or flush failed.
    pub fn poison(&self) -> Option<WriteFailure> {
        self.database.poison()
    }
}
