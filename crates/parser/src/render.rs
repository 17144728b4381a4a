//! The JSON rendering of a [`BorrowedEvent`] written straight into a byte
//! buffer: [`BorrowedEvent::write_json`].
//!
//! The bytes are exactly serde_json's compact rendering of the event (and so
//! of the owned [`crate::Event`]; docs/EVENT_SCHEMA.md is a contract), but
//! without serde's serializer: strings are scanned for what needs escaping
//! sixteen bytes at a time, and integers are formatted with `itoa`. Escaping
//! the line twice (`raw` and the values) is most of what rendering costs.

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
            write_optional_string(value.as_deref(), out);
        }
        out.extend_from_slice(b",\"severity\":");
        write_value(&self.severity, out)?;
        out.extend_from_slice(b",\"fields\":{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(key, out);
            out.push(b':');
            write_value(value, out)?;
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
                    write_json_string(value, out);
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"sig\":");
        write_optional_string(self.sig.as_deref(), out);
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
        write_json_string(self.raw, out);
        out.push(b'}');
        Ok(())
    }
}

fn write_optional_string(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        Some(text) => write_json_string(text, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_value(value: &FieldValue<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
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
        FieldValue::Text(text) => write_json_string(text, out),
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
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

const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
const HIGHS: u128 = ONES * 0x80;

/// Whether any of the sixteen bytes is a control character, `"` or `\`
/// (exact: the classic "has a byte less than n" and "has a zero byte"
/// tests, on a u128 that the compiler keeps in two registers).
fn block_needs_escape(block: u128) -> bool {
    let control = block.wrapping_sub(ONES * 0x20) & !block;
    let quote = block ^ (ONES * u128::from(b'"'));
    let backslash = block ^ (ONES * u128::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS != 0
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes
/// it (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
/// lowercase `\u00xx`; everything else as is).
pub fn write_json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(block) = bytes[i..].first_chunk::<16>() {
            if !block_needs_escape(u128::from_le_bytes(*block)) {
                i += 16;
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
    fn canonical_digits() {
        assert!(is_canonical_digits("0"));
        assert!(is_canonical_digits("1681450748406"));
        assert!(is_canonical_digits("123456789012345678901234567890"));
        assert!(!is_canonical_digits(""));
        assert!(!is_canonical_digits("01"));
        assert!(!is_canonical_digits("1e3"));
    }
}
