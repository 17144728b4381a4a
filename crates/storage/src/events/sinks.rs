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
//! Every change is flushed before the call returns: a cursor is worth
//! something only once it is on disk. Changes are compare-and-swap on the
//! state the caller read, so a rewind or a retry asked for meanwhile (by the
//! CLI, through the admin listener) is never overwritten by the sink.
//!
//! Retention consults the states: an event a sink has not delivered yet is
//! kept ([`RetentionHold`]), unless it is older than that sink's
//! `max_lag_days`.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::error::StoreError;
use crate::events::keys::dedupe_key;
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
}

/// An event a destination rejected for good, kept with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event's store id.
    pub id: u64,
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
    core: Option<std::sync::Arc<crate::events::core::Core>>,
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
    serde_json::from_slice(value).map_err(|e| crate::corrupt(key, e))
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
    pub(crate) fn open_writable(
        core: &std::sync::Arc<crate::events::core::Core>,
    ) -> Result<Sinks, StoreError> {
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

    /// Replaces `expected` by `new` and writes `parked` (and removes
    /// `unparked`), all or nothing, durably.
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
            for (k, v) in &parked {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            for k in &unparked {
                tx.remove(k.as_slice())?;
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
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    pub(crate) fn parked_count(&self, name: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.tree.scan_prefix(parked_prefix(name)).keys() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Marks every parked event of `name` for sending again; how many.
    pub(crate) fn retry_parked(&self, name: &str) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.tree.scan_prefix(parked_prefix(name)) {
            let (key, value) = item?;
            let mut parked: ParkedEvent = decode(&key, &value)?;
            parked.retry = true;
            batch.insert(key, encode(&parked));
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        self.flush()?;
        if n > 0 {
            self.update(name, |state| state.retry_pending = true)?;
        }
        Ok(n)
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
        let sinks = self
            .all()?
            .into_iter()
            .map(|(_, state)| {
                let lag_cutoff = state.max_lag_days.map_or(i64::MIN, |days| {
                    now_ms.saturating_sub(
                        i64::try_from(days)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(86_400_000),
                    )
                });
                (state.cursor, lag_cutoff)
            })
            .collect();
        Ok(RetentionHold { sinks })
    }
}

/// The events retention must keep because a sink has not delivered them.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetentionHold {
    /// Per sink: its cursor, and the receive time before which it does not
    /// hold events (its `max_lag_days`; `i64::MIN` when unset).
    sinks: Vec<(u64, i64)>,
}

impl RetentionHold {
    /// Whether event `id`, received at `received_ms`, must be kept.
    pub(crate) fn holds(&self, id: u64, received_ms: i64) -> bool {
        self.sinks
            .iter()
            .any(|&(cursor, lag_cutoff)| id > cursor && received_ms >= lag_cutoff)
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

impl crate::Store {
    fn sinks(&self) -> Result<Sinks, StoreError> {
        Sinks::open_writable(&self.inner()?.core)
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
        self.sinks()?.register(name, initial, max_lag_days)
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
    /// state after, or `None` if the sink has none.
    pub fn sink_rewind(&self, name: &str, cursor: u64) -> Result<Option<SinkState>, StoreError> {
        self.sinks()?.update(name, |state| {
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

    /// How many events sink `name` has parked now.
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
        let inner = self.inner()?;
        let core = &inner.core;
        let durable = core.durable_next_id();
        let mut lag = SinkLag::default();
        for item in crate::events::chunk::Records::after(core.tree(), core.log(), Some(cursor)) {
            let (id, record) = item?;
            if id >= durable {
                break;
            }
            if lag.events >= cap {
                lag.capped = true;
                break;
            }
            if lag.oldest_received_ms.is_none() {
                let head = crate::codec::peek_event(&record).map_err(|e| {
                    crate::corrupt(&crate::keys::id_key(crate::keys::EVENT, id), e.0)
                })?;
                lag.oldest_received_ms = Some(head.received_at_ms);
            }
            lag.events += 1;
        }
        Ok(lag)
    }
}
