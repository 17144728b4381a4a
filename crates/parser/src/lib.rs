//! # auditsink-parser
//!
//! Turns audit-log lines (CEF or JSON, one event per line) into the
//! normalized [`Event`] described in `docs/EVENT_SCHEMA.md`, and verifies Kong
//! Konnect's ED25519 line signatures ([`signature`]).
//!
//! Pure: no I/O, no async, no clock. Every function takes bytes as received
//! and never panics on any input; a line that is not an event comes back as a
//! [`ParseError`] whose `Display` is the reason kept in quarantine.
//!
//! ```
//! use auditsink_parser::{parse_line, Format, ParseOptions};
//! let line = b"CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 granted=true";
//! let event = parse_line(line, &ParseOptions::new(Format::Auto)).unwrap();
//! assert_eq!(event.name.as_deref(), Some("Authz.usage"));
//! assert_eq!(event.timestamp.as_deref(), Some("2023-04-14T05:39:08.406Z"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod borrowed;
pub mod cef;
mod event;
pub mod json;
mod normalize;
mod render;
pub mod signature;

pub use borrowed::{BorrowedEvent, BorrowedOrigin, FieldValue, Timestamp};
pub use event::{Event, LineFormat, Origin, SignatureStatus};
pub use render::write_json_string;

use std::fmt;

/// Which grammar to read a line with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A line whose first non-blank byte is `{` is JSON, anything else CEF.
    #[default]
    Auto,
    /// CEF, with an optional syslog prefix.
    Cef,
    /// One JSON object.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Format::Auto),
            "cef" => Ok(Format::Cef),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown format {other:?}: expected auto, cef or json"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Auto => "auto",
            Format::Cef => "cef",
            Format::Json => "json",
        })
    }
}

/// How to parse: the grammar and the context a pure parser cannot know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Grammar to use.
    pub format: Format,
    /// Year assumed for an RFC 3164 prefix time (`Apr 14 05:39:08`), which
    /// carries none. Only used when the line has no usable `rt`.
    pub year_hint: i32,
}

impl ParseOptions {
    /// Options for `format` with a year hint of 1970 (callers with a clock
    /// should set the current year).
    pub fn new(format: Format) -> Self {
        ParseOptions {
            format,
            year_hint: 1970,
        }
    }
}

/// Why a line is not an event. `Display` is the quarantine reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not valid UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The line is empty or only whitespace.
    #[error("empty line")]
    Empty,
    /// CEF grammar error.
    #[error("CEF: {reason} at byte {offset}")]
    Cef {
        /// What was wrong.
        reason: String,
        /// Byte offset in the line where it was noticed.
        offset: usize,
    },
    /// JSON syntax error or a line that is not a JSON object.
    #[error("JSON: {reason}")]
    Json {
        /// What was wrong (serde_json's message with line/column, or the shape).
        reason: String,
    },
}

/// Parses one line (without its terminator; a trailing `\r` is tolerated)
/// into a normalized event with `signature` set to
/// [`SignatureStatus::Unverified`].
pub fn parse_line(line: &[u8], options: &ParseOptions) -> Result<Event, ParseError> {
    normalize::parse_line(line, options)
}

/// Parses one line like [`parse_line`], into a view that borrows from it:
/// on the common path the only allocation is the vector of fields. Its JSON
/// rendering is byte for byte that of the [`Event`] `parse_line` returns
/// ([`BorrowedEvent::into_owned`]).
///
/// ```
/// use auditsink_parser::{parse_borrowed, FieldValue, Format, ParseOptions};
/// let line = b"CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6";
/// let event = parse_borrowed(line, &ParseOptions::new(Format::Auto)).unwrap();
/// assert_eq!(event.field("src").and_then(FieldValue::as_str), Some("127.0.0.6"));
/// assert_eq!(event.timestamp.unwrap().as_str(), "2023-04-14T05:39:08.406Z");
/// ```
pub fn parse_borrowed<'a>(
    line: &'a [u8],
    options: &ParseOptions,
) -> Result<BorrowedEvent<'a>, ParseError> {
    normalize::parse_borrowed(line, options)
}

/// Splits a batch body into lines: `\n`, `\r\n` and a bare `\r` each end a
/// line; blank (empty or whitespace-only) lines are skipped.
///
/// A bare `\r` is a separator because neither grammar allows one inside an
/// event: CEF escapes a carriage return in a value as `\r`, and JSON escapes
/// it in a string (outside strings it is whitespace, which a one-object-per-
/// line sender does not put between lines of one event). Taking it as a
/// separator keeps `a\rb\rc` three events, instead of one stored event whose
/// last value swallows the other two.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n' || b == b'\r')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn lines_end_at_lf_crlf_and_a_bare_cr() {
        let body = b"a=1\nb=2\r\nc=3\rd=4\r\r\n  \ne=5";
        let got: Vec<&[u8]> = lines(body).collect();
        assert_eq!(got, [&b"a=1"[..], b"b=2", b"c=3", b"d=4", b"e=5"]);
    }
}
