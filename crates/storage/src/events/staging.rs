//! Staging one atomic write of the event store (dedupe decisions, ids,
//! event chunks appended to the log, one `sled::Batch` with the chunks'
//! pointers, the index postings, the quarantined lines and the counters),
//! applying it, and the event store's side of the group-commit pipeline
//! ([`GroupCommit`] for [`Core`]). Maintenance stages through the same
//! [`Staging`] under the lock it takes ([`Staging::commit`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::database::Database;
use crate::engine::key_set::{KeyHash, KeySet};
use crate::engine::pipeline::{GroupCommit, Outcomes};
use crate::engine::runs::{Entry, Key, RunList, Runs};
use crate::engine::write_lock::WriteLock;
use crate::error::StoreError;
use crate::events::chunk::ChunkBuilder;
use crate::events::core::{Core, WriteGuard};
use crate::events::index::PostingBuilder;
use crate::events::keys::{id_key, quarantine_dedupe_entry, META_COUNTS, META_NEXT_ID, QUARANTINE};
use crate::events::prepared::{AppendSummary, PreparedBatch, PreparedEvent};
use crate::events::state::{Counts, WriteState};

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
            core: guard.owner(),
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
            || (core.filter().may_contain(key)
                && core
                    .dedupe()
                    .first(core.tree(), key, self.horizon)?
                    .is_some()))
    }

    /// Whether a quarantined line's identity is stored or staged.
    fn is_quarantined(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.seen.contains(key)
            || self.pending.is_some_and(|p| p.contains(key))
            || self
                .core
                .tree()
                .contains_key(quarantine_dedupe_entry(key))?)
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
        self.core.filter().add(&dedupe_key);
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
        remove_quarantine_entry(self.core.tree(), &mut self.batch, id, key)?;
        self.counts.quarantine = self.counts.quarantine.saturating_sub(1);
        Ok(())
    }

    /// Applies the staged write atomically and moves `state` forward
    /// (maintenance's way: the write lock held, nothing in flight).
    pub fn commit(self, guard: &mut WriteGuard<'_>) -> Result<(), StoreError> {
        assert!(
            std::ptr::eq(self.core, guard.owner()),
            "committed under another store's lock"
        );
        let staged = self.stage()?;
        if staged.appended {
            guard.owner().sync_log()?;
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
            let pointers = core.log().append(&bodies)?;
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
        let core = guard.owner();
        let counters = core.counters();
        let Staged {
            mut batch,
            dedupe,
            traces,
            counts,
            next_id,
            ..
        } = self;
        // The merger swaps lists too: held from the snapshot to the install.
        let (_dedupe_mutation, _traces_mutation) =
            (core.dedupe().mutation(), core.traces().mutation());
        let runs = |runs: &Runs, entries: Vec<Entry>, batch: &mut sled::Batch| {
            (!entries.is_empty()).then(|| runs.stage(&runs.snapshot(), entries, batch))
        };
        let new_dedupe: Option<Arc<RunList>> = runs(core.dedupe(), dedupe, &mut batch);
        let new_traces = runs(core.traces(), traces, &mut batch);
        core.tree().apply_batch(batch)?;
        if let Some(list) = new_dedupe {
            core.dedupe().install(list);
        }
        if let Some(list) = new_traces {
            core.traces().install(list);
        }
        counters.events.store(counts.events, Ordering::Relaxed);
        counters
            .quarantine
            .store(counts.quarantine, Ordering::Relaxed);
        core.database().applied(next_id);
        Ok(())
    }
}

/// Stages the removal of the quarantine dedupe entry `key` if it points at `id`.
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

/// Merges runs that piled up, until none is left to merge or `stop` says
/// so. A failure leaves more runs to read (slower lookups), never a wrong
/// answer: it is logged, not returned.
pub(crate) fn merge_runs(core: &Core, horizon: u64, stop: impl Fn() -> bool) {
    for runs in [&**core.dedupe(), core.traces()] {
        while !stop() {
            match runs.merge_step(core.tree(), horizon) {
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

/// The event store's side of the group commit: a group is staged as one
/// [`Staging`] of its deliveries, its identities (events' and quarantined
/// lines') kept as in flight until it is applied.
impl GroupCommit for Core {
    type State = WriteState;
    type Delivery = PreparedBatch;
    type Summary = AppendSummary;
    type Staged = Staged;

    fn database(&self) -> &Database {
        Core::database(self)
    }

    fn write_lock(&self) -> &WriteLock<WriteState> {
        Core::write_lock(self)
    }

    fn stores_something(delivery: &PreparedBatch) -> bool {
        !delivery.events.is_empty() || !delivery.quarantine.is_empty()
    }

    fn stage(
        &self,
        guard: &mut WriteGuard<'_>,
        group: Vec<PreparedBatch>,
        in_flight: &KeySet,
    ) -> Result<(Staged, Vec<Key>, Outcomes<AppendSummary>), StoreError> {
        if self.filter().is_full() {
            // Keys in flight are not in the runs the new filter is built from.
            self.filter().start(
                self.tree(),
                self.dedupe(),
                guard.horizon,
                guard.counts.events,
                in_flight.iter().copied().collect(),
            );
        }
        let mut staging = Staging::new(guard);
        staging.pending = Some(in_flight);
        let outcomes = group
            .into_iter()
            .map(|prepared| staging.add_delivery(prepared))
            .collect();
        let staged = staging.stage()?;
        guard.next_id = staged.next_id;
        guard.counts = staged.counts;
        let keys = staged.dedupe.iter().map(|e| e.key);
        let keys = keys.chain(staged.quarantined.iter().copied()).collect();
        Ok((staged, keys, outcomes))
    }

    fn appended(staged: &Staged) -> bool {
        staged.appended
    }

    fn apply(staged: Staged, guard: &WriteGuard<'_>) -> Result<(), StoreError> {
        staged.apply(guard)
    }

    fn horizon(state: &WriteState) -> u64 {
        state.horizon
    }

    fn merge(&self, horizon: u64, stop: impl Fn() -> bool) {
        merge_runs(self, horizon, stop);
    }

    fn count_flush(&self) {
        self.counters().flushes.fetch_add(1, Ordering::Relaxed);
    }

    fn count_deliveries(&self, deliveries: u64) {
        self.counters()
            .batches
            .fetch_add(deliveries, Ordering::Relaxed);
    }

    fn count_stored(&self, summary: &AppendSummary) {
        let counters = self.counters();
        counters
            .events_stored
            .fetch_add(summary.stored, Ordering::Relaxed);
        counters
            .duplicates
            .fetch_add(summary.duplicates, Ordering::Relaxed);
    }
}
