//! Record encoding: compact binary, versioned, exact.
//!
//! An event record is the raw line plus the normalized event, where every
//! string that also occurs in the raw line (field names, most values, the
//! signature, header fields) is stored as an (offset, length) reference into
//! it: the parsed event costs little beyond the evidence itself. Decoding
//! gives back the identical [`Event`], so `StoredEvent::to_json()` is the same
//! as before the encoding existed (EVENT_SCHEMA.md is a contract).
//!
//! ```text
//! event      = version:u8=1  time:zigzag  received_at:zigzag  source:bytes
//!              flags:u8  present:u8  raw:bytes  [timestamp:str]  [cef_version:zigzag]
//!              [vendor] [product] [product_version] [event_class_id] [name] [sig]   (str each)
//!              severity:value  fields:object  [origin]  [warnings]
//! str        = varint(len << 1) bytes | varint(len << 1 | 1) varint(offset into raw)
//! value      = 0 null | 1 false | 2 true | 3 zigzag int | 4 varint u64 | 5 number text:str
//!            | 6 string:str | 7 varint(n) value* | 8 object
//! object     = varint(n) (key:str value)*
//! quarantine = version:u8=1  received_at:zigzag  source:bytes  kind:u8 (0 line, 1 body)
//!              reason:bytes  raw:bytes
//! posting    = varint(n) (varint(id - first_id)  zigzag(time - previous time))*
//! ```
//!
//! `time` is the event time used by the indexes and filters: `timestamp`
//! when present, else `received_at`. It comes first so that scans can
//! filter without decoding the rest.
//!
//! Why one piece (about 960 lines without its tests): each record kind's
//! encoder and its readers (the full decoding, the borrowed one and the
//! partial reads of scans and sinks) sit side by side, so that a change to
//! the layout above is made to all of them at once; the round-trip tests
//! hold them together.

use auditsink_parser::{
    BorrowedEvent, BorrowedOrigin, Event, FieldValue, LineFormat, Origin, SignatureStatus,
    Timestamp,
};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

use std::str::FromStr;

use crate::engine::varint;
use crate::events::record::QuarantineReason;
use crate::events::timefmt::{format_ms, parse_canonical_ms, timestamp_ms};
use crate::events::view::{EventView, ValueRef};

/// Version byte of the records this build writes.
pub(crate) const RECORD_VERSION: u8 = 1;

/// A quarantine record's kind byte (see [`QuarantineReason`]).
const QUARANTINED_LINE: u8 = 0;
const QUARANTINED_BODY: u8 = 1;

const FLAG_JSON: u8 = 1;
const FLAG_ORIGIN: u8 = 1 << 3;
const FLAG_WARNINGS: u8 = 1 << 4;
const TS_SHIFT: u8 = 5; // 2 bits: 0 none, 1 canonical (= time), 2 text

const P_CEF_VERSION: u8 = 1;
const P_VENDOR: u8 = 1 << 1;
const P_PRODUCT: u8 = 1 << 2;
const P_PRODUCT_VERSION: u8 = 1 << 3;
const P_CLASS: u8 = 1 << 4;
const P_NAME: u8 = 1 << 5;
const P_SIG: u8 = 1 << 6;

const O_TIME: u8 = 1;
const O_HOST: u8 = 2;

/// A record that does not decode.
#[derive(Debug)]
pub(crate) struct Malformed(pub &'static str);

type R<T> = Result<T, Malformed>;

/// The event time of an event: its `timestamp`, else `received_at_ms`.
pub(crate) fn event_time(event: &impl EventView, received_at_ms: i64) -> i64 {
    event
        .timestamp()
        .and_then(timestamp_ms)
        .unwrap_or(received_at_ms)
}

/// The first occurrence of `needle` in `haystack`, like
/// `memchr::memmem::find`, without building a searcher each time (that set
/// up costs more than the search: most needles are found at one of the
/// first places their first byte occurs). After a few misses it does build
/// one, so a line crafted with many near-matches stays linear.
fn find_first(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some(&first) = needle.first() else {
        return Some(0);
    };
    let mut from = 0;
    for _ in 0..8 {
        let at = from + memchr::memchr(first, haystack.get(from..)?)?;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    if needle.len() <= 16 {
        // A short needle's comparisons are cheap: keep skipping with memchr.
        while let Some(i) = memchr::memchr(first, haystack.get(from..)?) {
            let at = from + i;
            if haystack[at..].starts_with(needle) {
                return Some(at);
            }
            from = at + 1;
        }
        return None;
    }
    memchr::memmem::find(&haystack[from..], needle).map(|i| i + from)
}

struct Writer<'a> {
    out: Vec<u8>,
    raw: &'a [u8],
    /// Where the previous reference ended: fields mostly come in line order.
    cursor: usize,
    /// Bytes of the raw line the searches for strings may still look
    /// through. A string that is not a slice of the line (an unescaped
    /// value, a number's text) is searched for, which costs up to the
    /// line's length; a line crafted with 100,000 of them made storing
    /// quadratic. Past this budget, a few times the line's length, strings
    /// are written out instead: storing stays linear in the line.
    search_budget: usize,
}

impl<'a> Writer<'a> {
    fn new(out: Vec<u8>, raw: &'a [u8]) -> Writer<'a> {
        Writer {
            out,
            raw,
            cursor: 0,
            search_budget: raw
                .len()
                .saturating_mul(SEARCH_BUDGET_PER_BYTE)
                .saturating_add(SEARCH_BUDGET_BASE),
        }
    }
}

/// The search budget of a line: this many times its length, plus
/// [`SEARCH_BUDGET_BASE`]. An ordinary event (strings found near where the
/// previous one ended) uses a small part of it.
const SEARCH_BUDGET_PER_BYTE: usize = 4;
const SEARCH_BUDGET_BASE: usize = 16 * 1024;

impl Writer<'_> {
    fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    fn varint(&mut self, n: u64) {
        varint::put(&mut self.out, n);
    }

    fn zigzag(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// A string, as a reference into the raw line when it occurs there.
    fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        if b.len() >= 4 {
            if let Some(offset) = self.within_raw(b).or_else(|| self.find(b)) {
                self.varint(((b.len() as u64) << 1) | 1);
                self.varint(offset as u64);
                self.cursor = offset + b.len();
                return;
            }
        }
        self.inline_str(b);
    }

    /// A string written out, never searched for (text the parser made,
    /// such as a warning, is not in the line).
    fn inline_str(&mut self, b: &[u8]) {
        self.varint((b.len() as u64) << 1);
        self.out.extend_from_slice(b);
    }

    /// Where `s` is, when it is a slice of the raw line itself (a borrowed
    /// event's strings mostly are): no search needed.
    fn within_raw(&self, s: &[u8]) -> Option<usize> {
        let offset = (s.as_ptr() as usize).checked_sub(self.raw.as_ptr() as usize)?;
        (offset + s.len() <= self.raw.len()).then_some(offset)
    }

    /// Where `needle` occurs in the raw line, looking from the cursor on
    /// first, while the search budget lasts. A search costs about the bytes
    /// it looks through (see [`find_first`]), which are charged.
    fn find(&mut self, needle: &[u8]) -> Option<usize> {
        if self.search_budget == 0 {
            return None;
        }
        let from = self.cursor.min(self.raw.len());
        let after = &self.raw[from..];
        if let Some(i) = find_first(after, needle) {
            self.charge(i + needle.len());
            return Some(from + i);
        }
        self.charge(after.len());
        let before = &self.raw[..from];
        let found = find_first(before, needle);
        self.charge(found.map_or(before.len(), |i| i + needle.len()));
        found
    }

    fn charge(&mut self, bytes: usize) {
        self.search_budget = self.search_budget.saturating_sub(bytes);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Bool(false) => self.u8(1),
            Value::Bool(true) => self.u8(2),
            Value::Number(n) => self.number(n),
            Value::String(s) => {
                self.u8(6);
                self.str(s);
            }
            Value::Array(items) => {
                self.u8(7);
                self.varint(items.len() as u64);
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) => {
                self.u8(8);
                self.object(map);
            }
        }
    }

    /// Integers compactly when that renders the same text; anything else
    /// (`1.0`, `1e3`, ...) as its text, which `arbitrary_precision` keeps.
    fn number(&mut self, n: &Number) {
        let text = n.to_string();
        if let Some(i) = n.as_i64().filter(|i| i.to_string() == text) {
            self.u8(3);
            self.zigzag(i);
        } else if let Some(u) = n.as_u64().filter(|u| u.to_string() == text) {
            self.u8(4);
            self.varint(u);
        } else {
            self.u8(5);
            self.str(&text);
        }
    }

    fn object(&mut self, map: &Map<String, Value>) {
        self.varint(map.len() as u64);
        for (key, value) in map {
            self.str(key);
            self.value(value);
        }
    }

    /// A value as [`Writer::value`] writes its JSON value.
    fn value_ref(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.u8(0),
            ValueRef::Bool(b) => self.u8(1 + u8::from(b)),
            ValueRef::Int(i) => {
                self.u8(3);
                self.zigzag(i);
            }
            // As `number` writes the JSON number the digits spell.
            ValueRef::Digits(digits) => match digits.parse::<u64>() {
                Ok(u) => match i64::try_from(u) {
                    Ok(i) => {
                        self.u8(3);
                        self.zigzag(i);
                    }
                    Err(_) => {
                        self.u8(4);
                        self.varint(u);
                    }
                },
                Err(_) => {
                    self.u8(if Number::from_str(digits).is_ok() {
                        5
                    } else {
                        6
                    });
                    self.str(digits);
                }
            },
            ValueRef::Text(s) => {
                self.u8(6);
                self.str(s);
            }
            ValueRef::Number(n) => self.number(n),
            ValueRef::Json(v) => self.value(v),
        }
    }
}

/// Encodes an event record.
pub(crate) fn encode_event(received_at_ms: i64, source: &str, event: &impl EventView) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.raw().len() + 160);
    encode_event_into(&mut out, received_at_ms, source, event);
    out
}

/// Appends an event record to `out`.
pub(crate) fn encode_event_into(
    out: &mut Vec<u8>,
    received_at_ms: i64,
    source: &str,
    event: &impl EventView,
) {
    let raw = event.raw().as_bytes();
    let mut w = Writer::new(std::mem::take(out), raw);
    let canonical = event.timestamp().and_then(parse_canonical_ms);
    let time = canonical.unwrap_or_else(|| event_time(event, received_at_ms));
    let ts_kind: u8 = match (event.timestamp(), canonical) {
        (None, _) => 0,
        (Some(_), Some(_)) => 1,
        (Some(_), None) => 2,
    };
    let mut flags = ts_kind << TS_SHIFT;
    if event.format() == LineFormat::Json {
        flags |= FLAG_JSON;
    }
    flags |= (match event.signature() {
        SignatureStatus::Valid => 0,
        SignatureStatus::Invalid => 1,
        SignatureStatus::Missing => 2,
        SignatureStatus::Unverified => 3,
    }) << 1;
    let origin = event.origin();
    if origin.is_some() {
        flags |= FLAG_ORIGIN;
    }
    let warnings = event.warnings();
    if !warnings.is_empty() {
        flags |= FLAG_WARNINGS;
    }
    let strings = [
        (P_VENDOR, event.vendor()),
        (P_PRODUCT, event.product()),
        (P_PRODUCT_VERSION, event.product_version()),
        (P_CLASS, event.event_class_id()),
        (P_NAME, event.name()),
        (P_SIG, event.sig()),
    ];
    let mut present = if event.cef_version().is_some() {
        P_CEF_VERSION
    } else {
        0
    };
    for (bit, value) in &strings {
        if value.is_some() {
            present |= bit;
        }
    }

    w.u8(RECORD_VERSION);
    w.zigzag(time);
    w.zigzag(received_at_ms);
    w.bytes(source.as_bytes());
    w.u8(flags);
    w.u8(present);
    w.bytes(raw);
    if let (Some(text), 2) = (event.timestamp(), ts_kind) {
        w.str(text);
    }
    if let Some(v) = event.cef_version() {
        w.zigzag(v);
    }
    for (_, value) in strings {
        if let Some(s) = value {
            w.str(s);
        }
    }
    w.value_ref(event.severity());
    w.varint(event.field_count() as u64);
    for (key, value) in event.fields() {
        w.str(key);
        w.value_ref(value);
    }
    if let Some((time, host)) = origin {
        let mut bits = 0;
        if time.is_some() {
            bits |= O_TIME;
        }
        if host.is_some() {
            bits |= O_HOST;
        }
        w.u8(bits);
        for s in [time, host].into_iter().flatten() {
            w.str(s);
        }
    }
    if !warnings.is_empty() {
        w.varint(warnings.len() as u64);
        for warning in warnings {
            w.inline_str(warning.as_bytes());
        }
    }
    *out = w.out;
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    raw: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            raw: "",
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> R<u8> {
        let b = *self.buf.get(self.pos).ok_or(Malformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn varint(&mut self) -> R<u64> {
        varint::get(self.buf, &mut self.pos).ok_or(Malformed("truncated or overlong varint"))
    }

    pub(crate) fn zigzag(&mut self) -> R<i64> {
        let n = self.varint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn len(&mut self, n: u64) -> R<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.pos)
            .ok_or(Malformed("length past the end"))
    }

    pub(crate) fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.varint()?;
        let n = self.len(n)?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    /// Where the next length-prefixed UTF-8 string lies in the buffer.
    fn utf8_range(&mut self) -> R<std::ops::Range<usize>> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| Malformed("not UTF-8"))?;
        Ok(self.pos - b.len()..self.pos)
    }

    fn utf8(&mut self) -> R<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("not UTF-8"))
    }

    fn str(&mut self) -> R<String> {
        let head = self.varint()?;
        let len = usize::try_from(head >> 1).map_err(|_| Malformed("length"))?;
        if head & 1 == 1 {
            let offset = usize::try_from(self.varint()?).map_err(|_| Malformed("offset"))?;
            self.raw
                .get(offset..offset.checked_add(len).ok_or(Malformed("offset"))?)
                .map(str::to_owned)
                .ok_or(Malformed("reference outside the raw line"))
        } else {
            let len = self.len(len as u64)?;
            let b = &self.buf[self.pos..self.pos + len];
            self.pos += len;
            String::from_utf8(b.to_vec()).map_err(|_| Malformed("not UTF-8"))
        }
    }

    /// [`Reader::str`] without the copy: a slice of the raw line or of
    /// the record.
    fn str_ref(&mut self) -> R<&'a str> {
        let head = self.varint()?;
        let len = usize::try_from(head >> 1).map_err(|_| Malformed("length"))?;
        if head & 1 == 1 {
            let offset = usize::try_from(self.varint()?).map_err(|_| Malformed("offset"))?;
            self.raw
                .get(offset..offset.checked_add(len).ok_or(Malformed("offset"))?)
                .ok_or(Malformed("reference outside the raw line"))
        } else {
            let len = self.len(len as u64)?;
            let b = &self.buf[self.pos..self.pos + len];
            self.pos += len;
            std::str::from_utf8(b).map_err(|_| Malformed("not UTF-8"))
        }
    }

    /// A value as the borrowed event holds it (what [`Reader::value`]
    /// gives, rendered the same); arrays and objects are built owned.
    fn field_value(&mut self) -> R<FieldValue<'a>> {
        let start = self.pos;
        Ok(match self.u8()? {
            0 => FieldValue::Null,
            1 => FieldValue::Bool(false),
            2 => FieldValue::Bool(true),
            3 => FieldValue::Int(self.zigzag()?),
            4 => FieldValue::Number(self.varint()?.into()),
            5 => FieldValue::Number(
                serde_json::from_str::<Number>(self.str_ref()?)
                    .map_err(|_| Malformed("bad number text"))?,
            ),
            6 => FieldValue::Text(Cow::Borrowed(self.str_ref()?)),
            7 | 8 => {
                self.pos = start;
                FieldValue::Json(Box::new(self.value(0)?))
            }
            _ => return Err(Malformed("unknown value tag")),
        })
    }

    fn value(&mut self, depth: usize) -> R<Value> {
        if depth > 256 {
            return Err(Malformed("nesting too deep"));
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Number(self.zigzag()?.into()),
            4 => Value::Number(self.varint()?.into()),
            5 => {
                let text = self.str()?;
                Value::Number(
                    serde_json::from_str::<Number>(&text)
                        .map_err(|_| Malformed("bad number text"))?,
                )
            }
            6 => Value::String(self.str()?),
            7 => {
                let n = self.varint()?;
                let n = self.len(n)?; // every item takes at least a byte
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            8 => Value::Object(self.object(depth + 1)?),
            _ => return Err(Malformed("unknown value tag")),
        })
    }

    fn object(&mut self, depth: usize) -> R<Map<String, Value>> {
        let n = self.varint()?;
        let n = self.len(n)?;
        let mut map = Map::with_capacity(n);
        for _ in 0..n {
            let key = self.str()?;
            let value = self.value(depth)?;
            map.insert(key, value);
        }
        Ok(map)
    }
}

/// The fields every scan needs, without decoding the event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventHead {
    pub time: i64,
    pub received_at_ms: i64,
}

pub(crate) fn peek_event(buf: &[u8]) -> R<EventHead> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    Ok(EventHead {
        time: r.zigzag()?,
        received_at_ms: r.zigzag()?,
    })
}

/// What a forwarding sink reads of an event record without decoding the
/// event: the times, and where the source and the raw line lie in it.
pub(crate) struct ForwardHead {
    pub time: i64,
    pub received_at_ms: i64,
    /// 0 none, 1 canonical (= `time`), 2 text right after the raw line.
    pub timestamp_kind: u8,
    pub format: LineFormat,
    pub source: std::ops::Range<usize>,
    pub raw: std::ops::Range<usize>,
}

pub(crate) fn forward_head(buf: &[u8]) -> R<ForwardHead> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    let time = r.zigzag()?;
    let received_at_ms = r.zigzag()?;
    let source = r.utf8_range()?;
    let flags = r.u8()?;
    let _present = r.u8()?;
    let raw = r.utf8_range()?;
    let timestamp_kind = (flags >> TS_SHIFT) & 3;
    if timestamp_kind == 3 {
        return Err(Malformed("timestamp kind"));
    }
    Ok(ForwardHead {
        time,
        received_at_ms,
        timestamp_kind,
        format: line_format(flags),
        source,
        raw,
    })
}

/// The timestamp text of a record whose timestamp kind is 2, which starts
/// at `raw_end` (the end of its raw line, from [`forward_head`]).
pub(crate) fn forward_timestamp_text(buf: &[u8], raw_end: usize) -> R<&str> {
    let mut head = Reader::new(buf);
    head.u8()?;
    head.zigzag()?;
    head.zigzag()?;
    head.bytes()?;
    head.u8()?;
    head.u8()?;
    let mut r = Reader::new(buf);
    r.raw = head.utf8()?;
    r.pos = raw_end;
    r.str_ref()
}

/// A decoded event record.
pub(crate) struct DecodedEvent {
    pub time: i64,
    pub received_at_ms: i64,
    pub source: String,
    pub event: Event,
}

pub(crate) fn decode_event(buf: &[u8]) -> R<DecodedEvent> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    let time = r.zigzag()?;
    let received_at_ms = r.zigzag()?;
    let source = r.utf8()?.to_owned();
    let flags = r.u8()?;
    let present = r.u8()?;
    r.raw = r.utf8()?;
    let timestamp = match (flags >> TS_SHIFT) & 3 {
        0 => None,
        1 => Some(format_ms(time)),
        2 => Some(r.str()?),
        _ => return Err(Malformed("timestamp kind")),
    };
    let cef_version = if present & P_CEF_VERSION != 0 {
        Some(r.zigzag()?)
    } else {
        None
    };
    let mut opt = |bit: u8| -> R<Option<String>> {
        if present & bit != 0 {
            r.str().map(Some)
        } else {
            Ok(None)
        }
    };
    let vendor = opt(P_VENDOR)?;
    let product = opt(P_PRODUCT)?;
    let product_version = opt(P_PRODUCT_VERSION)?;
    let event_class_id = opt(P_CLASS)?;
    let name = opt(P_NAME)?;
    let sig = opt(P_SIG)?;
    let severity = r.value(0)?;
    let fields = r.object(0)?;
    let origin = if flags & FLAG_ORIGIN != 0 {
        let bits = r.u8()?;
        let time = if bits & O_TIME != 0 {
            Some(r.str()?)
        } else {
            None
        };
        let host = if bits & O_HOST != 0 {
            Some(r.str()?)
        } else {
            None
        };
        Some(Origin { time, host })
    } else {
        None
    };
    let mut warnings = Vec::new();
    if flags & FLAG_WARNINGS != 0 {
        let n = r.varint()?;
        for _ in 0..r.len(n)? {
            warnings.push(r.str()?);
        }
    }
    if !r.at_end() {
        return Err(Malformed("trailing bytes"));
    }
    let event = Event {
        format: line_format(flags),
        timestamp,
        cef_version,
        vendor,
        product,
        product_version,
        event_class_id,
        name,
        severity,
        fields,
        origin,
        sig,
        signature: signature_status(flags),
        warnings,
        raw: r.raw.to_owned(),
    };
    Ok(DecodedEvent {
        time,
        received_at_ms,
        source,
        event,
    })
}

/// The line format a record's flags name.
fn line_format(flags: u8) -> LineFormat {
    if flags & FLAG_JSON != 0 {
        LineFormat::Json
    } else {
        LineFormat::Cef
    }
}

/// The signature outcome a record's flags name (bits 1 and 2).
fn signature_status(flags: u8) -> SignatureStatus {
    match (flags >> 1) & 3 {
        0 => SignatureStatus::Valid,
        1 => SignatureStatus::Invalid,
        2 => SignatureStatus::Missing,
        _ => SignatureStatus::Unverified,
    }
}

/// An event record read without building the owned [`Event`]: strings
/// borrow from the record (most from its raw line), for a caller that
/// renders or hashes the event and throws it away (a forwarding sink).
pub(crate) struct BorrowedRecord<'a> {
    pub source: &'a str,
    pub event: BorrowedEvent<'a>,
}

/// [`decode_event`] into the parser's [`BorrowedEvent`]; `Ok(None)` for a
/// record that shape cannot hold exactly (a timestamp kept as text that is
/// not the canonical rendering, or one outside years 0 to 9999): the caller
/// decodes those with [`decode_event`]. Its JSON rendering is the owned
/// event's, byte for byte (held by the sinks' rendering tests).
pub(crate) fn decode_event_borrowed(buf: &[u8]) -> R<Option<BorrowedRecord<'_>>> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    let time = r.zigzag()?;
    r.zigzag()?; // received_at: the caller has it from the head
    let source = r.utf8()?;
    let flags = r.u8()?;
    let present = r.u8()?;
    r.raw = r.utf8()?;
    let timestamp = match (flags >> TS_SHIFT) & 3 {
        0 => None,
        1 => match Timestamp::from_epoch_ms(time) {
            Some(t) => Some(t),
            None => return Ok(None),
        },
        2 => return Ok(None),
        _ => return Err(Malformed("timestamp kind")),
    };
    let cef_version = if present & P_CEF_VERSION != 0 {
        Some(r.zigzag()?)
    } else {
        None
    };
    let mut opt = |bit: u8| -> R<Option<Cow<'_, str>>> {
        if present & bit != 0 {
            r.str_ref().map(|s| Some(Cow::Borrowed(s)))
        } else {
            Ok(None)
        }
    };
    let vendor = opt(P_VENDOR)?;
    let product = opt(P_PRODUCT)?;
    let product_version = opt(P_PRODUCT_VERSION)?;
    let event_class_id = opt(P_CLASS)?;
    let name = opt(P_NAME)?;
    let sig = opt(P_SIG)?;
    let severity = r.field_value()?;
    let n = r.varint()?;
    let n = r.len(n)?;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.str_ref()?;
        fields.push((Cow::Borrowed(key), r.field_value()?));
    }
    let origin = if flags & FLAG_ORIGIN != 0 {
        let bits = r.u8()?;
        let time = if bits & O_TIME != 0 {
            Some(Cow::Borrowed(r.str_ref()?))
        } else {
            None
        };
        let host = if bits & O_HOST != 0 {
            Some(Cow::Borrowed(r.str_ref()?))
        } else {
            None
        };
        Some(BorrowedOrigin { time, host })
    } else {
        None
    };
    let mut warnings = Vec::new();
    if flags & FLAG_WARNINGS != 0 {
        let n = r.varint()?;
        for _ in 0..r.len(n)? {
            warnings.push(r.str()?);
        }
    }
    if !r.at_end() {
        return Err(Malformed("trailing bytes"));
    }
    let event = BorrowedEvent {
        format: line_format(flags),
        timestamp,
        cef_version,
        vendor,
        product,
        product_version,
        event_class_id,
        name,
        severity,
        fields,
        origin,
        sig,
        signature: signature_status(flags),
        warnings,
        raw: r.raw,
    };
    Ok(Some(BorrowedRecord { source, event }))
}

/// A decoded quarantine record.
pub(crate) struct DecodedQuarantine {
    pub received_at_ms: i64,
    pub source: String,
    pub reason: QuarantineReason,
    pub raw: Vec<u8>,
}

pub(crate) fn encode_quarantine(
    received_at_ms: i64,
    source: &str,
    reason: &QuarantineReason,
    raw: &[u8],
) -> Vec<u8> {
    let text = reason.text();
    let mut w = Writer::new(
        Vec::with_capacity(raw.len() + text.len() + source.len() + 16),
        &[],
    );
    w.u8(RECORD_VERSION);
    w.zigzag(received_at_ms);
    w.bytes(source.as_bytes());
    w.u8(match reason {
        QuarantineReason::Line(_) => QUARANTINED_LINE,
        QuarantineReason::Body(_) => QUARANTINED_BODY,
    });
    w.bytes(text.as_bytes());
    w.bytes(raw);
    w.out
}

pub(crate) fn peek_quarantine_received(buf: &[u8]) -> R<i64> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    r.zigzag()
}

pub(crate) fn decode_quarantine(buf: &[u8]) -> R<DecodedQuarantine> {
    let mut r = Reader::new(buf);
    if r.u8()? != RECORD_VERSION {
        return Err(Malformed("unknown record version"));
    }
    let received_at_ms = r.zigzag()?;
    let source = r.utf8()?.to_owned();
    let kind = r.u8()?;
    let text = r.utf8()?.to_owned();
    let reason = match kind {
        QUARANTINED_LINE => QuarantineReason::Line(text),
        QUARANTINED_BODY => QuarantineReason::Body(text),
        _ => return Err(Malformed("unknown quarantine kind")),
    };
    let raw = r.bytes()?.to_vec();
    if !r.at_end() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(DecodedQuarantine {
        received_at_ms,
        source,
        reason,
        raw,
    })
}

/// Encodes a posting: (id, time) pairs, ids increasing from `first_id`.
pub(crate) fn encode_posting(first_id: u64, entries: &[(u64, i64)]) -> Vec<u8> {
    let mut w = Writer::new(Vec::with_capacity(2 + entries.len() * 6), &[]);
    w.varint(entries.len() as u64);
    let mut previous = 0i64;
    for &(id, time) in entries {
        w.varint(id.wrapping_sub(first_id));
        w.zigzag(time.wrapping_sub(previous));
        previous = time;
    }
    w.out
}

/// Decodes a posting into (id, time) pairs.
pub(crate) fn decode_posting(first_id: u64, buf: &[u8], out: &mut Vec<(u64, i64)>) -> R<()> {
    let mut r = Reader::new(buf);
    let n = r.varint()?;
    let n = r.len(n)?;
    out.reserve(n);
    let mut previous = 0i64;
    for _ in 0..n {
        let id = first_id.wrapping_add(r.varint()?);
        let time = previous.wrapping_add(r.zigzag()?);
        previous = time;
        out.push((id, time));
    }
    if !r.at_end() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditsink_parser::{parse_line, Format, ParseOptions};

    #[test]
    fn find_first_agrees_with_memmem() {
        let agrees = |hay: &[u8], needles: &[&[u8]]| {
            for needle in needles {
                assert_eq!(
                    find_first(hay, needle),
                    memchr::memmem::find(hay, needle),
                    "{needle:?}"
                );
            }
        };
        agrees(
            b"aab abab ba a=1 a=12 xyzzy ab",
            &[b"a", b"ab", b"a=12", b"zz", b"ab ", b"q", b"", b"xyzzy ab!"],
        );
        // Past the first tries, long and short needles alike.
        let mut hay = b"xyzzy1 ".repeat(20);
        hay.extend_from_slice(b"xyzzy2 and the long needle xyzzy3");
        agrees(
            &hay,
            &[
                b"xyzzy2",
                b"xyzzy2 and the long needle",
                b"xyzzy3",
                b"xyzzy4",
                b"xyzzy4 and the long needle",
            ],
        );
    }

    fn round_trip(event: &Event) {
        let encoded = encode_event(1_700_000_000_123, "src", event);
        let decoded = decode_event(&encoded).unwrap();
        assert_eq!(&decoded.event, event);
        assert_eq!(
            serde_json::to_string(&decoded.event).unwrap(),
            serde_json::to_string(event).unwrap()
        );
        assert_eq!(decoded.source, "src");
        assert_eq!(decoded.received_at_ms, 1_700_000_000_123);
        let head = peek_event(&encoded).unwrap();
        assert_eq!(head.time, decoded.time);
        assert_eq!(head.time, event_time(event, 1_700_000_000_123));
    }

    #[test]
    fn parsed_lines_round_trip_exactly() {
        let options = ParseOptions::new(Format::Auto);
        let lines = [
            "Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 action=retrieve granted=true org_id=b065b594-6afc-4658-9101-5d9cf3f36b7b principal_id=87655c36-8d63-48fe-9a1e-53b28dfbc19b trace_id=3895213347334635099 user_agent=grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges) sig=fnjOUISTC2uLWTqCcmwUuOWa_daa4vEPxxUn2-QPVU1dmB-Ed2y2mwoB9dq94JJz2tF6Ok41Bci4FGwk4FhxAg",
            r#"{"action":"read","cef_version":"0","event_class_id":"identity","event_product":"Konnect","event_ts":"2023-04-28T20:52:09Z","event_vendor":"KongInc","event_version":"1.0","granted":true,"name":"Authz.identity-provider","org_id":"o","principal_id":"p","rt":1682715129807,"severity":1,"src":"127.0.0.6","trace_id":3895213347334635099,"user_agent":"grpc-go/1.54.0","nested":{"a":[1,2.50,1e3,-7,18446744073709551615,null,"x\"y"],"b":{}},"sig":"Jm73"}"#,
            "CEF:0|V|P|1|c|n|Very-High|k=a\\=b msg=line\\nbreak",
            "CEF:1|Ven\\|dor|P|1|c|n|3|",
            "<34>1 2023-05-19T00:03:39Z host CEF:0|V|P|1|c|n|1|rt=notanumber",
            r#"{"name":"ünïcödé ✓","rt":"3958q3097698","severity":"7"}"#,
        ];
        for line in lines {
            let event = parse_line(line.as_bytes(), &options).unwrap();
            round_trip(&event);
            borrowed_is_owned(line.as_bytes(), &options);
        }
        for path in [
            "konnect-sample.cef",
            "konnect-sample.jsonl",
            "third-party/elastic-beats-cef-samples.log",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/corpus")
                .join(path);
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            for line in auditsink_parser::lines(&text) {
                if let Ok(event) = parse_line(line, &options) {
                    round_trip(&event);
                    borrowed_is_owned(line, &options);
                }
            }
        }
    }

    /// A borrowed event's record decodes to the owned event of the same
    /// line, and its identity and index terms are the owned event's.
    fn borrowed_is_owned(line: &[u8], options: &ParseOptions) {
        let owned = parse_line(line, options).unwrap();
        let borrowed = auditsink_parser::parse_borrowed(line, options).unwrap();
        let encoded = encode_event(1_700_000_000_123, "src", &borrowed);
        assert_eq!(decode_event(&encoded).unwrap().event, owned);
        assert_eq!(
            crate::events::keys::dedupe_key(&borrowed),
            crate::events::keys::dedupe_key(&owned)
        );
        assert_eq!(
            crate::events::index::trace_key(&borrowed),
            crate::events::index::trace_key(&owned)
        );
        let time = event_time(&owned, 7);
        assert_eq!(event_time(&borrowed, 7), time);
        assert_eq!(
            crate::events::index::terms(&borrowed, time),
            crate::events::index::terms(&owned, time)
        );
    }

    #[test]
    fn borrowed_values_of_every_kind_encode_as_owned_ones() {
        let options = ParseOptions::new(Format::Auto);
        for line in [
            // Digits past i64, past u64; escapes (unescaped copies, not
            // slices of the line); a short value; numbers and booleans as
            // trace_id, principal_id and org_id terms.
            r"CEF:0|V|P|1|c|n|9|rt=9223372036854775808 cnt=18446744073709551616 trace_id=12 principal_id=a\\b org_id=x\=y msg=line\nbreak k=ab",
            r#"{"severity":"9","trace_id":true,"org_id":1.50,"principal_id":"","rt":-5,"arr":[1,{"a":null}],"esc":"a\"b","name":"N"}"#,
            r#"{"trace_id":18446744073709551616,"org_id":false,"principal_id":null,"name":""}"#,
        ] {
            borrowed_is_owned(line.as_bytes(), &options);
        }
    }

    /// Lines crafted so that hardly any string of the event is a slice of
    /// the line (escaped values, a key repeated, JSON escapes): past the
    /// search budget their strings are written out, and the records still
    /// decode to the parsed events.
    #[test]
    fn crafted_lines_past_the_search_budget_round_trip() {
        let options = ParseOptions::new(Format::Auto);
        let mut escaped = String::from("CEF:0|V|P|1|c|n|1|");
        let mut repeated = escaped.clone();
        let mut json = String::from("{");
        for i in 0..5_000 {
            escaped.push_str(&format!(r"k{i}=a\=b{i} "));
            repeated.push_str(&format!("k=value{i} "));
            json.push_str(&format!(r#""k\u0030{i}":"a\"b{i}","#));
        }
        json.push_str(r#""n":1.50}"#);
        for (line, exhausts) in [
            (escaped.trim_end(), true),
            (repeated.trim_end(), false),
            (&json, true),
        ] {
            let event = parse_line(line.as_bytes(), &options).unwrap();
            let mut w = Writer::new(Vec::new(), line.as_bytes());
            w.object(&event.fields);
            assert_eq!(w.search_budget == 0, exhausts, "{:.40}", line);
            round_trip(&event);
            borrowed_is_owned(line.as_bytes(), &options);
        }
    }

    #[test]
    fn odd_events_round_trip() {
        let options = ParseOptions::new(Format::Auto);
        let mut event = parse_line(b"CEF:0|V|P|1|c|n|1|a=b", &options).unwrap();
        event.timestamp = Some("2023-04-28T20:52:09+02:00".into());
        event.signature = SignatureStatus::Valid;
        event.warnings = vec!["irregular".into(), "again irregular".into()];
        event.origin = Some(Origin {
            time: None,
            host: Some("h".into()),
        });
        event.cef_version = Some(i64::MIN);
        round_trip(&event);
        assert_eq!(event_time(&event, 0), 1_682_707_929_000);
        event.timestamp = Some("garbage".into());
        event.cef_version = None;
        event.vendor = None;
        event.sig = Some(String::new());
        event.severity = Value::Null;
        round_trip(&event);
        assert_eq!(event_time(&event, 5), 5);
    }

    #[test]
    fn strings_found_in_the_raw_line_cost_a_reference() {
        let options = ParseOptions::new(Format::Auto);
        let line = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|org_id=b065b594-6afc-4658-9101-5d9cf3f36b7b principal_id=87655c36-8d63-48fe-9a1e-53b28dfbc19b";
        let event = parse_line(line.as_bytes(), &options).unwrap();
        let encoded = encode_event(0, "konnect", &event);
        assert!(
            encoded.len() < line.len() + 60,
            "{} bytes for a {} byte line",
            encoded.len(),
            line.len()
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let options = ParseOptions::new(Format::Auto);
        let event = parse_line(b"CEF:0|V|P|1|c|n|1|a=bcdef g=[1,2]", &options).unwrap();
        let encoded = encode_event(0, "s", &event);
        for cut in 0..encoded.len() {
            assert!(decode_event(&encoded[..cut]).is_err());
        }
        let mut flipped = encoded.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode_event(&flipped);
            flipped[i] ^= 0x5a;
        }
        assert!(decode_event(&[2]).is_err());
    }

    #[test]
    fn postings_round_trip() {
        let entries = [(10, 5), (11, -3), (400, i64::MAX), (401, i64::MIN)];
        let encoded = encode_posting(10, &entries);
        let mut out = Vec::new();
        decode_posting(10, &encoded, &mut out).unwrap();
        assert_eq!(out, entries);
        let q = encode_quarantine(7, "s", &QuarantineReason::Body("why".into()), &[0xff, 0]);
        let d = decode_quarantine(&q).unwrap();
        assert_eq!(
            (
                d.received_at_ms,
                d.source.as_str(),
                d.reason.clone(),
                d.raw.as_slice()
            ),
            (7, "s", QuarantineReason::Body("why".into()), &[0xff, 0][..])
        );
        assert_eq!(peek_quarantine_received(&q).unwrap(), 7);
    }
}
