//! One JSON line to a JSON object.
//!
//! serde_json is built with `arbitrary_precision` (root `Cargo.toml`): every
//! number keeps its exact text, so a `trace_id` above 2^53 or above `u64`
//! survives untouched. Nothing here goes through `f64`. With
//! `preserve_order`, the object keeps the line's key order.
//!
//! The normalizer does not build a [`Map`] and then take it apart: it walks
//! the object once (`parse_event_object`), splitting the header keys from
//! the fields as they come, with keys borrowed from the line unless escaped.
//! It reads the same bytes with the same serde_json reader, so it accepts,
//! rejects and explains exactly what [`parse_object`] does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ParseError;

/// Parses `line` as one JSON object.
///
/// A syntax error (including a trailing comma or text after the object) is
/// [`ParseError::Json`] with serde_json's message, line and column; valid
/// JSON that is not an object is `not a JSON object: found <kind>`.
pub fn parse_object(line: &str) -> Result<Map<String, Value>, ParseError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(ParseError::Json {
            reason: format!("not a JSON object: found {}", kind(&other)),
        }),
        Err(error) => Err(ParseError::Json {
            reason: error.to_string(),
        }),
    }
}

/// An event's JSON object, split for the normalizer.
pub(crate) struct EventObject<'a> {
    /// The keys that feed the normalized header (and `sig`), in order of
    /// first occurrence, each with its last value (as a JSON object keeps a
    /// repeated key).
    pub(crate) header: Vec<(&'static str, Value)>,
    /// Every other key, in line order, repeats included.
    pub(crate) fields: Vec<(Cow<'a, str>, Value)>,
    /// The first key is serde_json's private number token (see
    /// [`parse_event_object`]).
    number_token: bool,
}

/// With `arbitrary_precision`, serde_json hands a number to a visitor as a
/// one-key object with this key, and its `Value` reads any object whose
/// first key is this string as a number. [`parse_object`] inherits that
/// quirk; [`parse_event_object`] keeps its answer for such a line.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// The keys of a Konnect JSON line that are not `fields`.
fn header_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "cef_version" => "cef_version",
        "event_vendor" => "event_vendor",
        "event_product" => "event_product",
        "event_version" => "event_version",
        "event_class_id" => "event_class_id",
        "name" => "name",
        "event_ts" => "event_ts",
        "sig" => "sig",
        "severity" => "severity",
        _ => return None,
    })
}

impl<'a> EventObject<'a> {
    fn with_capacity(fields: usize) -> Self {
        EventObject {
            header: Vec::with_capacity(9),
            fields: Vec::with_capacity(fields),
            number_token: false,
        }
    }

    fn push(&mut self, key: Cow<'a, str>, value: Value) {
        match header_key(&key) {
            Some(name) => match self.header.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = value,
                None => self.header.push((name, value)),
            },
            None => self.fields.push((key, value)),
        }
    }
}

/// Parses `line` as one JSON object, as [`parse_object`] does (same
/// acceptance, same error reasons), split into header keys and fields.
pub(crate) fn parse_event_object(line: &str) -> Result<EventObject<'_>, ParseError> {
    let json_error = |error: serde_json::Error| ParseError::Json {
        reason: error.to_string(),
    };
    let object_start = line
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    if object_start {
        let mut reader = serde_json::Deserializer::from_str(line);
        let object = (&mut reader)
            .deserialize_map(EventObjectVisitor)
            .map_err(json_error)?;
        reader.end().map_err(json_error)?;
        if !object.number_token {
            return Ok(object);
        }
    }
    // Not an object, or the number token: `parse_object`'s answer.
    let map = parse_object(line)?;
    let mut object = EventObject::with_capacity(map.len());
    for (key, value) in map {
        object.push(Cow::Owned(key), value);
    }
    Ok(object)
}

struct EventObjectVisitor;

impl<'de> Visitor<'de> for EventObjectVisitor {
    type Value = EventObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = EventObject::with_capacity(24);
        while let Some(Key(key)) = map.next_key()? {
            if object.header.is_empty() && object.fields.is_empty() {
                object.number_token = key == SERDE_JSON_NUMBER_TOKEN;
            }
            let value: Value = map.next_value()?;
            object.push(key, value);
        }
        Ok(object)
    }
}

/// An object key, borrowed from the line unless it holds an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The JSON name of a value's type, as used in error messages and warnings.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> String {
        match parse_object(line) {
            Err(ParseError::Json { reason }) => reason,
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn objects_keep_order_and_exact_numbers() {
        let object = parse_object(r#"{"z":1,"a":18446744073709551616,"m":1.10}"#).unwrap();
        assert_eq!(object.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(object["a"].to_string(), "18446744073709551616");
        assert_eq!(object["m"].to_string(), "1.10");
    }

    #[test]
    fn non_objects_are_named() {
        assert_eq!(reason("[1,2]"), "not a JSON object: found array");
        assert_eq!(reason(r#""x""#), "not a JSON object: found string");
        assert_eq!(reason("3"), "not a JSON object: found number");
        assert_eq!(reason("null"), "not a JSON object: found null");
        assert_eq!(reason("true"), "not a JSON object: found boolean");
    }

    #[test]
    fn syntax_errors_use_serde_json_messages() {
        assert!(reason(r#"{"a":1,}"#).starts_with("trailing comma at line 1 column"));
        assert!(reason(r#"{"a":1} x"#).starts_with("trailing characters"));
        assert!(reason("{").contains("EOF"));
    }
}
