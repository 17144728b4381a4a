//! One line, CEF or JSON, to the normalized [`Event`] of `docs/EVENT_SCHEMA.md`.
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
//!   objects do, with a warning (a repeated key may be an injected one):
//!   one per repeated key, however often it repeats, so that a line of one
//!   key 400,000 times does not carry 400,000 warnings.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde_json::{Number, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use crate::borrowed::{BorrowedEvent, BorrowedOrigin, FieldValue, Timestamp};
use crate::cef::{self, Prefix, PrefixKind};
use crate::event::{Event, LineFormat, SignatureStatus};
use crate::{json, Format, ParseError, ParseOptions};

/// Parses one line; see [`crate::parse_line`].
pub(crate) fn parse_line(line: &[u8], options: &ParseOptions) -> Result<Event, ParseError> {
    parse_borrowed(line, options).map(BorrowedEvent::into_owned)
}

/// Parses one line into a view of it; see [`crate::parse_borrowed`].
pub(crate) fn parse_borrowed<'a>(
    line: &'a [u8],
    options: &ParseOptions,
) -> Result<BorrowedEvent<'a>, ParseError> {
    let line = strip_terminator(line);
    let text = utf8(line)?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    match (options.format, first) {
        (_, None) => Err(ParseError::Empty),
        (Format::Json, _) | (Format::Auto, Some(b'{')) => from_json(text),
        (Format::Cef, _) | (Format::Auto, _) => from_cef(text, options),
    }
}

/// The line as text. simdutf8 checks ASCII-heavy text several times faster
/// than `std`; only an invalid line is checked again, by `std`, for the
/// offset of its first invalid sequence.
fn utf8(line: &[u8]) -> Result<&str, ParseError> {
    simdutf8::basic::from_utf8(line).or_else(|_| {
        std::str::from_utf8(line).map_err(|error| ParseError::InvalidUtf8 {
            offset: error.valid_up_to(),
        })
    })
}

/// Removes a trailing `\n`, then a trailing `\r`: `raw` excludes the line
/// terminator (`\n` or `\r\n`) and nothing else.
fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn empty_event(format: LineFormat, raw: &str) -> BorrowedEvent<'_> {
    BorrowedEvent {
        format,
        timestamp: None,
        cef_version: None,
        vendor: None,
        product: None,
        product_version: None,
        event_class_id: None,
        name: None,
        severity: FieldValue::Null,
        fields: Vec::new(),
        origin: None,
        sig: None,
        signature: SignatureStatus::Unverified,
        warnings: Vec::new(),
        raw,
    }
}

/// The fields of an event under construction: line order, and a repeated
/// key keeps its first position and takes the new value (as a JSON object
/// does).
///
/// Finding a repeated key must not cost a hash and an allocation per field
/// on the common path, nor be quadratic on a line with thousands of keys: a
/// 64-bit filter of the keys seen rules most keys out, a linear scan settles
/// the rest, and past [`FieldsBuilder::INDEX_AFTER`] fields a hash index
/// takes over.
struct FieldsBuilder<'a> {
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    filter: u64,
    index: Option<HashMap<Cow<'a, str>, usize>>,
    /// Positions of the keys seen more than once.
    repeated: HashSet<usize>,
}

/// What [`FieldsBuilder::insert`] found.
#[derive(Debug, PartialEq, Eq)]
enum Inserted {
    New,
    /// The key was there once: its value is replaced.
    FirstRepeat,
    /// The key had been repeated already.
    Repeat,
}

impl<'a> FieldsBuilder<'a> {
    const INDEX_AFTER: usize = 32;

    fn with_capacity(capacity: usize) -> Self {
        FieldsBuilder {
            fields: Vec::with_capacity(capacity),
            filter: 0,
            index: None,
            repeated: HashSet::new(),
        }
    }

    /// Adds a field; says whether `key` was already there (its value is
    /// replaced, its position kept).
    #[inline(always)]
    fn insert(&mut self, key: Cow<'a, str>, value: FieldValue<'a>) -> Inserted {
        let found = match &mut self.index {
            Some(index) => match index.get(&key) {
                Some(&i) => Some(i),
                None => {
                    index.insert(key.clone(), self.fields.len());
                    None
                }
            },
            None if self.filter & (1u64 << filter_bit(&key)) != 0 => {
                self.fields.iter().position(|(k, _)| *k == key)
            }
            None => None,
        };
        if let Some(i) = found {
            self.fields[i].1 = value;
            return if self.repeated.insert(i) {
                Inserted::FirstRepeat
            } else {
                Inserted::Repeat
            };
        }
        self.filter |= 1u64 << filter_bit(&key);
        self.fields.push((key, value));
        if self.index.is_none() && self.fields.len() == Self::INDEX_AFTER {
            let index = self.fields.iter().enumerate();
            self.index = Some(index.map(|(i, (k, _))| (k.clone(), i)).collect());
        }
        Inserted::New
    }

    fn finish(self) -> Vec<(Cow<'a, str>, FieldValue<'a>)> {
        self.fields
    }
}

/// One of 64 bits for a key, from its length and its first and last bytes.
fn filter_bit(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let first = u64::from(bytes.first().copied().unwrap_or(0));
    let last = u64::from(bytes.last().copied().unwrap_or(0));
    let mixed = (bytes.len() as u64) ^ (first << 8) ^ (last << 16);
    // The top 6 bits of the product: 0..=63.
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as u32
}

// ------------------------------------------------------------------- CEF

fn from_cef<'a>(text: &'a str, options: &ParseOptions) -> Result<BorrowedEvent<'a>, ParseError> {
    let (header, extension) = cef::parse_parts(text)?;
    let mut event = empty_event(LineFormat::Cef, text);
    event.warnings = header.warnings.iter().map(ToString::to_string).collect();

    let mut fields = FieldsBuilder::with_capacity(16);
    let mut rt_ms = None;
    let mut sig_repeated = false;
    for pair in extension {
        let (key, value) = pair?;
        if key == "sig" {
            if event.sig.replace(value).is_some() && !std::mem::replace(&mut sig_repeated, true) {
                event.warnings.push(duplicate_key("sig"));
            }
            continue;
        }
        let value = cef_typed(key, value);
        if key == "rt" {
            rt_ms = epoch_ms(&value);
        }
        if fields.insert(Cow::Borrowed(key), value) == Inserted::FirstRepeat {
            event.warnings.push(duplicate_key(key));
        }
    }
    event.fields = fields.finish();

    event.cef_version = Some(header.version.parse::<i64>().map_err(|_| ParseError::Cef {
        reason: "CEF version out of range".to_owned(),
        offset: offset_in(text, header.version),
    })?);
    event.vendor = Some(header.vendor);
    event.product = Some(header.product);
    event.product_version = Some(header.device_version);
    event.event_class_id = Some(header.signature_id);
    event.name = Some(header.name);
    event.severity = header.severity.map_or(FieldValue::Null, severity_from_text);
    event.timestamp = rt_ms.and_then(Timestamp::from_epoch_ms).or_else(|| {
        header
            .prefix
            .and_then(|p| prefix_timestamp(&p, options.year_hint))
    });
    event.origin = header.prefix.and_then(origin_of_prefix);
    Ok(event)
}

/// A CEF value typed per the Konnect rules (see the module documentation).
fn cef_typed<'a>(key: &str, value: Cow<'a, str>) -> FieldValue<'a> {
    match key {
        "rt" | "status" if is_digits(&value) => match value {
            Cow::Borrowed(digits) => FieldValue::Digits(without_leading_zeros(digits)),
            // Unreachable in practice (unescaping never yields a digit), and
            // still exact.
            Cow::Owned(digits) => FieldValue::from_json(integer_if_digits(Value::String(digits))),
        },
        "granted" | "success" | "kong_initiated" if value == "true" => FieldValue::Bool(true),
        "granted" | "success" | "kong_initiated" if value == "false" => FieldValue::Bool(false),
        _ => FieldValue::Text(value),
    }
}

/// Epoch milliseconds from a typed `rt`, when it is an integer.
fn epoch_ms(value: &FieldValue<'_>) -> Option<i64> {
    match value {
        FieldValue::Digits(digits) => digits.parse().ok(),
        FieldValue::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Byte offset of `part` inside `whole` (`part` borrows from `whole`).
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

fn duplicate_key(key: &str) -> String {
    format!("duplicate extension key {key:?}: the last value is kept")
}

/// Integer when the text is one (`"1"` gives `1`), else the text as given.
fn severity_from_text(text: Cow<'_, str>) -> FieldValue<'_> {
    text.parse::<i64>()
        .map_or(FieldValue::Text(text), FieldValue::Int)
}

fn origin_of_prefix(prefix: Prefix<'_>) -> Option<BorrowedOrigin<'_>> {
    let origin = BorrowedOrigin {
        time: prefix.time.map(Cow::Borrowed),
        host: prefix.host.map(Cow::Borrowed),
    };
    (origin.time.is_some() || origin.host.is_some()).then_some(origin)
}

fn prefix_timestamp(prefix: &Prefix<'_>, year_hint: i32) -> Option<Timestamp> {
    let time = prefix.time?;
    match prefix.kind {
        PrefixKind::Rfc3164 => rfc3164_timestamp(time, year_hint),
        PrefixKind::Rfc3339 | PrefixKind::Rfc5424 => rfc3339_timestamp(time),
    }
}

/// `Apr 14 05:39:08` (or `Apr  4 ...`) in `year`, taken as UTC: RFC 3164
/// carries neither year nor zone.
fn rfc3164_timestamp(text: &str, year: i32) -> Option<Timestamp> {
    let mut parts = text.split_ascii_whitespace();
    let month = month_from_abbreviation(parts.next()?)?;
    let day = parts.next()?.parse::<u8>().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let time = Time::from_hms(hour, minute, second).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Timestamp::from_utc(date.with_time(time).assume_utc())
}

fn month_from_abbreviation(name: &str) -> Option<Month> {
    let index = cef::MONTHS.iter().position(|&m| m == name)?;
    Month::try_from(u8::try_from(index + 1).ok()?).ok()
}

// ------------------------------------------------------------------ JSON

fn from_json(text: &str) -> Result<BorrowedEvent<'_>, ParseError> {
    let object = json::parse_event_object(text)?;
    let mut event = empty_event(LineFormat::Json, text);
    let mut fields = FieldsBuilder::with_capacity(object.fields.len());
    let mut rt_ms = None;
    for (key, value) in object.fields {
        let value = konnect_typed(&key, value);
        if key == "rt" {
            rt_ms = value.as_i64();
        }
        // JSON objects keep the last of repeated keys silently (as
        // serde_json does); only CEF warns.
        fields.insert(key, FieldValue::from_json(value));
    }
    event.fields = fields.finish();

    let mut event_ts = None;
    for (key, value) in object.header {
        let warnings = &mut event.warnings;
        match key {
            "cef_version" => event.cef_version = cef_version_from_json(value, warnings),
            "severity" => event.severity = severity_from_json(value),
            _ => {
                let text = header_text(key, value, warnings).map(Cow::Owned);
                match key {
                    "event_vendor" => event.vendor = text,
                    "event_product" => event.product = text,
                    "event_version" => event.product_version = text,
                    "event_class_id" => event.event_class_id = text,
                    "name" => event.name = text,
                    "event_ts" => event_ts = text,
                    _ => event.sig = text, // "sig", the last header key
                }
            }
        }
    }
    event.timestamp = rt_ms
        .and_then(Timestamp::from_epoch_ms)
        .or_else(|| event_ts.as_deref().and_then(rfc3339_timestamp));
    event.origin = event_ts.map(|time| BorrowedOrigin {
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
fn severity_from_json(value: Value) -> FieldValue<'static> {
    match value {
        Value::String(s) => severity_from_text(Cow::Owned(s)),
        other => FieldValue::from_json(other),
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
    if !is_digits(text) {
        return None;
    }
    // JSON forbids leading zeros; `arbitrary_precision` keeps the digits exact.
    Number::from_str(without_leading_zeros(text)).ok()
}

/// A non-empty run of ASCII digits.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `007` is `7`, `000` is `0` (for a non-empty run of digits).
fn without_leading_zeros(digits: &str) -> &str {
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        "0"
    } else {
        significant
    }
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

/// An RFC 3339 time (also RFC 5424's) converted to UTC.
fn rfc3339_timestamp(text: &str) -> Option<Timestamp> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Timestamp::from_utc(time.checked_to_offset(UtcOffset::UTC)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(timestamp: Option<Timestamp>) -> Option<String> {
        timestamp.map(|t| t.as_str().to_owned())
    }

    #[test]
    fn rt_bounds() {
        let ts = |v: FieldValue<'_>| text(epoch_ms(&v).and_then(Timestamp::from_epoch_ms));
        assert_eq!(
            ts(FieldValue::Digits("0")).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            ts(FieldValue::from_json(Value::from(253_402_300_799_999i64))).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(ts(FieldValue::Digits("253402300800000")), None);
        assert_eq!(ts(FieldValue::Digits("99999999999999999999")), None);
        assert_eq!(ts(FieldValue::from_json(Value::from(-1))), None);
        assert_eq!(
            ts(FieldValue::from_json(Value::from("1681450748406"))),
            None
        );
        assert_eq!(ts(FieldValue::Text("1681450748406".into())), None);
    }

    #[test]
    fn rfc3164_with_year_hint() {
        assert_eq!(
            text(rfc3164_timestamp("Apr 14 05:39:08", 2023)).as_deref(),
            Some("2023-04-14T05:39:08.000Z")
        );
        assert_eq!(
            text(rfc3164_timestamp("Apr  4 05:39:08", 2023)).as_deref(),
            Some("2023-04-04T05:39:08.000Z")
        );
        assert_eq!(rfc3164_timestamp("Feb 29 00:00:00", 2023), None);
        assert_eq!(rfc3164_timestamp("Apr 14 25:39:08", 2023), None);
    }

    #[test]
    fn rfc3339_to_utc() {
        assert_eq!(
            text(rfc3339_timestamp("2023-05-19T02:03:39.123456+02:00")).as_deref(),
            Some("2023-05-19T00:03:39.123Z")
        );
        assert_eq!(rfc3339_timestamp("2023-13-19T00:03:39Z"), None);
    }

    #[test]
    fn repeated_keys_keep_first_position_and_last_value() {
        // Past INDEX_AFTER fields the hash index takes over: same answer.
        for count in [3, FieldsBuilder::INDEX_AFTER + 5] {
            let mut fields = FieldsBuilder::with_capacity(0);
            let keys: Vec<String> = (0..count).map(|i| format!("k{i}")).collect();
            let mut insert = |key: &str, value| fields.insert(Cow::Owned(key.to_owned()), value);
            for key in &keys {
                assert_eq!(insert(key, FieldValue::Int(0)), Inserted::New);
            }
            assert_eq!(insert("k1", FieldValue::Int(6)), Inserted::FirstRepeat);
            assert_eq!(insert("k1", FieldValue::Int(7)), Inserted::Repeat);
            let last = &keys[count - 1];
            assert_eq!(insert(last, FieldValue::Int(9)), Inserted::FirstRepeat);
            assert_eq!(insert("new", FieldValue::Int(1)), Inserted::New);
            let fields = fields.finish();
            assert_eq!(fields.len(), count + 1);
            assert_eq!(fields[1], (Cow::Borrowed("k1"), FieldValue::Int(7)));
            assert_eq!(fields[count - 1].1, FieldValue::Int(9));
            assert_eq!(fields[count].0, "new");
        }
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
