//! How records are encoded in sled and rendered as JSON.
//!
//! Values are JSON envelopes for now: simple, self-describing and readable
//! with any tool. The id is the key and is not repeated in the value.

use auditsink_parser::Event;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::format_id;
use crate::StoreError;

/// A line that could not be read as an event, as handed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedLine {
    /// The bytes exactly as received (a line, or a whole undecodable body).
    pub raw: Vec<u8>,
    /// Why it is not an event.
    pub reason: String,
}

/// An event as stored: the normalized event plus the store's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Store id: unique, increasing in arrival order.
    pub id: u64,
    /// Receive time, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Name of the source that received it.
    pub source: String,
    /// The normalized event.
    pub event: Event,
}

/// A quarantined entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQuarantine {
    /// Store id (same sequence as events).
    pub id: u64,
    /// Receive time, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Name of the source that received it.
    pub source: String,
    /// Why it is not an event.
    pub reason: String,
    /// The bytes exactly as received.
    pub raw: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct EventEnvelope<E> {
    received_at_ms: i64,
    source: String,
    event: E,
}

#[derive(Serialize, Deserialize)]
struct QuarantineEnvelope {
    received_at_ms: i64,
    source: String,
    reason: String,
    /// Raw bytes, base64 would cost a dependency for the rare non-UTF-8 case;
    /// a JSON array of bytes is exact and only used when the text is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_bytes: Option<Vec<u8>>,
}

pub(crate) fn encode_event(received_at_ms: i64, source: &str, event: &Event) -> Vec<u8> {
    let envelope = EventEnvelope {
        received_at_ms,
        source: source.to_owned(),
        event,
    };
    // Serializing owned, well-formed values into a Vec cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

pub(crate) fn decode_event(
    (key, value): (sled::IVec, sled::IVec),
) -> Result<StoredEvent, StoreError> {
    let id = decode_key(&key)?;
    let envelope: EventEnvelope<Event> =
        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
    Ok(StoredEvent {
        id,
        received_at_ms: envelope.received_at_ms,
        source: envelope.source,
        event: envelope.event,
    })
}

pub(crate) fn encode_quarantine(
    received_at_ms: i64,
    source: &str,
    line: &QuarantinedLine,
) -> Vec<u8> {
    let (raw_text, raw_bytes) = match String::from_utf8(line.raw.clone()) {
        Ok(text) => (Some(text), None),
        Err(e) => (None, Some(e.into_bytes())),
    };
    let envelope = QuarantineEnvelope {
        received_at_ms,
        source: source.to_owned(),
        reason: line.reason.clone(),
        raw_text,
        raw_bytes,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

pub(crate) fn decode_quarantine(
    (key, value): (sled::IVec, sled::IVec),
) -> Result<StoredQuarantine, StoreError> {
    let id = decode_key(&key)?;
    let envelope: QuarantineEnvelope =
        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
    let raw = match (envelope.raw_text, envelope.raw_bytes) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(bytes)) => bytes,
        (None, None) => Vec::new(),
    };
    Ok(StoredQuarantine {
        id,
        received_at_ms: envelope.received_at_ms,
        source: envelope.source,
        reason: envelope.reason,
        raw,
    })
}

fn decode_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| corrupt(key, "key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        reason: reason.to_string(),
    }
}

/// Formats ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl StoredEvent {
    /// The JSON rendering: `id`, `received_at`, `source`, then the
    /// normalized event's keys (EVENT_SCHEMA.md).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::String(format_id(self.id)));
        out.insert(
            "received_at".into(),
            Value::String(format_ms(self.received_at_ms)),
        );
        out.insert("source".into(), Value::String(self.source.clone()));
        if let Ok(Value::Object(event)) = serde_json::to_value(&self.event) {
            out.extend(event);
        }
        Value::Object(out)
    }
}

impl StoredQuarantine {
    /// The JSON rendering: store keys, `reason`, and `raw` (lossy UTF-8;
    /// `raw_bytes` carries the exact bytes when they are not UTF-8).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::String(format_id(self.id)));
        out.insert(
            "received_at".into(),
            Value::String(format_ms(self.received_at_ms)),
        );
        out.insert("source".into(), Value::String(self.source.clone()));
        out.insert("reason".into(), Value::String(self.reason.clone()));
        out.insert(
            "raw".into(),
            Value::String(String::from_utf8_lossy(&self.raw).into_owned()),
        );
        if std::str::from_utf8(&self.raw).is_err() {
            out.insert("raw_bytes".into(), serde_json::json!(self.raw));
        }
        Value::Object(out)
    }
}
