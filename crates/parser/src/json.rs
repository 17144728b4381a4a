//! One JSON line to a JSON object.
//!
//! serde_json is built with `arbitrary_precision` (root `Cargo.toml`): every
//! number keeps its exact text, so a `trace_id` above 2^53 or above `u64`
//! survives untouched. Nothing here goes through `f64`. With
//! `preserve_order`, the object keeps the line's key order.

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
