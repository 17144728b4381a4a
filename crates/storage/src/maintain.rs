//! Maintenance: verification (on open and `auditsink check`), index rebuild,
//! retention and quarantine reprocessing.
//!
//! Events are the truth; dedupe entries, `trace_id` entries (both in sorted
//! runs) and postings are derived from them and can always be rebuilt. Every change here goes through the write lock
//! and atomic sled batches, in chunks, so appends keep flowing between
//! chunks and a crash midway leaves a consistent store.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::Ordering;

use std::sync::Arc;

use auditsink_parser::signature::KeySet;
use auditsink_parser::{parse_line, Event, ParseOptions, SignatureStatus};
use serde::Serialize;

use crate::chunk::{self, Chunk, ChunkBuilder, Records};
use crate::codec::{
    decode_event, decode_posting, decode_quarantine, encode_posting, peek_event,
    peek_quarantine_received, DecodedEvent,
};
use crate::filter::Bloom;
use crate::index::{terms, Entries, PostingBuilder};
use crate::keys::{
    dedupe_key, encode_term, id_key, key_id, posting_prefix, split_posting_key, trace_key,
    IndexKind, DEDUPE, EVENT, FORMAT_VERSION, INDEX, META, META_COUNTS, META_FORMAT, META_HORIZON,
    META_NEXT_ID, META_QUARANTINE_DEDUPE, META_REBUILDING, QUARANTINE, QUARANTINE_DEDUPE,
};
use crate::keys::{quarantine_dedupe_entry, quarantine_key};
use crate::log::Pointer;
use crate::query::records_after;
use crate::runs::{Entry, Key, Runs, RUN};
use crate::sinks::RetentionHold;
use crate::writer::{
    merge_runs, remove_quarantine_entry, Core, Counts, PreparedEvent, Staging, WriteState,
};
use crate::{corrupt, format_id, StoreError};

/// Problems listed in a report (all are counted).
const MAX_LISTED: usize = 100;
/// Records per atomic maintenance write.
const CHUNK: usize = 1000;

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Event records.
    pub events: u64,
    /// Quarantine records.
    pub quarantine: u64,
    /// Dedupe entries.
    pub dedupe_entries: u64,
    /// Index entries ((term, id) pairs), by index.
    pub index_entries: BTreeMap<&'static str, u64>,
    /// Index posting records.
    pub postings: u64,
    /// Number of problems found.
    pub problem_count: u64,
    /// The first problems, described.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }
}

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
    /// them yet (see [`crate::Store::sink_register`]).
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

fn entry_hash(kind: IndexKind, encoded_term: &[u8], id: u64, time: i64) -> u64 {
    let mut h = DefaultHasher::new();
    (kind, encoded_term, id, time).hash(&mut h);
    h.finish()
}

fn encoded(term: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(term.len() + 1);
    encode_term(term, &mut out);
    out
}

/// The posting of `kind`/`term` that would hold `id`: the one with the
/// greatest first id not above it (postings of a term never overlap).
fn find_posting(
    tree: &sled::Tree,
    kind: IndexKind,
    term: &[u8],
    id: u64,
) -> Result<Option<(sled::IVec, Entries)>, StoreError> {
    let prefix = posting_prefix(kind, term);
    let mut upper = prefix.clone();
    upper.extend_from_slice(&id.to_be_bytes());
    let Some(item) = tree.range(prefix..=upper).next_back() else {
        return Ok(None);
    };
    let (key, value) = item?;
    let (_, _, first) = split_posting_key(&key).ok_or_else(|| corrupt(&key, "posting key"))?;
    let mut entries = Vec::new();
    decode_posting(first, &value, &mut entries).map_err(|e| corrupt(&key, e.0))?;
    Ok(Some((key, entries)))
}

/// Postings read from sled, each once: the events of a retention step, or
/// the newest events verified on open, share most of their terms, and
/// decoding a posting per event and term made retention slower than
/// ingest by far.
#[derive(Default)]
struct PostingCache {
    read: HashMap<sled::IVec, Posting>,
    /// The posting each term was last found in.
    last: HashMap<(IndexKind, Vec<u8>), sled::IVec>,
    /// Entries of the postings in `read`.
    entries: usize,
}

impl PostingCache {
    /// Forgets what it read once that holds more than `max` entries (for a
    /// pass over the whole store; nothing to write back).
    fn bound(&mut self, max: usize) {
        if self.entries > max {
            *self = PostingCache::default();
        }
    }

    /// The posting of `kind`/`term` that would hold `id` (the one
    /// [`find_posting`] finds), if it has an entry for it.
    fn holding(
        &mut self,
        tree: &sled::Tree,
        kind: IndexKind,
        term: Vec<u8>,
        id: u64,
    ) -> Result<Option<&mut Posting>, StoreError> {
        let term = (kind, term);
        let cached = self
            .last
            .get(&term)
            .filter(|key| self.read.get(*key).is_some_and(|p| p.covers(id)))
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let Some((key, entries)) = find_posting(tree, kind, &term.1, id)? else {
                    return Ok(None);
                };
                if !self.read.contains_key(&key) {
                    let posting = Posting {
                        first: split_posting_key(&key).map_or(0, |(_, _, f)| f),
                        next: next_posting_first(tree, &key)?,
                        times: entries.iter().copied().collect(),
                        entries,
                        removed: HashSet::new(),
                    };
                    self.entries += posting.entries.len();
                    self.read.insert(key.clone(), posting);
                }
                self.last.insert(term, key.clone());
                key
            }
        };
        Ok(self
            .read
            .get_mut(&key)
            .filter(|p| p.times.contains_key(&id)))
    }

    /// Whether the posting that would hold `id` has its entry at `time`.
    fn has_entry(
        &mut self,
        tree: &sled::Tree,
        kind: IndexKind,
        term: Vec<u8>,
        (id, time): (u64, i64),
    ) -> Result<bool, StoreError> {
        Ok(self
            .holding(tree, kind, term, id)?
            .is_some_and(|p| p.times.get(&id) == Some(&time)))
    }

    /// Writes the postings that lost entries into `batch`.
    fn write_removals(self, batch: &mut sled::Batch) {
        for (key, mut posting) in self.read {
            if posting.removed.is_empty() {
                continue;
            }
            posting
                .entries
                .retain(|(e, _)| !posting.removed.contains(e));
            if posting.entries.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode_posting(posting.first, &posting.entries));
            }
        }
    }
}

/// The first id of the posting of the same term after the one under
/// `key`, if there is one: the id its key starts with (a malformed key,
/// shorter or longer, gives a bound no higher, so that ids from it on are
/// left to [`find_posting`], which reports the key).
fn next_posting_first(tree: &sled::Tree, key: &sled::IVec) -> Result<Option<u64>, StoreError> {
    let prefix = &key[..key.len() - 8];
    let after = (Bound::Excluded(&key[..]), Bound::Unbounded);
    let Some(item) = tree.range::<&[u8], _>(after).next() else {
        return Ok(None);
    };
    let (next, _) = item?;
    let Some(rest) = next.strip_prefix(prefix) else {
        return Ok(None);
    };
    let mut first = [0u8; 8];
    let n = rest.len().min(8);
    first[..n].copy_from_slice(&rest[..n]);
    Ok(Some(u64::from_be_bytes(first)))
}

/// A posting read by [`PostingCache`].
struct Posting {
    first: u64,
    /// The first id of the term's next posting: ids from it on are not
    /// this posting's to hold.
    next: Option<u64>,
    entries: Entries,
    /// The entries, by id.
    times: HashMap<u64, i64>,
    /// Ids whose entries are to be removed.
    removed: HashSet<u64>,
}

impl Posting {
    /// Whether [`find_posting`] would find this posting for `id`.
    fn covers(&self, id: u64) -> bool {
        self.first <= id && self.next.map_or(true, |next| id < next)
    }
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
    let tree = &core.tree;
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
    if !core.dedupe.contains(tree, Entry { key, id })? {
        match core.dedupe.first(tree, &key, horizon)? {
            Some(other) => out(format!(
                "event {}: its identity is recorded for {} (stored twice?)",
                format_id(id),
                format_id(other)
            )),
            None => out(format!("event {}: no dedupe entry", format_id(id))),
        }
    }
    if let Some(key) = trace_key(&decoded.event) {
        if !core.traces.contains(tree, Entry { key, id })? {
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
    for item in Records::newest_first(&core.tree, &core.log).take(n) {
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

/// (count, sum of entry hashes) of a multiset of entries.
type Tally = (u64, u64);

fn tally(t: &mut Tally, h: u64) {
    t.0 += 1;
    t.1 = t.1.wrapping_add(h);
}

fn run_entry_hash(entry: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    entry.hash(&mut h);
    h.finish()
}

/// Verifies the whole store.
pub(crate) fn check(core: &Core) -> Result<CheckReport, StoreError> {
    let state = core.lock();
    let tree = &core.tree;
    let mut report = CheckReport::default();

    match tree.get(META_FORMAT)? {
        Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
        other => report.problem(format!("format version record is {other:?}")),
    }
    let stored_next = tree
        .get(META_NEXT_ID)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes));
    // Absent: nothing was ever written.
    let stored_counts = match tree.get(META_COUNTS)? {
        None => Some(Counts::default()),
        Some(v) => Counts::decode(&v),
    };
    if tree.get(META_REBUILDING)?.is_some() {
        report.problem("an index rebuild was interrupted".into());
    }

    // Events, and what their index entries should be.
    let mut expected: BTreeMap<IndexKind, Tally> = BTreeMap::new();
    let (mut want_dedupe, mut want_trace): (Tally, Tally) = Default::default();
    let mut max_id = 0u64;
    for item in records_after(tree, EVENT, None) {
        let (key, value) = item?;
        let chunk = match Chunk::read(&core.log, key.clone(), value) {
            Ok(chunk) => chunk,
            Err(e) => {
                report.problem(format!("event chunk {}: {e}", hex(&key)));
                continue;
            }
        };
        for i in 0..chunk.records.len() {
            let (id, value) = chunk.record(i);
            report.events += 1;
            max_id = max_id.max(id);
            let decoded = match decode_event(&value) {
                Ok(d) => d,
                Err(e) => {
                    report.problem(format!(
                        "event {}: record does not decode ({})",
                        format_id(id),
                        e.0
                    ));
                    continue;
                }
            };
            let key = dedupe_key(&decoded.event);
            tally(&mut want_dedupe, run_entry_hash(&Entry { key, id }));
            if let Some(key) = trace_key(&decoded.event) {
                tally(&mut want_trace, run_entry_hash(&Entry { key, id }));
            }
            for (kind, term) in terms(&decoded.event, decoded.time) {
                tally(
                    expected.entry(kind).or_default(),
                    entry_hash(kind, &encoded(&term), id, decoded.time),
                );
            }
        }
    }

    // Each line's identity, with its newest record: what its dedupe entry
    // points at.
    let mut quarantined: HashMap<Key, u64> = HashMap::new();
    for item in records_after(tree, QUARANTINE, None) {
        let (key, value) = item?;
        let Some(id) = key_id(&key) else {
            report.problem(format!("malformed quarantine key {}", hex(&key)));
            continue;
        };
        report.quarantine += 1;
        max_id = max_id.max(id);
        match decode_quarantine(&value) {
            Ok(record) => {
                quarantined.insert(quarantine_key(&record.source, &record.raw), id);
            }
            Err(e) => report.problem(format!(
                "quarantine {}: record does not decode ({})",
                format_id(id),
                e.0
            )),
        }
    }
    for item in tree.range([QUARANTINE_DEDUPE]..[QUARANTINE_DEDUPE + 1]) {
        let (key, value) = item?;
        let entry = key.get(1..).and_then(|k| Key::try_from(k).ok());
        let id = <[u8; 8]>::try_from(value.as_ref()).map(u64::from_be_bytes);
        let (Some(entry), Ok(id)) = (entry, id) else {
            report.problem(format!("malformed quarantine dedupe entry {}", hex(&key)));
            continue;
        };
        match quarantined.remove(&entry) {
            Some(newest) if newest == id => {}
            Some(newest) => report.problem(format!(
                "quarantine dedupe entry {} points at {}, not at the newest record of its \
                 line, {}",
                hex(&key),
                format_id(id),
                format_id(newest)
            )),
            None => report.problem(format!(
                "quarantine dedupe entry {} points at {}, which holds no such line",
                hex(&key),
                format_id(id)
            )),
        }
    }
    let mut unindexed: Vec<u64> = quarantined.into_values().collect();
    unindexed.sort_unstable();
    for id in unindexed {
        report.problem(format!("quarantine {}: no dedupe entry", format_id(id)));
    }

    // Dedupe and trace_id entries: the same multiset as the events give,
    // and no identity twice.
    let horizon = state.horizon;
    for runs in [&*core.dedupe, &core.traces] {
        for problem in runs.verify(tree)? {
            report.problem(problem);
        }
    }
    let dedupe: &Runs = &core.dedupe;
    for (runs, want) in [(dedupe, want_dedupe), (&core.traces, want_trace)] {
        let mut have: Tally = (0, 0);
        let mut previous: Option<Entry> = None;
        let list = runs.snapshot();
        for entry in runs.merged(tree, &list) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    report.problem(format!("{} index: {e}", runs.kind().as_str()));
                    break;
                }
            };
            if entry.id < horizon {
                continue;
            }
            tally(&mut have, run_entry_hash(&entry));
            if std::ptr::eq(runs, dedupe) {
                if let Some(p) = previous.filter(|p| p.key == entry.key && p.id != entry.id) {
                    report.problem(format!(
                        "events {} and {} have the same identity (stored twice)",
                        format_id(p.id),
                        format_id(entry.id)
                    ));
                }
                previous = Some(entry);
            }
        }
        if std::ptr::eq(runs, dedupe) {
            report.dedupe_entries = have.0;
        } else {
            report
                .index_entries
                .insert(IndexKind::Trace.as_str(), have.0);
        }
        if have != want {
            let before = report.problem_count;
            run_details(core, runs, horizon, &mut report)?;
            if report.problem_count == before {
                report.problem(format!(
                    "the {} index holds {} entries for {} expected (duplicate entries)",
                    runs.kind().as_str(),
                    have.0,
                    want.0
                ));
            }
        }
    }

    // Postings: the same multiset of (kind, term, id, time) as expected.
    let mut actual: BTreeMap<IndexKind, Tally> = BTreeMap::new();
    let mut entries = Vec::new();
    let index_end = [INDEX + 1];
    for item in tree.range([INDEX]..index_end) {
        let (key, value) = item?;
        report.postings += 1;
        let Some((kind, term, first)) = split_posting_key(&key) else {
            report.problem(format!("malformed index key {}", hex(&key)));
            continue;
        };
        entries.clear();
        if decode_posting(first, &value, &mut entries).is_err() {
            report.problem(format!("index record {} does not decode", hex(&key)));
            continue;
        }
        let a = actual.entry(kind).or_default();
        for &(id, time) in &entries {
            tally(a, entry_hash(kind, term, id, time));
        }
    }
    for kind in IndexKind::ALL {
        let want = expected.get(&kind).copied().unwrap_or_default();
        let have = actual.get(&kind).copied().unwrap_or_default();
        if kind == IndexKind::Trace {
            // In runs (above); a posting for it is left over from format 3.
            if have.0 > 0 {
                report.problem(format!("{} trace_id postings left over", have.0));
            }
            continue;
        }
        report.index_entries.insert(kind.as_str(), have.0);
        if want != have {
            let before = report.problem_count;
            index_details(core, kind, &mut report)?;
            if report.problem_count == before {
                report.problem(format!(
                    "the {} index holds {} entries for {} expected (duplicate entries)",
                    kind.as_str(),
                    have.0,
                    want.0
                ));
            }
        }
    }

    // Unknown keys.
    for item in tree.iter().keys() {
        let key = item?;
        if !matches!(
            key.first(),
            Some(&(EVENT | QUARANTINE | QUARANTINE_DEDUPE | RUN | INDEX | META))
        ) {
            report.problem(format!("unknown key {}", hex(&key)));
        }
    }

    let actual_counts = Counts {
        events: report.events,
        quarantine: report.quarantine,
    };
    if stored_counts != Some(actual_counts) || state.counts != actual_counts {
        report.problem(format!(
            "recorded counts {stored_counts:?} differ from the records ({} events, {} quarantined)",
            report.events, report.quarantine
        ));
    }
    if (report.events + report.quarantine > 0 && !matches!(stored_next, Some(n) if n > max_id))
        || state.next_id <= max_id
    {
        report.problem(format!(
            "next id {stored_next:?} is not above the highest id {}",
            format_id(max_id)
        ));
    }
    Ok(report)
}

/// The run key an event should have in `runs`.
fn run_key(runs: &Runs, core: &Core, event: &Event) -> Option<Key> {
    if std::ptr::eq(runs, &*core.dedupe) {
        Some(dedupe_key(event))
    } else {
        trace_key(event)
    }
}

/// Pinpoints the dangling and missing entries of the dedupe or trace_id runs.
fn run_details(
    core: &Core,
    runs: &Runs,
    horizon: u64,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let tree = &core.tree;
    let name = runs.kind().as_str();
    let list = runs.snapshot();
    let mut events = EventReader::default();
    // Entries come in key order, their events in random order: they are
    // looked up in id order, a million at a time, so that consecutive
    // entries mostly share a chunk of the event log.
    let mut merged = runs
        .merged(tree, &list)
        .map_while(Result::ok)
        .filter(|entry| entry.id >= horizon);
    loop {
        let mut pending: Vec<Entry> = merged.by_ref().take(1 << 20).collect();
        if pending.is_empty() {
            break;
        }
        pending.sort_unstable_by_key(|e| e.id);
        for entry in pending {
            let event = events.read(core, entry.id)?;
            let ok = event
                .and_then(|v| decode_event(&v).ok())
                .is_some_and(|d| run_key(runs, core, &d.event) == Some(entry.key));
            if !ok {
                report.problem(format!(
                    "dangling {name} entry for event {} (the event is missing or has another value)",
                    format_id(entry.id)
                ));
            }
        }
    }
    let mut failed = false;
    for_each_readable_event(core, &mut |id, decoded| {
        let Some(key) = run_key(runs, core, &decoded.event).filter(|_| !failed) else {
            return Ok(());
        };
        // A page that does not read is reported (once), not an error that
        // would keep `check --repair` from repairing.
        match runs.contains(tree, Entry { key, id }) {
            Ok(true) => {}
            Ok(false) => report.problem(format!(
                "event {}: missing from the {name} index",
                format_id(id)
            )),
            Err(e) => {
                report.problem(format!("{name} index: {e}"));
                failed = true;
            }
        }
        Ok(())
    })
}

/// Reads events by id for `check`'s detail pass, keeping the last chunk
/// it read: a posting's entries are mostly consecutive events.
#[derive(Default)]
struct EventReader {
    last: Option<Chunk>,
}

impl EventReader {
    /// The record of event `id`, or `None` if it is missing or its chunk
    /// is damaged (`check` reports that on its own; here it is a missing
    /// event).
    fn read(&mut self, core: &Core, id: u64) -> Result<Option<chunk::Record>, StoreError> {
        if let Some(chunk) = &self.last {
            if let Some(i) = chunk.find(id) {
                return Ok(Some(chunk.record(i).1));
            }
        }
        match chunk::chunk_for(&core.tree, &core.log, id) {
            Ok(chunk) => {
                let record = chunk.as_ref().and_then(|c| Some(c.record(c.find(id)?).1));
                self.last = chunk;
                Ok(record)
            }
            Err(StoreError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Calls `visit` with every event that reads and decodes, in id order
/// (the others are `check`'s to report).
fn for_each_readable_event(
    core: &Core,
    visit: &mut dyn FnMut(u64, DecodedEvent) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for item in records_after(&core.tree, EVENT, None) {
        let (key, value) = item?;
        let Ok(chunk) = Chunk::read(&core.log, key, value) else {
            continue;
        };
        for i in 0..chunk.records.len() {
            let (id, value) = chunk.record(i);
            if let Ok(decoded) = decode_event(&value) {
                visit(id, decoded)?;
            }
        }
    }
    Ok(())
}

/// Pinpoints the dangling and missing entries of one index.
fn index_details(core: &Core, kind: IndexKind, report: &mut CheckReport) -> Result<(), StoreError> {
    let tree = &core.tree;
    let prefix = [INDEX, kind.tag()];
    let mut entries = Vec::new();
    let mut events = EventReader::default();
    for item in tree.scan_prefix(prefix) {
        let (key, value) = item?;
        let Some((_, term, first)) = split_posting_key(&key) else {
            continue;
        };
        entries.clear();
        if decode_posting(first, &value, &mut entries).is_err() {
            continue;
        }
        for &(id, time) in &entries {
            let event = events.read(core, id)?;
            let ok = event.and_then(|v| decode_event(&v).ok()).is_some_and(|d| {
                d.time == time
                    && terms(&d.event, d.time)
                        .iter()
                        .any(|(k, t)| *k == kind && encoded(t) == term)
            });
            if !ok {
                report.problem(format!(
                    "dangling {} index entry for event {} (the event is missing or does not have that value)",
                    kind.as_str(),
                    format_id(id)
                ));
            }
        }
    }
    let mut postings = PostingCache::default();
    for_each_readable_event(core, &mut |id, decoded| {
        postings.bound(1 << 20);
        for (k, term) in terms(&decoded.event, decoded.time) {
            if k != kind {
                continue;
            }
            if !postings.has_entry(tree, k, term, (id, decoded.time))? {
                report.problem(format!(
                    "event {}: missing from the {} index",
                    format_id(id),
                    kind.as_str()
                ));
            }
        }
        Ok(())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Maintenance writes nothing once a flush failed (see `Core::flush`).
fn refuse_if_poisoned(core: &Core) -> Result<(), StoreError> {
    match core.poison() {
        Some(reason) => Err(StoreError::Recovering { reason }),
        None => Ok(()),
    }
}

/// Drops every dedupe entry and posting and derives them again from the
/// events; recounts; fixes the next id. Interrupted, it is resumed on the
/// next open (a marker says it was running).
pub(crate) fn rebuild(core: &Core) -> Result<RebuildSummary, StoreError> {
    refuse_if_poisoned(core)?;
    let mut state = core.lock();
    let tree = &core.tree;
    let mut summary = RebuildSummary::default();
    core.filter.disable();
    tree.insert(META_REBUILDING, &[1u8])?;
    core.flush()?;

    // `d`: format 3's dedupe entries.
    for prefix in [DEDUPE, INDEX] {
        loop {
            let keys: Vec<sled::IVec> = tree
                .range([prefix]..[prefix + 1])
                .keys()
                .take(10 * CHUNK)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            summary.removed_entries += keys.len() as u64;
            for key in keys {
                batch.remove(key);
            }
            tree.apply_batch(batch)?;
        }
    }
    summary.removed_entries += core.dedupe.clear(tree)? + core.traces.clear(tree)?;

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
            match Chunk::read(&core.log, key, value) {
                Ok(chunk) => records.extend((0..chunk.records.len()).map(|i| chunk.record(i))),
                // Its events are lost; they are counted as one.
                Err(StoreError::Corrupt { .. }) => summary.corrupt_events += 1,
                // A read that failed says nothing about the chunk: stop
                // rather than drop the entries of events that may be fine.
                Err(e) => return Err(e),
            }
        }
        records_read += records.len() as u64;
        let mut batch = sled::Batch::default();
        let mut postings = PostingBuilder::default();
        let mut group: HashMap<Key, u64> = HashMap::new();
        let (mut dedupe, mut traces) = (Vec::new(), Vec::new());
        for (id, value) in &records {
            let id = *id;
            max_id = max_id.max(id);
            let Ok(decoded) = decode_event(value) else {
                summary.corrupt_events += 1;
                continue;
            };
            summary.events += 1;
            let key = dedupe_key(&decoded.event);
            if group.contains_key(&key)
                || (seen.may_contain(&key)
                    && core.dedupe.first(tree, &key, state.horizon)?.is_some())
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
        let mutations = (core.dedupe.mutation(), core.traces.mutation());
        let new_dedupe = core
            .dedupe
            .stage(&core.dedupe.snapshot(), dedupe, &mut batch);
        let new_traces = core
            .traces
            .stage(&core.traces.snapshot(), traces, &mut batch);
        tree.apply_batch(batch)?;
        core.dedupe.install(new_dedupe);
        core.traces.install(new_traces);
        drop(mutations);
        merge_runs(core, state.horizon, || false);
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
    core.filter
        .start(tree, &core.dedupe, state.horizon, counts.events, Vec::new());
    core.counters.events.store(counts.events, Ordering::Relaxed);
    core.counters
        .quarantine
        .store(counts.quarantine, Ordering::Relaxed);
    core.flush()?;
    Ok(summary)
}

/// Builds the quarantine dedupe entries from the quarantined records (for
/// stores written before them, and by [`rebuild`]): each line's identity
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
    batch.insert(META_QUARANTINE_DEDUPE, &[1u8]);
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
    core.tree.apply_batch(batch)?;
    state.counts = counts;
    core.counters.events.store(counts.events, Ordering::Relaxed);
    core.counters
        .quarantine
        .store(counts.quarantine, Ordering::Relaxed);
    Ok(())
}

/// Removes events and quarantined lines received before `cutoff_ms`, with
/// their dedupe entries and index entries. Scans in id order (arrival
/// order) and stops at the first record received at or after the cutoff, so
/// a clock step backwards only keeps records longer.
pub(crate) fn retention(
    core: &Core,
    cutoff_ms: i64,
    hold: &RetentionHold,
) -> Result<RetentionSummary, StoreError> {
    refuse_if_poisoned(core)?;
    let mut summary = RetentionSummary::default();
    let tree = &core.tree;
    // The first expired event a sink still needs: it and every later one stay.
    let mut held_from = None;
    loop {
        let mut state = core.lock();
        let mut batch = sled::Batch::default();
        let mut chunk = Vec::new();
        let mut done = false;
        // Damaged chunks, whose age is unknown: removed once a later record
        // is found expired (ids are in arrival order), kept otherwise.
        let mut damaged = Vec::new();
        // Whole event chunks, about CHUNK events per write; the chunk where
        // the expired events end is rewritten with the rest.
        for item in records_after(tree, EVENT, None) {
            let (key, value) = item?;
            let first = key_id(&key).ok_or_else(|| corrupt(&key, "event chunk key"))?;
            let records = match Chunk::read(&core.log, key.clone(), value) {
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
                if !done && expired && hold.holds(id, head.received_at_ms) {
                    held_from = Some(id);
                }
                if done || !expired || held_from.is_some() {
                    done = true;
                    kept.get_or_insert_with(|| ChunkBuilder::new(first))
                        .push(id, &value);
                } else {
                    chunk.push((id, value));
                    for key in damaged.drain(..) {
                        tracing::warn!(chunk = %hex(&key), "retention removes a damaged event chunk older than expired events");
                        batch.remove(key);
                        summary.damaged_chunks_removed += 1;
                    }
                }
            }
            match kept {
                None => batch.remove(key),
                Some(kept) if kept.is_empty() => batch.remove(key),
                Some(kept) => {
                    let (_, body) = kept.finish();
                    if body.as_slice() != records.value.as_ref() {
                        // The rest, appended anew: on disk before it is pointed at.
                        let pointers = core.log.append(&[body])?;
                        core.sync_log()?;
                        batch.insert(key, &pointers[0].encode());
                    }
                }
            }
            if done || chunk.len() >= CHUNK {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let mut postings = PostingCache::default();
        for (id, value) in &chunk {
            let key = id_key(EVENT, *id);
            let decoded = decode_event(value).map_err(|e| corrupt(&key, e.0))?;
            for (kind, term) in terms(&decoded.event, decoded.time) {
                if let Some(posting) = postings.holding(tree, kind, term, *id)? {
                    posting.removed.insert(*id);
                }
            }
        }
        postings.write_removals(&mut batch);
        // Removed events are a prefix of the ids: their dedupe and trace_id
        // entries are ignored from now on and dropped by the next merges.
        let horizon = chunk
            .iter()
            .map(|(id, _)| id + 1)
            .fold(state.horizon, u64::max);
        batch.insert(META_HORIZON, &horizon.to_be_bytes());
        let mut counts = state.counts;
        counts.events = counts.events.saturating_sub(chunk.len() as u64);
        commit_removals(core, &mut state, batch, counts)?;
        state.horizon = horizon;
        core.counters.horizon.store(horizon, Ordering::Relaxed);
        summary.events_removed += chunk.len() as u64;
        if done {
            break;
        }
    }
    if let Some(from) = held_from {
        for item in Records::after(tree, &core.log, Some(from - 1)) {
            let (id, record) = item?;
            let head = peek_event(&record).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
            if head.received_at_ms >= cutoff_ms {
                break;
            }
            summary.events_held += 1;
        }
    }
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
        summary.quarantine_removed += removed;
        if done {
            break;
        }
    }
    if summary != RetentionSummary::default() {
        core.flush()?;
        summary.log_segments_removed = remove_unreferenced_segments(core)?;
    }
    Ok(summary)
}

/// Deletes the event log segments no chunk points into any more (after
/// the pointers' removal is durable). Only below the segment a group would
/// append to next, read under the write lock: a group in flight may have
/// appended to lower segments without pointing at them yet.
fn remove_unreferenced_segments(core: &Core) -> Result<u64, StoreError> {
    let bound = {
        let _state = core.lock();
        core.log.active_segment()
    };
    let mut live = std::collections::BTreeSet::new();
    for item in records_after(&core.tree, EVENT, None) {
        let (_, value) = item?;
        if let Some(pointer) = Pointer::decode(&value) {
            live.insert(pointer.segment);
        }
    }
    core.log.delete_unreferenced(bound, &live)
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
        let chunk: Vec<(sled::IVec, sled::IVec)> = records_after(&core.tree, QUARANTINE, after)
            .take(CHUNK)
            .collect::<Result<_, _>>()?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = key_id(last);
        let mut staging = Staging::new(core, &state);
        for (key, value) in &chunk {
            summary.examined += 1;
            let (Some(id), Ok(record)) = (key_id(key), decode_quarantine(value)) else {
                summary.kept += 1;
                continue;
            };
            if record.raw.contains(&b'\n') || record.reason.starts_with("undecodable request body")
            {
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
        staging.commit(&mut state, &core.counters)?;
        merge_runs(core, state.horizon, || false);
    }
    core.flush()?;
    Ok(summary)
}
