//! What the store hands out, and its JSON rendering. The encoding on disk
//! is in [`crate::events::codec`].

use auditsink_parser::Event;
use serde_json::{Map, Value};

use crate::events::keys::format_id;
use crate::events::timefmt::format_ms;

/// A line that could not be read as an event, as handed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedLine {
    /// The bytes exactly as received (a line, or a whole undecodable body).
    pub raw: Vec<u8>,
    /// Why it is not an event.
    pub reason: QuarantineReason,
}

/// Why something is in quarantine. What it is (a line, or a whole body)
/// decides what reprocessing does with it; the text says why, for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineReason {
    /// A line that is not an event: it did not parse, or its signature
    /// did not verify. Reprocessing reads it again.
    Line(String),
    /// A whole request body that could not be read into lines (it did not
    /// decode, or its framing broke off). Reprocessing keeps it as it is.
    Body(String),
}

impl QuarantineReason {
    /// Why, as text.
    pub fn text(&self) -> &str {
        match self {
            QuarantineReason::Line(text) | QuarantineReason::Body(text) => text,
        }
    }

    /// Whether it is a whole body rather than a line.
    pub fn is_body(&self) -> bool {
        matches!(self, QuarantineReason::Body(_))
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// A line's reason.
impl From<String> for QuarantineReason {
    fn from(text: String) -> QuarantineReason {
        QuarantineReason::Line(text)
    }
}

/// A line's reason.
impl From<&str> for QuarantineReason {
    fn from(text: &str) -> QuarantineReason {
        QuarantineReason::Line(text.to_owned())
    }
}

impl PartialEq<&str> for QuarantineReason {
    fn eq(&self, other: &&str) -> bool {
        self.text() == *other
    }
}

impl PartialEq<str> for QuarantineReason {
    fn eq(&self, other: &str) -> bool {
        self.text() == other
    }
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
    pub reason: QuarantineReason,
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
        out.insert(
            "reason".into(),
            Value::String(self.reason.text().to_owned()),
        );
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
