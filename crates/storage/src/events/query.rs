//! Queries: filters on event time, `principal_id`, `trace_id`, `org_id` and
//! `name`, answered from the indexes.
//!
//! Results come in id order (arrival order), so that `after` pages through
//! them. The planner collects candidate ids from the most selective index
//! it can find (it reads each filter's postings, giving up on one as soon as
//! it is no better than the best so far), sorts them, then reads each
//! candidate and checks every filter on the decoded event: an index can only
//! make a query faster, never change its answer. Without any filter, or when
//! a time range alone covers most of the store, it scans the events in order
//! and filters on the time stored at the head of each record.
//!
//! Why one piece (about 550 lines without its tests): the posting walk
//! that candidates, counts and the time histogram share.

use std::ops::Bound;

use crate::engine::log::SegmentLog;
use crate::engine::poison::Gate;
use crate::error::{corrupt, StoreError};
use crate::events::chunk::{self, Chunk, Records};
use crate::events::codec::{decode_event, decode_posting, peek_event};
use crate::events::core::Core;
use crate::events::index::attribute_term;
use crate::events::keys::{
    id_key, posting_prefix, prefix_end, split_posting_key, time_term, trace_term_key, IndexKind,
    EVENT,
};
use crate::events::record::StoredEvent;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What to select. Every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Event time at or after this (ms since the epoch). The event time is
    /// its `timestamp`, or its `received_at` when it has none.
    pub since_ms: Option<i64>,
    /// Event time strictly before this.
    pub until_ms: Option<i64>,
    /// `fields.principal_id` equals this.
    pub principal: Option<String>,
    /// `fields.trace_id` equals this.
    pub trace: Option<String>,
    /// `fields.org_id` equals this.
    pub org: Option<String>,
    /// `name` equals this.
    pub name: Option<String>,
    /// Only events with an id greater than this (paging).
    pub after: Option<u64>,
    /// At most this many events.
    pub limit: Option<usize>,
}

/// Candidates beyond which a time-only query scans instead.
const MAX_TIME_CANDIDATES: usize = 4_000_000;

impl Query {
    fn attributes(&self) -> Vec<(IndexKind, &str)> {
        [
            (IndexKind::Trace, &self.trace),
            (IndexKind::Principal, &self.principal),
            (IndexKind::Name, &self.name),
            (IndexKind::Org, &self.org),
        ]
        .into_iter()
        .filter_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
        .collect()
    }

    fn time_bounded(&self) -> bool {
        self.since_ms.is_some() || self.until_ms.is_some()
    }

    fn in_time(&self, time: i64) -> bool {
        !matches!(self.since_ms, Some(s) if time < s)
            && !matches!(self.until_ms, Some(u) if time >= u)
    }

    fn empty_range(&self) -> bool {
        matches!((self.since_ms, self.until_ms), (Some(s), Some(u)) if s >= u)
    }

    /// Whether a decoded event passes every filter.
    pub(crate) fn matches(&self, time: i64, event: &auditsink_parser::Event) -> bool {
        self.in_time(time)
            && self
                .attributes()
                .iter()
                .all(|(kind, value)| attribute_term(*kind, event).as_deref() == Some(*value))
    }
}

/// Candidate ids from one index: sorted, deduplicated, after `after`, in
/// the time range. `None` when there are more than `cap`.
fn candidates(
    core: &Core,
    query: &Query,
    kind: IndexKind,
    term: Option<&[u8]>,
    cap: usize,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut ids = Vec::new();
    if let (IndexKind::Trace, Some(term)) = (kind, term) {
        if !trace_candidates(core, query, term, &mut ids, cap)? {
            return Ok(None);
        }
    } else if !for_each_entry(core, query, kind, term, |id, _| {
        ids.push(id);
        ids.len() <= cap
    })? {
        return Ok(None);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(Some(ids))
}

/// Calls `each(id, time)` for the posting entries of a time or attribute
/// index (not `trace_id`, whose runs hold ids only) that are after `after`
/// and in the time range, until `each` returns false; false then.
fn for_each_entry(
    core: &Core,
    query: &Query,
    kind: IndexKind,
    term: Option<&[u8]>,
    mut each: impl FnMut(u64, i64) -> bool,
) -> Result<bool, StoreError> {
    let tree = &core.tree();
    let after = query.after.unwrap_or(0);
    let mut entries = Vec::new();
    let mut visit = |key: &[u8], value: &[u8]| -> Result<bool, StoreError> {
        let (_, _, first_id) = split_posting_key(key).ok_or_else(|| corrupt(key, "posting key"))?;
        entries.clear();
        decode_posting(first_id, value, &mut entries).map_err(|e| corrupt(key, e.0))?;
        for &(id, time) in &entries {
            if (query.after.is_none() || id > after) && query.in_time(time) && !each(id, time) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match (kind, term) {
        (IndexKind::Time, _) => {
            let mut prefix = vec![crate::events::keys::INDEX, IndexKind::Time.tag(), 8];
            let start = {
                let mut k = prefix.clone();
                k.extend_from_slice(&time_term(query.since_ms.unwrap_or(i64::MIN)));
                k
            };
            let end = match query.until_ms {
                // The bucket holding `until - 1` is the last that can match.
                Some(until) => {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&time_term(until.saturating_sub(1)));
                    Bound::Excluded(prefix_end(&k).unwrap_or(k))
                }
                None => {
                    prefix = prefix_end(&prefix).unwrap_or(prefix);
                    Bound::Excluded(prefix)
                }
            };
            for item in tree.range::<Vec<u8>, _>((Bound::Included(start), end)) {
                let (key, value) = item?;
                if !visit(&key, &value)? {
                    return Ok(false);
                }
            }
        }
        (IndexKind::Trace, _) | (_, None) => return Ok(false),
        (kind, Some(term)) => {
            for item in tree.scan_prefix(posting_prefix(kind, term)) {
                let (key, value) = item?;
                if !visit(&key, &value)? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// The ids of a `trace_id` (after `after`, in the time range, read from
/// the events when the query has one) into `ids`; false past `cap`.
fn trace_candidates(
    core: &Core,
    query: &Query,
    term: &[u8],
    ids: &mut Vec<u64>,
    cap: usize,
) -> Result<bool, StoreError> {
    let tree = &core.tree();
    let after = query.after.unwrap_or(0);
    let horizon = core.counters().horizon.load(Ordering::Relaxed);
    for id in core.traces().all(tree, &trace_term_key(term), horizon)? {
        if query.after.is_some() && id <= after {
            continue;
        }
        if query.time_bounded() {
            let Some(value) = chunk::get(tree, core.log(), id)? else {
                continue;
            };
            let head = peek_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
            if !query.in_time(head.time) {
                continue;
            }
        }
        ids.push(id);
        if ids.len() > cap {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The matches of `query` in each of `bars` bars of `bar_ms` from
/// `start_ms`, from the indexes in one pass: the times come from the
/// postings of its first filter other than `trace_id` (of the time index
/// without filters; from the events for `trace_id` alone), the other
/// filters' candidates are intersected by id. Matches outside the bars are
/// not counted.
pub(crate) fn count_by_time(
    core: &Core,
    query: &Query,
    start_ms: i64,
    bar_ms: i64,
    bars: usize,
) -> Result<Vec<u64>, StoreError> {
    let mut counts = vec![0u64; bars];
    let end_ms = start_ms.saturating_add(bar_ms.saturating_mul(bars as i64));
    let bounded = Query {
        since_ms: Some(query.since_ms.map_or(start_ms, |s| s.max(start_ms))),
        until_ms: Some(query.until_ms.map_or(end_ms, |u| u.min(end_ms))),
        limit: None,
        ..query.clone()
    };
    if bar_ms <= 0 || bounded.empty_range() {
        return Ok(counts);
    }
    let attributes = bounded.attributes();
    let (timed_kind, timed_term) = attributes
        .iter()
        .find(|(kind, _)| *kind != IndexKind::Trace)
        .map_or((IndexKind::Time, None), |(kind, value)| {
            (*kind, Some(value.as_bytes()))
        });
    let mut others = Vec::new();
    for (kind, value) in &attributes {
        if *kind != timed_kind {
            if let Some(ids) =
                candidates(core, &bounded, *kind, Some(value.as_bytes()), usize::MAX)?
            {
                others.push(ids);
            }
        }
    }
    let mut timed = Vec::new();
    if timed_term.is_none() && !others.is_empty() {
        // `trace_id` alone: few events, whose times are read from them.
        for &id in &others[0] {
            if let Some(value) = chunk::get(core.tree(), core.log(), id)? {
                let head = peek_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
                timed.push((id, head.time));
            }
        }
    } else {
        for_each_entry(core, &bounded, timed_kind, timed_term, |id, time| {
            timed.push((id, time));
            true
        })?;
    }
    timed.sort_unstable_by_key(|&(id, _)| id);
    timed.dedup_by_key(|&mut (id, _)| id);
    for (id, time) in timed {
        if others.iter().all(|ids| ids.binary_search(&id).is_ok()) {
            if let Some(count) = bar_index(time, start_ms, bar_ms).and_then(|i| counts.get_mut(i)) {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// The bar of width `bar_ms` from `start_ms` that `time` falls in, if it is
/// not before the first. Event times are attacker-controlled and a query's
/// bounds may be anywhere in `i64`, so the difference is taken in `i128`.
pub fn bar_index(time: i64, start_ms: i64, bar_ms: i64) -> Option<usize> {
    if bar_ms <= 0 {
        return None;
    }
    let offset = i128::from(time) - i128::from(start_ms);
    usize::try_from(offset / i128::from(bar_ms))
        .ok()
        .filter(|_| offset >= 0)
}

/// The earliest and latest event time in the store (ms, exact to the
/// minute), from the first and last postings of the time index; `None`
/// when it is empty.
pub(crate) fn time_span(core: &Core) -> Result<Option<(i64, i64)>, StoreError> {
    let prefix = [crate::events::keys::INDEX, IndexKind::Time.tag(), 8];
    let mut postings = core.tree().scan_prefix(prefix);
    let times = |item: Option<sled::Result<(sled::IVec, sled::IVec)>>| {
        let Some(item) = item else {
            return Ok(None);
        };
        let (key, value) = item?;
        let (_, _, first_id) =
            split_posting_key(&key).ok_or_else(|| corrupt(&key, "posting key"))?;
        let mut entries = Vec::new();
        decode_posting(first_id, &value, &mut entries).map_err(|e| corrupt(&key, e.0))?;
        let times = entries.iter().map(|&(_, time)| time);
        Ok::<_, StoreError>(times.clone().min().zip(times.max()))
    };
    let first = times(postings.next())?;
    let last = times(postings.next_back())?.or(first);
    Ok(first.zip(last).map(|((min, _), (_, max))| (min, max)))
}

/// How a query will run.
pub(crate) enum Plan {
    /// Nothing can match.
    Empty,
    /// Read these ids (sorted) and check the filters.
    Ids(Vec<u64>),
    /// Scan events from `after` and check the filters.
    Scan,
}

pub(crate) fn plan(core: &Core, query: &Query) -> Result<Plan, StoreError> {
    if query.empty_range() {
        return Ok(Plan::Empty);
    }
    let mut best: Option<Vec<u64>> = None;
    for (kind, value) in query.attributes() {
        let cap = best.as_ref().map_or(usize::MAX, Vec::len);
        if let Some(ids) = candidates(core, query, kind, Some(value.as_bytes()), cap)? {
            if ids.is_empty() {
                return Ok(Plan::Empty);
            }
            best = Some(ids);
        }
    }
    if best.is_none() && query.time_bounded() {
        best = candidates(core, query, IndexKind::Time, None, MAX_TIME_CANDIDATES)?;
    }
    Ok(match best {
        Some(ids) if ids.is_empty() => Plan::Empty,
        Some(ids) => Plan::Ids(ids),
        None => Plan::Scan,
    })
}

/// Counts the matches from the indexes alone: intersects the candidates of
/// every filter (postings carry the event time, so time is exact too; for
/// `trace_id` it is read from the events).
pub(crate) fn count(core: &Core, query: &Query, total: u64) -> Result<u64, StoreError> {
    if query.empty_range() {
        return Ok(0);
    }
    let mut lists = Vec::new();
    for (kind, value) in query.attributes() {
        lists.push(candidates(
            core,
            query,
            kind,
            Some(value.as_bytes()),
            usize::MAX,
        )?);
    }
    if lists.is_empty() {
        if !query.time_bounded() && query.after.is_none() {
            return Ok(total.min(query.limit.map_or(u64::MAX, |l| l as u64)));
        }
        lists.push(candidates(core, query, IndexKind::Time, None, usize::MAX)?);
    }
    let mut lists: Vec<Vec<u64>> = lists.into_iter().flatten().collect();
    lists.sort_by_key(Vec::len);
    let mut result = lists.first().cloned().unwrap_or_default();
    let durable = core.durable_next_id();
    result.retain(|&id| id < durable);
    for other in &lists[1..] {
        result.retain(|id| other.binary_search(id).is_ok());
    }
    let n = result.len() as u64;
    Ok(n.min(query.limit.map_or(u64::MAX, |l| l as u64)))
}

enum Source {
    /// The ids, and the chunk last read (ids in a row share chunks).
    Ids(std::vec::IntoIter<u64>, Option<Chunk>),
    Scan(Box<Records>),
    Done,
}

/// The events a [`Query`] selects, in id order. Owns what it reads from:
/// it can be moved to another thread.
pub struct QueryIter {
    reading: Option<Reading>,
    /// Yielded first (a query that could not start).
    failed: Option<StoreError>,
}

struct Reading {
    tree: sled::Tree,
    log: Arc<SegmentLog>,
    /// Closed if a write fails meanwhile: the read ends with an error.
    gate: Arc<Gate>,
    /// Ids from here on were not flushed when the query began: not read.
    durable_next_id: u64,
    query: Query,
    source: Source,
    remaining: usize,
}

impl QueryIter {
    pub(crate) fn new(core: &Core, query: Query, plan: Plan) -> QueryIter {
        let (tree, log) = (core.tree().clone(), core.log().clone());
        let source = match plan {
            Plan::Empty => Source::Done,
            Plan::Ids(ids) => Source::Ids(ids.into_iter(), None),
            Plan::Scan => Source::Scan(Box::new(Records::after(&tree, &log, query.after))),
        };
        QueryIter {
            reading: Some(Reading {
                log,
                remaining: query.limit.unwrap_or(usize::MAX),
                tree,
                gate: core.gate().clone(),
                durable_next_id: core.durable_next_id(),
                query,
                source,
            }),
            failed: None,
        }
    }

    /// A query that yields `error`, then ends.
    pub(crate) fn failed(error: StoreError) -> QueryIter {
        QueryIter {
            reading: None,
            failed: Some(error),
        }
    }
}

impl Reading {
    fn next_match(&mut self) -> Result<Option<StoredEvent>, StoreError> {
        loop {
            let (id, value) = match &mut self.source {
                Source::Done => return Ok(None),
                Source::Ids(ids, cached) => {
                    let Some(id) = ids.next() else {
                        return Ok(None);
                    };
                    if id >= self.durable_next_id {
                        continue;
                    }
                    let hit = cached
                        .as_ref()
                        .and_then(|c| c.find(id).map(|i| c.record(i)));
                    let hit = match hit {
                        Some(hit) => Some(hit),
                        None => {
                            *cached = chunk::chunk_for(&self.tree, &self.log, id)?;
                            cached
                                .as_ref()
                                .and_then(|c| c.find(id).map(|i| c.record(i)))
                        }
                    };
                    match hit {
                        Some(found) => found,
                        // Removed since planning (retention).
                        None => continue,
                    }
                }
                Source::Scan(iter) => {
                    let Some(item) = iter.next() else {
                        return Ok(None);
                    };
                    let (id, value) = item?;
                    if id >= self.durable_next_id {
                        return Ok(None);
                    }
                    if self.query.time_bounded() {
                        let head =
                            peek_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
                        if !self.query.in_time(head.time) {
                            continue;
                        }
                    }
                    (id, value)
                }
            };
            let decoded = decode_event(&value).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
            if self.query.matches(decoded.time, &decoded.event) {
                return Ok(Some(StoredEvent {
                    id,
                    received_at_ms: decoded.received_at_ms,
                    source: decoded.source,
                    event: decoded.event,
                }));
            }
        }
    }
}

impl Iterator for QueryIter {
    type Item = Result<StoredEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let reading = self.reading.as_mut()?;
        if reading.remaining == 0 {
            return None;
        }
        match reading.gate.check().and_then(|()| reading.next_match()) {
            Ok(Some(event)) => {
                reading.remaining -= 1;
                Some(Ok(event))
            }
            Ok(None) => {
                self.reading = None;
                None
            }
            Err(e) => {
                // Drops the handles it read through.
                self.reading = None;
                Some(Err(e))
            }
        }
    }
}

/// Records under `prefix` with an id greater than `after`.
pub(crate) fn records_after(tree: &sled::Tree, prefix: u8, after: Option<u64>) -> sled::Iter {
    let end: &[u8] = &[prefix + 1];
    match after {
        None => tree.range::<&[u8], _>(&[prefix][..]..end),
        Some(u64::MAX) => tree.range::<&[u8], _>(end..end),
        Some(id) => tree.range::<&[u8], _>(&id_key(prefix, id + 1)[..]..end),
    }
}

#[cfg(test)]
mod tests {
    use super::bar_index;

    #[test]
    fn bar_index_never_overflows() {
        assert_eq!(bar_index(0, 0, 60_000), Some(0));
        assert_eq!(bar_index(119_999, 0, 60_000), Some(1));
        assert_eq!(bar_index(-1, 0, 60_000), None);
        assert_eq!(bar_index(5, 0, 0), None);
        // An event far in the future against bounds far in the past.
        let bar = (i64::MAX / 24) + 1;
        assert_eq!(bar_index(i64::MAX, i64::MIN, bar), Some(47));
        assert_eq!(bar_index(i64::MIN, i64::MAX, 60_000), None);
    }
}
