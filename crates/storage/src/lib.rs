//! # auditsink-storage
//!
//! The auditsink store: evidence that may exist nowhere else once Konnect's
//! 7 days are over. Event records go to an append-only event log of its own
//! (segment files under `events/`); everything else is in sled. It holds
//!
//! - **events**: normalized events with the store's keys (`id`,
//!   `received_at`, `source`), in arrival order, in a compact binary record
//!   that keeps the raw line and gives back the identical event, packed
//!   32 KiB of records per chunk in the event log, with a pointer per chunk
//!   in sled;
//! - **dedupe** entries: one per event identity (its `sig`, else its raw
//!   line), so a replayed event is counted, not stored twice, kept in
//!   sorted runs of pages (an in-memory Bloom filter over them spares new
//!   events a lookup);
//! - **indexes** on event time, `principal_id`, `trace_id`, `org_id` and
//!   `name`, for [`Store::query`] and [`Store::count`] (`trace_id`, nearly
//!   one term per event, in sorted runs too);
//! - **quarantine**: lines (or whole bodies) that could not be read as
//!   events, kept byte-exact with the reason, once per source and line (a
//!   resent one is counted as a duplicate), until
//!   [`Store::reprocess_quarantine`] finds that they now parse;
//! - **gaps** ([`Store::gaps`]): the receiver's non-200 answers and its
//!   runs, for replaying what it may have missed.
//!
//! Writes go through [`Store::append`] (or [`Store::append_prepared`], with
//! the records prepared from the parser's borrowed events): a single writer
//! thread takes the batches that arrived together (group commit) and
//! appends their event chunks to the log; a syncer thread syncs the log,
//! then applies one atomic sled batch per group (chunk pointers, dedupe
//! entries, index entries, quarantined lines and counters: all of it or
//! none of it, also after a crash), and a flusher thread flushes sled. An
//! append returns only once it is on disk, N concurrent deliveries do not
//! cost N sequential fsyncs, and the next group is staged while the last
//! one syncs.
//!
//! On open the newest events' dedupe and index entries are verified (and
//! rebuilt from the events if anything is wrong); [`Store::check`] verifies
//! everything and [`Store::rebuild_indexes`] repairs. With a retention
//! period ([`StoreOptions::retention_days`]) a background thread removes
//! what was received longer ago than that.
//!
//! A failed write or fsync closes the store; it reopens by itself, as a
//! restart would, once writes succeed again ([`Store::health`]).
//!
//! The stages, by folder: `engine/` knows nothing of audit events (the
//! segment log, sorted runs and their merges, manifests and trash, the
//! Bloom filter); `events/` is the event store on it (records, dedupe
//! identity, postings, queries, quarantine, maintenance, `check`);
//! `writer.rs` (staging and the group-commit pipeline) and `recover.rs`
//! (poisoning and the reopening) join the two.
//!
//! Why one piece (about 840 lines without its tests): the public `Store`,
//! whose methods each hand over to `events/` or `writer.rs` in a few lines,
//! the open sequence and the retention thread.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod error;
mod events;
mod recover;
mod writer;

use engine::{dir_lock, log, runs};
use events::{check, chunk, codec, forward, gaps, keys, maintain, query, record, sinks, timefmt};

pub use check::CheckReport;
pub use error::{DatabaseError, StoreError, WriteFailure, WriteStep};
pub use forward::{ForwardEvent, ForwardIter};
pub use gaps::{FailedAnswers, Gaps, Run, SignatureFailures};
pub use keys::{format_id, parse_id, IndexKind};
pub use maintain::{RebuildSummary, Reparse, ReprocessSummary, RetentionSummary};
pub use query::{bar_index, Query, QueryIter};
pub use record::{QuarantineReason, QuarantinedLine, StoredEvent, StoredQuarantine};
pub use recover::StoreHealth;
pub use sinks::{ParkedEvent, SinkLag, SinkStart, SinkState, SinkUpdateError, MAX_PARKED_TEXT};
pub use timefmt::{format_ms, parse_time_bound};

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use auditsink_parser::Event;
use serde::Serialize;

use engine::poison::Wake;
use keys::{
    id_key, key_id, EVENT, FORMAT_VERSION, META_COUNTS, META_FORMAT, META_HORIZON, META_NEXT_ID,
    META_REBUILDING, QUARANTINE,
};
use recover::{Slot, Supervisor};
use runs::{RunKind, Runs};
pub use writer::PreparedBatch;
use writer::{Core, Counters, Counts, WriteState};

/// The identity the store deduplicates an event by (16 bytes of SHA-256
/// over its signature when it has one that is not known invalid, else over
/// its raw line): two events with the same identity are stored once. A
/// cluster receiver uses it as the JetStream message id, so the stream
/// deduplicates exactly as the store does.
pub fn event_identity(event: &auditsink_parser::BorrowedEvent<'_>) -> [u8; 16] {
    keys::dedupe_key(event)
}

/// The identity the store deduplicates a quarantined line of `source` by.
pub fn quarantine_identity(source: &str, raw: &[u8]) -> [u8; 16] {
    keys::quarantine_key(source, raw)
}

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
    /// Events, and quarantined lines of the same source, already in the
    /// store (or earlier in the same batch).
    pub duplicates: u64,
    /// Quarantined lines stored.
    pub quarantined: u64,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Remove events and quarantined lines received more than this many days
    /// ago, in a background thread (`None`: keep everything forever).
    pub retention_days: Option<u64>,
    /// How often the retention thread runs (first run right after open).
    pub retention_interval: Duration,
    /// How many of the newest events to verify on open.
    pub verify_on_open: usize,
    /// sled's page cache, in bytes. Memory grows with it (and, beyond it,
    /// with sled's per-page bookkeeping for the whole store).
    pub cache_capacity_bytes: u64,
    /// After a failed write closed the store, the first wait before trying
    /// to reopen it; doubled after each failed attempt, up to
    /// [`StoreOptions::reopen_backoff_max`].
    pub reopen_backoff_min: Duration,
    /// The longest wait between two attempts to reopen the store.
    pub reopen_backoff_max: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention_days: None,
            retention_interval: Duration::from_secs(3600),
            verify_on_open: 5000,
            cache_capacity_bytes: 256 * 1024 * 1024,
            reopen_backoff_min: Duration::from_millis(100),
            reopen_backoff_max: Duration::from_secs(5),
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// Newest events whose dedupe and index entries were verified.
    pub verified_events: u64,
    /// Problems the verification found (the first ones).
    pub problems: Vec<String>,
    /// Whether the dedupe entries and indexes were rebuilt (after problems,
    /// or to finish a rebuild that was interrupted).
    pub rebuilt: bool,
}

/// Counters and sizes, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Events stored.
    pub events: u64,
    /// Quarantined entries stored.
    pub quarantine: u64,
    /// Bytes the store occupies on disk.
    pub size_on_disk_bytes: Option<u64>,
    /// Batches appended since open.
    pub batches: u64,
    /// Flushes to disk since open (batches / flushes = group commit factor).
    pub flushes: u64,
    /// Events stored since open.
    pub events_stored: u64,
    /// Duplicate events received since open.
    pub duplicates: u64,
    /// The retention period, if any.
    pub retention_days: Option<u64>,
    /// Retention runs since open.
    pub retention_runs: u64,
    /// Events removed by retention since open.
    pub retention_events_removed: u64,
    /// Quarantined entries removed by retention since open.
    pub retention_quarantine_removed: u64,
    /// When the last retention run finished (ms since the epoch).
    pub retention_last_run_ms: Option<i64>,
    /// Expired events the last retention run kept because a forwarding
    /// sink has not delivered them yet or parked them.
    pub retention_events_held: u64,
}

/// An open store. Cheap to clone; all clones share one writer.
///
/// After a failed write or flush it closes itself and reopens once writes
/// succeed again (see [`Store::health`]); meanwhile its calls fail with
/// [`StoreError::Recovering`].
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    // Stopped first: the supervisor holds the slot too.
    _supervisor: Supervisor,
    slot: Arc<Slot>,
}

/// One opening of the store's directory.
pub(crate) struct Inner {
    // Dropped in this order: retention stops, the writer drains, then the
    // database closes when the last reference to `core` goes.
    retention: Option<Background>,
    writer: writer::Handle,
    pub(crate) core: Arc<Core>,
    gaps: Gaps,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.retention.take());
        self.core.filter().stop();
        // A poisoned store is closed as it is: the reopening reads what is
        // on disk.
        if self.core.poison().is_none() {
            if let Err(e) = self.core.flush() {
                tracing::error!(error = %e, "store flush on close failed");
            }
        }
    }
}

/// A background thread that stops when dropped.
struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default options.
    /// Fails with [`StoreError::Locked`] if another process has it open.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let counters = Arc::new(Counters::default());
        let (wake, woken) = mpsc::channel();
        let (inner, open_report) = open_inner(dir, &options, counters.clone(), wake.clone(), 0)?;
        let slot = Arc::new(Slot {
            path: dir.to_path_buf(),
            options,
            counters,
            current: RwLock::new(Some(Arc::new(inner))),
            health: Mutex::new(StoreHealth::default()),
            open_report: Mutex::new(open_report),
            wake,
            handed_out: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        });
        Ok(Store {
            shared: Arc::new(Shared {
                _supervisor: recover::spawn(slot.clone(), woken)?,
                slot,
            }),
        })
    }
}

/// Opens the store's directory: what a start does, and what the reopening
/// after a failed write does (see [`recover`]), which gives the ids it
/// must not give again (`handed_out`: readers of the closed store may
/// have seen them).
pub(crate) fn open_inner(
    dir: &Path,
    options: &StoreOptions,
    counters: Arc<Counters>,
    wake: mpsc::Sender<Wake>,
    handed_out: u64,
) -> Result<(Inner, OpenReport), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = open_db(dir, options.cache_capacity_bytes)?;
    let tree = db.open_tree("store")?;
    match tree.get(META_FORMAT)? {
        None => {
            tree.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
        }
        Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(|b| u32::from_be_bytes(b).to_string())
                .unwrap_or_else(|_| format!("{:?}", v.as_ref()));
            return Err(StoreError::Format {
                path: dir.to_path_buf(),
                reason: format!(
                    "has format version {found}; this version reads only format \
                     {FORMAT_VERSION} (open it with the build that wrote it)"
                ),
            });
        }
    }
    let gaps = Gaps::open(&db)?;
    let log = Arc::new(log::EventLog::open(dir)?);
    let mut state = initial_state(&tree, &log)?;
    state.next_id = state.next_id.max(handed_out);
    let (dedupe, mut damaged) = Runs::load(&tree, RunKind::Dedupe)?;
    let (traces, damaged_traces) = Runs::load(&tree, RunKind::Trace)?;
    damaged.extend(damaged_traces);
    let core = Arc::new(Core::new(
        dir,
        db,
        tree,
        state,
        counters,
        (dedupe, traces),
        log,
        wake,
    )?);
    {
        let state = core.lock();
        core.counters().mirror(state.counts);
        core.counters()
            .horizon
            .store(state.horizon, Ordering::Relaxed);
    }
    let open_report = verify_on_open(&core, options.verify_on_open, damaged)?;
    {
        let state = core.lock();
        core.filter().start(
            core.tree(),
            core.dedupe(),
            state.horizon,
            state.counts.events,
            Vec::new(),
        );
    }
    let writer = match writer::spawn(core.clone()) {
        Ok(writer) => writer,
        Err(e) => {
            core.filter().stop();
            return Err(e);
        }
    };
    let retention = match options.retention_days {
        Some(days) => match spawn_retention(core.clone(), days, options.retention_interval) {
            Ok(retention) => Some(retention),
            Err(e) => {
                core.filter().stop();
                return Err(e);
            }
        },
        None => None,
    };
    let inner = Inner {
        retention,
        writer,
        core,
        gaps,
    };
    // What sled recovered (groups it wrote before a failed flush, whose
    // retries will count as duplicates) is made durable before the
    // first answer.
    inner.core.flush()?;
    Ok((inner, open_report))
}

impl Store {
    /// The open store, or [`StoreError::Recovering`] while it is being
    /// reopened after a failed write.
    fn inner(&self) -> Result<Arc<Inner>, StoreError> {
        self.shared.slot.current()
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.slot.path
    }

    /// The record of non-200 answers and of the receiver's runs (a handle
    /// on the open store: take it anew for each use, so that a reopening
    /// after a failed write is not held up by an old one).
    pub fn gaps(&self) -> Result<Gaps, StoreError> {
        Ok(self.inner()?.gaps.clone())
    }

    /// What the verification on open (the last one, after a reopening)
    /// found.
    pub fn open_report(&self) -> OpenReport {
        self.shared
            .slot
            .open_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the store takes writes, and its recoveries from failed
    /// writes.
    pub fn health(&self) -> StoreHealth {
        let mut health = self.shared.slot.health().clone();
        if !health.recovering {
            // Poisoned a moment ago: the supervisor is about to close it.
            if let Err(StoreError::Recovering { reason }) = self.inner() {
                health.recovering = true;
                health.reason = Some(reason);
            }
        }
        health
    }

    /// Appends a batch atomically and returns once it is on disk.
    pub async fn append(&self, batch: Batch) -> Result<AppendSummary, StoreError> {
        // Encoding, hashing and index terms are CPU work that needs no lock:
        // done here, off the async workers, in parallel with the writer.
        let prepared = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || PreparedBatch::from(&batch))
                .await
                .map_err(|_| StoreError::WriterGone)?,
            Err(_) => PreparedBatch::from(&batch),
        };
        self.append_prepared(prepared).await
    }

    /// Appends a delivery prepared on the caller's thread (see
    /// [`PreparedBatch`]) atomically and returns once it is on disk.
    pub async fn append_prepared(
        &self,
        prepared: PreparedBatch,
    ) -> Result<AppendSummary, StoreError> {
        // The handle is not held while waiting: a store closed meanwhile
        // (after a failed write) drains its writer, which answers.
        let answer = self.inner()?.writer.submit(prepared)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Blocking form of [`Store::append`], for code outside an async runtime.
    pub fn append_blocking(&self, batch: Batch) -> Result<AppendSummary, StoreError> {
        self.append_prepared_blocking(PreparedBatch::from(&batch))
    }

    /// Blocking form of [`Store::append_prepared`].
    pub fn append_prepared_blocking(
        &self,
        prepared: PreparedBatch,
    ) -> Result<AppendSummary, StoreError> {
        let answer = self.inner()?.writer.submit(prepared)?;
        answer.blocking_recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Stored events in arrival order, starting after `after_id` if given.
    pub fn events(&self, after_id: Option<u64>) -> QueryIter {
        self.query(&Query {
            after: after_id,
            ..Query::default()
        })
        .unwrap_or_else(QueryIter::failed)
    }

    /// The events `query` selects, in id (arrival) order.
    pub fn query(&self, query: &Query) -> Result<QueryIter, StoreError> {
        let inner = self.inner()?;
        let plan = query::plan(&inner.core, query)?;
        Ok(QueryIter::new(&inner.core, query.clone(), plan))
    }

    /// How many events `query` selects (up to its limit), from the indexes
    /// (without filters, from the counters, which count a write being
    /// flushed a moment before it is listed).
    pub fn count(&self, query: &Query) -> Result<u64, StoreError> {
        query::count(&self.inner()?.core, query, self.event_count() as u64)
    }

    /// How many events `query` selects in each of `bars` consecutive spans
    /// of `bar_ms` from `start_ms` (a histogram), from the indexes in one
    /// pass; events outside them are not counted.
    pub fn count_by_time(
        &self,
        query: &Query,
        start_ms: i64,
        bar_ms: i64,
        bars: usize,
    ) -> Result<Vec<u64>, StoreError> {
        query::count_by_time(&self.inner()?.core, query, start_ms, bar_ms, bars)
    }

    /// The earliest and latest event time stored (ms since the epoch, exact
    /// to the minute), from the time index; `None` when the store is empty.
    pub fn time_span(&self) -> Result<Option<(i64, i64)>, StoreError> {
        query::time_span(&self.inner()?.core)
    }

    /// One event by id.
    pub fn event(&self, id: u64) -> Result<Option<StoredEvent>, StoreError> {
        let inner = self.inner()?;
        if id >= inner.core.durable_next_id() {
            return Ok(None);
        }
        let Some(value) = chunk::get(inner.core.tree(), inner.core.log(), id)? else {
            return Ok(None);
        };
        let d = codec::decode_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
        Ok(Some(StoredEvent {
            id,
            received_at_ms: d.received_at_ms,
            source: d.source,
            event: d.event,
        }))
    }

    /// Quarantined entries in arrival order, starting after `after_id` if given.
    pub fn quarantine(
        &self,
        after_id: Option<u64>,
    ) -> impl Iterator<Item = Result<StoredQuarantine, StoreError>> + Send + 'static {
        let (mut records, mut failed) = match self.inner() {
            Ok(inner) => (
                Some((
                    query::records_after(inner.core.tree(), QUARANTINE, after_id),
                    inner.core.gate().clone(),
                    inner.core.durable_next_id(),
                )),
                None,
            ),
            Err(e) => (None, Some(e)),
        };
        std::iter::from_fn(move || {
            if let Some(e) = failed.take() {
                return Some(Err(e));
            }
            let (iter, gate, durable) = records.as_mut()?;
            let durable = *durable;
            let item = gate
                .check()
                .and_then(|()| iter.next().transpose().map_err(StoreError::from));
            let decoded = match item {
                Ok(Some(item)) => decode_quarantine_entry(item),
                Ok(None) => return None,
                Err(e) => Err(e),
            };
            // Not flushed yet when the listing began.
            if decoded.as_ref().is_ok_and(|q| q.id >= durable) {
                records = None;
                return None;
            }
            if decoded.is_err() {
                records = None;
            }
            Some(decoded)
        })
    }

    /// Number of stored events (O(1)).
    pub fn event_count(&self) -> usize {
        self.shared.slot.counters.events.load(Ordering::Relaxed) as usize
    }

    /// Number of quarantined entries (O(1)).
    pub fn quarantine_count(&self) -> usize {
        self.shared.slot.counters.quarantine.load(Ordering::Relaxed) as usize
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let inner = self.inner()?;
        Ok(inner.core.db().size_on_disk()? + inner.core.log().size_on_disk()?)
    }

    /// Group-commit counters since open: (batches appended, flushes to disk).
    pub fn commit_counts(&self) -> (u64, u64) {
        let counters = &self.shared.slot.counters;
        (
            counters.batches.load(Ordering::Relaxed),
            counters.flushes.load(Ordering::Relaxed),
        )
    }

    /// Counters and sizes.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.slot.counters;
        let last = c.retention_last_ms.load(Ordering::Relaxed);
        StoreStats {
            events: c.events.load(Ordering::Relaxed),
            quarantine: c.quarantine.load(Ordering::Relaxed),
            size_on_disk_bytes: self.size_on_disk().ok(),
            batches: c.batches.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            events_stored: c.events_stored.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            retention_days: self.shared.slot.options.retention_days,
            retention_runs: c.retention_runs.load(Ordering::Relaxed),
            retention_events_removed: c.retention_events_removed.load(Ordering::Relaxed),
            retention_quarantine_removed: c.retention_quarantine_removed.load(Ordering::Relaxed),
            retention_last_run_ms: (last > 0).then_some(last as i64),
            retention_events_held: c.retention_events_held.load(Ordering::Relaxed),
        }
    }

    /// Why the last append that had something to store failed, if the
    /// appends since have not succeeded (for readiness: an empty append
    /// succeeds even when the event log cannot grow); while the store is
    /// being reopened, the failure that closed it.
    pub fn last_write_error(&self) -> Option<String> {
        match self.inner() {
            Ok(inner) => inner.core.last_write_error(),
            Err(e) => Some(e.to_string()),
        }
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner()?.core.flush()
    }

    /// Verifies the whole store: every event decodes and has its dedupe
    /// entry and index entries, no dedupe entry or index entry points at an
    /// event that is missing or does not match, counters agree. Holds the
    /// write lock while it runs (appends wait).
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        check::check(&self.inner()?.core)
    }

    /// Rebuilds the dedupe entries and indexes from the events. Holds the
    /// write lock while it runs.
    pub fn rebuild_indexes(&self) -> Result<RebuildSummary, StoreError> {
        maintain::rebuild(&self.inner()?.core)
    }

    /// Removes what was received before `cutoff_ms` (what the retention
    /// thread does with now minus the retention period).
    pub fn apply_retention(&self, cutoff_ms: i64) -> Result<RetentionSummary, StoreError> {
        retention_run(&self.inner()?.core, cutoff_ms)
    }

    /// Reads every quarantined line again as `reparse_for(source)` says;
    /// moves what is now an event into the events and keeps the rest.
    pub fn reprocess_quarantine(
        &self,
        reparse_for: &dyn Fn(&str) -> Reparse,
    ) -> Result<ReprocessSummary, StoreError> {
        maintain::reprocess(&self.inner()?.core, reparse_for)
    }
}

/// A quarantine record as read.
fn decode_quarantine_entry(
    (key, value): (sled::IVec, sled::IVec),
) -> Result<StoredQuarantine, StoreError> {
    let id = key_id(&key).ok_or_else(|| corrupt(&key, "quarantine key"))?;
    let d = codec::decode_quarantine(&value).map_err(|e| corrupt(&key, e.0))?;
    Ok(StoredQuarantine {
        id,
        received_at_ms: d.received_at_ms,
        source: d.source,
        reason: d.reason,
        raw: d.raw,
    })
}

/// Opens the sled database. A lock that is released a moment later (a
/// store of this process just closed while sled's I/O threads finish, or a
/// child process forked meanwhile still holds the descriptor until it execs)
/// is waited for briefly; a store held by a running server is not.
fn open_db(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, StoreError> {
    let mut attempts = 0;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Durability comes from the explicit flush of every group
            // commit; the background flusher only bounds the work left for it.
            .flush_every_ms(Some(1000))
            .cache_capacity(cache_capacity_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(_) if dir_lock::is_held(dir) && attempts < 10 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(25));
            }
            Err(_) if dir_lock::is_held(dir) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The next id and counts: as recorded, but never below what the records
/// show (ids must never be reused, even after everything expired).
fn initial_state(tree: &sled::Tree, log: &Arc<log::EventLog>) -> Result<WriteState, StoreError> {
    let recorded = tree
        .get(META_NEXT_ID)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(1);
    let mut next_id = recorded.max(1);
    match chunk::Records::newest_first(tree, log).next() {
        Some(Ok((id, _))) => next_id = next_id.max(id + 1),
        // A newest chunk that does not decode must not keep the store (and
        // `check --repair`) from opening: its key, the first id it holds,
        // still bounds the ids; verifying on open reports it.
        Some(Err(StoreError::Corrupt { .. })) => {
            let end: &[u8] = &[EVENT + 1];
            if let Some(item) = tree.range::<&[u8], _>(&[EVENT][..]..end).next_back() {
                if let Some(first) = item?.0.get(1..9).and_then(|b| b.try_into().ok()) {
                    next_id = next_id.max(u64::from_be_bytes(first) + 1);
                }
            }
        }
        Some(Err(e)) => return Err(e),
        None => {}
    }
    if let Some(item) = query::records_after(tree, QUARANTINE, None).next_back() {
        let (key, _) = item?;
        if let Some(id) = key_id(&key) {
            next_id = next_id.max(id + 1);
        }
    }
    let counts = tree
        .get(META_COUNTS)?
        .and_then(|v| Counts::decode(&v))
        .unwrap_or_default();
    let horizon = tree
        .get(META_HORIZON)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    Ok(WriteState {
        next_id,
        counts,
        horizon,
        in_flight: 0,
        waiting: 0,
        writer_turns: 0,
    })
}

/// Verifies the newest `n` events' derived entries; rebuilds them all if
/// that (or loading the runs: `damaged`) found problems.
fn verify_on_open(core: &Core, n: usize, damaged: Vec<String>) -> Result<OpenReport, StoreError> {
    let mut report = OpenReport {
        problems: damaged,
        ..OpenReport::default()
    };
    let interrupted = core.tree().get(META_REBUILDING)?.is_some();
    if n > 0 && report.problems.is_empty() && !interrupted {
        let (checked, problems) = maintain::verify_tail(core, n)?;
        report.verified_events = checked;
        report.problems = problems.into_iter().take(20).collect();
    }
    if interrupted || !report.problems.is_empty() {
        tracing::warn!(
            problems = ?report.problems, interrupted,
            "the store's dedupe entries or indexes do not match its events; rebuilding them"
        );
        let summary = maintain::rebuild(core)?;
        tracing::info!(events = summary.events, "indexes rebuilt");
        report.rebuilt = true;
    }
    Ok(report)
}

/// One retention run, counted.
fn retention_run(core: &Arc<Core>, cutoff_ms: i64) -> Result<RetentionSummary, StoreError> {
    let sinks = sinks::Sinks::open(core.db())?;
    let summary = maintain::retention(core, cutoff_ms, &|| sinks.hold(now_ms()), &mut || {})?;
    // Parked entries whose events are gone (past a sink's `max_lag_days`;
    // also those a crash right after a removal left).
    let horizon = core.counters().horizon.load(Ordering::Relaxed);
    let unparked = sinks::Sinks::open_writable(core)?.drop_parked_below(horizon)?;
    if unparked > 0 {
        tracing::warn!(
            parked_events = unparked,
            "retention removed parked events older than their sink's max_lag_days"
        );
    }
    let c = &core.counters();
    c.retention_runs.fetch_add(1, Ordering::Relaxed);
    c.retention_events_removed
        .fetch_add(summary.events_removed, Ordering::Relaxed);
    c.retention_quarantine_removed
        .fetch_add(summary.quarantine_removed, Ordering::Relaxed);
    c.retention_events_held
        .store(summary.events_held, Ordering::Relaxed);
    c.retention_last_ms
        .store(now_ms().max(1) as u64, Ordering::Relaxed);
    Ok(summary)
}

fn spawn_retention(core: Arc<Core>, days: u64, every: Duration) -> Result<Background, StoreError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let period_ms = i64::try_from(days)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000);
    let thread = thread::Builder::new()
        .name("auditsink-store-retention".into())
        .spawn(move || loop {
            let cutoff = now_ms().saturating_sub(period_ms);
            match retention_run(&core, cutoff) {
                Ok(summary) => {
                    if summary != RetentionSummary::default() {
                        tracing::info!(
                            events = summary.events_removed,
                            quarantined = summary.quarantine_removed,
                            retention_days = days,
                            "retention removed expired records"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention run failed; will retry"),
            }
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        })
        .map_err(|source| StoreError::Io {
            path: "retention thread".into(),
            source,
        })?;
    Ok(Background {
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditsink_parser::{parse_line, Format, ParseOptions};

    fn event(n: u32) -> Event {
        let line = format!("CEF:0|V|P|1|c|n|1|principal_id=u{n} n={n}");
        parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef)).unwrap()
    }

    #[test]
    fn readers_see_only_what_was_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let acknowledged = Batch {
            source: "s".into(),
            received_at_ms: 1,
            events: vec![event(1)],
            quarantine: Vec::new(),
        };
        store.append_blocking(acknowledged).unwrap();
        // A write applied to sled but not flushed (as a group is between
        // the syncer and the flusher, and stays if its flush fails).
        let inner = store.inner().unwrap();
        let core = &inner.core;
        let id = {
            let mut state = core.lock();
            let mut staging = writer::Staging::new(&state);
            let id = staging
                .add_event(writer::PreparedEvent::new(2, "s", &event(2)))
                .unwrap()
                .unwrap();
            let raw = b"not an event";
            staging.add_quarantine(
                keys::quarantine_key("s", raw),
                codec::encode_quarantine(2, "s", &"no CEF header".into(), raw),
            );
            staging.commit(&mut state).unwrap();
            id
        };
        let listed = |store: &Store| store.events(None).count();
        assert_eq!(listed(&store), 1);
        assert!(store.event(id).unwrap().is_none());
        assert_eq!(store.quarantine(None).count(), 0);
        let by_user = Query {
            principal: Some("u2".into()),
            ..Query::default()
        };
        assert_eq!(store.query(&by_user).unwrap().count(), 0);
        assert_eq!(store.count(&by_user).unwrap(), 0);
        core.flush().unwrap();
        assert_eq!(listed(&store), 2);
        assert!(store.event(id).unwrap().is_some());
        assert_eq!(store.quarantine(None).count(), 1);
        assert_eq!(store.count(&by_user).unwrap(), 1);
    }
}
