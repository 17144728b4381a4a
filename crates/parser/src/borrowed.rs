//! The normalized event as a view into the line: [`BorrowedEvent`].
//!
//! [`crate::parse_borrowed`] does all the work of [`crate::parse_line`]
//! (grammar, Konnect typing, timestamp, `sig`, duplicate keys, warnings) but
//! keeps strings as slices of the line: on a CEF line, a header field or a
//! value is only copied when an escape had to be replaced, and the only
//! allocation on the common path is the vector of fields. Its JSON rendering
//! (`serde::Serialize`) is byte for byte the rendering of the owned
//! [`Event`] ([`BorrowedEvent::into_owned`] is how `parse_line` builds it),
//! so a consumer that renders or stores JSON can skip the owned event.
//!
//! JSON lines are only partly borrowed: keys borrow unless escaped, values
//! are owned [`serde_json::Value`]s ([`FieldValue::Json`]) as serde_json
//! builds them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::event::{Event, LineFormat, Origin, SignatureStatus};

/// One normalized audit event, borrowing from its line. Field for field the
/// same as [`Event`], which documents each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BorrowedEvent<'a> {
    /// Grammar the line was read with.
    pub format: LineFormat,
    /// Event time, RFC 3339 UTC with milliseconds, or `None`.
    pub timestamp: Option<Timestamp>,
    /// CEF version (`CEF:<n>` or JSON `cef_version`).
    pub cef_version: Option<i64>,
    /// CEF header vendor / JSON `event_vendor`.
    pub vendor: Option<Cow<'a, str>>,
    /// CEF header product / JSON `event_product`.
    pub product: Option<Cow<'a, str>>,
    /// CEF header version / JSON `event_version`.
    pub product_version: Option<Cow<'a, str>>,
    /// CEF signature id / JSON `event_class_id`.
    pub event_class_id: Option<Cow<'a, str>>,
    /// CEF name / JSON `name`.
    pub name: Option<Cow<'a, str>>,
    /// Integer when numeric, else the text as given; [`FieldValue::Null`]
    /// when absent.
    pub severity: FieldValue<'a>,
    /// Every other key, typed per the schema, in line order, without
    /// duplicates (a repeated key keeps its first position and last value).
    #[serde(serialize_with = "serialize_fields")]
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// Prefix time and host; omitted when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<BorrowedOrigin<'a>>,
    /// The signature value, if the line carries one.
    pub sig: Option<Cow<'a, str>>,
    /// Verification outcome.
    pub signature: SignatureStatus,
    /// Irregularities read leniently; omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The line exactly as received, minus its terminator.
    pub raw: &'a str,
}

impl<'a> BorrowedEvent<'a> {
    /// The value of field `key`, if the event has it.
    pub fn field(&self, key: &str) -> Option<&FieldValue<'a>> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The owned [`Event`]: every string copied, fields into a JSON map.
    pub fn into_owned(self) -> Event {
        let mut fields = Map::with_capacity(self.fields.len());
        for (key, value) in self.fields {
            fields.insert(key.into_owned(), value.into_value());
        }
        Event {
            format: self.format,
            timestamp: self.timestamp.map(|t| t.as_str().to_owned()),
            cef_version: self.cef_version,
            vendor: self.vendor.map(Cow::into_owned),
            product: self.product.map(Cow::into_owned),
            product_version: self.product_version.map(Cow::into_owned),
            event_class_id: self.event_class_id.map(Cow::into_owned),
            name: self.name.map(Cow::into_owned),
            severity: self.severity.into_value(),
            fields,
            origin: self.origin.map(BorrowedOrigin::into_owned),
            sig: self.sig.map(Cow::into_owned),
            signature: self.signature,
            warnings: self.warnings,
            raw: self.raw.to_owned(),
        }
    }
}

impl From<BorrowedEvent<'_>> for Event {
    fn from(event: BorrowedEvent<'_>) -> Event {
        event.into_owned()
    }
}

fn serialize_fields<S: Serializer>(
    fields: &[(Cow<'_, str>, FieldValue<'_>)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(fields.len()))?;
    for (key, value) in fields {
        map.serialize_entry(key, value)?;
    }
    map.end()
}

/// Where the line says it came from; see [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BorrowedOrigin<'a> {
    /// Prefix time as written (CEF) or `event_ts` (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Cow<'a, str>>,
    /// Prefix host (CEF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'a, str>>,
}

impl BorrowedOrigin<'_> {
    /// The owned [`Origin`].
    pub fn into_owned(self) -> Origin {
        Origin {
            time: self.time.map(Cow::into_owned),
            host: self.host.map(Cow::into_owned),
        }
    }
}

/// A field value (or the severity) of a [`BorrowedEvent`]. Renders as JSON
/// exactly as [`FieldValue::into_value`] does.
///
/// Kept to 32 bytes (nested JSON is boxed): the vector of a line's fields
/// then stays under the size where glibc's allocator starts consolidating
/// its free lists, which costs more than the parse.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// JSON `null` (an absent severity, a JSON `null`).
    Null,
    /// A boolean: a Konnect flag (`granted`, `success`, `kong_initiated`)
    /// or a JSON boolean.
    Bool(bool),
    /// A numeric severity.
    Int(i64),
    /// A non-negative integer of any size, as its decimal digits without
    /// leading zeros (`rt`, `status` from a CEF string of digits).
    Digits(&'a str),
    /// A string.
    Text(Cow<'a, str>),
    /// A JSON number, exactly as written.
    Number(Number),
    /// A JSON array or object.
    Json(Box<Value>),
}

impl FieldValue<'_> {
    /// A value from a JSON line.
    pub fn from_json(value: Value) -> FieldValue<'static> {
        match value {
            Value::Null => FieldValue::Null,
            Value::Bool(b) => FieldValue::Bool(b),
            Value::Number(n) => FieldValue::Number(n),
            Value::String(s) => FieldValue::Text(Cow::Owned(s)),
            nested @ (Value::Array(_) | Value::Object(_)) => FieldValue::Json(Box::new(nested)),
        }
    }

    /// The JSON value of the owned [`Event`].
    pub fn into_value(self) -> Value {
        match self {
            FieldValue::Null => Value::Null,
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Int(n) => Value::from(n),
            FieldValue::Digits(digits) => digits_number(digits),
            FieldValue::Text(text) => Value::String(text.into_owned()),
            FieldValue::Number(n) => Value::Number(n),
            FieldValue::Json(value) => *value,
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// `digits` (ASCII digits, no leading zero unless `"0"`) as a JSON number,
/// exact at any size (serde_json is built with `arbitrary_precision`).
fn digits_number(digits: &str) -> Value {
    match digits.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Number::from_str(digits).map_or_else(|_| Value::from(digits), Value::Number),
    }
}

impl Serialize for FieldValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Null => serializer.serialize_unit(),
            FieldValue::Bool(b) => serializer.serialize_bool(*b),
            FieldValue::Int(n) => serializer.serialize_i64(*n),
            FieldValue::Digits(digits) => match digits.parse::<u64>() {
                Ok(n) => serializer.serialize_u64(n),
                Err(_) => digits_number(digits).serialize(serializer),
            },
            FieldValue::Text(text) => serializer.serialize_str(text),
            FieldValue::Number(n) => n.serialize(serializer),
            FieldValue::Json(value) => value.serialize(serializer),
        }
    }
}

/// An event time: RFC 3339 UTC with exactly three fractional digits
/// (`2023-04-14T05:39:08.406Z`), years 0000 to 9999. Held inline, no
/// allocation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    text: [u8; 24],
}

/// Epoch milliseconds of 9999-12-31T23:59:59.999Z.
pub(crate) const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The time `ms` milliseconds after the Unix epoch, for `ms` in
    /// `0..=253402300799999` (up to 9999-12-31T23:59:59.999Z).
    pub fn from_epoch_ms(ms: i64) -> Option<Timestamp> {
        if !(0..=MAX_EPOCH_MS).contains(&ms) {
            return None;
        }
        let days = ms / 86_400_000;
        let ms_of_day = ms % 86_400_000;
        let (year, month, day) = civil_from_days(days);
        let seconds = ms_of_day / 1000;
        Some(Timestamp::from_parts(
            year,
            month,
            day,
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            ms_of_day % 1000,
        ))
    }

    /// A UTC time (its offset is ignored: pass a UTC time), truncated to
    /// milliseconds; `None` outside years 0 to 9999.
    pub fn from_utc(time: time::OffsetDateTime) -> Option<Timestamp> {
        let year = i64::from(time.year());
        if !(0..=9999).contains(&year) {
            return None;
        }
        Some(Timestamp::from_parts(
            year,
            i64::from(u8::from(time.month())),
            i64::from(time.day()),
            i64::from(time.hour()),
            i64::from(time.minute()),
            i64::from(time.second()),
            i64::from(time.millisecond()),
        ))
    }

    /// Every part must be in range (year 0..=9999 and so on).
    fn from_parts(
        year: i64,
        month: i64,
        day: i64,
        hour: i64,
        minute: i64,
        second: i64,
        millis: i64,
    ) -> Timestamp {
        let mut text = *b"0000-00-00T00:00:00.000Z";
        // Two digits at a time: half the divisions of a digit loop.
        let mut put2 = |at: usize, value: i64| {
            if let Some(pair) = text.get_mut(at..at + 2) {
                pair.copy_from_slice(&TWO_DIGITS[value.rem_euclid(100) as usize]);
            }
        };
        put2(0, year / 100);
        put2(2, year);
        put2(5, month);
        put2(8, day);
        put2(11, hour);
        put2(14, minute);
        put2(17, second);
        put2(21, millis);
        // `rem_euclid(10)` is a digit: the cast cannot truncate.
        text[20] = b'0' + (millis / 100).rem_euclid(10) as u8;
        Timestamp { text }
    }

    /// The RFC 3339 text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

/// `00` to `99`.
const TWO_DIGITS: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        // `n < 100`: both quotients are digits.
        table[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    table
};

/// Year, month, day of the proleptic Gregorian calendar, `days` after
/// 1970-01-01 (Howard Hinnant's `civil_from_days`), for `days >= 0`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for Timestamp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Timestamp {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::format_description;
    use time::OffsetDateTime;

    /// The reference: the `time` crate's formatting.
    fn reference(ms: i64) -> String {
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time.format(&format).unwrap()
    }

    #[test]
    fn epoch_ms_matches_the_time_crate() {
        let mut ms = 0i64;
        // Every day boundary region over the whole range, with odd steps.
        while ms <= MAX_EPOCH_MS {
            for probe in [ms, ms + 1, ms + 86_399_999] {
                if probe <= MAX_EPOCH_MS {
                    assert_eq!(
                        Timestamp::from_epoch_ms(probe).unwrap().as_str(),
                        reference(probe)
                    );
                }
            }
            ms += 86_400_000 * 1009 + 12_345_678;
        }
        for probe in [0, 951_782_400_000, 1_681_450_748_406, MAX_EPOCH_MS] {
            assert_eq!(
                Timestamp::from_epoch_ms(probe).unwrap().as_str(),
                reference(probe)
            );
        }
        assert_eq!(Timestamp::from_epoch_ms(-1), None);
        assert_eq!(Timestamp::from_epoch_ms(MAX_EPOCH_MS + 1), None);
    }

    #[test]
    fn from_utc_truncates_to_milliseconds() {
        let time = OffsetDateTime::from_unix_timestamp_nanos(1_681_450_748_406_999_999).unwrap();
        assert_eq!(
            Timestamp::from_utc(time).unwrap(),
            "2023-04-14T05:39:08.406Z"
        );
    }

    #[test]
    fn field_values_stay_small() {
        assert!(std::mem::size_of::<FieldValue<'_>>() <= 32);
    }

    #[test]
    fn large_digits_stay_exact() {
        let big = "123456789012345678901234567890";
        assert_eq!(FieldValue::Digits(big).into_value().to_string(), big);
        assert_eq!(
            serde_json::to_string(&FieldValue::Digits(big)).unwrap(),
            big
        );
        assert_eq!(FieldValue::Digits("0").into_value(), Value::from(0));
    }
}
