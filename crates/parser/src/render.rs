//! The JSON rendering of a [`BorrowedEvent`] written straight into a byte
//! buffer: [`BorrowedEvent::write_json`].
//!
//! The bytes are exactly serde_json's compact rendering of the event (and so
//! of the owned [`crate::Event`]; docs/EVENT_SCHEMA.md is a contract), but
//! without serde's serializer: strings are scanned for what needs escaping
//! sixteen bytes at a time, and integers are formatted with `itoa`.
//!
//! Escaping is most of what rendering costs, and almost every string of a
//! CEF event (header fields, keys, values, prefix time and host, `sig`) is a
//! slice of `raw`. So `raw` is scanned once, for the first and the last byte
//! that needs escaping ([`RawEscapes`]), and a slice of it that lies wholly
//! before the first or after the last is copied without a scan of its own:
//! on a line with no `"`, `\` or control character, that is all of them.

use crate::borrowed::{BorrowedEvent, FieldValue};
use crate::event::LineFormat;

impl BorrowedEvent<'_> {
    /// Appends the event's JSON (one compact object, no newline) to `out`:
    /// the same bytes as `serde_json::to_writer(out, self)`.
    ///
    /// # Errors
    ///
    /// Only what serde_json reports for a nested JSON value, which writing
    /// into a vector never does; `out` then holds a partial object.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let raw = RawEscapes::scan(self.raw);
        out.extend_from_slice(match self.format {
            LineFormat::Cef => b"{\"format\":\"cef\",\"timestamp\":",
            LineFormat::Json => b"{\"format\":\"json\",\"timestamp\":",
        });
        match &self.timestamp {
            // Digits and separators only: nothing to escape.
            Some(time) => {
                out.push(b'"');
                out.extend_from_slice(time.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"cef_version\":");
        match self.cef_version {
            Some(version) => out.extend_from_slice(itoa::Buffer::new().format(version).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        for (key, value) in [
            (&b",\"vendor\":"[..], &self.vendor),
            (b",\"product\":", &self.product),
            (b",\"product_version\":", &self.product_version),
            (b",\"event_class_id\":", &self.event_class_id),
            (b",\"name\":", &self.name),
        ] {
            out.extend_from_slice(key);
            raw.write_optional_string(value.as_deref(), out);
        }
        out.extend_from_slice(b",\"severity\":");
        raw.write_value(&self.severity, out)?;
        out.extend_from_slice(b",\"fields\":{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            raw.write_string(key, out);
            out.push(b':');
            raw.write_value(value, out)?;
        }
        out.push(b'}');
        if let Some(origin) = &self.origin {
            out.extend_from_slice(b",\"origin\":{");
            let mut first = true;
            for (key, value) in [
                (&b"\"time\":"[..], &origin.time),
                (b"\"host\":", &origin.host),
            ] {
                if let Some(value) = value {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(key);
                    raw.write_string(value, out);
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"sig\":");
        raw.write_optional_string(self.sig.as_deref(), out);
        out.extend_from_slice(b",\"signature\":\"");
        out.extend_from_slice(self.signature.as_str().as_bytes());
        out.push(b'"');
        if !self.warnings.is_empty() {
            out.extend_from_slice(b",\"warnings\":[");
            for (i, warning) in self.warnings.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(warning, out);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"raw\":");
        raw.write_raw(out);
        out.push(b'}');
        Ok(())
    }
}

/// Where the bytes of an event's `raw` that need escaping are: the slice
/// `raw[first..last]` holds all of them (`first == raw.len()`, `last == 0`
/// when there are none).
struct RawEscapes<'r> {
    raw: &'r str,
    first: usize,
    last: usize,
}

impl<'r> RawEscapes<'r> {
    fn scan(raw: &'r str) -> Self {
        let bytes = raw.as_bytes();
        let first = first_escape(bytes);
        let last = match bytes.get(first..) {
            Some(rest) if !rest.is_empty() => first + last_escape_end(rest),
            _ => 0,
        };
        RawEscapes { raw, first, last }
    }

    /// Whether `text` is a slice of `raw` that holds nothing to escape.
    /// Decided on addresses alone: a string lying in `raw`'s bytes is a
    /// slice of it, whatever it was borrowed through.
    fn is_clean_slice(&self, text: &str) -> bool {
        let offset = (text.as_ptr() as usize).wrapping_sub(self.raw.as_ptr() as usize);
        offset <= self.raw.len()
            && text.len() <= self.raw.len() - offset
            && (offset + text.len() <= self.first || offset >= self.last)
    }

    fn write_string(&self, text: &str, out: &mut Vec<u8>) {
        if self.is_clean_slice(text) {
            out.reserve(text.len() + 2);
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        } else {
            write_json_string(text, out);
        }
    }

    fn write_optional_string(&self, text: Option<&str>, out: &mut Vec<u8>) {
        match text {
            Some(text) => self.write_string(text, out),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// `raw` itself, whose bytes before `first` are known to be clean.
    fn write_raw(&self, out: &mut Vec<u8>) {
        write_escaped(self.raw.as_bytes(), self.first, out);
    }

    fn write_value(&self, value: &FieldValue<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match value {
            FieldValue::Null => out.extend_from_slice(b"null"),
            FieldValue::Bool(true) => out.extend_from_slice(b"true"),
            FieldValue::Bool(false) => out.extend_from_slice(b"false"),
            FieldValue::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            // Digits without leading zeros are their own JSON number, at any
            // size; anything else goes the way serde does.
            FieldValue::Digits(digits) if is_canonical_digits(digits) => {
                out.extend_from_slice(digits.as_bytes())
            }
            FieldValue::Text(text) => self.write_string(text, out),
            other => serde_json::to_writer(&mut *out, other)?,
        }
        Ok(())
    }
}

fn is_canonical_digits(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1)
}

/// What serde_json writes for each byte: 0 for itself, else the letter after
/// the backslash (`u` for `\u00XX`).
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Bytes scanned at a time for something to escape.
const BLOCK: usize = 16;

const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
const HIGHS: u128 = ONES * 0x80;

/// Whether any of the sixteen bytes is a control character, `"` or `\`
/// (exact: the classic "has a byte less than n" and "has a zero byte"
/// tests, on a u128 that the compiler keeps in two registers).
#[inline(always)]
fn block_needs_escape(block: &[u8; BLOCK]) -> bool {
    let block = u128::from_le_bytes(*block);
    let control = block.wrapping_sub(ONES * 0x20) & !block;
    let quote = block ^ (ONES * u128::from(b'"'));
    let backslash = block ^ (ONES * u128::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS != 0
}

/// The position of the first byte that needs escaping, or `bytes.len()`.
fn first_escape(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(block) = bytes.get(i..).and_then(|rest| rest.first_chunk::<BLOCK>()) {
        if block_needs_escape(block) {
            break;
        }
        i += BLOCK;
    }
    match bytes.get(i..) {
        Some(rest) => {
            i + rest
                .iter()
                .position(|&b| ESCAPE[usize::from(b)] != 0)
                .unwrap_or(rest.len())
        }
        None => bytes.len(),
    }
}

/// One past the position of the last byte that needs escaping, or 0.
fn last_escape_end(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while let Some(block) = bytes.get(..end).and_then(|head| head.last_chunk::<BLOCK>()) {
        if block_needs_escape(block) {
            break;
        }
        end -= BLOCK;
    }
    bytes
        .get(..end)
        .and_then(|head| head.iter().rposition(|&b| ESCAPE[usize::from(b)] != 0))
        .map_or(0, |at| at + 1)
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes
/// it (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
/// lowercase `\u00xx`; everything else as is).
pub fn write_json_string(text: &str, out: &mut Vec<u8>) {
    write_escaped(text.as_bytes(), 0, out);
}

/// [`write_json_string`] for `bytes` whose first `clean` bytes are known to
/// need no escaping.
fn write_escaped(bytes: &[u8], clean: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = clean.min(bytes.len());
    while i < bytes.len() {
        if let Some(block) = bytes[i..].first_chunk::<BLOCK>() {
            if !block_needs_escape(block) {
                i += BLOCK;
                continue;
            }
        }
        let byte = bytes[i];
        let escape = ESCAPE[usize::from(byte)];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(escape);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain text longer than eight bytes".into(),
            "\"quoted\" \\ back\\slash".into(),
            "tab\there\nnew\rline\u{8}\u{c}\u{0}\u{1f}\u{7f} é ü 日本 🦀".into(),
        ];
        // Every byte value below 0x80 at every position of a block.
        for byte in 0u8..0x80 {
            for at in 0..20 {
                let mut text = "abcdefghijklmnopqrst".to_owned();
                text.replace_range(at..at + 1, &char::from(byte).to_string());
                samples.push(text);
            }
        }
        for text in &samples {
            let mut ours = Vec::new();
            write_json_string(text, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn raw_escapes_bound_every_byte_to_escape() {
        for len in [0, 1, 15, 16, 17, 40] {
            for at in 0..len {
                for byte in [b'"', b'\\', b'\n', 0x1f] {
                    let mut raw = vec![b'a'; len];
                    raw[at] = byte;
                    let raw = String::from_utf8(raw).unwrap();
                    let scanned = RawEscapes::scan(&raw);
                    assert_eq!((scanned.first, scanned.last), (at, at + 1), "{raw:?}");
                    assert!(scanned.is_clean_slice(&raw[..at]));
                    assert!(scanned.is_clean_slice(&raw[at + 1..]));
                    assert!(!scanned.is_clean_slice(&raw[at..at + 1]));
                    assert!(!scanned.is_clean_slice(&raw));
                }
            }
            let clean = "b".repeat(len);
            let scanned = RawEscapes::scan(&clean);
            assert_eq!((scanned.first, scanned.last), (len, 0));
            assert!(scanned.is_clean_slice(&clean));
            // A string outside `raw` is never taken as clean.
            assert!(!scanned.is_clean_slice("\""));
        }
    }

    #[test]
    fn canonical_digits() {
        assert!(is_canonical_digits("0"));
        assert!(is_canonical_digits("1681450748406"));
        assert!(is_canonical_digits("123456789012345678901234567890"));
        assert!(!is_canonical_digits(""));
        assert!(!is_canonical_digits("01"));
        assert!(!is_canonical_digits("1e3"));
    }
}
