//! One line, CEF or JSON, to the normalized [`Event`] of `EVENT_SCHEMA.md`.
//!
//! Decisions:
//! - **Invalid UTF-8 is quarantined** ([`ParseError::InvalidUtf8`]), never
//!   read lossily: a replacement character would change the evidence, and
//!   signatures are checked against the exact bytes.
//! - **Format detection** (`Format::Auto`): a line whose first non-blank
//!   byte is `{` is JSON, anything else CEF. A CEF line needs `CEF:`; text
//!   without one is an error, never a guess.
//! - **Konnect typing** is applied to both formats alike, so the same event
//!   delivered as CEF and as JSON normalizes to the same `fields`:
//!   `rt` and `status` become integers when integral (a JSON integer, or a
//!   string of digits), `trace_id` a string of digits (a JSON integer's exact
//!   text, never through `f64`), `granted` / `success` / `kong_initiated`
//!   booleans for `true` / `false`. Anything else stays as it was: CEF values
//!   as strings, JSON values with their JSON type.
//! - **JSON header keys** (`event_vendor`, `event_product`, `event_version`,
//!   `event_class_id`, `name`, `event_ts`, `sig`) are expected to be strings.
//!   Another scalar (`"event_version": 1.0`) is taken as its exact JSON text,
//!   as Kong's own examples vary types; an array or object is taken as its
//!   JSON text with a warning; `null` counts as absent.
//! - **Duplicate keys** in a CEF extension keep the last value, like JSON
//!   objects do, with a warning (a repeated key may be an injected one).

use std::str::FromStr;

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use crate::cef::{self, Prefix, PrefixKind};
use crate::event::{Event, LineFormat, Origin, SignatureStatus};
use crate::{json, Format, ParseError, ParseOptions};

/// Parses one line; see [`crate::parse_line`].
pub(crate) fn parse_line(line: &[u8], options: &ParseOptions) -> Result<Event, ParseError> {
    let line = strip_terminator(line);
    let text = std::str::from_utf8(line).map_err(|error| ParseError::InvalidUtf8 {
        offset: error.valid_up_to(),
    })?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    match (options.format, first) {
        (_, None) => Err(ParseError::Empty),
        (Format::Json, _) | (Format::Auto, Some(b'{')) => from_json(text),
        (Format::Cef, _) | (Format::Auto, _) => from_cef(text, options),
    }
}

/// Removes a trailing `\n`, then a trailing `\r`: `raw` excludes the line
/// terminator (`\n` or `\r\n`) and nothing else.
fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn empty_event(format: LineFormat, raw: &str) -> Event {
    Event {
        format,
        timestamp: None,
        cef_version: None,
        vendor: None,
        product: None,
        product_version: None,
        event_class_id: None,
        name: None,
        severity: Value::Null,
        fields: Map::new(),
        origin: None,
        sig: None,
        signature: SignatureStatus::Unverified,
        warnings: Vec::new(),
        raw: raw.to_owned(),
    }
}

// ------------------------------------------------------------------- CEF

fn from_cef(text: &str, options: &ParseOptions) -> Result<Event, ParseError> {
    let record = cef::parse_record(text)?;
    let mut event = empty_event(LineFormat::Cef, text);
    event.cef_version = Some(record.version.parse::<i64>().map_err(|_| ParseError::Cef {
        reason: "CEF version out of range".to_owned(),
        offset: offset_in(text, record.version),
    })?);
    event.vendor = Some(record.vendor.into_owned());
    event.product = Some(record.product.into_owned());
    event.product_version = Some(record.device_version.into_owned());
    event.event_class_id = Some(record.signature_id.into_owned());
    event.name = Some(record.name.into_owned());
    event.severity = record
        .severity
        .map_or(Value::Null, |severity| severity_from_text(&severity));
    event.warnings = record.warnings.iter().map(ToString::to_string).collect();

    for (key, value) in record.extensions {
        if key == "sig" {
            if event.sig.replace(value.into_owned()).is_some() {
                event.warnings.push(duplicate_key("sig"));
            }
            continue;
        }
        let value = konnect_typed(key, Value::String(value.into_owned()));
        if event.fields.insert(key.to_owned(), value).is_some() {
            event.warnings.push(duplicate_key(key));
        }
    }

    event.timestamp = timestamp_from_rt(event.fields.get("rt")).or_else(|| {
        record
            .prefix
            .and_then(|p| prefix_timestamp(&p, options.year_hint))
    });
    event.origin = record.prefix.and_then(origin_of_prefix);
    Ok(event)
}

/// Byte offset of `part` inside `whole` (`part` borrows from `whole`).
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

fn duplicate_key(key: &str) -> String {
    format!("duplicate extension key {key:?}: the last value is kept")
}

/// Integer when the text is one (`"1"` gives `1`), else the text as given.
fn severity_from_text(text: &str) -> Value {
    text.parse::<i64>()
        .map_or_else(|_| Value::String(text.to_owned()), Value::from)
}

fn origin_of_prefix(prefix: Prefix<'_>) -> Option<Origin> {
    let origin = Origin {
        time: prefix.time.map(str::to_owned),
        host: prefix.host.map(str::to_owned),
    };
    (origin.time.is_some() || origin.host.is_some()).then_some(origin)
}

fn prefix_timestamp(prefix: &Prefix<'_>, year_hint: i32) -> Option<String> {
    let time = prefix.time?;
    match prefix.kind {
        PrefixKind::Rfc3164 => rfc3164_timestamp(time, year_hint),
        PrefixKind::Rfc3339 | PrefixKind::Rfc5424 => rfc3339_timestamp(time),
    }
}

/// `Apr 14 05:39:08` (or `Apr  4 ...`) in `year`, taken as UTC: RFC 3164
/// carries neither year nor zone.
fn rfc3164_timestamp(text: &str, year: i32) -> Option<String> {
    let mut parts = text.split_ascii_whitespace();
    let month = month_from_abbreviation(parts.next()?)?;
    let day = parts.next()?.parse::<u8>().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let time = Time::from_hms(hour, minute, second).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    format_timestamp(date.with_time(time).assume_utc())
}

fn month_from_abbreviation(name: &str) -> Option<Month> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let index = MONTHS.iter().position(|&m| m == name)?;
    Month::try_from(u8::try_from(index + 1).ok()?).ok()
}

// ------------------------------------------------------------------ JSON

fn from_json(text: &str) -> Result<Event, ParseError> {
    let object = json::parse_object(text)?;
    let mut event = empty_event(LineFormat::Json, text);
    let mut event_ts = None;
    for (key, value) in object {
        let warnings = &mut event.warnings;
        match key.as_str() {
            "cef_version" => event.cef_version = cef_version_from_json(value, warnings),
            "event_vendor" => event.vendor = header_text(&key, value, warnings),
            "event_product" => event.product = header_text(&key, value, warnings),
            "event_version" => event.product_version = header_text(&key, value, warnings),
            "event_class_id" => event.event_class_id = header_text(&key, value, warnings),
            "name" => event.name = header_text(&key, value, warnings),
            "event_ts" => event_ts = header_text(&key, value, warnings),
            "sig" => event.sig = header_text(&key, value, warnings),
            "severity" => event.severity = severity_from_json(value),
            _ => {
                let value = konnect_typed(&key, value);
                event.fields.insert(key, value);
            }
        }
    }
    event.timestamp = timestamp_from_rt(event.fields.get("rt"))
        .or_else(|| event_ts.as_deref().and_then(rfc3339_timestamp));
    event.origin = event_ts.map(|time| Origin {
        time: Some(time),
        host: None,
    });
    Ok(event)
}

/// `0` or `"0"`; anything else is absent, with a warning unless `null`.
fn cef_version_from_json(value: Value, warnings: &mut Vec<String>) -> Option<i64> {
    let version = match &value {
        Value::Null => return None,
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    if version.is_none() {
        warnings.push(format!("cef_version {value} is not an integer; ignored"));
    }
    version
}

/// A header string; other scalars as their exact JSON text; arrays and
/// objects as JSON text with a warning; `null` is absent.
fn header_text(key: &str, value: Value, warnings: &mut Vec<String>) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Array(_) | Value::Object(_) => {
            warnings.push(format!(
                "{key} is a JSON {}; kept as JSON text",
                json::kind(&value)
            ));
            Some(value.to_string())
        }
    }
}

/// Integer when numeric (`1`, `"1"`), else the value as given.
fn severity_from_json(value: Value) -> Value {
    match value {
        Value::String(s) => severity_from_text(&s),
        other => other,
    }
}

// --------------------------------------------------------- both formats

/// The documented Konnect attributes, typed the same way for both formats.
fn konnect_typed(key: &str, value: Value) -> Value {
    match key {
        "rt" | "status" => integer_if_digits(value),
        "trace_id" => integer_as_text(value),
        "granted" | "success" | "kong_initiated" => boolean_if_word(value),
        _ => value,
    }
}

/// A string of digits becomes that integer (exact, any size); anything else
/// (a JSON number included) stays as it is.
fn integer_if_digits(value: Value) -> Value {
    match value {
        Value::String(s) => integer_from_digits(&s).map_or(Value::String(s), Value::Number),
        other => other,
    }
}

fn integer_from_digits(text: &str) -> Option<Number> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // JSON forbids leading zeros; `arbitrary_precision` keeps the digits exact.
    let significant = text.trim_start_matches('0');
    Number::from_str(if significant.is_empty() {
        "0"
    } else {
        significant
    })
    .ok()
}

/// A JSON integer becomes its exact decimal text; anything else stays.
fn integer_as_text(value: Value) -> Value {
    match value {
        Value::Number(n) if is_integer_text(n.as_str()) => Value::String(n.as_str().to_owned()),
        other => other,
    }
}

fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn boolean_if_word(value: Value) -> Value {
    match value {
        Value::String(s) if s == "true" => Value::Bool(true),
        Value::String(s) if s == "false" => Value::Bool(false),
        other => other,
    }
}

// ------------------------------------------------------------ timestamps

/// Epoch milliseconds of 9999-12-31T23:59:59.999Z.
const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// The event time from a typed `rt`: an integer of epoch milliseconds
/// within years 1970..=9999.
fn timestamp_from_rt(rt: Option<&Value>) -> Option<String> {
    let ms = rt?.as_i64().filter(|ms| (0..=MAX_EPOCH_MS).contains(ms))?;
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    format_timestamp(time)
}

/// An RFC 3339 time (also RFC 5424's) converted to UTC.
fn rfc3339_timestamp(text: &str) -> Option<String> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    format_timestamp(time.checked_to_offset(UtcOffset::UTC)?)
}

/// RFC 3339 UTC with exactly three fractional digits: `2023-04-14T05:39:08.406Z`.
fn format_timestamp(time: OffsetDateTime) -> Option<String> {
    if !(0..=9999).contains(&time.year()) {
        return None;
    }
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rt_bounds() {
        let ts = |v: Value| timestamp_from_rt(Some(&v));
        assert_eq!(
            ts(Value::from(0)).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            ts(Value::from(MAX_EPOCH_MS)).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(ts(Value::from(MAX_EPOCH_MS + 1)), None);
        assert_eq!(ts(Value::from(-1)), None);
        assert_eq!(ts(Value::from("1681450748406")), None);
    }

    #[test]
    fn rfc3164_with_year_hint() {
        assert_eq!(
            rfc3164_timestamp("Apr 14 05:39:08", 2023).as_deref(),
            Some("2023-04-14T05:39:08.000Z")
        );
        assert_eq!(
            rfc3164_timestamp("Apr  4 05:39:08", 2023).as_deref(),
            Some("2023-04-04T05:39:08.000Z")
        );
        assert_eq!(rfc3164_timestamp("Feb 29 00:00:00", 2023), None);
        assert_eq!(rfc3164_timestamp("Apr 14 25:39:08", 2023), None);
    }

    #[test]
    fn rfc3339_to_utc() {
        assert_eq!(
            rfc3339_timestamp("2023-05-19T02:03:39.123456+02:00").as_deref(),
            Some("2023-05-19T00:03:39.123Z")
        );
        assert_eq!(rfc3339_timestamp("2023-13-19T00:03:39Z"), None);
    }

    #[test]
    fn digits_to_integers() {
        assert_eq!(
            integer_from_digits("007").map(|n| n.to_string()),
            Some("7".into())
        );
        assert_eq!(
            integer_from_digits("000").map(|n| n.to_string()),
            Some("0".into())
        );
        let big = "99999999999999999999999";
        assert_eq!(
            integer_from_digits(big).map(|n| n.to_string()),
            Some(big.into())
        );
        assert_eq!(integer_from_digits(""), None);
        assert_eq!(integer_from_digits("-1"), None);
        assert_eq!(integer_from_digits("3958q3097698"), None);
    }
}
