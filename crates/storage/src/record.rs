//! What the store hands out, and its JSON rendering. The encoding on disk
//! is in [`crate::codec`].

use auditsink_parser::Event;
use serde_json::{Map, Value};

use crate::keys::format_id;
use crate::timefmt::format_ms;

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
