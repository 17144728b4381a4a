//! Where a line's signature field is, and the bytes the signature covers:
//! the field cut out of the line as received, CEF or JSON, no
//! re-serialisation.

use std::borrow::Cow;

use base64::Engine as _;

use super::encoding::B64URL;
use crate::LineFormat;

/// Longest text a 64-byte signature can have (88 with padding).
const MAX_SIG_TEXT: usize = 88;

/// The bytes a line's signature covers, and the signature text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload<'a> {
    /// The line with the signature field removed: borrowed when the field
    /// ends the line, an owned copy otherwise.
    pub payload: Cow<'a, [u8]>,
    /// The signature text as written (base64url expected; not validated).
    pub sig: &'a [u8],
}

/// Finds the signature field of `raw` and returns the signed payload and the
/// signature text, or `None` when the line has no signature field.
///
/// CEF: the last extension key `sig` (` sig=` after the seventh unescaped `|`
/// following `CEF:`). Its value runs to the next extension key (` key=`) or
/// the end of the line; trailing whitespace is not part of the signature, and
/// the payload is the line minus exactly ` sig=<signature>`. As an extension
/// of the documented rule, a `sig` that is the first extension key
/// (`|sig=<value> next=…`) is also found; its payload is the line minus
/// `sig=<value>` and the one space after it.
///
/// JSON: the last top-level key `"sig"` whose value is a string (keys of
/// nested objects and text inside string values do not count; an escaped key
/// such as `"\u0073ig"` is not recognised). The payload is the line minus
/// `,"sig":"<value>"` (from the comma before the key to the value's closing
/// quote, whitespace in between included). As an extension of the documented
/// rule, when `sig` is the first key the payload is the line minus
/// `"sig":"<value>",` (through the comma after it), or minus `"sig":"<value>"`
/// when it is the only key.
///
/// Never panics; the line need not be a well-formed event.
pub fn signed_payload(raw: &[u8], format: LineFormat) -> Option<SignedPayload<'_>> {
    let found = match format {
        LineFormat::Cef => find_cef_sig(raw)?,
        LineFormat::Json => find_json_sig(raw)?,
    };
    let payload = if found.remove.end >= raw.len() {
        Cow::Borrowed(&raw[..found.remove.start])
    } else {
        let mut owned = Vec::with_capacity(raw.len() - found.remove.len());
        owned.extend_from_slice(&raw[..found.remove.start]);
        owned.extend_from_slice(&raw[found.remove.end..]);
        Cow::Owned(owned)
    };
    Some(SignedPayload {
        payload,
        sig: &raw[found.sig],
    })
}

/// Decodes signature text (base64url, padding optional, no stray trailing
/// bits) into the 64 signature bytes; `None` if it is anything else.
///
/// Two texts that decode to the same bytes differ only by `=` padding:
/// deduplicating on the decoded bytes closes that gap.
pub fn decode_signature(sig: &[u8]) -> Option<[u8; 64]> {
    if sig.len() > MAX_SIG_TEXT {
        return None;
    }
    let mut buf = [0u8; 66];
    let n = B64URL.decode_slice(sig, &mut buf).ok()?;
    if n != 64 {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(&buf[..64]);
    Some(out)
}

/// Byte ranges of a found signature field.
struct Found {
    /// Bytes to cut out of the line to get the payload.
    remove: std::ops::Range<usize>,
    /// The signature text.
    sig: std::ops::Range<usize>,
}

fn is_cef_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

/// Start of the CEF extension: just after the seventh unescaped `|` that
/// follows `CEF:`.
fn cef_extension_start(raw: &[u8]) -> Option<usize> {
    let start = raw.windows(4).position(|w| w == b"CEF:")?;
    let mut pipes = 0;
    let mut i = start;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 1,
            b'|' => {
                pipes += 1;
                if pipes == 7 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the space that starts the next extension key (` key=`) at or
/// after `from`, or the end of the line.
fn cef_value_end(raw: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < raw.len() {
        if raw[j] == b' ' {
            let mut k = j + 1;
            while k < raw.len() && is_cef_key_byte(raw[k]) {
                k += 1;
            }
            if k > j + 1 && raw.get(k) == Some(&b'=') {
                return j;
            }
        }
        j += 1;
    }
    raw.len()
}

/// Length of `value` without trailing ASCII whitespace.
fn trimmed_len(value: &[u8]) -> usize {
    value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1)
}

fn find_cef_sig(raw: &[u8]) -> Option<Found> {
    let ext = cef_extension_start(raw)?;
    let extension = &raw[ext..];
    if let Some(rel) = extension.windows(5).rposition(|w| w == b" sig=") {
        let key = ext + rel;
        let value = key + 5;
        let end = value + trimmed_len(&raw[value..cef_value_end(raw, value)]);
        return Some(Found {
            remove: key..end,
            sig: value..end,
        });
    }
    if extension.starts_with(b"sig=") {
        let value = ext + 4;
        let end = value + trimmed_len(&raw[value..cef_value_end(raw, value)]);
        let remove_end = if raw.get(end) == Some(&b' ') {
            end + 1
        } else {
            end
        };
        return Some(Found {
            remove: ext..remove_end,
            sig: value..end,
        });
    }
    None
}

fn skip_json_ws(raw: &[u8], mut i: usize) -> usize {
    while i < raw.len() && matches!(raw[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Given `raw[open] == b'"'`, the index just past the closing quote, or
/// `None` if the string is not terminated.
fn json_string_end(raw: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn find_json_sig(raw: &[u8]) -> Option<Found> {
    let first = skip_json_ws(raw, 0);
    if raw.get(first) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    let mut depth = 0usize;
    // At depth 1: whether the next string is a key, and the comma before it
    // (`None` for the first key).
    let mut expect_key = false;
    let mut comma: Option<usize> = None;
    let mut i = first;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                let Some(end) = json_string_end(raw, i) else {
                    break;
                };
                let mut next = end;
                if depth == 1 && expect_key && &raw[i + 1..end - 1] == b"sig" {
                    if let Some((f, after)) = json_sig_member(raw, i, end, comma) {
                        found = Some(f);
                        next = after;
                    }
                }
                expect_key = false;
                i = next;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
                comma = None;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                expect_key = false;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => {
                expect_key = true;
                comma = Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The member whose key `"sig"` spans `key..key_end`: if its value is a
/// string, the ranges to remove and of the signature, and the index just
/// past the value.
fn json_sig_member(
    raw: &[u8],
    key: usize,
    key_end: usize,
    comma: Option<usize>,
) -> Option<(Found, usize)> {
    let colon = skip_json_ws(raw, key_end);
    if raw.get(colon) != Some(&b':') {
        return None;
    }
    let open = skip_json_ws(raw, colon + 1);
    if raw.get(open) != Some(&b'"') {
        return None;
    }
    let close = json_string_end(raw, open)?;
    let sig = open + 1..close - 1;
    let remove = match comma {
        Some(c) => c..close,
        None => {
            let after = skip_json_ws(raw, close);
            match raw.get(after) {
                Some(b',') => key..after + 1,
                Some(b'}') => key..close,
                _ => return None,
            }
        }
    };
    Some((Found { remove, sig }, close))
}
