//! One read-only view over the two shapes an event comes in: the owned
//! [`Event`] (decoded records, reprocessed quarantine, library callers) and
//! the parser's [`BorrowedEvent`] (the receiver's hot path). Encoding,
//! identity and index terms are written once, against [`EventView`], and
//! give the same results for an event in either shape.
//!
//! Why the borrowed shape matters: building the owned event (a string copy
//! per value, a JSON map per line) costs more than parsing the line, and
//! the record encoder finds a borrowed string's place in the raw line from
//! its address instead of searching for it.

use std::borrow::Cow;

use auditsink_parser::{BorrowedEvent, Event, FieldValue, LineFormat, SignatureStatus};
use serde_json::{Number, Value};

/// A field value (or the severity), as either shape holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Decimal digits without leading zeros, of any size: the JSON number
    /// they spell.
    Digits(&'a str),
    Text(&'a str),
    Number(&'a Number),
    /// An array or object.
    Json(&'a Value),
}

impl<'a> ValueRef<'a> {
    fn of_value(value: &'a Value) -> ValueRef<'a> {
        match value {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Number(n) => ValueRef::Number(n),
            Value::String(s) => ValueRef::Text(s),
            nested @ (Value::Array(_) | Value::Object(_)) => ValueRef::Json(nested),
        }
    }

    fn of_field(value: &'a FieldValue<'_>) -> ValueRef<'a> {
        match value {
            FieldValue::Null => ValueRef::Null,
            FieldValue::Bool(b) => ValueRef::Bool(*b),
            FieldValue::Int(n) => ValueRef::Int(*n),
            FieldValue::Digits(d) => ValueRef::Digits(d),
            FieldValue::Text(t) => ValueRef::Text(t),
            FieldValue::Number(n) => ValueRef::Number(n),
            FieldValue::Json(v) => ValueRef::Json(v),
        }
    }

    /// The index term of a value: strings as they are (not empty), numbers
    /// and booleans as their JSON text; nothing for null, arrays, objects.
    pub fn term(self) -> Option<Cow<'a, str>> {
        match self {
            ValueRef::Text(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
            // The JSON text of a digits number is the digits.
            ValueRef::Digits(d) => Some(Cow::Borrowed(d)),
            ValueRef::Int(n) => Some(Cow::Owned(n.to_string())),
            ValueRef::Number(n) => Some(Cow::Owned(n.to_string())),
            ValueRef::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
            ValueRef::Text(_) | ValueRef::Null | ValueRef::Json(_) => None,
        }
    }
}

/// What the store reads of an event.
pub(crate) trait EventView {
    fn format(&self) -> LineFormat;
    /// RFC 3339 text, if the event has a time.
    fn timestamp(&self) -> Option<&str>;
    fn cef_version(&self) -> Option<i64>;
    fn vendor(&self) -> Option<&str>;
    fn product(&self) -> Option<&str>;
    fn product_version(&self) -> Option<&str>;
    fn event_class_id(&self) -> Option<&str>;
    fn name(&self) -> Option<&str>;
    fn severity(&self) -> ValueRef<'_>;
    fn field_count(&self) -> usize;
    /// Fields in order.
    fn fields(&self) -> impl Iterator<Item = (&str, ValueRef<'_>)>;
    fn field(&self, name: &str) -> Option<ValueRef<'_>>;
    /// Origin (time, host), if the event has one.
    fn origin(&self) -> Option<(Option<&str>, Option<&str>)>;
    fn sig(&self) -> Option<&str>;
    fn signature(&self) -> SignatureStatus;
    fn warnings(&self) -> &[String];
    fn raw(&self) -> &str;
}

/// The accessors whose bodies read the same for both shapes.
macro_rules! same_for_both_shapes {
    () => {
        fn format(&self) -> LineFormat {
            self.format
        }
        fn cef_version(&self) -> Option<i64> {
            self.cef_version
        }
        fn vendor(&self) -> Option<&str> {
            self.vendor.as_deref()
        }
        fn product(&self) -> Option<&str> {
            self.product.as_deref()
        }
        fn product_version(&self) -> Option<&str> {
            self.product_version.as_deref()
        }
        fn event_class_id(&self) -> Option<&str> {
            self.event_class_id.as_deref()
        }
        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }
        fn field_count(&self) -> usize {
            self.fields.len()
        }
        fn origin(&self) -> Option<(Option<&str>, Option<&str>)> {
            self.origin
                .as_ref()
                .map(|o| (o.time.as_deref(), o.host.as_deref()))
        }
        fn sig(&self) -> Option<&str> {
            self.sig.as_deref()
        }
        fn signature(&self) -> SignatureStatus {
            self.signature
        }
        fn warnings(&self) -> &[String] {
            &self.warnings
        }
    };
}

impl EventView for Event {
    same_for_both_shapes!();
    fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }
    fn severity(&self) -> ValueRef<'_> {
        ValueRef::of_value(&self.severity)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, ValueRef<'_>)> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_str(), ValueRef::of_value(v)))
    }
    fn field(&self, name: &str) -> Option<ValueRef<'_>> {
        self.fields.get(name).map(ValueRef::of_value)
    }
    fn raw(&self) -> &str {
        &self.raw
    }
}

impl EventView for BorrowedEvent<'_> {
    same_for_both_shapes!();
    fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_ref().map(|t| t.as_str())
    }
    fn severity(&self) -> ValueRef<'_> {
        ValueRef::of_field(&self.severity)
    }
    fn fields(&self) -> impl Iterator<Item = (&str, ValueRef<'_>)> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_ref(), ValueRef::of_field(v)))
    }
    fn field(&self, name: &str) -> Option<ValueRef<'_>> {
        BorrowedEvent::field(self, name).map(ValueRef::of_field)
    }
    fn raw(&self) -> &str {
        self.raw
    }
}
