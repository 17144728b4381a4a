//! What a forwarding sink reads: [`ForwardEvent`], an event record as
//! stored, with the few things every sink needs (id, receive and event
//! time, source, line format, the raw line) read from its head, and the
//! normalized event's JSON rendered straight from the record on demand.
//!
//! Why not [`crate::StoredEvent`]: building the owned event (a string per
//! value, a JSON map per line) and then a `serde_json::Value` to render it
//! cost several times what the sink sends; a `payload = "raw"` syslog sink
//! needs only the raw line. The rendering here is byte for byte
//! `StoredEvent::to_json().to_string()` (the server's sink tests compare
//! them on every corpus line).

use std::ops::Range;
use std::sync::Arc;

use auditsink_parser::{write_json_string, LineFormat};

use crate::engine::poison::Gate;
use crate::error::StoreError;
use crate::events::chunk::{self, Record, Records};
use crate::events::codec::{self, decode_event, decode_event_borrowed, Malformed};
use crate::events::core::Core;
use crate::events::keys::{dedupe_key, format_id};
use crate::events::record::StoredEvent;
use crate::events::timefmt::format_ms;

/// An event record handed to a forwarding sink (cheap to clone: it shares
/// the chunk it was read from).
#[derive(Clone)]
pub struct ForwardEvent {
    /// Store id.
    pub id: u64,
    /// Receive time, ms since the Unix epoch.
    pub received_at_ms: i64,
    record: Record,
    /// The record's event time (`timestamp`, else `received_at`).
    time: i64,
    /// 0 no timestamp, 1 canonical (= `time`), 2 kept as text after `raw`.
    timestamp_kind: u8,
    format: LineFormat,
    source: Range<usize>,
    raw: Range<usize>,
}

impl std::fmt::Debug for ForwardEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardEvent")
            .field("id", &self.id)
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

impl ForwardEvent {
    /// Reads the head of record `id`; the rest is decoded when rendered.
    fn read(id: u64, record: Record) -> Result<ForwardEvent, StoreError> {
        let head = codec::forward_head(&record).map_err(|e| bad(id, e))?;
        Ok(ForwardEvent {
            id,
            received_at_ms: head.received_at_ms,
            time: head.time,
            timestamp_kind: head.timestamp_kind,
            format: head.format,
            source: head.source,
            raw: head.raw,
            record,
        })
    }

    /// Name of the source that received it.
    pub fn source(&self) -> &str {
        // Checked UTF-8 when read.
        std::str::from_utf8(&self.record[self.source.clone()]).unwrap_or_default()
    }

    /// The line exactly as received.
    pub fn raw(&self) -> &str {
        std::str::from_utf8(&self.record[self.raw.clone()]).unwrap_or_default()
    }

    /// The grammar the line was read with.
    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// The event time in ms since the epoch: its `timestamp` (RFC 3339,
    /// truncated to the ms), else when it was received.
    pub fn event_time_ms(&self) -> i64 {
        match self.timestamp_kind {
            1 => self.time,
            2 => codec::forward_timestamp_text(&self.record, self.raw.end)
                .ok()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .unwrap_or(self.received_at_ms),
            _ => self.received_at_ms,
        }
    }

    /// Appends the event's JSON rendering to `out`: the bytes of
    /// `StoredEvent::to_json().to_string()` (`id`, `received_at`, `source`,
    /// then the normalized event's keys; EVENT_SCHEMA.md).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let start = out.len();
        match decode_event_borrowed(&self.record).map_err(|e| bad(self.id, e))? {
            Some(decoded) => {
                self.write_keys(decoded.source, out);
                let at = out.len();
                let written = decoded.event.write_json(out);
                if written.is_err() {
                    out.truncate(start);
                    return self.write_json_owned(out);
                }
                // The event's object goes on after the store's keys.
                out[at] = b',';
                Ok(())
            }
            None => self.write_json_owned(out),
        }
    }

    fn write_keys(&self, source: &str, out: &mut Vec<u8>) {
        // An id and a time render as digits, `-`, `:`, `.` and letters:
        // nothing to escape.
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(format_id(self.id).as_bytes());
        out.extend_from_slice(b"\",\"received_at\":\"");
        out.extend_from_slice(format_ms(self.received_at_ms).as_bytes());
        out.extend_from_slice(b"\",\"source\":");
        write_json_string(source, out);
    }

    /// The slow path, for records the borrowed shape cannot hold.
    fn write_json_owned(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let stored = self.to_stored()?;
        serde_json::to_writer(&mut *out, &stored.to_json()).map_err(|e| StoreError::DamagedEvent {
            id: self.id,
            reason: e.to_string(),
        })
    }

    /// The event's dedupe identity as 32 hex digits (see
    /// [`StoredEvent::identity`]).
    pub fn identity(&self) -> Result<String, StoreError> {
        let key = match decode_event_borrowed(&self.record).map_err(|e| bad(self.id, e))? {
            Some(decoded) => dedupe_key(&decoded.event),
            None => dedupe_key(&self.to_stored()?.event),
        };
        Ok(key.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The whole event, owned.
    pub fn to_stored(&self) -> Result<StoredEvent, StoreError> {
        let d = decode_event(&self.record).map_err(|e| bad(self.id, e))?;
        Ok(StoredEvent {
            id: self.id,
            received_at_ms: d.received_at_ms,
            source: d.source,
            event: d.event,
        })
    }
}

/// A record of a chunk that read, which does not decode: its own damage.
fn bad(id: u64, e: Malformed) -> StoreError {
    StoreError::DamagedEvent {
        id,
        reason: e.0.to_string(),
    }
}

/// The events after an id, for a sink, in id order (see
/// [`crate::Store::forward_events`]). A record that does not decode is
/// [`StoreError::DamagedEvent`], a chunk whose contents do not read
/// [`StoreError::DamagedChunk`] (the ids it may hold), and the events
/// after them follow; any other error (a failed read, a failed write
/// meanwhile) ends it.
pub struct ForwardIter {
    /// `None` once done: the handles it read through are dropped, so a
    /// reopening of the store after a failed write need not wait for it.
    records: Option<Records>,
    durable_next_id: u64,
    /// Closed when a write fails: the read stops, as every reader's does.
    gate: Arc<Gate>,
}

impl Iterator for ForwardIter {
    type Item = Result<ForwardEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let records = self.records.as_mut()?;
        let item = match self.gate.check().map(|()| records.next()) {
            Err(e) => Err(e),
            Ok(None) => {
                self.records = None;
                return None;
            }
            Ok(Some(Ok((id, _)))) if id >= self.durable_next_id => {
                self.records = None;
                return None;
            }
            Ok(Some(Ok((id, record)))) => ForwardEvent::read(id, record),
            Ok(Some(Err(e @ StoreError::Corrupt { .. }))) => match records.skip_damaged_chunk() {
                Some((first, _)) if first >= self.durable_next_id => {
                    self.records = None;
                    return None;
                }
                Some((first, last)) => Err(StoreError::DamagedChunk {
                    first,
                    last: last
                        .unwrap_or(u64::MAX)
                        .min(self.durable_next_id.saturating_sub(1)),
                    reason: match e {
                        StoreError::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    },
                }),
                None => Err(e),
            },
            Ok(Some(Err(e))) => Err(e),
        };
        if item.as_ref().is_err_and(|e| {
            !matches!(
                e,
                StoreError::DamagedEvent { .. } | StoreError::DamagedChunk { .. }
            )
        }) {
            self.records = None;
        }
        Some(item)
    }
}

impl ForwardIter {
    /// The events after id `after` that were flushed when it is made.
    pub(crate) fn after(core: &Core, after: u64) -> ForwardIter {
        ForwardIter {
            records: Some(Records::after(core.tree(), core.log(), Some(after))),
            durable_next_id: core.durable_next_id(),
            gate: core.gate().clone(),
        }
    }
}

/// Event `id` as a forwarding sink reads it, if it is stored and flushed.
/// A chunk that does not read is [`StoreError::DamagedChunk`] for `id`.
pub(crate) fn event(core: &Core, id: u64) -> Result<Option<ForwardEvent>, StoreError> {
    if id >= core.durable_next_id() {
        return Ok(None);
    }
    match chunk::get(core.tree(), core.log(), id) {
        Ok(record) => record
            .map(|record| ForwardEvent::read(id, record))
            .transpose(),
        Err(StoreError::Corrupt { reason, .. }) => Err(StoreError::DamagedChunk {
            first: id,
            last: id,
            reason,
        }),
        Err(e) => Err(e),
    }
}
