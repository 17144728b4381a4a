//! Maintenance: verification on open, index rebuild, retention and
//! quarantine reprocessing (`auditsink check` is [`crate::events::check`]).
//!
//! Events are the truth; dedupe entries, `trace_id` entries (both in sorted
//! runs) and postings are derived from them and can always be rebuilt.
//! Every change here goes through the write lock and atomic sled batches,
//! in chunks, so appends keep flowing between chunks and a crash midway
//! leaves a consistent store.
//!
//! Why one piece (about 710 lines): rebuild, retention and reprocessing are
//! the maintenance writes that take the write lock step by step; they share
//! its chunking and the updates of postings and runs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use std::sync::Arc;

use auditsink_parser::signature::KeySet;
use auditsink_parser::{parse_line, Event, ParseOptions, SignatureStatus};
use serde::Serialize;

use crate::engine::filter::Bloom;
use crate::engine::log::Pointer;
use crate::engine::runs::{Entry, Key};
use crate::error::{corrupt, StoreError};
use crate::events::chunk::{Chunk, ChunkBuilder, Record, Records};
use crate::events::codec::{decode_event, decode_quarantine, peek_event, peek_quarantine_received};
use crate::events::core::Core;
use crate::events::index::trace_key;
use crate::events::index::{terms, PostingBuilder};
use crate::events::keys::format_id;
use crate::events::keys::hex;
use crate::events::keys::{
    dedupe_key, id_key, key_id, EVENT, FORMAT_VERSION, INDEX, META_COUNTS, META_FORMAT,
    META_HORIZON, META_NEXT_ID, META_REBUILDING, QUARANTINE, QUARANTINE_DEDUPE,
};
use crate::events::keys::{quarantine_dedupe_entry, quarantine_key};
use crate::events::posting_cache::PostingCache;
use crate::events::prepared::PreparedEvent;
use crate::events::query::records_after;
use crate::events::sinks::RetentionHold;
use crate::events::staging::{merge_runs, remove_quarantine_entry, Staging};
use crate::events::state::{Counts, WriteState};

/// Records per atomic maintenance write.
const CHUNK: usize = 1000;

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildSummary {
    /// Events indexed.
    pub events: u64,
    /// Events whose record does not decode (left in place, not indexed).
    pub corrupt_events: u64,
    /// Events whose identity an earlier event already has (both kept).
    pub duplicate_events: u64,
    /// Dedupe entries and postings removed before rebuilding.
    pub removed_entries: u64,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionSummary {
    /// Events removed (with their dedupe entries and index entries).
    pub events_removed: u64,
    /// Quarantined lines removed.
    pub quarantine_removed: u64,
    /// Event log segment files deleted (every chunk in them was removed).
    pub log_segments_removed: u64,
    /// Event chunks that did not read, removed because events after them
    /// had expired (their own events are not counted above).
    pub damaged_chunks_removed: u64,
    /// Expired events kept because a forwarding sink has not delivered
    /// them yet or parked them (see [`crate::Store::sink_register`]), with
    /// the expired events after the first of them (retention removes the
    /// oldest ids only).
    pub events_held: u64,
}

/// What a quarantine reprocess did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReprocessSummary {
    /// Quarantine entries looked at.
    pub examined: u64,
    /// Entries that now parse and were stored as events.
    pub moved: u64,
    /// Entries that now parse into an event already stored (removed).
    pub duplicates: u64,
    /// Entries that still do not parse, or are whole undecodable bodies (kept).
    pub kept: u64,
}

/// Problems of one event's derived entries: its dedupe entry, its
/// `trace_id` entry and its postings.
fn event_problems(
    core: &Core,
    horizon: u64,
    id: u64,
    value: &[u8],
    postings: &mut PostingCache,
    out: &mut dyn FnMut(String),
) -> Result<(), StoreError> {
    let tree = core.tree();
    let decoded = match decode_event(value) {
        Ok(d) => d,
        Err(e) => {
            out(format!(
                "event {}: record does not decode ({})",
                format_id(id),
                e.0
            ));
            return Ok(());
        }
    };
    let key = dedupe_key(&decoded.event);
    if !core.dedupe().contains(tree, Entry { key, id })? {
        match core.dedupe().first(tree, &key, horizon)? {
            Some(other) => out(format!(
                "event {}: its identity is recorded for {} (stored twice?)",
                format_id(id),
                format_id(other)
            )),
            None => out(format!("event {}: no dedupe entry", format_id(id))),
        }
    }
    if let Some(key) = trace_key(&decoded.event) {
        if !core.traces().contains(tree, Entry { key, id })? {
            out(format!(
                "event {}: missing from the trace_id index",
                format_id(id)
            ));
        }
    }
    for (kind, term) in terms(&decoded.event, decoded.time) {
        if !postings.has_entry(tree, kind, term, (id, decoded.time))? {
            out(format!(
                "event {}: missing from the {} index",
                format_id(id),
                kind.as_str()
            ));
        }
    }
    Ok(())
}

/// Verifies the derived entries of the newest `n` events: after a crash,
/// that is where damage would be. Returns the problems.
pub(crate) fn verify_tail(core: &Core, n: usize) -> Result<(u64, Vec<String>), StoreError> {
    let state = core.lock();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut postings = PostingCache::default();
    for item in Records::newest_first(core.tree(), core.log()).take(n) {
        let (id, value) = match item {
            Ok(record) => record,
            // Reported (the open rebuilds from what decodes), not fatal.
            Err(e @ StoreError::Corrupt { .. }) => {
                problems.push(e.to_string());
                break;
            }
            Err(e) => return Err(e),
        };
        // A damaged index page is a problem to rebuild from, not an error
        // that keeps the store closed.
        let report = &mut |p| problems.push(p);
        if let Err(e) = event_problems(core, state.horizon, id, &value, &mut postings, report) {
            problems.push(e.to_string());
            break;
        }
        checked += 1;
    }
    Ok((checked, problems))
}

/// Maintenance writes nothing once a flush failed (see `Core::flush`).
fn refuse_if_poisoned(core: &Core) -> Result<(), StoreError> {
    match core.poison() {
        Some(failure) => Err(StoreError::Recovering {
            reason: failure.to_string(),
        }),
        None => Ok(()),
    }
}

/// Drops every dedupe entry and posting and derives them again from the
/// events; recounts; fixes the next id. Interrupted, it is resumed on the
/// next open (a marker says it was running).
pub(crate) fn rebuild(core: &Core) -> Result<RebuildSummary, StoreError> {
    refuse_if_poisoned(core)?;
    let mut state = core.lock();
    let tree = core.tree();
    let mut summary = RebuildSummary::default();
    core.filter().disable();
    tree.insert(META_REBUILDING, &[1u8])?;
    core.flush()?;

    summary.removed_entries += clear_derived(core)?;

    // Identities seen so far: a Bloom filter, and the runs written so far
    // when it says "maybe".
    let mut seen = Bloom::with_capacity(state.counts.events.saturating_mul(2));
    let mut max_id = 0u64;
    let mut records_read = 0u64;
    let mut chunks = records_after(tree, EVENT, None).peekable();
    while chunks.peek().is_some() {
        // Whole chunks, about CHUNK events per write.
        let mut records = Vec::new();
        while records.len() < CHUNK {
            let Some(item) = chunks.next() else { break };
            let (key, value) = item?;
            match Chunk::read(core.log(), key, value) {
                Ok(chunk) => records.extend((0..chunk.records.len()).map(|i| chunk.record(i))),
                // Its events are lost; they are counted as one.
                Err(StoreError::Corrupt { .. }) => summary.corrupt_events += 1,
                // A read that failed says nothing about the chunk: stop
                // rather than drop the entries of events that may be fine.
                Err(e) => return Err(e),
            }
        }
        records_read += records.len() as u64;
        if let Some((last, _)) = records.last() {
            max_id = max_id.max(*last);
        }
        index_records(core, state.horizon, &records, &mut seen, &mut summary)?;
    }

    let mut quarantine = 0u64;
    for item in records_after(tree, QUARANTINE, None).keys() {
        let key = item?;
        quarantine += 1;
        max_id = max_id.max(key_id(&key).unwrap_or(0));
    }
    summary.removed_entries += build_quarantine_dedupe(tree)?;
    let counts = Counts {
        // As `check` counts: the records of the chunks that read.
        events: records_read,
        quarantine,
    };
    state.next_id = state.next_id.max(max_id + 1);
    state.counts = counts;
    let mut batch = sled::Batch::default();
    batch.insert(META_NEXT_ID, &state.next_id.to_be_bytes());
    batch.insert(META_COUNTS, &counts.encode());
    batch.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes());
    batch.remove(META_REBUILDING);
    tree.apply_batch(batch)?;
    core.filter().start(
        tree,
        core.dedupe(),
        state.horizon,
        counts.events,
        Vec::new(),
    );
    core.counters().mirror(counts);
    core.flush()?;
    Ok(summary)
}

/// Removes every posting and every dedupe and trace_id run; how many
/// entries.
fn clear_derived(core: &Core) -> Result<u64, StoreError> {
    let tree = core.tree();
    let mut removed = 0;
    loop {
        let keys: Vec<sled::IVec> = tree
            .range([INDEX]..[INDEX + 1])
            .keys()
            .take(10 * CHUNK)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            break;
        }
        let mut batch = sled::Batch::default();
        removed += keys.len() as u64;
        for key in keys {
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
    }
    Ok(removed + core.dedupe().clear(tree)? + core.traces().clear(tree)?)
}

/// Writes the postings, dedupe and trace_id entries of `records` (one
/// rebuild step, in id order); the identities seen so far are in `seen`
/// and the runs written before.
fn index_records(
    core: &Core,
    horizon: u64,
    records: &[(u64, Record)],
    seen: &mut Bloom,
    summary: &mut RebuildSummary,
) -> Result<(), StoreError> {
    let tree = core.tree();
    let mut batch = sled::Batch::default();
    let mut postings = PostingBuilder::default();
    let mut group: HashMap<Key, u64> = HashMap::new();
    let (mut dedupe, mut traces) = (Vec::new(), Vec::new());
    for (id, value) in records {
        let id = *id;
        let Ok(decoded) = decode_event(value) else {
            summary.corrupt_events += 1;
            continue;
        };
        summary.events += 1;
        let key = dedupe_key(&decoded.event);
        if group.contains_key(&key)
            || (seen.may_contain(&key) && core.dedupe().first(tree, &key, horizon)?.is_some())
        {
            summary.duplicate_events += 1;
        } else {
            seen.add(&key);
            group.insert(key, id);
            dedupe.push(Entry { key, id });
        }
        if let Some(key) = trace_key(&decoded.event) {
            traces.push(Entry { key, id });
        }
        postings.add(id, decoded.time, terms(&decoded.event, decoded.time));
    }
    for (key, value) in postings.finish() {
        batch.insert(key, value);
    }
    let mutations = (core.dedupe().mutation(), core.traces().mutation());
    let new_dedupe = core
        .dedupe()
        .stage(&core.dedupe().snapshot(), dedupe, &mut batch);
    let new_traces = core
        .traces()
        .stage(&core.traces().snapshot(), traces, &mut batch);
    tree.apply_batch(batch)?;
    core.dedupe().install(new_dedupe);
    core.traces().install(new_traces);
    drop(mutations);
    merge_runs(core, horizon, || false);
    Ok(())
}

/// Builds the quarantine dedupe entries from the quarantined records (for
/// [`rebuild`]): each line's identity
/// points at its newest record. Returns how many entries it replaced.
pub(crate) fn build_quarantine_dedupe(tree: &sled::Tree) -> Result<u64, StoreError> {
    let mut batch = sled::Batch::default();
    let mut removed = 0u64;
    for key in tree
        .range([QUARANTINE_DEDUPE]..[QUARANTINE_DEDUPE + 1])
        .keys()
    {
        batch.remove(key?);
        removed += 1;
    }
    for item in records_after(tree, QUARANTINE, None) {
        let (key, value) = item?;
        // `check` reports what does not read; it has no identity.
        let (Some(id), Ok(record)) = (key_id(&key), decode_quarantine(&value)) else {
            continue;
        };
        let identity = quarantine_key(&record.source, &record.raw);
        batch.insert(&quarantine_dedupe_entry(&identity), &id.to_be_bytes());
    }
    tree.apply_batch(batch)?;
    Ok(removed)
}

/// Commits a removal batch with the new counts.
fn commit_removals(
    core: &Core,
    state: &mut WriteState,
    mut batch: sled::Batch,
    counts: Counts,
) -> Result<(), StoreError> {
    batch.insert(META_COUNTS, &counts.encode());
    core.tree().apply_batch(batch)?;
    state.counts = counts;
    core.counters().mirror(counts);
    Ok(())
}

/// Removes events and quarantined lines received before `cutoff_ms`, with
/// their dedupe entries and index entries. Scans in id order (arrival
/// order) and stops at the first record received at or after the cutoff, so
/// a clock step backwards only keeps records longer.
///
/// What the sinks still need is read by `hold` in every step, under the
/// write lock that a sink rewind also takes: a rewind lands before a step
/// (which keeps what it needs) or after it (whose removals were delivered
/// events when made). `after_step` runs between steps, the lock released
/// (a test's hook).
pub(crate) fn retention(
    core: &Core,
    cutoff_ms: i64,
    hold: &dyn Fn() -> Result<RetentionHold, StoreError>,
    after_step: &mut dyn FnMut(),
) -> Result<RetentionSummary, StoreError> {
    refuse_if_poisoned(core)?;
    let mut summary = RetentionSummary::default();
    // The first expired event a sink still needs: it and every later one stay.
    let mut held_from = None;
    loop {
        let mut state = core.lock();
        let hold = hold()?;
        let step = expired_events(core, cutoff_ms, &hold, &mut held_from)?;
        summary.damaged_chunks_removed += step.damaged_chunks_removed;
        if step.expired.is_empty() {
            break;
        }
        remove_events(core, &mut state, step.batch, &step.expired)?;
        summary.events_removed += step.expired.len() as u64;
        drop(state);
        after_step();
        if step.done {
            break;
        }
    }
    if let Some(from) = held_from {
        summary.events_held = count_expired_from(core, from, cutoff_ms)?;
    }
    summary.quarantine_removed = remove_expired_quarantine(core, cutoff_ms)?;
    if summary != RetentionSummary::default() {
        core.flush()?;
        summary.log_segments_removed = remove_unreferenced_segments(core)?;
    }
    Ok(summary)
}

/// One step of retention over the events, read under the write lock.
struct ExpiredStep {
    /// The chunks' removals and rewrites so far (the postings' to add).
    batch: sled::Batch,
    /// The events to remove, about [`CHUNK`] of them, in id order.
    expired: Vec<(u64, Record)>,
    /// No expired event is left after these (or the rest are held).
    done: bool,
    damaged_chunks_removed: u64,
}

/// The next expired events from the oldest, whole event chunks at a time
/// (the chunk where they end rewritten with the rest), stopping at the
/// first event a sink holds (`held_from` set to it).
fn expired_events(
    core: &Core,
    cutoff_ms: i64,
    hold: &RetentionHold,
    held_from: &mut Option<u64>,
) -> Result<ExpiredStep, StoreError> {
    let mut step = ExpiredStep {
        batch: sled::Batch::default(),
        expired: Vec::new(),
        done: false,
        damaged_chunks_removed: 0,
    };
    // Damaged chunks, whose age is unknown: removed once a later record
    // is found expired (ids are in arrival order), kept otherwise, and
    // kept with the rest while a sink holds ids they may hold (parked,
    // or not delivered yet: a segment restored from a backup is sent).
    let mut damaged = Vec::new();
    for item in records_after(core.tree(), EVENT, None) {
        let (key, value) = item?;
        let first = key_id(&key).ok_or_else(|| corrupt(&key, "event chunk key"))?;
        let records = match Chunk::read(core.log(), key.clone(), value) {
            Ok(records) => records,
            Err(StoreError::Corrupt { .. }) => {
                damaged.push(key);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut kept = None;
        for i in 0..records.records.len() {
            let (id, value) = records.record(i);
            let head = peek_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
            let expired = head.received_at_ms < cutoff_ms;
            // A damaged chunk before it holds ids up to it, received
            // no later than it.
            let holds_damaged = || {
                damaged.iter().any(|key| {
                    let first = key_id(key).unwrap_or(0);
                    hold.holds_unread(first, id.saturating_sub(1), head.received_at_ms)
                })
            };
            if !step.done && expired && (hold.holds(id, head.received_at_ms) || holds_damaged()) {
                *held_from = Some(id);
            }
            if step.done || !expired || held_from.is_some() {
                step.done = true;
                kept.get_or_insert_with(|| ChunkBuilder::new(first))
                    .push(id, &value);
            } else {
                step.expired.push((id, value));
                for key in damaged.drain(..) {
                    tracing::warn!(chunk = %hex(&key), "retention removes a damaged event chunk older than expired events");
                    step.batch.remove(key);
                    step.damaged_chunks_removed += 1;
                }
            }
        }
        match kept {
            None => step.batch.remove(key),
            Some(kept) if kept.is_empty() => step.batch.remove(key),
            Some(kept) => {
                let (_, body) = kept.finish();
                if body.as_slice() != records.value.as_ref() {
                    // The rest, appended anew: on disk before it is pointed at.
                    let pointers = core.log().append(&[body])?;
                    core.sync_log()?;
                    step.batch.insert(key, &pointers[0].encode());
                }
            }
        }
        if step.done || step.expired.len() >= CHUNK {
            break;
        }
    }
    Ok(step)
}

/// Commits one step's removal of `expired` (with `batch`, the chunks'
/// part), their postings with them.
fn remove_events(
    core: &Core,
    state: &mut WriteState,
    mut batch: sled::Batch,
    expired: &[(u64, Record)],
) -> Result<(), StoreError> {
    let tree = core.tree();
    let mut postings = PostingCache::default();
    for (id, value) in expired {
        let key = id_key(EVENT, *id);
        let decoded = decode_event(value).map_err(|e| corrupt(&key, e.0))?;
        for (kind, term) in terms(&decoded.event, decoded.time) {
            postings.remove(tree, kind, term, *id)?;
        }
    }
    postings.write_removals(&mut batch);
    // Removed events are a prefix of the ids: their dedupe and trace_id
    // entries are ignored from now on and dropped by the next merges.
    let horizon = expired
        .iter()
        .map(|(id, _)| id + 1)
        .fold(state.horizon, u64::max);
    batch.insert(META_HORIZON, &horizon.to_be_bytes());
    let mut counts = state.counts;
    counts.events = counts.events.saturating_sub(expired.len() as u64);
    commit_removals(core, state, batch, counts)?;
    state.horizon = horizon;
    core.counters().horizon.store(horizon, Ordering::Relaxed);
    Ok(())
}

/// How many events from id `from` on were received before `cutoff_ms`
/// (the ones retention kept for the sinks); a chunk that does not read is
/// not counted.
fn count_expired_from(core: &Core, from: u64, cutoff_ms: i64) -> Result<u64, StoreError> {
    let mut held = 0;
    let mut records = Records::after(core.tree(), core.log(), Some(from - 1));
    while let Some(item) = records.next() {
        let (id, record) = match item {
            Ok(item) => item,
            Err(StoreError::Corrupt { .. }) if records.skip_damaged_chunk().is_some() => continue,
            Err(e) => return Err(e),
        };
        let head = peek_event(&record).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
        if head.received_at_ms >= cutoff_ms {
            break;
        }
        held += 1;
    }
    Ok(held)
}

/// Removes the quarantined lines received before `cutoff_ms`, with their
/// dedupe entries, a write-locked step at a time; how many.
fn remove_expired_quarantine(core: &Core, cutoff_ms: i64) -> Result<u64, StoreError> {
    let tree = core.tree();
    let mut total = 0;
    loop {
        let mut state = core.lock();
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        let mut done = false;
        for item in records_after(tree, QUARANTINE, None) {
            let (key, value) = item?;
            let received = peek_quarantine_received(&value).map_err(|e| corrupt(&key, e.0))?;
            if received >= cutoff_ms {
                done = true;
                break;
            }
            let record = decode_quarantine(&value).map_err(|e| corrupt(&key, e.0))?;
            let id = key_id(&key).ok_or_else(|| corrupt(&key, "quarantine key"))?;
            let identity = quarantine_key(&record.source, &record.raw);
            remove_quarantine_entry(tree, &mut batch, id, &identity)?;
            batch.remove(key);
            removed += 1;
            if removed as usize == CHUNK {
                break;
            }
        }
        if removed == 0 {
            break;
        }
        let mut counts = state.counts;
        counts.quarantine = counts.quarantine.saturating_sub(removed);
        commit_removals(core, &mut state, batch, counts)?;
        total += removed;
        if done {
            break;
        }
    }
    Ok(total)
}

/// Deletes the event log segments no chunk points into any more (after
/// the pointers' removal is durable). Only below the segment a group would
/// append to next, read under the write lock: a group in flight may have
/// appended to lower segments without pointing at them yet.
fn remove_unreferenced_segments(core: &Core) -> Result<u64, StoreError> {
    let bound = {
        let _state = core.lock();
        core.log().active_segment()
    };
    let mut live = std::collections::BTreeSet::new();
    for item in records_after(core.tree(), EVENT, None) {
        let (_, value) = item?;
        if let Some(pointer) = Pointer::decode(&value) {
            live.insert(pointer.segment);
        }
    }
    core.log().delete_unreferenced(bound, &live)
}

/// How to read the quarantined lines of one source again: the grammar and,
/// when the source checks signatures, its keys and whether it enforces them.
#[derive(Clone)]
pub struct Reparse {
    /// Grammar and year hint.
    pub options: ParseOptions,
    /// The source's current keys; `None`: signatures are not checked.
    pub keys: Option<Arc<KeySet>>,
    /// Under `enforce`, an event whose signature is invalid or missing stays
    /// in quarantine.
    pub enforce: bool,
}

impl Reparse {
    /// Parses and (with keys) verifies a line: the event, or why not.
    pub fn read(&self, raw: &[u8]) -> Result<Event, String> {
        let mut event = parse_line(raw, &self.options).map_err(|e| e.to_string())?;
        if let Some(keys) = &self.keys {
            event.signature = keys.verify_line(raw, event.format);
            if self.enforce
                && matches!(
                    event.signature,
                    SignatureStatus::Invalid | SignatureStatus::Missing
                )
            {
                return Err(format!("signature {}", event.signature.as_str()));
            }
        }
        Ok(event)
    }
}

/// Parses quarantined lines again; moves those that now parse (and, where
/// the source enforces signatures, verify) into events, keeping their
/// original receive time and source (duplicates of stored events are
/// counted and removed), and keeps the rest. Whole request bodies that could
/// not be decoded, and anything containing a newline, are not lines: they
/// are kept as they are.
pub(crate) fn reprocess(
    core: &Core,
    reparse_for: &dyn Fn(&str) -> Reparse,
) -> Result<ReprocessSummary, StoreError> {
    refuse_if_poisoned(core)?;
    let mut summary = ReprocessSummary::default();
    let mut after = None;
    loop {
        let mut state = core.lock();
        let chunk: Vec<(sled::IVec, sled::IVec)> = records_after(core.tree(), QUARANTINE, after)
            .take(CHUNK)
            .collect::<Result<_, _>>()?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = key_id(last);
        let mut staging = Staging::new(&state);
        for (key, value) in &chunk {
            summary.examined += 1;
            let (Some(id), Ok(record)) = (key_id(key), decode_quarantine(value)) else {
                summary.kept += 1;
                continue;
            };
            if record.raw.contains(&b'\n') || record.reason.is_body() {
                summary.kept += 1;
                continue;
            }
            let Ok(event) = reparse_for(&record.source).read(&record.raw) else {
                summary.kept += 1;
                continue;
            };
            let prepared = PreparedEvent::new(record.received_at_ms, &record.source, &event);
            match staging.add_event(prepared)? {
                Some(_) => summary.moved += 1,
                None => summary.duplicates += 1,
            }
            staging.remove_quarantine(id, &quarantine_key(&record.source, &record.raw))?;
        }
        staging.commit(&mut state)?;
        merge_runs(core, state.horizon, || false);
    }
    core.flush()?;
    Ok(summary)
}
