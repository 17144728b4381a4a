//! `check`: verifies the whole store against its events.
//!
//! The event log is read once, and what the events give is tallied per
//! concern (the dedupe and `trace_id` runs, the postings of each index) as
//! a multiset: (count, sum of entry hashes). Each concern's own entries
//! are then walked once and tallied the same way. Only a concern whose
//! tallies differ is pinpointed: its entries looked up by event id (the
//! dangling ones), and, in one more pass over the event log shared by every
//! concern that is off, its events looked up in it (the missing ones). A
//! sound store costs one read of the log; a damaged one two.
//!
//! Why one piece (about 700 lines): every concern's tally and its
//! pinpointing share the one read of the event log.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use auditsink_parser::Event;
use serde::Serialize;

use crate::engine::runs::{Entry, Key, Runs, RUN};
use crate::error::StoreError;
use crate::events::chunk::{self, Chunk};
use crate::events::codec::{decode_event, decode_posting, decode_quarantine, DecodedEvent};
use crate::events::core::Core;
use crate::events::index::terms;
use crate::events::index::trace_key;
use crate::events::keys::format_id;
use crate::events::keys::{
    dedupe_key, encode_term, hex, key_id, quarantine_key, split_posting_key, IndexKind, EVENT,
    FORMAT_VERSION, INDEX, META, META_COUNTS, META_FORMAT, META_NEXT_ID, META_REBUILDING,
    QUARANTINE, QUARANTINE_DEDUPE,
};
use crate::events::posting_cache::PostingCache;
use crate::events::query::records_after;
use crate::events::state::{Counts, WriteState};

/// Problems listed in a report (all are counted).
const MAX_LISTED: usize = 100;

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

/// What the events give, tallied per concern.
#[derive(Default)]
struct Expected {
    dedupe: Tally,
    trace: Tally,
    postings: BTreeMap<IndexKind, Tally>,
    max_id: u64,
}

/// What the metadata records.
struct Recorded {
    next_id: Option<u64>,
    counts: Option<Counts>,
}

/// A derived structure whose tally is off, to pinpoint.
struct Damage<'a> {
    concern: Concern<'a>,
    have: u64,
    want: u64,
    /// Problems pinpointed so far.
    found: u64,
    /// A page of it that does not read was reported: no more look-ups.
    failed: bool,
}

#[derive(Clone, Copy)]
enum Concern<'a> {
    Runs(&'a Runs),
    Postings(IndexKind),
}

impl Concern<'_> {
    fn name(&self) -> &'static str {
        match self {
            Concern::Runs(runs) => runs.kind().as_str(),
            Concern::Postings(kind) => kind.as_str(),
        }
    }
}

/// Verifies the whole store (the write lock held: appends wait).
pub(crate) fn check(core: &Core) -> Result<CheckReport, StoreError> {
    let state = core.lock();
    let tree = core.tree();
    let mut report = CheckReport::default();
    let recorded = read_meta(tree, &mut report)?;
    let expected = tally_events(core, &mut report)?;
    let max_id = expected.max_id.max(check_quarantine(tree, &mut report)?);
    let mut damaged = Vec::new();
    let horizon = state.horizon;
    for (runs, want) in [
        (&**core.dedupe(), expected.dedupe),
        (core.traces(), expected.trace),
    ] {
        let have = tally_runs(core, runs, horizon, &mut report);
        if have != want {
            damaged.push(Damage::new(Concern::Runs(runs), have, want));
        }
    }
    for (kind, have) in tally_postings(tree, &mut report)? {
        let want = expected.postings.get(&kind).copied().unwrap_or_default();
        if have != want {
            damaged.push(Damage::new(Concern::Postings(kind), have, want));
        }
    }
    pinpoint(core, &mut damaged, horizon, &mut report)?;
    check_keys(tree, &mut report)?;
    check_counters(&state, &recorded, max_id, &mut report);
    Ok(report)
}

impl<'a> Damage<'a> {
    fn new(concern: Concern<'a>, have: Tally, want: Tally) -> Damage<'a> {
        Damage {
            concern,
            have: have.0,
            want: want.0,
            found: 0,
            failed: false,
        }
    }
}

fn read_meta(tree: &sled::Tree, report: &mut CheckReport) -> Result<Recorded, StoreError> {
    match tree.get(META_FORMAT)? {
        Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
        other => report.problem(format!("format version record is {other:?}")),
    }
    if tree.get(META_REBUILDING)?.is_some() {
        report.problem("an index rebuild was interrupted".into());
    }
    Ok(Recorded {
        next_id: tree
            .get(META_NEXT_ID)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)),
        // Absent: nothing was ever written.
        counts: match tree.get(META_COUNTS)? {
            None => Some(Counts::default()),
            Some(v) => Counts::decode(&v),
        },
    })
}

/// The one read of the event log: every event counted, and what its
/// derived entries should be tallied.
fn tally_events(core: &Core, report: &mut CheckReport) -> Result<Expected, StoreError> {
    let mut expected = Expected::default();
    for item in records_after(core.tree(), EVENT, None) {
        let (key, value) = item?;
        let chunk = match Chunk::read(core.log(), key.clone(), value) {
            Ok(chunk) => chunk,
            Err(e) => {
                report.problem(format!("event chunk {}: {e}", hex(&key)));
                continue;
            }
        };
        for i in 0..chunk.records.len() {
            let (id, value) = chunk.record(i);
            report.events += 1;
            expected.max_id = expected.max_id.max(id);
            match decode_event(&value) {
                Ok(decoded) => expected.add(id, &decoded),
                Err(e) => report.problem(format!(
                    "event {}: record does not decode ({})",
                    format_id(id),
                    e.0
                )),
            }
        }
    }
    Ok(expected)
}

impl Expected {
    fn add(&mut self, id: u64, decoded: &DecodedEvent) {
        let key = dedupe_key(&decoded.event);
        tally(&mut self.dedupe, run_entry_hash(&Entry { key, id }));
        if let Some(key) = trace_key(&decoded.event) {
            tally(&mut self.trace, run_entry_hash(&Entry { key, id }));
        }
        for (kind, term) in terms(&decoded.event, decoded.time) {
            tally(
                self.postings.entry(kind).or_default(),
                entry_hash(kind, &encoded(&term), id, decoded.time),
            );
        }
    }
}

/// Each quarantined line's identity has a dedupe entry pointing at its
/// newest record. Returns the highest quarantine id.
fn check_quarantine(tree: &sled::Tree, report: &mut CheckReport) -> Result<u64, StoreError> {
    let mut max_id = 0;
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
    Ok(max_id)
}

/// Walks the dedupe or `trace_id` runs once: their pages verified, their
/// live entries tallied, no identity stored twice.
fn tally_runs(core: &Core, runs: &Runs, horizon: u64, report: &mut CheckReport) -> Tally {
    let tree = core.tree();
    let is_dedupe = std::ptr::eq(runs, &**core.dedupe());
    match runs.verify(tree) {
        Ok(problems) => problems.into_iter().for_each(|p| report.problem(p)),
        Err(e) => report.problem(format!("{} index: {e}", runs.kind().as_str())),
    }
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
        if is_dedupe {
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
    if is_dedupe {
        report.dedupe_entries = have.0;
    } else {
        report
            .index_entries
            .insert(IndexKind::Trace.as_str(), have.0);
    }
    have
}

/// Walks the postings once: each index's entries tallied (`trace_id` is in
/// runs: a posting for it is never written).
fn tally_postings(
    tree: &sled::Tree,
    report: &mut CheckReport,
) -> Result<BTreeMap<IndexKind, Tally>, StoreError> {
    let mut actual: BTreeMap<IndexKind, Tally> = BTreeMap::new();
    let mut entries = Vec::new();
    for item in tree.range([INDEX]..[INDEX + 1]) {
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
    if let Some(left) = actual.remove(&IndexKind::Trace) {
        report.problem(format!("{} trace_id postings left over", left.0));
    }
    for kind in IndexKind::ALL {
        if kind != IndexKind::Trace {
            let have = actual.entry(kind).or_default();
            report.index_entries.insert(kind.as_str(), have.0);
        }
    }
    Ok(actual)
}

/// Pinpoints the dangling and missing entries of the concerns whose
/// tallies are off: dangling ones concern by concern (their entries looked
/// up by event id), missing ones in one pass over the event log for all.
/// A concern where neither is found holds an entry twice.
fn pinpoint(
    core: &Core,
    damaged: &mut [Damage<'_>],
    horizon: u64,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    if damaged.is_empty() {
        return Ok(());
    }
    for damage in damaged.iter_mut() {
        damage.found += match damage.concern {
            Concern::Runs(runs) => dangling_run_entries(core, runs, horizon, report)?,
            Concern::Postings(kind) => dangling_postings(core, kind, report)?,
        };
    }
    let tree = core.tree();
    let mut postings = PostingCache::default();
    for_each_readable_event(core, &mut |id, decoded| {
        postings.bound(1 << 20);
        let mut event_terms = None;
        for damage in damaged.iter_mut().filter(|d| !d.failed) {
            let name = damage.concern.name();
            let missing = |report: &mut CheckReport| {
                report.problem(format!(
                    "event {}: missing from the {name} index",
                    format_id(id)
                ))
            };
            match damage.concern {
                Concern::Runs(runs) => {
                    let Some(key) = run_key(runs, core, &decoded.event) else {
                        continue;
                    };
                    // A page that does not read is reported (once), not an
                    // error that would keep `check --repair` from repairing.
                    match runs.contains(tree, Entry { key, id }) {
                        Ok(true) => continue,
                        Ok(false) => missing(report),
                        Err(e) => {
                            report.problem(format!("{name} index: {e}"));
                            damage.failed = true;
                        }
                    }
                }
                Concern::Postings(kind) => {
                    let event_terms =
                        event_terms.get_or_insert_with(|| terms(&decoded.event, decoded.time));
                    let mut found = 0;
                    for (_, term) in event_terms.iter().filter(|(k, _)| *k == kind) {
                        if !postings.has_entry(tree, kind, term.clone(), (id, decoded.time))? {
                            missing(report);
                            found += 1;
                        }
                    }
                    if found == 0 {
                        continue;
                    }
                }
            }
            damage.found += 1;
        }
        Ok(())
    })?;
    for damage in damaged.iter().filter(|d| d.found == 0) {
        report.problem(format!(
            "the {} index holds {} entries for {} expected (duplicate entries)",
            damage.concern.name(),
            damage.have,
            damage.want
        ));
    }
    Ok(())
}

/// The run key an event should have in `runs`.
fn run_key(runs: &Runs, core: &Core, event: &Event) -> Option<Key> {
    if std::ptr::eq(runs, &**core.dedupe()) {
        Some(dedupe_key(event))
    } else {
        trace_key(event)
    }
}

/// Reports the entries of the dedupe or `trace_id` runs whose event is
/// missing or has another value; returns how many.
fn dangling_run_entries(
    core: &Core,
    runs: &Runs,
    horizon: u64,
    report: &mut CheckReport,
) -> Result<u64, StoreError> {
    let name = runs.kind().as_str();
    let list = runs.snapshot();
    let mut events = EventReader::default();
    let mut found = 0;
    // Entries come in key order, their events in random order: they are
    // looked up in id order, a million at a time, so that consecutive
    // entries mostly share a chunk of the event log.
    let mut merged = runs
        .merged(core.tree(), &list)
        .map_while(Result::ok)
        .filter(|entry| entry.id >= horizon);
    loop {
        let mut pending: Vec<Entry> = merged.by_ref().take(1 << 20).collect();
        if pending.is_empty() {
            return Ok(found);
        }
        pending.sort_unstable_by_key(|e| e.id);
        for entry in pending {
            let event = events.read(core, entry.id)?;
            let ok = event
                .and_then(|v| decode_event(&v).ok())
                .is_some_and(|d| run_key(runs, core, &d.event) == Some(entry.key));
            if !ok {
                found += 1;
                report.problem(format!(
                    "dangling {name} entry for event {} (the event is missing or has another value)",
                    format_id(entry.id)
                ));
            }
        }
    }
}

/// Reports the postings' entries of one index whose event is missing or
/// does not have that value; returns how many. Entries come term by term,
/// their events from all over the log: they are looked up in id order, a
/// million at a time, so that consecutive entries share a chunk of the
/// event log (and an event's terms are found once).
fn dangling_postings(
    core: &Core,
    kind: IndexKind,
    report: &mut CheckReport,
) -> Result<u64, StoreError> {
    let mut entries = Vec::new();
    let mut pending: Vec<(u64, i64, Arc<[u8]>)> = Vec::new();
    let mut lookup = PostingLookup {
        kind,
        events: EventReader::default(),
        last: None,
        found: 0,
    };
    for item in core.tree().scan_prefix([INDEX, kind.tag()]) {
        let (key, value) = item?;
        let Some((_, term, first)) = split_posting_key(&key) else {
            continue;
        };
        entries.clear();
        if decode_posting(first, &value, &mut entries).is_err() {
            continue;
        }
        let term: Arc<[u8]> = Arc::from(term);
        pending.extend(entries.iter().map(|&(id, time)| (id, time, term.clone())));
        if pending.len() >= 1 << 20 {
            lookup.check(core, &mut pending, report)?;
        }
    }
    lookup.check(core, &mut pending, report)?;
    Ok(lookup.found)
}

/// An event's time and its encoded terms of one index.
type EventTerms = (i64, Vec<Vec<u8>>);

/// The look-ups of [`dangling_postings`].
struct PostingLookup {
    kind: IndexKind,
    events: EventReader,
    /// The last event looked up: its id, and its time and encoded terms of
    /// this index if it reads.
    last: Option<(u64, Option<EventTerms>)>,
    found: u64,
}

impl PostingLookup {
    /// Looks the `pending` entries up in id order, and empties it.
    fn check(
        &mut self,
        core: &Core,
        pending: &mut Vec<(u64, i64, Arc<[u8]>)>,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        pending.sort_unstable_by_key(|(id, _, _)| *id);
        for (id, time, term) in pending.drain(..) {
            if self.last.as_ref().map(|(last, _)| *last) != Some(id) {
                let kind = self.kind;
                let event = self.events.read(core, id)?;
                let found = event.and_then(|v| decode_event(&v).ok()).map(|d| {
                    let terms = terms(&d.event, d.time)
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, t)| encoded(t))
                        .collect();
                    (d.time, terms)
                });
                self.last = Some((id, found));
            }
            let ok = self
                .last
                .as_ref()
                .and_then(|(_, f)| f.as_ref())
                .is_some_and(|(event_time, event_terms)| {
                    *event_time == time && event_terms.iter().any(|t| t[..] == term[..])
                });
            if !ok {
                self.found += 1;
                report.problem(format!(
                    "dangling {} index entry for event {} (the event is missing or does not have that value)",
                    self.kind.as_str(),
                    format_id(id)
                ));
            }
        }
        Ok(())
    }
}

/// Reads events by id for the look-ups of dangling entries, keeping the
/// last chunk it read: a posting's entries are mostly consecutive events.
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
        match chunk::chunk_for(core.tree(), core.log(), id) {
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
/// (the others are reported by [`tally_events`]).
fn for_each_readable_event(
    core: &Core,
    visit: &mut dyn FnMut(u64, DecodedEvent) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for item in records_after(core.tree(), EVENT, None) {
        let (key, value) = item?;
        let Ok(chunk) = Chunk::read(core.log(), key, value) else {
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

/// Every key has a known prefix.
fn check_keys(tree: &sled::Tree, report: &mut CheckReport) -> Result<(), StoreError> {
    for item in tree.iter().keys() {
        let key = item?;
        if !matches!(
            key.first(),
            Some(&(EVENT | QUARANTINE | QUARANTINE_DEDUPE | RUN | INDEX | META))
        ) {
            report.problem(format!("unknown key {}", hex(&key)));
        }
    }
    Ok(())
}

/// The recorded counts and next id agree with the records.
fn check_counters(state: &WriteState, recorded: &Recorded, max_id: u64, report: &mut CheckReport) {
    let actual = Counts {
        events: report.events,
        quarantine: report.quarantine,
    };
    if recorded.counts != Some(actual) || state.counts != actual {
        report.problem(format!(
            "recorded counts {:?} differ from the records ({} events, {} quarantined)",
            recorded.counts, report.events, report.quarantine
        ));
    }
    let stored_next = recorded.next_id;
    if (report.events + report.quarantine > 0 && !matches!(stored_next, Some(n) if n > max_id))
        || state.next_id <= max_id
    {
        report.problem(format!(
            "next id {stored_next:?} is not above the highest id {}",
            format_id(max_id)
        ));
    }
}
