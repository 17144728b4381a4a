//! What each forwarding sink has delivered, kept in the store so that it
//! survives a crash: its cursor (the last event id the destination
//! acknowledged), the in-flight mark (the last id it may have sent past the
//! cursor, so that a restart knows which events it sends again), its
//! counters, and the events the destination rejected for good (parked).
//!
//! A sled tree of its own (`sinks`), apart from the events:
//!
//! | key | value |
//! |---|---|
//! | `c` name | [`SinkState`] as JSON |
//! | `p` len(u16) name id(u64) | [`ParkedEvent`] as JSON |
//!
//! A parked entry stands for the ids `id` to `last`: one event, or a
//! stored chunk that did not read (`last` its last id; an entry without
//! `last` is one event).
//!
//! Every change is flushed before the call returns: a cursor is worth
//! something only once it is on disk. Changes are compare-and-swap on the
//! state the caller read, so a rewind or a retry asked for meanwhile (by the
//! CLI, through the admin listener) is never overwritten by the sink.
//!
//! Retention consults the states: an event a sink has not delivered yet is
//! kept ([`RetentionHold`]), and so is every event of a range it parked
//! (for `sink retry`), unless it is older than that sink's `max_lag_days`. It reads
//! them in every step under the store's write lock, which the changes that
//! make a sink need more (a rewind, a new sink) take too.
//!
//! The store's public `sink_*` methods (in the crate root) call these.
//! Why one piece (about 600 lines without its tests): the state, the parked
//! events and the retention hold are read and written together, in the
//! same transactions.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::{corrupt, StoreError};
use crate::events::chunk::Records;
use crate::events::codec::peek_event;
use crate::events::core::Core;
use crate::events::keys::{dedupe_key, id_key, EVENT};
use crate::events::record::StoredEvent;

const STATE: u8 = b'c';
const PARKED: u8 = b'p';

/// Longest reason or destination answer kept with a parked event.
pub const MAX_PARKED_TEXT: usize = 4096;

/// The persisted delivery state of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    /// Every event with an id up to this one is delivered (or parked).
    pub cursor: u64,
    /// The last id that may have reached the destination beyond the
    /// cursor (written before a batch is sent; equal to the cursor when
    /// nothing is in flight). Events up to it sent again are resends.
    pub in_flight: u64,
    /// Events the destination acknowledged.
    pub delivered: u64,
    /// Events sent again that the destination may already have had.
    pub resent: u64,
    /// Events parked (rejected for good) so far, parked ones retried
    /// successfully included.
    pub parked_total: u64,
    /// Events older than this many days (received) need not wait for the
    /// sink: retention may remove them undelivered.
    #[serde(default)]
    pub max_lag_days: Option<u64>,
    /// `sink retry` marked parked events to be sent again (the sink looks
    /// at its parked events only then).
    #[serde(default)]
    pub retry_pending: bool,
    /// How many events of a step of `sink retry` may have reached the
    /// destination (written before the step is sent, 0 once its outcome
    /// is): a step sent again after a crash counts them as resends.
    #[serde(default)]
    pub retry_in_flight: u64,
}

/// An event a destination rejected for good, kept with why; or the ids of
/// a stored chunk that did not read, kept as one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event's store id (the first of the range).
    pub id: u64,
    /// The last id the entry stands for: `id` for one event, the last id
    /// of a stored chunk that did not read. Never below `id` as read (an
    /// entry written without it is one event).
    #[serde(default)]
    pub last: u64,
    /// Why it was rejected (status and error type).
    pub reason: String,
    /// The destination's answer for it (truncated).
    pub answer: String,
    /// When it was parked, ms since the epoch.
    pub parked_at_ms: i64,
    /// Whether `sink retry` asked to send it again.
    #[serde(default)]
    pub retry: bool,
}

impl ParkedEvent {
    /// How many ids it stands for (`last - id + 1`; some of them may be
    /// quarantined lines, or events retention removed since).
    pub fn id_count(&self) -> u64 {
        (self.last.max(self.id) - self.id).saturating_add(1)
    }
}

/// The ids a parked entry stands for, as retention and the counts read
/// it (its reason and answer skipped).
#[derive(Deserialize)]
struct ParkedSpan {
    id: u64,
    #[serde(default)]
    last: u64,
}

impl ParkedSpan {
    /// The `(id, last)` of the parked entry stored as `value` under `key`.
    /// One whose value does not read stands for the id its key ends with
    /// (warned about): retention and the counts go on.
    fn of(key: &[u8], value: &[u8]) -> (u64, u64) {
        match decode::<ParkedSpan>(key, value) {
            Ok(span) => (span.id, span.last.max(span.id)),
            Err(e) => {
                tracing::warn!(error = %e, "a parked entry does not read: taken as the one id of its key");
                let id = key.len().checked_sub(8).map_or(0, |at| {
                    u64::from_be_bytes(key[at..].try_into().expect("8 bytes"))
                });
                (id, id)
            }
        }
    }
}

/// A parked entry as stored, `last` never below `id`.
fn decode_parked(key: &[u8], value: &[u8]) -> Result<ParkedEvent, StoreError> {
    let mut parked: ParkedEvent = decode(key, value)?;
    parked.last = parked.last.max(parked.id);
    Ok(parked)
}

/// Why a sink state change did not apply.
#[derive(Debug, thiserror::Error)]
pub enum SinkUpdateError {
    /// The state changed since it was read (a rewind, a retry): read it
    /// again and redo.
    #[error("the sink's state changed meanwhile")]
    Changed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The per-sink state tree.
#[derive(Clone)]
pub(crate) struct Sinks {
    tree: sled::Tree,
    /// The store's core, whose flush makes a change durable also against a
    /// power cut (sled's own flush alone does not: see
    /// [`crate::engine::durability::Durability`]); `None` for reading only.
    core: Option<std::sync::Arc<Core>>,
}

fn state_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(STATE);
    key.extend_from_slice(name.as_bytes());
    key
}

fn parked_prefix(name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let name = &name[..name.len().min(u16::MAX as usize)];
    let mut key = Vec::with_capacity(3 + name.len() + 8);
    key.push(PARKED);
    key.extend_from_slice(&(name.len() as u16).to_be_bytes());
    key.extend_from_slice(name);
    key
}

fn parked_key(name: &str, id: u64) -> Vec<u8> {
    let mut key = parked_prefix(name);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_PARKED_TEXT {
        let mut end = MAX_PARKED_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| corrupt(key, e))
}

impl Sinks {
    /// For reading (retention's hold).
    pub(crate) fn open(db: &sled::Db) -> Result<Sinks, StoreError> {
        Ok(Sinks {
            tree: db.open_tree("sinks")?,
            core: None,
        })
    }

    /// For reading and writing.
    pub(crate) fn open_writable(core: &std::sync::Arc<Core>) -> Result<Sinks, StoreError> {
        Ok(Sinks {
            tree: core.db().open_tree("sinks")?,
            core: Some(core.clone()),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        match &self.core {
            Some(core) => core.flush(),
            None => {
                self.tree.flush()?;
                Ok(())
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<SinkState>, StoreError> {
        let key = state_key(name);
        self.tree.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    pub(crate) fn all(&self) -> Result<Vec<(String, SinkState)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([STATE]) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            out.push((name, decode(&key, &value)?));
        }
        Ok(out)
    }

    pub(crate) fn register(
        &self,
        name: &str,
        initial: SinkState,
        max_lag_days: Option<u64>,
    ) -> Result<SinkState, StoreError> {
        let key = state_key(name);
        loop {
            let current = self.tree.get(&key)?;
            let mut state = match &current {
                Some(v) => decode(&key, v)?,
                None => initial.clone(),
            };
            state.max_lag_days = max_lag_days;
            let swapped = self
                .tree
                .compare_and_swap(&key, current, Some(encode(&state)))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(state);
            }
        }
    }

    /// Replaces `expected` by `new`, removes the entries `unparked` and
    /// then writes `parked` (an entry both removed and written is
    /// replaced), all or nothing, durably.
    pub(crate) fn commit(
        &self,
        name: &str,
        expected: &SinkState,
        new: &SinkState,
        parked: &[ParkedEvent],
        unparked: &[u64],
    ) -> Result<(), SinkUpdateError> {
        let key = state_key(name);
        let new_bytes = encode(new);
        let parked: Vec<(Vec<u8>, Vec<u8>)> = parked
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.last = p.last.max(p.id);
                p.reason = truncate(std::mem::take(&mut p.reason));
                p.answer = truncate(std::mem::take(&mut p.answer));
                (parked_key(name, p.id), encode(&p))
            })
            .collect();
        let unparked: Vec<Vec<u8>> = unparked.iter().map(|id| parked_key(name, *id)).collect();
        let outcome = self.tree.transaction(|tx| {
            let current = tx.get(&key)?;
            let matches = match &current {
                Some(v) => serde_json::from_slice::<SinkState>(v).ok().as_ref() == Some(expected),
                None => false,
            };
            if !matches {
                return Err(ConflictableTransactionError::Abort(()));
            }
            tx.insert(key.as_slice(), new_bytes.as_slice())?;
            for k in &unparked {
                tx.remove(k.as_slice())?;
            }
            for (k, v) in &parked {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.flush()?;
                Ok(())
            }
            Err(TransactionError::Abort(())) => Err(SinkUpdateError::Changed),
            Err(TransactionError::Storage(e)) => Err(SinkUpdateError::Store(e.into())),
        }
    }

    /// Changes a sink's state with `change` (retrying on a concurrent
    /// change), durably; `None` if the sink has no state.
    pub(crate) fn update(
        &self,
        name: &str,
        change: impl Fn(&mut SinkState),
    ) -> Result<Option<SinkState>, StoreError> {
        let key = state_key(name);
        loop {
            let Some(current) = self.tree.get(&key)? else {
                return Ok(None);
            };
            let mut state: SinkState = decode(&key, &current)?;
            change(&mut state);
            if self
                .tree
                .compare_and_swap(&key, Some(current), Some(encode(&state)))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Some(state));
            }
        }
    }

    pub(crate) fn parked(&self, name: &str, limit: usize) -> Result<Vec<ParkedEvent>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(parked_prefix(name)).take(limit) {
            let (key, value) = item?;
            out.push(decode_parked(&key, &value)?);
        }
        Ok(out)
    }

    /// The ids sink `name`'s parked entries stand for, in order: `(id,
    /// last)` each.
    fn parked_ranges(&self, name: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(parked_prefix(name)) {
            let (key, value) = item?;
            out.push(ParkedSpan::of(&key, &value));
        }
        Ok(out)
    }

    /// How many ids sink `name`'s parked entries stand for (a damaged
    /// chunk's entry counts each of its ids).
    pub(crate) fn parked_count(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .parked_ranges(name)?
            .iter()
            .map(|(id, last)| (last - id).saturating_add(1))
            .fold(0, u64::saturating_add))
    }

    /// Marks every parked event of `name` for sending again, and its state
    /// as having a retry pending (the sink looks at its parked events only
    /// then): one transaction, one flush. How many.
    pub(crate) fn retry_parked(&self, name: &str) -> Result<u64, StoreError> {
        let keys: Vec<sled::IVec> = self
            .tree
            .scan_prefix(parked_prefix(name))
            .keys()
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let state_key = state_key(name);
        let outcome = self.tree.transaction(|tx| {
            let mut n = 0u64;
            for key in &keys {
                // Unparked meanwhile (delivered by the last retry).
                let Some(value) = tx.get(key)? else { continue };
                let mut parked =
                    decode_parked(key, &value).map_err(ConflictableTransactionError::Abort)?;
                parked.retry = true;
                tx.insert(key, encode(&parked))?;
                n += 1;
            }
            if n > 0 {
                if let Some(value) = tx.get(&state_key)? {
                    let mut state: SinkState =
                        decode(&state_key, &value).map_err(ConflictableTransactionError::Abort)?;
                    state.retry_pending = true;
                    tx.insert(state_key.as_slice(), encode(&state))?;
                }
            }
            Ok(n)
        });
        match outcome {
            Ok(n) => {
                self.flush()?;
                Ok(n)
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Removes the state and parked events of a sink no longer configured.
    pub(crate) fn forget(&self, name: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(state_key(name));
        for key in self.tree.scan_prefix(parked_prefix(name)).keys() {
            batch.remove(key?);
        }
        self.tree.apply_batch(batch)?;
        self.flush()?;
        Ok(())
    }

    /// What retention must keep for the sinks.
    pub(crate) fn hold(&self, now_ms: i64) -> Result<RetentionHold, StoreError> {
        let mut sinks = Vec::new();
        // Each state before its parked events: a commit that moves the
        // cursor past an event parks it in the same transaction, so
        // either the old cursor is read (it holds the event) or the
        // parked entry is there to be read.
        for (name, state) in self.all()? {
            let lag_cutoff = state.max_lag_days.map_or(i64::MIN, |days| {
                now_ms.saturating_sub(
                    i64::try_from(days)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(86_400_000),
                )
            });
            sinks.push(SinkHold {
                cursor: state.cursor,
                parked: merge(self.parked_ranges(&name)?),
                lag_cutoff,
            });
        }
        Ok(RetentionHold { sinks })
    }

    /// Removes the parked entries of events retention removed (every id
    /// they stand for below `horizon`, past a sink's `max_lag_days`):
    /// nothing is left to send again. How many ids they stood for.
    pub(crate) fn drop_parked_below(&self, horizon: u64) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        for item in self.tree.scan_prefix([PARKED]) {
            let (key, value) = item?;
            let (id, last) = ParkedSpan::of(&key, &value);
            if last < horizon {
                batch.remove(key);
                removed = removed.saturating_add((last - id).saturating_add(1));
            }
        }
        if removed > 0 {
            self.tree.apply_batch(batch)?;
            self.flush()?;
        }
        Ok(removed)
    }
}

/// What one sink holds.
#[derive(Debug, Clone)]
struct SinkHold {
    /// Events after it are not delivered yet.
    cursor: u64,
    /// The ids of the entries it parked, kept for `sink retry`: `(first,
    /// last)` ranges in id order, apart and not touching (see [`merge`]).
    parked: Vec<(u64, u64)>,
    /// The receive time before which it holds no events (its
    /// `max_lag_days`; `i64::MIN` when unset).
    lag_cutoff: i64,
}

/// `ranges` (`(first, last)` each) sorted and joined where they overlap
/// or touch, so that one binary search finds the range an id is in.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Whether `id` is in one of `ranges` (as [`merge`] leaves them).
fn in_ranges(ranges: &[(u64, u64)], id: u64) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= id);
    after > 0 && id <= ranges[after - 1].1
}

/// Whether one of `ranges` (as [`merge`] leaves them) has an id from
/// `first` to `last`.
fn overlaps(ranges: &[(u64, u64)], first: u64, last: u64) -> bool {
    let before = ranges.partition_point(|&(start, _)| start <= last);
    before > 0 && ranges[before - 1].1 >= first
}

/// The events retention must keep because a sink has not delivered them
/// (or parked them).
#[derive(Debug, Clone, Default)]
pub(crate) struct RetentionHold {
    sinks: Vec<SinkHold>,
}

impl RetentionHold {
    /// Whether event `id`, received at `received_ms`, must be kept.
    pub(crate) fn holds(&self, id: u64, received_ms: i64) -> bool {
        self.sinks.iter().any(|sink| {
            received_ms >= sink.lag_cutoff && (id > sink.cursor || in_ranges(&sink.parked, id))
        })
    }

    /// Whether a stored chunk that does not read must be kept: the ids
    /// `first` to `last` it may hold, received at `received_ms` at the
    /// latest (when a later record was), are not all delivered, or one of
    /// them is parked, for a sink whose `max_lag_days` may not have passed
    /// for them. (Restored from a backup, it is sent again.)
    pub(crate) fn holds_unread(&self, first: u64, last: u64, received_ms: i64) -> bool {
        self.sinks.iter().any(|sink| {
            received_ms >= sink.lag_cutoff
                && (last > sink.cursor || overlaps(&sink.parked, first, last))
        })
    }
}

impl StoredEvent {
    /// The event's dedupe identity as 32 hex digits: the same for every
    /// copy of the event (a retry, a Konnect replay), so a destination
    /// keyed by it (an Elasticsearch `_id`) never holds two copies.
    pub fn identity(&self) -> String {
        dedupe_key(&self.event)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Where a new sink's cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStart {
    /// With the oldest stored event.
    Beginning,
    /// After the newest stored event.
    Now,
}

/// How far a sink is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkLag {
    /// Events after the cursor (counted up to a cap: see
    /// [`crate::Store::sink_lag`]).
    pub events: u64,
    /// Whether there are more than `events`.
    pub capped: bool,
    /// When the oldest undelivered event was received, ms since the epoch.
    pub oldest_received_ms: Option<i64>,
}

/// How many events there are after `cursor`, counting at most `cap`,
/// and when the first of them was received.
pub(crate) fn lag(core: &Core, cursor: u64, cap: u64) -> Result<SinkLag, StoreError> {
    let durable = core.durable_next_id();
    let mut lag = SinkLag::default();
    for item in Records::after(core.tree(), core.log(), Some(cursor)) {
        let (id, record) = item?;
        if id >= durable {
            break;
        }
        if lag.events >= cap {
            lag.capped = true;
            break;
        }
        if lag.oldest_received_ms.is_none() {
            let head = peek_event(&record).map_err(|e| corrupt(&id_key(EVENT, id), e.0))?;
            lag.oldest_received_ms = Some(head.received_at_ms);
        }
        lag.events += 1;
    }
    Ok(lag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use auditsink_parser::{parse_line, Format, ParseOptions};

    const DAY: i64 = 86_400_000;

    fn append(store: &crate::Store, received_at_ms: i64, numbers: std::ops::Range<u32>) {
        let events = numbers
            .map(|i| {
                let line = format!("CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|n={i}");
                parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef)).unwrap()
            })
            .collect();
        store
            .append_blocking(Batch {
                source: "konnect".into(),
                received_at_ms,
                events,
                quarantine: Vec::new(),
            })
            .unwrap();
    }

    /// A rewind that lands between two steps of a retention run holds the
    /// events the later steps would have removed.
    #[test]
    fn a_rewind_during_a_retention_run_keeps_what_the_sink_must_send_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let now = crate::events::timefmt::now_ms();
        // More than one retention step (about 1000 events each), all expired.
        for i in 0..10 {
            append(&store, now - 10 * DAY, i * 250..(i + 1) * 250);
        }
        let last = store.last_durable_id().unwrap();
        let state = store
            .sink_register("siem", SinkStart::Beginning, None)
            .unwrap();
        let delivered = SinkState {
            cursor: last,
            in_flight: last,
            ..state.clone()
        };
        store
            .sink_commit("siem", &state, &delivered, &[], &[])
            .unwrap();
        let core = store.inner().unwrap().core.clone();
        let sinks = Sinks::open(core.db()).unwrap();
        let hold = || sinks.hold(now);
        let mut left_after_first_step = None;
        let summary = crate::events::maintain::retention(&core, now - DAY, &hold, &mut || {
            if left_after_first_step.is_none() {
                left_after_first_step = Some(store.event_count());
                // The operator asks to send everything again.
                store.sink_rewind("siem", 0).unwrap();
            }
        })
        .unwrap();
        // The first step's removals stand (delivered when removed); the
        // rest stays for the sink to send again.
        let left = left_after_first_step.unwrap();
        assert!(left > 0 && left < 2500, "{left}");
        assert_eq!(store.event_count(), left, "{summary:?}");
        assert_eq!(summary.events_held, left as u64);
    }

    /// A parked entry whose value does not read stands for its key's id:
    /// retention still runs, and still keeps that event.
    #[test]
    fn a_parked_entry_that_does_not_read_holds_its_id_and_retention_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let now = crate::events::timefmt::now_ms();
        append(&store, now - 10 * DAY, 0..5);
        let state = store
            .sink_register("siem", SinkStart::Beginning, None)
            .unwrap();
        let delivered = SinkState {
            cursor: 5,
            in_flight: 5,
            ..state.clone()
        };
        let parked = ParkedEvent {
            id: 3,
            last: 3,
            reason: "status 400".into(),
            answer: String::new(),
            parked_at_ms: 1,
            retry: false,
        };
        store
            .sink_commit("siem", &state, &delivered, &[parked], &[])
            .unwrap();
        let core = store.inner().unwrap().core.clone();
        let sinks = Sinks::open(core.db()).unwrap();
        sinks
            .tree
            .insert(parked_key("siem", 3), b"{not json".to_vec())
            .unwrap();
        assert_eq!(store.sink_parked_count("siem").unwrap(), 1);
        let summary = store.apply_retention(now - DAY).unwrap();
        assert_eq!((summary.events_removed, summary.events_held), (2, 3));
    }

    /// A rewind waits for the write lock, which a retention step holds
    /// from reading the hold to its removals: it never lands in between.
    #[test]
    fn a_rewind_waits_for_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        append(&store, crate::events::timefmt::now_ms(), 0..3);
        let state = store
            .sink_register("siem", SinkStart::Beginning, None)
            .unwrap();
        let delivered = SinkState {
            cursor: 3,
            in_flight: 3,
            ..state.clone()
        };
        store
            .sink_commit("siem", &state, &delivered, &[], &[])
            .unwrap();
        let core = store.inner().unwrap().core.clone();
        let step = core.lock();
        let rewinding = {
            let store = store.clone();
            std::thread::spawn(move || store.sink_rewind("siem", 0).unwrap())
        };
        // Ample time for a rewind that does not wait to be done.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(store.sink_state("siem").unwrap().unwrap().cursor, 3);
        drop(step);
        assert_eq!(rewinding.join().unwrap().unwrap().cursor, 0);
    }

    /// `sink retry` marks the parked events and the state in one write:
    /// when it cannot change the state, no parked event is marked either.
    #[test]
    fn a_retry_marks_the_parked_events_and_the_state_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        append(&store, crate::events::timefmt::now_ms(), 0..3);
        let state = store
            .sink_register("siem", SinkStart::Beginning, None)
            .unwrap();
        let parked = |id| ParkedEvent {
            id,
            last: id,
            reason: "status 400".into(),
            answer: String::new(),
            parked_at_ms: 1,
            retry: false,
        };
        let next = SinkState {
            cursor: 3,
            in_flight: 3,
            parked_total: 2,
            ..state.clone()
        };
        store
            .sink_commit("siem", &state, &next, &[parked(1), parked(3)], &[])
            .unwrap();
        let marked = |store: &crate::Store| {
            let parked = store.sink_parked("siem", 10).unwrap();
            assert_eq!(parked.len(), 2);
            parked.iter().filter(|p| p.retry).count()
        };
        // A state that does not read: the retry fails as a whole.
        let sinks = store.sinks().unwrap();
        let good = sinks.tree.get(state_key("siem")).unwrap().unwrap();
        sinks.tree.insert(state_key("siem"), b"{not json").unwrap();
        assert!(store.sink_retry("siem").is_err());
        assert_eq!(marked(&store), 0);
        // Readable again: both parked events and the state are marked.
        sinks.tree.insert(state_key("siem"), good).unwrap();
        assert_eq!(store.sink_retry("siem").unwrap(), 2);
        assert_eq!(marked(&store), 2);
        assert!(store.sink_state("siem").unwrap().unwrap().retry_pending);
    }

    /// A hold finds an id in any parked range, the ranges overlapping,
    /// touching or apart.
    #[test]
    fn a_hold_covers_every_id_of_each_parked_range() {
        let ranges = merge(vec![(20, 29), (5, 5), (30, 31), (7, 9), (8, 12), (40, 40)]);
        assert_eq!(ranges, [(5, 5), (7, 12), (20, 31), (40, 40)]);
        let held: Vec<u64> = (0..45).filter(|&id| in_ranges(&ranges, id)).collect();
        let expected: Vec<u64> = [5..=5, 7..=12, 20..=31, 40..=40]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(held, expected);
        assert!(!in_ranges(&[], 1));
        let overlapping: Vec<(u64, u64)> = [(0, 4), (0, 5), (6, 6), (12, 19), (13, 19), (32, 40)]
            .into_iter()
            .filter(|&(first, last)| overlaps(&ranges, first, last))
            .collect();
        assert_eq!(overlapping, [(0, 5), (12, 19), (32, 40)]);
        assert_eq!(merge(vec![(1, u64::MAX), (3, 4)]), [(1, u64::MAX)]);
    }

    /// An entry written without `last` is one event; the count is of ids.
    #[test]
    fn a_parked_entry_without_last_is_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        store
            .sink_register("siem", SinkStart::Beginning, None)
            .unwrap();
        let sinks = store.sinks().unwrap();
        sinks
            .tree
            .insert(
                parked_key("siem", 7),
                &br#"{"id":7,"reason":"status 400","answer":"","parked_at_ms":1}"#[..],
            )
            .unwrap();
        let chunk = ParkedEvent {
            id: 20,
            last: 29,
            reason: "damaged".into(),
            answer: String::new(),
            parked_at_ms: 1,
            retry: false,
        };
        sinks
            .tree
            .insert(parked_key("siem", 20), encode(&chunk))
            .unwrap();
        let parked = store.sink_parked("siem", 10).unwrap();
        assert_eq!((parked[0].id, parked[0].last), (7, 7));
        assert_eq!(parked[0].id_count(), 1);
        assert_eq!(parked[1], chunk);
        assert_eq!(parked[1].id_count(), 10);
        assert_eq!(store.sink_parked_count("siem").unwrap(), 11);
        let hold = sinks.hold(0).unwrap();
        assert_eq!(hold.sinks[0].parked, [(7, 7), (20, 29)]);
        // Retention removed ids up to 25: the chunk's entry stays.
        assert_eq!(sinks.drop_parked_below(26).unwrap(), 1);
        assert_eq!(store.sink_parked_count("siem").unwrap(), 10);
        assert_eq!(sinks.drop_parked_below(30).unwrap(), 10);
        assert_eq!(store.sink_parked_count("siem").unwrap(), 0);
    }
}
