//! The CPU-bound part of a delivery, run off the async workers: decode,
//! parse (borrowed events, never owned ones), verify, and prepare the
//! store's records, within the request's memory reservation, and stopping
//! as soon as its client has gone.
//!
//! Lines are parsed, verified and prepared a chunk at a time, so that a
//! request holds its text, its prepared batch and one chunk of parsed
//! events, never every parsed event at once; before each chunk the
//! reservation grows to what the chunk may cost, after it to what it does.

use std::borrow::Cow;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use auditsink_parser::signature::KeySet;
use auditsink_parser::{
    lines, parse_borrowed, BorrowedEvent, FieldValue, Format, ParseOptions, SignatureStatus,
};
use auditsink_storage::{parse_time_bound, PreparedBatch, QuarantineReason};
use hyper::body::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::budget::{OverBudget, Reservation};
use crate::cluster::Outbox;
use crate::config::SignaturePolicy;
use crate::decode::{decode_within, DecodeError, Encoding};
use crate::state::now_ms;

/// Lines parsed, verified and prepared together.
const CHUNK_LINES: usize = 256;
/// What a chunk is expected to cost before it is parsed: per line (the
/// event and its prepared head and terms), and per byte of its lines
/// (copies of escaped values, JSON values, the record).
const EXPECTED_PER_LINE: u64 = 1024;
const EXPECTED_PER_BYTE: u64 = 3;

/// Set when the request's client has gone: the work stops, since nothing of
/// it can be acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Sets its [`Abandoned`] flag when dropped, unless [`Watch::disarm`]ed: the
/// async side of a delivery holds it, and hyper drops that side when the
/// client disconnects.
pub struct Watch(Option<Abandoned>);

impl Watch {
    /// A flag and the guard that sets it.
    pub fn new() -> (Watch, Abandoned) {
        let flag = Abandoned::default();
        (Watch(Some(flag.clone())), flag)
    }

    /// The work ended while the client still waited.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.0.store(true, Ordering::Release);
        }
    }
}

/// One request's preparation.
pub struct Prepare {
    pub source: String,
    pub format: Format,
    pub encoding: Encoding,
    pub max_decompressed: u64,
    pub max_lines: usize,
    pub received_at_ms: i64,
    pub signatures: Option<(SignaturePolicy, Arc<KeySet>)>,
    /// What the request may hold; it holds the body when handed over.
    pub memory: Reservation,
    pub abandoned: Abandoned,
    /// Counts the preparations stopped by [`Prepare::abandoned`].
    pub abandoned_total: Counter,
    /// Whether the records go to the local store or to the cluster.
    pub target: Target,
}

/// Where a delivery's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The local store.
    Store,
    /// The cluster's stream (a receiver).
    Cluster,
}

/// A delivery's records as they are prepared: for the store, or as
/// messages for the cluster's stream.
pub enum Pending {
    /// For [`auditsink_storage::Store::append_prepared`].
    Store(PreparedBatch),
    /// For [`crate::cluster::Publisher::publish`].
    Cluster(Outbox),
}

impl Pending {
    /// An empty delivery.
    pub fn new(
        target: Target,
        source: &str,
        received_at_ms: i64,
        format: Format,
        year_hint: i32,
    ) -> Pending {
        match target {
            Target::Store => Pending::Store(PreparedBatch::new(source, received_at_ms)),
            Target::Cluster => {
                Pending::Cluster(Outbox::new(source, received_at_ms, format, year_hint))
            }
        }
    }

    /// Adds an event (its signature verdict set).
    pub fn add_event(&mut self, event: &BorrowedEvent<'_>) {
        match self {
            Pending::Store(batch) => batch.add_event(event),
            Pending::Cluster(outbox) => outbox.add_event(event),
        }
    }

    /// Adds a line kept in quarantine, with why.
    pub fn add_quarantine(&mut self, raw: &[u8], reason: &QuarantineReason) {
        match self {
            Pending::Store(batch) => batch.add_quarantine(raw, reason),
            Pending::Cluster(outbox) => outbox.add_quarantine(raw, reason),
        }
    }

    /// The heap memory it holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Pending::Store(batch) => batch.memory_bytes(),
            Pending::Cluster(outbox) => outbox.memory_bytes(),
        }
    }
}

/// What a preparation came to.
pub enum Prepared {
    Batch {
        received: u64,
        decompressed: u64,
        batch: Pending,
        /// The batch's memory, to hold until the store has written it.
        memory: Reservation,
        /// The event times (ms) of the lines whose signature was invalid
        /// or missing, for `replay --gaps`.
        signature_failures: Vec<i64>,
    },
    TooLarge(String),
    Corrupt {
        batch: Pending,
        message: String,
    },
    /// The memory budget could not give what the request needed.
    OverBudget(OverBudget),
    /// The client left; the work stopped.
    Abandoned,
}

/// Why the work stopped early.
enum Stop {
    Memory(OverBudget),
    Abandoned,
}

impl Prepare {
    pub fn run(mut self, body: Bytes) -> Prepared {
        match self.prepare(body) {
            Ok(prepared) => prepared,
            Err(Stop::Memory(over)) => Prepared::OverBudget(over),
            Err(Stop::Abandoned) => {
                self.abandoned_total.inc();
                Prepared::Abandoned
            }
        }
    }

    /// Makes the reservation `bytes`, unless the client has gone.
    fn hold(&mut self, bytes: u64) -> Result<(), Stop> {
        if self.abandoned.is_set() {
            return Err(Stop::Abandoned);
        }
        self.memory.resize(bytes).map_err(Stop::Memory)
    }

    fn prepare(&mut self, body: Bytes) -> Result<Prepared, Stop> {
        let year_hint = time::OffsetDateTime::now_utc().year();
        let mut batch = Pending::new(
            self.target,
            &self.source,
            self.received_at_ms,
            self.format,
            year_hint,
        );
        let body_bytes = body.len() as u64;
        let mut stopped = None;
        // While the buffer grows, its old and new allocations both exist.
        let mut previous = 0u64;
        let decoded = decode_within(
            self.encoding,
            &body,
            self.max_decompressed,
            &mut |capacity| {
                let capacity = capacity as u64;
                match self.hold(body_bytes + previous + capacity) {
                    Ok(()) => {
                        previous = capacity;
                        true
                    }
                    Err(stop) => {
                        stopped = Some(stop);
                        false
                    }
                }
            },
        );
        let text = match decoded {
            Ok(text) => text,
            Err(DecodeError::Refused) => return Err(stopped.unwrap_or(Stop::Abandoned)),
            Err(e @ DecodeError::TooLarge { .. }) => return Ok(Prepared::TooLarge(e.to_string())),
            Err(e @ DecodeError::Corrupt { .. }) => {
                let message = e.to_string();
                batch.add_quarantine(
                    &body,
                    &QuarantineReason::Body(format!("undecodable request body: {message}")),
                );
                return Ok(Prepared::Corrupt { batch, message });
            }
        };
        drop(body);
        let text_bytes = text.capacity() as u64;
        self.hold(text_bytes)?;
        let options = ParseOptions {
            format: self.format,
            year_hint,
        };
        let mut all_lines = lines(&text);
        let mut chunk: Vec<&[u8]> = Vec::with_capacity(CHUNK_LINES);
        let mut events: Vec<BorrowedEvent<'_>> = Vec::with_capacity(CHUNK_LINES);
        let mut signature_failures = Vec::new();
        let mut received = 0u64;
        loop {
            chunk.clear();
            chunk.extend(all_lines.by_ref().take(CHUNK_LINES));
            if chunk.is_empty() {
                break;
            }
            received += chunk.len() as u64;
            if received > self.max_lines as u64 {
                return Ok(Prepared::TooLarge(format!(
                    "request has more than {} lines",
                    self.max_lines
                )));
            }
            let held = text_bytes + batch.memory_bytes() as u64;
            let chunk_bytes: u64 = chunk.iter().map(|l| l.len() as u64).sum();
            let expected = chunk.len() as u64 * EXPECTED_PER_LINE + chunk_bytes * EXPECTED_PER_BYTE;
            self.hold(held + expected)?;
            events.clear();
            for line in &chunk {
                match parse_borrowed(line, &options) {
                    Ok(event) => events.push(event),
                    Err(e) => batch.add_quarantine(line, &QuarantineReason::Line(e.to_string())),
                }
            }
            let parsed: u64 = events.iter().map(event_memory).sum();
            // The records to come cost about their lines.
            self.hold(held + parsed + chunk_bytes + chunk.len() as u64 * 128)?;
            if let Some((policy, keys)) = &self.signatures {
                check_signatures(
                    &mut events,
                    keys,
                    *policy,
                    &mut batch,
                    &mut signature_failures,
                );
            }
            for event in &events {
                batch.add_event(event);
            }
        }
        drop((events, chunk, all_lines));
        drop(text);
        // The store copies the records as it writes them.
        self.hold(2 * batch.memory_bytes() as u64)?;
        Ok(Prepared::Batch {
            received,
            decompressed: text_bytes,
            batch,
            memory: self.memory.take(),
            signature_failures,
        })
    }
}

/// The heap a parsed event holds, about: its fields' vector, the strings it
/// had to copy (escaped values), JSON values (counted as the line's
/// length), and warnings.
fn event_memory(event: &BorrowedEvent<'_>) -> u64 {
    let owned = |s: &Cow<'_, str>| match s {
        Cow::Owned(s) => s.capacity(),
        Cow::Borrowed(_) => 0,
    };
    let mut json = false;
    let mut bytes = size_of::<BorrowedEvent<'_>>()
        + event.fields.capacity() * size_of::<(Cow<'_, str>, FieldValue<'_>)>();
    for (key, value) in &event.fields {
        bytes += owned(key);
        match value {
            FieldValue::Text(text) => bytes += owned(text),
            FieldValue::Json(_) | FieldValue::Number(_) => json = true,
            _ => {}
        }
    }
    if json {
        bytes += event.raw.len();
    }
    bytes += event
        .warnings
        .iter()
        .map(|w| w.capacity() + 24)
        .sum::<usize>();
    bytes as u64
}

/// Verifies every event's signature (one batch verification for the
/// chunk) and records the outcome; under `enforce`, moves events whose
/// signature is invalid or missing to quarantine with the reason. The
/// event times of those are added to `failures`.
fn check_signatures(
    events: &mut Vec<BorrowedEvent<'_>>,
    keys: &KeySet,
    policy: SignaturePolicy,
    batch: &mut Pending,
    failures: &mut Vec<i64>,
) {
    let now = now_ms();
    let lines: Vec<_> = events
        .iter()
        .map(|e| (e.raw.as_bytes(), e.format))
        .collect();
    let statuses = keys.verify_lines(&lines);
    let mut statuses = statuses.into_iter();
    events.retain_mut(|event| {
        let status = statuses.next().unwrap_or(SignatureStatus::Invalid);
        event.signature = status;
        let reason = match status {
            SignatureStatus::Invalid => {
                "signature invalid: it verifies against none of the source's keys"
            }
            SignatureStatus::Missing => "signature missing",
            SignatureStatus::Valid | SignatureStatus::Unverified => "",
        };
        if !reason.is_empty() {
            let time = event
                .timestamp
                .as_ref()
                .map(|t| parse_time_bound(t.as_str(), now));
            failures.push(time.and_then(Result::ok).unwrap_or(now));
        }
        if policy == SignaturePolicy::Enforce && !reason.is_empty() {
            batch.add_quarantine(event.raw.as_bytes(), &QuarantineReason::Line(reason.into()));
            false
        } else {
            true
        }
    });
}
