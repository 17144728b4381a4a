//! Deliveries as they reach the store ([`Batch`], or a [`PreparedBatch`]
//! built from the parser's borrowed events) and what an append answers:
//! each event encoded, hashed and split into index terms on the caller's
//! thread, so that the single writer only does what must be serial.

use std::collections::HashMap;

use auditsink_parser::{BorrowedEvent, Event};

use crate::engine::runs::Key;
use crate::events::codec::{encode_event, encode_event_into, encode_quarantine, event_time};
use crate::events::index::{for_each_term, terms, trace_key};
use crate::events::keys::{dedupe_key, quarantine_key, IndexKind};
use crate::events::record::{QuarantineReason, QuarantinedLine};
use crate::events::view::EventView;

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

/// What [`crate::Store::append`] did with a batch.
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
    pub(crate) records: Vec<u8>,
    pub(crate) events: Vec<EventHead>,
    /// Each term (its kind's tag, then its bytes), with its kind and the
    /// indexes into `events` of the events that have it.
    pub(crate) terms: HashMap<Vec<u8>, (IndexKind, Vec<u32>)>,
    /// Where a term's key is assembled for the look-up.
    scratch: Vec<u8>,
    /// Each quarantined line's identity and record.
    pub(crate) quarantine: Vec<(Key, Vec<u8>)>,
}

/// A prepared event of a [`PreparedBatch`]: its record is
/// `records[previous end..end]`.
#[derive(Debug)]
pub(crate) struct EventHead {
    pub(crate) dedupe_key: Key,
    pub(crate) trace_key: Option<Key>,
    pub(crate) time: i64,
    pub(crate) end: usize,
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
