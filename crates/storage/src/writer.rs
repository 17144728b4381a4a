//! Writes: staging one atomic sled batch, and the group-commit pipeline.
//!
//! The writer thread takes the deliveries that queued up meanwhile as one
//! group and stages them together (dedupe decisions, ids, event chunks
//! appended to the event log, one `sled::Batch` with the chunks' pointers,
//! the index postings, the quarantined lines and the updated counters).
//! The syncer then `fdatasync`s the log once for every group staged
//! meanwhile, adds each group's dedupe and `trace_id` runs and applies its
//! batch (atomic, also across a crash: sled recovers all of it or none of
//! it); the flusher makes them durable with one sled flush (fsync), and
//! only then is each caller answered. The three overlap: while one group's
//! log is synced, the next is staged; a fourth thread, the merger, merges
//! the runs that pile up beside them. One writer (plus the identities of
//! the groups in flight) makes "is this identity already stored?" and
//! "store it" a single step; maintenance takes the write lock once no
//! group is in flight, and lets a waiting writer stage one group first, so
//! that maintenance working in steps (retention) does not hold writes up
//! to its end.
//!
//! Why one piece (about 1,400 lines): the write lock's rules (`Core::lock`
//! and the writer's, the syncer's and the merger's ways to take it, the
//! in-flight count, `WriteGuard`) and the threads that keep them are read
//! together. It holds four jobs that could stand apart (the shared `Core`,
//! `Durability`, the prepared batch, the pipeline's threads); splitting them
//! into files is left to a later change.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use auditsink_parser::BorrowedEvent;

use crate::events::view::EventView;
use tokio::sync::oneshot;

use crate::engine::filter::DedupeFilter;
use crate::engine::log::EventLog;
use crate::engine::runs::{Entry, Key, RunList, Runs};
use crate::error::{WriteFailure, WriteStep};
use crate::events::chunk::ChunkBuilder;
use crate::events::codec::{encode_event, encode_event_into, encode_quarantine, event_time};
use crate::events::index::trace_key;
use crate::events::index::{for_each_term, terms, PostingBuilder};
use crate::events::keys::{
    dedupe_key, id_key, quarantine_dedupe_entry, quarantine_key, IndexKind, META_COUNTS,
    META_NEXT_ID, QUARANTINE,
};
use crate::{AppendSummary, Batch, QuarantineReason, StoreError};

/// Upper bound on batches sharing one flush, so the first caller of a long
/// queue is not kept waiting behind an unbounded group.
const MAX_GROUP: usize = 256;

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
    /// Groups the writer staged (ids given, chunks appended to the log)
    /// that the syncer has not applied yet, plus the merger while it
    /// merges: maintenance waits for none.
    pub in_flight: u64,
    /// Maintenance waiting for the groups in flight: the writer stages no
    /// more meanwhile (so that it does not wait forever under load).
    pub waiting: u64,
    /// Groups the writer began to stage: maintenance that finds the writer
    /// waiting lets one more begin (see [`Core::lock`]).
    pub writer_turns: u64,
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

/// The open database and what writers share. Its fields are its own: the
/// write state is reached only through a [`WriteGuard`], which staging,
/// commit and apply take as proof that the write lock is held.
pub(crate) struct Core {
    db: sled::Db,
    tree: sled::Tree,
    state: Mutex<WriteState>,
    /// Shared with the store's later openings (see [`crate::recover`]).
    counters: Arc<Counters>,
    durability: Durability,
    filter: DedupeFilter,
    dedupe: Arc<Runs>,
    traces: Runs,
    log: Arc<EventLog>,
    /// Why the last group that had something to store failed, until one
    /// succeeds (an empty write, such as a readiness probe, proves little:
    /// it appends nothing to the event log).
    write_error: Mutex<Option<String>>,
    /// Set by a failed flush: everything after it is refused.
    poisoned: Mutex<Option<WriteFailure>>,
    /// Closed with the poisoning: readers stop.
    gate: Arc<crate::engine::poison::Gate>,
    /// Told of the poisoning: the supervisor reopens the store.
    wake: mpsc::Sender<crate::engine::poison::Wake>,
    /// Flushes run one at a time (see [`Core::flush`]).
    flush_lock: Mutex<()>,
    /// Signalled as groups in flight are applied and as maintenance takes
    /// the write lock (see [`Core::lock`]).
    drained: Condvar,
    /// Sequence number of the last group the syncer applied, plus one.
    applied: AtomicU64,
    /// The next id of the writes applied to sled so far.
    applied_next_id: AtomicU64,
    /// Every id below it was flushed: readers see only these (a group
    /// applied but not yet flushed may still fail, and be gone after the
    /// reopening).
    durable_next_id: AtomicU64,
    /// The writer has a group to stage: said before it takes the write
    /// lock, because maintenance that takes it again at once, step after
    /// step, would otherwise always win it.
    writer_wants: AtomicBool,
}

/// The write lock held on a [`Core`]: what staging ([`Staging::new`]),
/// [`Staging::commit`] and applying a staged write take as proof. Derefs to
/// the write state.
pub(crate) struct WriteGuard<'a> {
    core: &'a Core,
    state: MutexGuard<'a, WriteState>,
}

impl<'a> WriteGuard<'a> {
    /// The store it locks.
    pub fn core(&self) -> &'a Core {
        self.core
    }
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = WriteState;
    fn deref(&self) -> &WriteState {
        &self.state
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut WriteState {
        &mut self.state
    }
}

impl Core {
    /// A store's shared state over its opened database, tree, runs and event
    /// log, with the write state found on open.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: &std::path::Path,
        db: sled::Db,
        tree: sled::Tree,
        state: WriteState,
        counters: Arc<Counters>,
        (dedupe, traces): (Runs, Runs),
        log: Arc<EventLog>,
        wake: mpsc::Sender<crate::engine::poison::Wake>,
    ) -> Result<Core, StoreError> {
        // What is there on open is on disk (the open flushes it).
        let next_id = state.next_id;
        Ok(Core {
            durability: Durability::open(dir)?,
            db,
            counters,
            state: Mutex::new(state),
            dedupe: Arc::new(dedupe),
            traces,
            log,
            tree,
            filter: DedupeFilter::new(),
            write_error: Mutex::new(None),
            poisoned: Mutex::new(None),
            gate: crate::engine::poison::Gate::new(),
            wake,
            flush_lock: Mutex::new(()),
            drained: Condvar::new(),
            applied: AtomicU64::new(0),
            applied_next_id: AtomicU64::new(next_id),
            durable_next_id: AtomicU64::new(next_id),
            writer_wants: AtomicBool::new(false),
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
    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// Closed with the poisoning: readers stop.
    pub fn gate(&self) -> &Arc<crate::engine::poison::Gate> {
        &self.gate
    }

    /// Every id below it was flushed: readers see only these.
    pub fn durable_next_id(&self) -> u64 {
        self.durable_next_id.load(Ordering::Acquire)
    }

    /// The next id to give, as it stands (for the closing of a store no
    /// writer uses any more).
    pub fn next_id(&self) -> u64 {
        self.lock_now().next_id
    }

    /// Why the last append that had something to store failed, until one
    /// succeeds.
    pub fn last_write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The write lock, for maintenance: once no group is in flight between
    /// the writer and the syncer and the merger is idle (see [`run`]), so
    /// that what it reads of sled, the runs and the event log is all there
    /// is and nothing else changes the runs.
    ///
    /// A writer waiting to stage goes first, one group: maintenance that
    /// works in steps, each under the lock (retention, reprocessing), lets
    /// writes through between its steps instead of holding them up to its
    /// end.
    pub fn lock(&self) -> WriteGuard<'_> {
        let mut state = self.mutex_now();
        let turn = state.writer_turns;
        while self.writer_wants.load(Ordering::Acquire) && state.writer_turns == turn {
            state = self.drained.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.waiting += 1;
        while state.in_flight > 0 {
            state = self.drained.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.waiting -= 1;
        self.drained.notify_all();
        self.guard(state)
    }

    fn guard<'a>(&'a self, state: MutexGuard<'a, WriteState>) -> WriteGuard<'a> {
        WriteGuard { core: self, state }
    }

    fn mutex_now(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The write lock as it is (the syncer's: groups may be in flight).
    fn lock_now(&self) -> WriteGuard<'_> {
        self.guard(self.mutex_now())
    }

    /// The write lock for the merger: after any maintenance waiting for it.
    fn lock_for_staging(&self) -> WriteGuard<'_> {
        let mut state = self.mutex_now();
        while state.waiting > 0 {
            state = self.drained.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        self.guard(state)
    }

    /// The write lock for the writer's next group: after any maintenance
    /// waiting for it, before any that comes later (see [`Core::lock`]).
    fn lock_for_writer(&self) -> WriteGuard<'_> {
        self.writer_wants.store(true, Ordering::Release);
        let mut state = self.lock_for_staging();
        self.writer_wants.store(false, Ordering::Release);
        state.writer_turns += 1;
        self.drained.notify_all();
        state
    }

    /// Syncs the event log; a failure poisons the store (Linux reports a
    /// write-back error to one fsync only).
    pub fn sync_log(&self) -> Result<(), StoreError> {
        self.log
            .sync()
            .map_err(|e| self.set_poison(WriteFailure::new(WriteStep::SyncLog, e)))
    }

    /// Refuses every later write and read, for `why`, and has the store
    /// reopened (see [`crate::recover`]).
    /// Returns the failure as the error of the step that failed.
    fn set_poison(&self, why: WriteFailure) -> StoreError {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if poisoned.is_none() {
            *poisoned = Some(why.clone());
            self.gate.close();
            let _ = self.wake.send(crate::engine::poison::Wake::Poisoned);
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

/// What sled 0.34's `flush` does not make durable, done after it. On Linux
/// sled writes its log with `sync_file_range`, which neither commits the
/// file's size and extents (the log grows as segments are added) nor
/// flushes the drive's write cache, and it writes values too large for a
/// log segment (a quarantined body of more than ~128 KiB) to files under
/// `blobs/` without syncing them at all. A `kill -9` loses none of that
/// (it is in the page cache); a power cut could. So after every flush:
/// `fdatasync` the log, and `fsync` any blob file not synced yet and the
/// blob directory.
pub(crate) struct Durability {
    log: std::fs::File,
    log_path: std::path::PathBuf,
    blob_dir: std::path::PathBuf,
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
}

impl Durability {
    /// For the sled database in `dir` (opened already, so `db` exists).
    pub fn open(dir: &std::path::Path) -> Result<Durability, StoreError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let log_path = dir.join("db");
        let log = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        // The directory entries of a store just created.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(Durability {
            log,
            log_path,
            blob_dir: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        self.log.sync_data().map_err(io(&self.log_path))?;
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&self.blob_dir)(e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::with_capacity(synced.len());
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(io(&self.blob_dir))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => new = true,
                    // Removed meanwhile by sled's blob collection.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            present.insert(name);
        }
        if new {
            std::fs::File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.blob_dir))?;
        }
        *synced = present;
        Ok(())
    }
}

/// An event with everything computed that does not need the store: its
/// record, identity, time and index terms. Done on the caller's thread so
/// that the single writer only does what must be serial.
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub dedupe_key: Key,
    pub trace_key: Option<Key>,
    pub record: Vec<u8>,
    pub time: i64,
    pub terms: Vec<(IndexKind, Vec<u8>)>,
}

impl PreparedEvent {
    pub fn new(received_at_ms: i64, source: &str, event: &impl EventView) -> PreparedEvent {
        let time = event_time(event, received_at_ms);
        PreparedEvent {
            dedupe_key: dedupe_key(event),
            trace_key: trace_key(event),
            record: encode_event(received_at_ms, source, event),
            time,
            terms: terms(event, time),
        }
    }
}

/// A delivery made ready for [`crate::Store::append_prepared`]: each event
/// encoded, hashed and split into index terms, each quarantined line
/// encoded. Built on the caller's thread (the CPU work of an append that
/// needs no lock), from the parser's borrowed events, so the receiver never
/// builds owned ones.
///
/// Its events' records are back to back in one buffer, and its index terms
/// are grouped by term (a delivery of 500 events from one organisation
/// holds one `org_id` term with 500 members): the writer, the one serial
/// step, then does per term what it would otherwise do per event.
#[derive(Debug)]
pub struct PreparedBatch {
    source: String,
    received_at_ms: i64,
    /// Every event's record, back to back.
    records: Vec<u8>,
    pub(crate) events: Vec<EventHead>,
    /// Each term (its kind's tag, then its bytes), with its kind and the
    /// indexes into `events` of the events that have it.
    terms: HashMap<Vec<u8>, (IndexKind, Vec<u32>)>,
    /// Where a term's key is assembled for the look-up.
    scratch: Vec<u8>,
    /// Each quarantined line's identity and record.
    pub(crate) quarantine: Vec<(Key, Vec<u8>)>,
}

/// A prepared event of a [`PreparedBatch`]: its record is
/// `records[previous end..end]`.
#[derive(Debug)]
pub(crate) struct EventHead {
    dedupe_key: Key,
    trace_key: Option<Key>,
    time: i64,
    end: usize,
}

impl PreparedBatch {
    /// An empty delivery received from `source` at `received_at_ms`
    /// (milliseconds since the Unix epoch).
    pub fn new(source: &str, received_at_ms: i64) -> PreparedBatch {
        PreparedBatch {
            source: source.to_owned(),
            received_at_ms,
            records: Vec::new(),
            events: Vec::new(),
            terms: HashMap::new(),
            scratch: Vec::new(),
            quarantine: Vec::new(),
        }
    }

    /// Adds an event to store (unless it is a duplicate).
    pub fn add_event(&mut self, event: &BorrowedEvent<'_>) {
        self.add(event);
    }

    fn add(&mut self, event: &impl EventView) {
        let index = self.events.len() as u32;
        let time = event_time(event, self.received_at_ms);
        encode_event_into(&mut self.records, self.received_at_ms, &self.source, event);
        self.events.push(EventHead {
            dedupe_key: dedupe_key(event),
            trace_key: trace_key(event),
            time,
            end: self.records.len(),
        });
        let (terms, scratch) = (&mut self.terms, &mut self.scratch);
        for_each_term(event, time, |kind, term| {
            scratch.clear();
            scratch.push(kind as u8);
            scratch.extend_from_slice(term);
            match terms.get_mut(&scratch[..]) {
                Some((_, members)) => members.push(index),
                None => {
                    terms.insert(scratch.clone(), (kind, vec![index]));
                }
            }
        });
    }

    /// Adds a line (or a whole body) kept in quarantine, with why.
    pub fn add_quarantine(&mut self, raw: &[u8], reason: &QuarantineReason) {
        self.quarantine.push((
            quarantine_key(&self.source, raw),
            encode_quarantine(self.received_at_ms, &self.source, reason, raw),
        ));
    }

    /// Events added so far.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Quarantined lines added so far.
    pub fn quarantine_count(&self) -> usize {
        self.quarantine.len()
    }

    /// The heap memory it holds, in bytes (allocated capacity, plus an
    /// estimate of the hash table's own overhead), for a receiver that
    /// budgets what its requests cost.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let term_entry = size_of::<(Vec<u8>, (IndexKind, Vec<u32>))>() + 1;
        let terms: usize = self
            .terms
            .iter()
            .map(|(key, (_, members))| key.capacity() + members.capacity() * 4)
            .sum();
        let quarantine: usize = self.quarantine.iter().map(|(_, raw)| raw.capacity()).sum();
        self.source.capacity()
            + self.records.capacity()
            + self.events.capacity() * size_of::<EventHead>()
            + self.terms.capacity() * term_entry
            + terms
            + self.scratch.capacity()
            + self.quarantine.capacity() * size_of::<([u8; 16], Vec<u8>)>()
            + quarantine
    }
}

impl From<&Batch> for PreparedBatch {
    fn from(batch: &Batch) -> PreparedBatch {
        let mut prepared = PreparedBatch::new(&batch.source, batch.received_at_ms);
        prepared.events.reserve(batch.events.len());
        for event in &batch.events {
            prepared.add(event);
        }
        for line in &batch.quarantine {
            prepared.add_quarantine(&line.raw, &line.reason);
        }
        prepared
    }
}

/// One atomic write being assembled.
pub(crate) struct Staging<'a> {
    core: &'a Core,
    batch: sled::Batch,
    seen: KeySet,
    /// Identities of groups in flight (staged, not yet in the runs).
    pending: Option<&'a KeySet>,
    dedupe: Vec<Entry>,
    traces: Vec<Entry>,
    /// Identities of the quarantined lines staged.
    quarantined: Vec<Key>,
    horizon: u64,
    postings: PostingBuilder,
    chunk: Option<ChunkBuilder>,
    /// Full chunks: (key, body).
    chunks: Vec<([u8; 9], Vec<u8>)>,
    pub next_id: u64,
    pub counts: Counts,
}

impl<'a> Staging<'a> {
    /// A write to stage on the store the write lock `guard` holds.
    pub fn new(guard: &WriteGuard<'a>) -> Staging<'a> {
        let state: &WriteState = guard;
        Staging {
            core: guard.core(),
            batch: sled::Batch::default(),
            seen: KeySet::default(),
            pending: None,
            dedupe: Vec::new(),
            traces: Vec::new(),
            quarantined: Vec::new(),
            horizon: state.horizon,
            postings: PostingBuilder::default(),
            chunk: None,
            chunks: Vec::new(),
            next_id: state.next_id,
            counts: state.counts,
        }
    }

    /// Stages an event unless its identity is stored (or staged); returns
    /// its new id, or `None` for a duplicate.
    pub fn add_event(&mut self, event: PreparedEvent) -> Result<Option<u64>, StoreError> {
        if self.is_known(&event.dedupe_key)? {
            return Ok(None);
        }
        Ok(Some(self.add_new(event)))
    }

    /// Whether an identity is stored or staged.
    fn is_known(&self, key: &Key) -> Result<bool, StoreError> {
        let core = self.core;
        Ok(self.seen.contains(key)
            || self.pending.is_some_and(|p| p.contains(key))
            || (core.filter.may_contain(key)
                && core.dedupe.first(&core.tree, key, self.horizon)?.is_some()))
    }

    /// Whether a quarantined line's identity is stored or staged.
    fn is_quarantined(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.seen.contains(key)
            || self.pending.is_some_and(|p| p.contains(key))
            || self.core.tree.contains_key(quarantine_dedupe_entry(key))?)
    }

    /// Stages an event known to be new; returns its id.
    fn add_new(&mut self, event: PreparedEvent) -> u64 {
        let id = self.add_record(event.dedupe_key, event.trace_key, &event.record);
        self.postings.add(id, event.time, event.terms);
        id
    }

    /// Stages the record and identities of an event known to be new (its
    /// postings are the caller's); returns its id.
    fn add_record(&mut self, dedupe_key: Key, trace_key: Option<Key>, record: &[u8]) -> u64 {
        self.core.filter.add(&dedupe_key);
        let id = self.next_id;
        self.next_id += 1;
        let chunk = self.chunk.get_or_insert_with(|| ChunkBuilder::new(id));
        chunk.push(id, record);
        if chunk.is_full() {
            if let Some(full) = self.chunk.take() {
                self.chunks.push(full.finish());
            }
        }
        self.dedupe.push(Entry {
            key: dedupe_key,
            id,
        });
        if let Some(key) = trace_key {
            self.traces.push(Entry { key, id });
        }
        self.seen.insert(dedupe_key);
        self.counts.events += 1;
        id
    }

    /// Stages a whole delivery. Its identities are looked up first, so a
    /// failed lookup (a damaged index page) fails this delivery alone, with
    /// nothing of it staged, not the group it came with.
    pub fn add_delivery(&mut self, prepared: PreparedBatch) -> Result<AppendSummary, StoreError> {
        let mut in_delivery = KeySet::with_capacity_and_hasher(prepared.events.len(), KeyHash);
        let mut known = Vec::with_capacity(prepared.events.len());
        for event in &prepared.events {
            known.push(!in_delivery.insert(event.dedupe_key) || self.is_known(&event.dedupe_key)?);
        }
        let mut known_quarantined = Vec::with_capacity(prepared.quarantine.len());
        for (key, _) in &prepared.quarantine {
            known_quarantined.push(!in_delivery.insert(*key) || self.is_quarantined(key)?);
        }
        let mut summary = AppendSummary::default();
        let mut ids = Vec::with_capacity(prepared.events.len());
        let mut start = 0;
        for (event, known) in prepared.events.iter().zip(known) {
            let record = &prepared.records[start..event.end];
            start = event.end;
            if known {
                summary.duplicates += 1;
                ids.push(None);
            } else {
                ids.push(Some(self.add_record(
                    event.dedupe_key,
                    event.trace_key,
                    record,
                )));
                summary.stored += 1;
            }
        }
        for (mut key, (kind, members)) in prepared.terms {
            let term = key.split_off(1);
            let entries = members.into_iter().filter_map(|i| {
                let i = i as usize;
                ids[i].map(|id| (id, prepared.events[i].time))
            });
            self.postings.add_entries(kind, term, entries);
        }
        for ((key, record), known) in prepared.quarantine.into_iter().zip(known_quarantined) {
            if known {
                summary.duplicates += 1;
            } else {
                self.add_quarantine(key, record);
                summary.quarantined += 1;
            }
        }
        Ok(summary)
    }

    /// Stages a quarantine record known to be new, with its dedupe entry;
    /// returns its id.
    pub(crate) fn add_quarantine(&mut self, key: Key, record: Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.batch.insert(&id_key(QUARANTINE, id), record);
        self.batch
            .insert(&quarantine_dedupe_entry(&key), &id.to_be_bytes());
        self.seen.insert(key);
        self.quarantined.push(key);
        self.counts.quarantine += 1;
        id
    }

    /// Stages the removal of a quarantine record whose line's identity is
    /// `key`, with its dedupe entry if that points at it.
    pub fn remove_quarantine(&mut self, id: u64, key: &Key) -> Result<(), StoreError> {
        self.batch.remove(&id_key(QUARANTINE, id));
        remove_quarantine_entry(&self.core.tree, &mut self.batch, id, key)?;
        self.counts.quarantine = self.counts.quarantine.saturating_sub(1);
        Ok(())
    }

    /// Applies the staged write atomically and moves `state` forward
    /// (maintenance's way: the write lock held, nothing in flight).
    pub fn commit(self, guard: &mut WriteGuard<'_>) -> Result<(), StoreError> {
        assert!(
            std::ptr::eq(self.core, guard.core()),
            "committed under another store's lock"
        );
        let staged = self.stage()?;
        if staged.appended {
            guard.core().sync_log()?;
        }
        let (next_id, counts) = (staged.next_id, staged.counts);
        staged.apply(guard)?;
        guard.next_id = next_id;
        guard.counts = counts;
        Ok(())
    }

    /// The staged write with its chunks appended to the event log (not yet
    /// synced) and their pointers in its sled batch.
    fn stage(self) -> Result<Staged, StoreError> {
        let Staging {
            core,
            mut batch,
            dedupe,
            traces,
            quarantined,
            postings,
            chunk,
            mut chunks,
            next_id,
            counts,
            ..
        } = self;
        if let Some(chunk) = chunk.filter(|c| !c.is_empty()) {
            chunks.push(chunk.finish());
        }
        let appended = !chunks.is_empty();
        if appended {
            let bodies: Vec<Vec<u8>> = chunks.iter_mut().map(|(_, b)| std::mem::take(b)).collect();
            let pointers = core.log.append(&bodies)?;
            for ((key, _), pointer) in chunks.iter().zip(pointers) {
                batch.insert(key, &pointer.encode());
            }
        }
        for (key, value) in postings.finish() {
            batch.insert(key, value);
        }
        batch.insert(META_NEXT_ID, &next_id.to_be_bytes());
        batch.insert(META_COUNTS, &counts.encode());
        Ok(Staged {
            batch,
            dedupe,
            traces,
            quarantined,
            next_id,
            counts,
            appended,
        })
    }
}

/// A staged write whose chunks are in the event log: what is left is to
/// sync the log (before anything points at the chunks), add the runs and
/// apply the sled batch.
pub(crate) struct Staged {
    batch: sled::Batch,
    dedupe: Vec<Entry>,
    traces: Vec<Entry>,
    quarantined: Vec<Key>,
    next_id: u64,
    counts: Counts,
    /// Whether it appended chunks to the log.
    appended: bool,
}

impl Staged {
    /// Applies it atomically (its chunks synced already; the write lock
    /// held, which `guard` proves). The caller moves the write state forward.
    fn apply(self, guard: &WriteGuard<'_>) -> Result<(), StoreError> {
        let core = guard.core();
        let counters = &core.counters;
        let Staged {
            mut batch,
            dedupe,
            traces,
            counts,
            next_id,
            ..
        } = self;
        // The merger swaps lists too: held from the snapshot to the install.
        let (_dedupe_mutation, _traces_mutation) = (core.dedupe.mutation(), core.traces.mutation());
        let runs = |runs: &Runs, entries: Vec<Entry>, batch: &mut sled::Batch| {
            (!entries.is_empty()).then(|| runs.stage(&runs.snapshot(), entries, batch))
        };
        let new_dedupe: Option<Arc<RunList>> = runs(&core.dedupe, dedupe, &mut batch);
        let new_traces = runs(&core.traces, traces, &mut batch);
        core.tree.apply_batch(batch)?;
        if let Some(list) = new_dedupe {
            core.dedupe.install(list);
        }
        if let Some(list) = new_traces {
            core.traces.install(list);
        }
        counters.events.store(counts.events, Ordering::Relaxed);
        counters
            .quarantine
            .store(counts.quarantine, Ordering::Relaxed);
        core.applied_next_id.fetch_max(next_id, Ordering::AcqRel);
        Ok(())
    }
}

/// Stages the removal of the quarantine dedupe entry `key` if it points at
/// `id` (in a store written before the entries, it points at the newest of
/// the identical lines kept then).
pub(crate) fn remove_quarantine_entry(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    id: u64,
    key: &Key,
) -> Result<(), StoreError> {
    let entry = quarantine_dedupe_entry(key);
    if tree
        .get(entry)?
        .is_some_and(|v| v.as_ref() == id.to_be_bytes())
    {
        batch.remove(&entry);
    }
    Ok(())
}

/// Each delivery's summary, or why that delivery alone failed.
type Outcomes = Vec<Result<AppendSummary, StoreError>>;

/// A set of dedupe keys. They are SHA-256 prefixes, already uniform: their
/// first 8 bytes are the hash.
type KeySet = HashSet<Key, KeyHash>;

#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Folds the bytes it is given 8 at a time (a [`Key`] hashes as its length,
/// then its 16 bytes).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(8) {
            let mut w = [0; 8];
            w[..word.len()].copy_from_slice(word);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(w);
        }
    }
}

/// The identities of the groups in flight, by group sequence number.
#[derive(Default)]
struct Pending {
    groups: std::collections::VecDeque<(u64, Vec<Key>)>,
    keys: KeySet,
}

impl Pending {
    /// Forgets the groups the syncer applied (their keys are in the runs).
    fn prune(&mut self, applied: u64) {
        while self.groups.front().is_some_and(|(seq, _)| *seq < applied) {
            if let Some((_, keys)) = self.groups.pop_front() {
                for key in keys {
                    self.keys.remove(&key);
                }
            }
        }
    }

    fn add(&mut self, seq: u64, keys: Vec<Key>) {
        self.keys.extend(keys.iter().copied());
        self.groups.push_back((seq, keys));
    }
}

/// Stages a group of prepared deliveries (ids, records appended to the
/// log, the sled batch) for the syncer.
fn stage_group<'a>(
    core: &'a Core,
    group: Vec<PreparedBatch>,
    pending: &mut Pending,
    seq: u64,
) -> Result<(Staged, Outcomes, InFlightToken<'a>), StoreError> {
    let mut state = core.lock_for_writer();
    if core.filter.is_full() {
        // Keys in flight are not in the runs the new filter is built from.
        core.filter.start(
            &core.tree,
            &core.dedupe,
            state.horizon,
            state.counts.events,
            pending.keys.iter().copied().collect(),
        );
    }
    let mut staging = Staging::new(&state);
    staging.pending = Some(&pending.keys);
    let outcomes = group
        .into_iter()
        .map(|prepared| staging.add_delivery(prepared))
        .collect();
    let staged = staging.stage()?;
    state.next_id = staged.next_id;
    state.counts = staged.counts;
    let keys = staged.dedupe.iter().map(|e| e.key);
    pending.add(
        seq,
        keys.chain(staged.quarantined.iter().copied()).collect(),
    );
    state.in_flight += 1;
    // Made once the lock is released: its drop takes the lock.
    drop(state);
    Ok((staged, outcomes, InFlightToken(core)))
}

/// Merges runs that piled up, until none is left to merge or `stop` says
/// so. A failure leaves more runs to read (slower lookups), never a wrong
/// answer: it is logged, not returned.
pub(crate) fn merge_runs(core: &Core, horizon: u64, stop: impl Fn() -> bool) {
    for runs in [&core.dedupe, &core.traces] {
        while !stop() {
            match runs.merge_step(&core.tree, horizon) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, index = runs.kind().as_str(), "merging index runs failed");
                    break;
                }
            }
        }
    }
}

type Reply = oneshot::Sender<Result<AppendSummary, StoreError>>;

struct Job {
    batch: PreparedBatch,
    reply: Reply,
}

pub(crate) struct Handle {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Handle {
    /// Closes the queue and waits for the writer to finish what it holds, so
    /// that once the last `Store` clone is gone the directory can be reopened.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Handle {
    pub fn submit(
        &self,
        batch: PreparedBatch,
    ) -> Result<oneshot::Receiver<Result<AppendSummary, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Job { batch, reply })
            .map_err(|_| StoreError::WriterGone)?;
        Ok(receiver)
    }
}

pub(crate) fn spawn(core: Arc<Core>) -> Result<Handle, StoreError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let thread = thread::Builder::new()
        .name("auditsink-store-writer".into())
        .spawn(move || run(&core, &queue))
        .map_err(|source| StoreError::Io {
            path: "writer thread".into(),
            source,
        })?;
    Ok(Handle {
        jobs: Some(jobs),
        thread: Some(thread),
    })
}

/// A group staged by the writer, on its way to the syncer.
struct InFlight<'a> {
    seq: u64,
    replies: Vec<Reply>,
    /// The staged write and each delivery's summary, or why the whole
    /// group failed.
    staged: Result<(Staged, Outcomes), WriteFailure>,
    /// Counts a staged group in flight while it exists.
    token: Option<InFlightToken<'a>>,
    stores_something: bool,
}

/// A staged group (or the merger's work) counted in
/// [`WriteState::in_flight`] until the token is dropped: once the group is
/// applied (the merge done), or whatever happens to it (a failed send, a
/// thread that panicked), so maintenance never waits forever. Never
/// dropped with the write lock held.
struct InFlightToken<'a>(&'a Core);

impl Drop for InFlightToken<'_> {
    fn drop(&mut self) {
        self.0.lock_now().in_flight -= 1;
        self.0.drained.notify_all();
    }
}

/// The writer thread and, beside it, the syncer, the flusher and the
/// merger: a pipeline, so that one group's fsyncs overlap the next groups'
/// CPU work.
///
/// - The writer takes the deliveries queued meanwhile as one group (group
///   commit), decides what is new (the Bloom filter, the runs, and the
///   identities of groups still in flight), gives ids, appends the group's
///   chunks to the event log and builds its sled batch; then it goes on
///   with the next group.
/// - The syncer takes every group staged meanwhile: one `fdatasync` of the
///   log for all of them, then (the write lock held) each one's runs and
///   sled batch applied in order.
/// - The flusher takes every group applied meanwhile: one sled flush (it
///   covers everything applied before it started), and only then the
///   answers.
/// - The merger merges the runs that piled up, beside all three.
///
/// So sled still never points at log bytes that are not on disk, and an
/// append is answered only once all of it is durable.
fn run(core: &Core, queue: &mpsc::Receiver<Job>) {
    thread::scope(|scope| {
        // Dropped when the writer stops, which stops the syncer.
        let (staged, syncer_queue) = mpsc::channel::<InFlight>();
        let (applied, flusher_queue) = mpsc::channel::<Applied>();
        // Dropped when the syncer stops, which stops the merger.
        let (wanted, merger_queue) = mpsc::channel::<()>();
        let syncer = thread::Builder::new()
            .name("auditsink-store-syncer".into())
            .spawn_scoped(scope, move || {
                sync_and_apply(core, &syncer_queue, &applied, &wanted)
            });
        let flusher = thread::Builder::new()
            .name("auditsink-store-flusher".into())
            .spawn_scoped(scope, move || flush_and_answer(core, &flusher_queue));
        let merger = thread::Builder::new()
            .name("auditsink-store-merger".into())
            .spawn_scoped(scope, move || merge_when_wanted(core, &merger_queue));
        if let Err(e) = syncer.and(flusher).and(merger) {
            tracing::error!(error = %e, "starting the store's syncer, flusher and merger threads failed");
            return;
        }
        let mut pending = Pending::default();
        let mut seq = 0;
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let (batches, replies): (Vec<PreparedBatch>, Vec<Reply>) =
                group.into_iter().map(|job| (job.batch, job.reply)).unzip();
            let stores_something = batches
                .iter()
                .any(|b| !b.events.is_empty() || !b.quarantine.is_empty());
            pending.prune(core.applied.load(Ordering::Acquire));
            // After a failed write or flush nothing more is accepted.
            let (staged_group, token) = match core.poison() {
                Some(e) => (Err(e), None),
                None => match stage_group(core, batches, &mut pending, seq) {
                    Ok((staged, outcomes, token)) => (Ok((staged, outcomes)), Some(token)),
                    Err(e) => (Err(WriteFailure::new(WriteStep::Stage, e)), None),
                },
            };
            let group = InFlight {
                seq,
                replies,
                staged: staged_group,
                token,
                stores_something,
            };
            seq += 1;
            if staged.send(group).is_err() {
                return;
            }
        }
    });
}

/// The syncer (see [`run`]).
fn sync_and_apply<'a>(
    core: &'a Core,
    queue: &mpsc::Receiver<InFlight<'a>>,
    applied: &mpsc::Sender<Applied>,
    merge_wanted: &mpsc::Sender<()>,
) {
    while let Ok(first) = queue.recv() {
        let mut groups = vec![first];
        while let Ok(group) = queue.try_recv() {
            groups.push(group);
        }
        let appended = groups
            .iter()
            .any(|g| matches!(&g.staged, Ok((staged, _)) if staged.appended));
        if appended {
            // A failure poisons the store: nothing below is applied.
            let _ = core.sync_log();
        }
        let mut answers = Vec::with_capacity(groups.len());
        let mut last_seq = 0;
        // Taken out first: they are dropped without the lock.
        let tokens: Vec<InFlightToken> = groups.iter_mut().filter_map(|g| g.token.take()).collect();
        {
            let state = core.lock_now();
            for group in groups {
                last_seq = group.seq;
                let outcome = match group.staged {
                    Err(e) => Err(e),
                    Ok((staged, outcomes)) => {
                        let applied = match core.poison() {
                            Some(e) => Err(e),
                            None => staged.apply(&state).map_err(|e| {
                                let failure = WriteFailure::new(WriteStep::Apply, e);
                                // Later groups were staged as if this one were
                                // stored: none of them may be answered 200.
                                core.set_poison(failure.clone());
                                failure
                            }),
                        };
                        applied.map(|()| outcomes)
                    }
                };
                answers.push((group.replies, outcome, group.stores_something));
            }
        }
        core.applied.store(last_seq + 1, Ordering::Release);
        drop(tokens);
        // Runs merge on their own thread, their batches needing no flush
        // before the answers: the next groups are not held up behind them.
        if applied.send(answers).is_err() || merge_wanted.send(()).is_err() {
            return;
        }
    }
}

/// The merger (see [`run`]): merges the runs that piled up whenever the
/// syncer added some. It counts as a group in flight meanwhile, so that
/// maintenance, the only other thing that merges or drops runs, waits for
/// it. Between merges it gives way to maintenance that is waiting (which
/// holds up the writer too) and stops once the syncer has stopped.
fn merge_when_wanted(core: &Core, wanted: &mpsc::Receiver<()>) {
    let mut asked = wanted.recv().is_ok();
    while asked {
        while wanted.try_recv().is_ok() {}
        if core.poison().is_some() {
            asked = wanted.recv().is_ok();
            continue;
        }
        let horizon = {
            let mut state = core.lock_for_staging();
            state.in_flight += 1;
            state.horizon
        };
        let token = InFlightToken(core);
        // A wake-up that arrives meanwhile means another pass.
        let again = std::cell::Cell::new(false);
        let closed = std::cell::Cell::new(false);
        let stop = || {
            match wanted.try_recv() {
                Ok(()) => again.set(true),
                Err(mpsc::TryRecvError::Disconnected) => closed.set(true),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            closed.get() || core.lock_now().waiting > 0
        };
        merge_runs(core, horizon, stop);
        drop(token);
        asked = !closed.get() && (again.get() || wanted.recv().is_ok());
    }
}

/// Groups applied, with their answers once flushed.
type Applied = Vec<(Vec<Reply>, Result<Outcomes, WriteFailure>, bool)>;

/// The flusher (see [`run`]): one sled flush for every group applied
/// since the last one, then the answers.
fn flush_and_answer(core: &Core, queue: &mpsc::Receiver<Applied>) {
    while let Ok(mut answers) = queue.recv() {
        while let Ok(more) = queue.try_recv() {
            answers.extend(more);
        }
        let flushed = if answers.iter().any(|(_, o, _)| o.is_ok()) {
            core.counters.flushes.fetch_add(1, Ordering::Relaxed);
            core.flush().map_err(|e| match e {
                StoreError::Flush(failure) => failure,
                other => WriteFailure::new(WriteStep::Flush, other),
            })
        } else {
            Ok(())
        };
        for (replies, outcome, stores_something) in answers {
            let outcome = outcome.and_then(|summaries| flushed.clone().map(|()| summaries));
            answer(core, replies, outcome, stores_something);
        }
    }
}

/// Answers a group's callers; a failure of the whole group is one answer
/// for all (it is one write).
fn answer(
    core: &Core,
    replies: Vec<Reply>,
    mut outcome: Result<Outcomes, WriteFailure>,
    stores_something: bool,
) {
    let counters = &core.counters;
    counters
        .batches
        .fetch_add(replies.len() as u64, Ordering::Relaxed);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "store {e}; answering the group with an error");
    }
    if stores_something {
        // The group's failure, else the first delivery that failed alone.
        let error = match &outcome {
            Err(e) => Some(e.to_string()),
            Ok(outcomes) => outcomes
                .iter()
                .find_map(|o| o.as_ref().err().map(|e| e.to_string())),
        };
        *core.write_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
    for (i, reply) in replies.into_iter().enumerate() {
        let answer = match outcome
            .as_mut()
            .map(|o| std::mem::replace(&mut o[i], Ok(AppendSummary::default())))
        {
            Ok(Ok(summary)) => {
                counters
                    .events_stored
                    .fetch_add(summary.stored, Ordering::Relaxed);
                counters
                    .duplicates
                    .fetch_add(summary.duplicates, Ordering::Relaxed);
                Ok(summary)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StoreError::Flush(e.clone())),
        };
        // The caller may have gone away (client disconnected): nothing to do.
        let _ = reply.send(answer);
    }
}
