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
//! Bloom filter, durability and poisoning, the write lock and the
//! group-commit pipeline); `events/` is the event store on it (records,
//! dedupe identity, postings, staging a write, queries, quarantine,
//! maintenance, `check`); `open.rs` opens a directory (and starts the
//! pipeline and retention), `recover.rs` reopens it after a failed write.
//! Imports run one way: `lib.rs` -> `recover.rs` -> `open.rs` -> `events/`
//! -> `engine/`; `testing.rs` damages a closed store for tests.
//!
//! Why one piece (about 600 lines without its tests): the public `Store`,
//! whose methods (the sinks' state among them) each hand over to
//! `open.rs`, `events/` or the pipeline in a few lines.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod error;
mod events;
mod open;
mod recover;
#[doc(hidden)]
pub mod testing;

use events::{check, chunk, codec, forward, gaps, keys, maintain, query, record, sinks, timefmt};

pub use check::CheckReport;
pub use error::{DatabaseError, StoreError, WriteFailure, WriteStep};
pub use events::prepared::{AppendSummary, Batch, PreparedBatch};
pub use forward::{ForwardEvent, ForwardIter};
pub use gaps::{FailedAnswers, Gaps, Run, SignatureFailures};
pub use keys::{format_id, parse_id, IndexKind};
pub use maintain::{RebuildSummary, Reparse, ReprocessSummary, RetentionSummary};
pub use open::{OpenReport, StoreOptions};
pub use query::{bar_index, Query, QueryIter};
pub use record::{QuarantineReason, QuarantinedLine, StoredEvent, StoredQuarantine};
pub use recover::StoreHealth;
pub use sinks::{ParkedEvent, SinkLag, SinkStart, SinkState, SinkUpdateError, MAX_PARKED_TEXT};
pub use timefmt::{format_ms, parse_time_bound};

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, RwLock};

use serde::Serialize;

use error::corrupt;
use events::state::Counters;
use keys::{id_key, key_id, EVENT, QUARANTINE};
use open::{open_inner, retention_run, Inner};
use recover::{Slot, Supervisor};

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

    /// The events after id `after` that are on disk, in id order, as a
    /// forwarding sink reads them (what [`Store::events`] gives, without
    /// building each owned event).
    pub fn forward_events(&self, after: u64) -> Result<ForwardIter, StoreError> {
        Ok(ForwardIter::after(&self.inner()?.core, after))
    }

    /// Event `id` as a forwarding sink reads it, if it is stored.
    pub fn forward_event(&self, id: u64) -> Result<Option<ForwardEvent>, StoreError> {
        forward::event(&self.inner()?.core, id)
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

/// The forwarding sinks' state (see [`events::sinks`]).
impl Store {
    fn sinks(&self) -> Result<sinks::Sinks, StoreError> {
        sinks::Sinks::open_writable(&self.inner()?.core)
    }

    /// The newest id the store has handed out and flushed (events and
    /// quarantined lines share the sequence); 0 when empty.
    pub fn last_durable_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner()?.core.durable_next_id().saturating_sub(1))
    }

    /// Creates the state of sink `name` if it has none (its cursor where
    /// `start` says), records its `max_lag_days`, and returns its state.
    /// From then on retention keeps what it has not delivered.
    pub fn sink_register(
        &self,
        name: &str,
        start: SinkStart,
        max_lag_days: Option<u64>,
    ) -> Result<SinkState, StoreError> {
        let cursor = match start {
            SinkStart::Beginning => 0,
            SinkStart::Now => self.last_durable_id()?,
        };
        let initial = SinkState {
            cursor,
            in_flight: cursor,
            ..SinkState::default()
        };
        // Under the write lock, as retention decides under it what to keep.
        let inner = self.inner()?;
        let _lock = inner.core.lock();
        sinks::Sinks::open_writable(&inner.core)?.register(name, initial, max_lag_days)
    }

    /// The state of sink `name`, if it has one.
    pub fn sink_state(&self, name: &str) -> Result<Option<SinkState>, StoreError> {
        self.sinks()?.get(name)
    }

    /// Every sink state in the store, by name.
    pub fn sink_states(&self) -> Result<Vec<(String, SinkState)>, StoreError> {
        self.sinks()?.all()
    }

    /// Replaces the state `expected` of sink `name` by `new`, parks
    /// `parked` and removes the parked entries `unparked`: all or nothing,
    /// on disk when it returns. [`SinkUpdateError::Changed`] when the state
    /// is no longer `expected` (a rewind or retry meanwhile).
    pub fn sink_commit(
        &self,
        name: &str,
        expected: &SinkState,
        new: &SinkState,
        parked: &[ParkedEvent],
        unparked: &[u64],
    ) -> Result<(), SinkUpdateError> {
        self.sinks()?.commit(name, expected, new, parked, unparked)
    }

    /// Moves the cursor of sink `name` back to `cursor` (never forward),
    /// so the events after it are sent again (counted as resent); the
    /// state after, or `None` if the sink has none. Events retention
    /// removed before it are not brought back.
    pub fn sink_rewind(&self, name: &str, cursor: u64) -> Result<Option<SinkState>, StoreError> {
        // Under the write lock, which a retention step holds while it
        // decides what to keep and removes the rest: the rewind comes
        // wholly before or after a step, never between its hold and its
        // removals.
        let inner = self.inner()?;
        let _lock = inner.core.lock();
        sinks::Sinks::open_writable(&inner.core)?.update(name, |state| {
            if cursor < state.cursor {
                state.in_flight = state.in_flight.max(state.cursor);
                state.cursor = cursor;
            }
        })
    }

    /// The first `limit` events sink `name` parked, in id order.
    pub fn sink_parked(&self, name: &str, limit: usize) -> Result<Vec<ParkedEvent>, StoreError> {
        self.sinks()?.parked(name, limit)
    }

    /// How many events sink `name` has parked now: the ids its parked
    /// entries stand for (each id of a damaged chunk's entry counts).
    pub fn sink_parked_count(&self, name: &str) -> Result<u64, StoreError> {
        self.sinks()?.parked_count(name)
    }

    /// Marks every parked event of sink `name` to be sent again; how many.
    pub fn sink_retry(&self, name: &str) -> Result<u64, StoreError> {
        self.sinks()?.retry_parked(name)
    }

    /// Removes the state and parked events of sink `name` (one no longer
    /// configured: it no longer holds retention).
    pub fn sink_forget(&self, name: &str) -> Result<(), StoreError> {
        self.sinks()?.forget(name)
    }

    /// How many events there are after `cursor`, counting at most `cap`,
    /// and when the first of them was received.
    pub fn sink_lag(&self, cursor: u64, cap: u64) -> Result<SinkLag, StoreError> {
        sinks::lag(&self.inner()?.core, cursor, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditsink_parser::{parse_line, Event, Format, ParseOptions};
    use events::{prepared, staging};

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
            let mut staging = staging::Staging::new(&state);
            let id = staging
                .add_event(prepared::PreparedEvent::new(2, "s", &event(2)))
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
