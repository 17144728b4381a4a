//! A zero-copy reader for one CEF line (`docs/EVENT_SCHEMA.md`, "CEF grammar").
//!
//! [`parse_record`] splits a line into its optional syslog [`Prefix`], the
//! seven header fields and the extension `key=value` pairs, borrowing from
//! the line: a field is only copied when an escape has to be replaced.
//!
//! The small fixed-shape parts (syslog prefix, `CEF:<version>|`) are nom
//! parsers; the header fields and the extension, where the bytes are, are
//! scanned with `memchr` for speed.
//!
//! # Extension grammar
//!
//! - A **key** is a non-empty run of characters other than space, `=` and
//!   `\`, followed by `=` and preceded by a space (or, for the first key, by
//!   the header's last `|` and optional spaces). So `a=b&c=d` inside a URL
//!   value holds no key (`c` follows `&`), and words preceded by a space but
//!   not followed by `=` stay in the value (`grpc-c/8.0.0 (linux; ...)`).
//! - A **value** is everything after its key's `=` up to the single space
//!   that precedes the next key, or up to the end of the line.
//! - **Whitespace rule.** Trailing whitespace (space, tab, CR, LF, VT, FF) of
//!   every value is removed: separator padding (`a=1   b=2`) cannot be told
//!   apart from content, and the last value loses the line's trailing
//!   whitespace and `\r`. Leading whitespace is kept: it is not a separator
//!   (separators precede keys), and Elastic's decoder keeps it too
//!   (`msg= Transformed` gives `" Transformed"`). Inner spaces, tabs and
//!   pipes are kept. A value of only spaces (`actor_id= foo=bar`) is `""`.
//! - **Escapes** `\=`, `\\`, `\n`, `\r` become `=`, `\`, newline, CR. Any
//!   other backslash stays as written. In particular `\|` stays `\|`: the
//!   CEF specification defines `\|` only in the header, and keeping the
//!   bytes loses nothing (vrl's `parse_cef` keeps it as written too).
//!
//! # Leniency
//!
//! Irregular lines whose meaning is still clear are read with a
//! [`CefWarning`]: an unrecognized prefix, a header with six fields (no
//! severity), a severity without its closing `|`, an unknown CEF version.
//! Anything else is a [`ParseError::Cef`] with the byte offset of the
//! problem. No input makes this module panic.
//!
//! Why one piece (about 800 lines): the prefix, header and extension
//! readers share the offsets and warnings of one line, and the grammar
//! above is read against all of them together.

use std::borrow::Cow;
use std::fmt;

use memchr::memchr;
use nom::branch::alt;
use nom::bytes::complete::{tag, take, take_till1, take_while_m_n};
use nom::character::complete::{char, digit1, one_of, space1};
use nom::combinator::{opt, recognize, verify};
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

use crate::ParseError;

/// The syslog shape a [`Prefix`] was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixKind {
    /// RFC 3164: `Apr 14 05:39:08 host` (no year, no zone).
    Rfc3164,
    /// An RFC 3339 timestamp and a host: `2023-05-19T00:03:39Z host`.
    Rfc3339,
    /// RFC 5424: `<pri>1 TIMESTAMP HOST APP PROCID MSGID SD`.
    Rfc5424,
}

/// The syslog-style prefix before `CEF:`: where the line says it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix<'a> {
    /// Which shape the prefix had (tells how to read `time`).
    pub kind: PrefixKind,
    /// The time exactly as written; `None` when absent (RFC 5424 `-`).
    pub time: Option<&'a str>,
    /// The host; `None` when absent (RFC 5424 `-`, or RFC 3164 without one).
    pub host: Option<&'a str>,
}

/// An irregularity that was read leniently. `Display` is the text kept in
/// the event's `warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CefWarning {
    /// The text before `CEF:` is no known syslog prefix; it was ignored.
    UnrecognizedPrefix,
    /// Text between the prefix host and `CEF:` was ignored.
    ExtraPrefixText,
    /// The CEF version is neither 0 nor 1; it was read with the same grammar.
    UnknownVersion,
    /// The header has six fields: the severity is missing.
    MissingSeverity,
    /// No `|` closes the severity field.
    MissingFinalPipe,
}

impl fmt::Display for CefWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CefWarning::UnrecognizedPrefix => {
                "unrecognized text before \"CEF:\" ignored (kept in raw)"
            }
            CefWarning::ExtraPrefixText => {
                "text between the prefix host and \"CEF:\" ignored (kept in raw)"
            }
            CefWarning::UnknownVersion => "CEF version is neither 0 nor 1; read as CEF 0/1",
            CefWarning::MissingSeverity => "CEF header has 6 fields: severity missing",
            CefWarning::MissingFinalPipe => "no '|' after the CEF severity",
        })
    }
}

/// One CEF line, split but not interpreted, borrowing from the line.
///
/// Header fields are unescaped (`\|`, `\\`) and trimmed of surrounding
/// spaces and tabs; they borrow unless an escape was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CefRecord<'a> {
    /// The syslog prefix, when the line has a recognized one.
    pub prefix: Option<Prefix<'a>>,
    /// The digits after `CEF:`.
    pub version: &'a str,
    /// Device vendor (header field 2).
    pub vendor: Cow<'a, str>,
    /// Device product (header field 3).
    pub product: Cow<'a, str>,
    /// Device version (header field 4).
    pub device_version: Cow<'a, str>,
    /// Signature id / event class id (header field 5).
    pub signature_id: Cow<'a, str>,
    /// Event name (header field 6).
    pub name: Cow<'a, str>,
    /// Severity (header field 7) as written, e.g. `1` or `very-high`;
    /// `None` when the header stops after the name
    /// ([`CefWarning::MissingSeverity`]).
    pub severity: Option<Cow<'a, str>>,
    /// Extension pairs in line order: key as written, value unescaped.
    /// Duplicate keys are kept; deciding between them is the caller's job.
    pub extensions: Vec<(&'a str, Cow<'a, str>)>,
    /// What was irregular but read anyway; empty for a well-formed line.
    pub warnings: Vec<CefWarning>,
}

/// Reads one CEF line (a trailing `\n`, `\r\n` or `\r` is ignored).
///
/// Errors are [`ParseError::Cef`] with the byte offset of the problem: no
/// `CEF:` in the line, a version that is not digits, a header cut before the
/// severity, or extension text that holds no `key=`.
pub fn parse_record(line: &str) -> Result<CefRecord<'_>, ParseError> {
    let (header, extension) = parse_parts(line)?;
    let mut extensions = Vec::with_capacity(16);
    for pair in extension {
        extensions.push(pair?);
    }
    let CefHeader {
        prefix,
        version,
        vendor,
        product,
        device_version,
        signature_id,
        name,
        severity,
        warnings,
    } = header;
    Ok(CefRecord {
        prefix,
        version,
        vendor,
        product,
        device_version,
        signature_id,
        name,
        severity,
        extensions,
        warnings,
    })
}

/// Everything of a [`CefRecord`] but the extension pairs.
pub(crate) struct CefHeader<'a> {
    pub(crate) prefix: Option<Prefix<'a>>,
    pub(crate) version: &'a str,
    pub(crate) vendor: Cow<'a, str>,
    pub(crate) product: Cow<'a, str>,
    pub(crate) device_version: Cow<'a, str>,
    pub(crate) signature_id: Cow<'a, str>,
    pub(crate) name: Cow<'a, str>,
    pub(crate) severity: Option<Cow<'a, str>>,
    pub(crate) warnings: Vec<CefWarning>,
}

/// Reads the prefix and header of `line` and returns them with an iterator
/// over the extension pairs, which are read as the iterator is advanced (so
/// the normalizer needs no intermediate vector).
pub(crate) fn parse_parts(line: &str) -> Result<(CefHeader<'_>, Extension<'_>), ParseError> {
    let line = strip_line_terminator(line);
    let cef_at = find_cef_marker(line.as_bytes())
        .ok_or_else(|| cef_error("no CEF header (\"CEF:\" not found)", 0))?;
    let mut warnings = Vec::new();
    let prefix = syslog_prefix(slice(line, 0, cef_at), &mut warnings);

    let (version, mut cursor) = cef_version(line, cef_at)?;
    if version != "0" && version != "1" {
        warnings.push(CefWarning::UnknownVersion);
    }

    // Vendor, product, device version, signature id and name must each be
    // closed by a `|`; only the severity may be missing or unclosed.
    let mut fields: [Cow<'_, str>; 5] = Default::default();
    for (found, field) in fields.iter_mut().enumerate() {
        let (pipe, escaped) = next_header_pipe(line.as_bytes(), cursor).ok_or_else(|| {
            cef_error(
                &format!("header truncated after {} of 7 fields", found + 1),
                line.len(),
            )
        })?;
        *field = header_value(slice(line, cursor, pipe), escaped);
        cursor = pipe + 1;
    }
    let (severity, extension_start) = severity_field(line, cursor, &mut warnings)?;
    let extension = Extension::new(line, extension_start);

    let [vendor, product, device_version, signature_id, name] = fields;
    let header = CefHeader {
        prefix,
        version,
        vendor,
        product,
        device_version,
        signature_id,
        name,
        severity,
        warnings,
    };
    Ok((header, extension))
}

/// The first `CEF:` in the line. Almost always at the start or after a short
/// syslog prefix, so a `C` scan beats building a substring searcher.
fn find_cef_marker(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + memchr(b'C', bytes.get(from..)?)?;
        if bytes.get(at..at + 4) == Some(b"CEF:") {
            return Some(at);
        }
        from = at + 1;
    }
}

fn cef_error(reason: &str, offset: usize) -> ParseError {
    ParseError::Cef {
        reason: reason.to_owned(),
        offset,
    }
}

/// `line[start..end]` without a panic path. Every position used here is the
/// position of an ASCII byte or an end of the line, hence a char boundary;
/// the empty fallback is unreachable.
fn slice(line: &str, start: usize, end: usize) -> &str {
    let part = line.get(start..end);
    debug_assert!(part.is_some(), "slice {start}..{end} off a char boundary");
    part.unwrap_or_default()
}

fn strip_line_terminator(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

// ---------------------------------------------------------------- prefix

/// Reads the text before `CEF:` as a syslog prefix. Unknown text is ignored
/// with a warning: the line is still a CEF event and `raw` keeps the text.
fn syslog_prefix<'a>(text: &'a str, warnings: &mut Vec<CefWarning>) -> Option<Prefix<'a>> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    common_prefix(text).or_else(|| any_prefix(text, warnings))
}

/// [`syslog_prefix`] of a trimmed `text`, by the general parsers.
fn any_prefix<'a>(text: &'a str, warnings: &mut Vec<CefWarning>) -> Option<Prefix<'a>> {
    if text.is_empty() || pri_only(text) {
        return None;
    }
    // Only RFC 3164 starts (after the pri) with a letter, the month: trying
    // the one shape that can match spares the others' failing attempts.
    let after_pri = pri(text).map_or(text, |(rest, _)| rest);
    let parsed = if after_pri.starts_with(|c: char| c.is_ascii_alphabetic()) {
        rfc3164_prefix(text)
    } else {
        alt((rfc5424_prefix, rfc3339_prefix)).parse(text)
    };
    match parsed {
        Ok((rest, prefix)) => {
            let rest = rest.trim_start_matches([' ', '\t']);
            // RFC 5424 carries APP PROCID MSGID SD after the host, and RFC
            // 3164 a TAG (`app[123]:`): expected, not irregular.
            let expected =
                rest.is_empty() || prefix.kind == PrefixKind::Rfc5424 || syslog_tag(rest);
            if !expected {
                warnings.push(CefWarning::ExtraPrefixText);
            }
            Some(prefix)
        }
        Err(_) => {
            warnings.push(CefWarning::UnrecognizedPrefix);
            None
        }
    }
}

/// The two prefixes Konnect's senders write, checked byte by byte before
/// the general parsers run: `Mmm dd hh:mm:ss host` and
/// `YYYY-MM-DDThh:mm:ssZ host`, without a pri, the host one token. `None`
/// for anything else (the general parsers then decide); when `Some`, it is
/// what they would return, with no warning (nothing follows the host).
fn common_prefix(text: &str) -> Option<Prefix<'_>> {
    let bytes = text.as_bytes();
    let digits_at = |at: usize, n: usize| {
        bytes
            .get(at..at + n)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let byte_at = |at: usize| bytes.get(at).copied();
    // `hh:mm:ss` at `at`.
    let clock_at = |at: usize| {
        digits_at(at, 2)
            && byte_at(at + 2) == Some(b':')
            && digits_at(at + 3, 2)
            && byte_at(at + 5) == Some(b':')
            && digits_at(at + 6, 2)
    };
    let (kind, time_len) = if byte_at(3) == Some(b' ')
        && MONTHS.iter().any(|m| bytes.get(..3) == Some(m.as_bytes()))
        && digits_at(4, 2)
        && byte_at(6) == Some(b' ')
        && clock_at(7)
    {
        (PrefixKind::Rfc3164, "Mmm dd hh:mm:ss".len())
    } else if digits_at(0, 4)
        && byte_at(4) == Some(b'-')
        && digits_at(5, 2)
        && byte_at(7) == Some(b'-')
        && digits_at(8, 2)
        && matches!(byte_at(10), Some(b'T' | b't'))
        && clock_at(11)
        && matches!(byte_at(19), Some(b'Z' | b'z'))
    {
        (PrefixKind::Rfc3339, "YYYY-MM-DDThh:mm:ssZ".len())
    } else {
        return None;
    };
    // One space, then a host of at least one byte that runs to the end.
    if byte_at(time_len) != Some(b' ') {
        return None;
    }
    let host = text.get(time_len + 1..)?;
    if host.is_empty() || host.contains([' ', '\t']) {
        return None;
    }
    Some(Prefix {
        kind,
        time: text.get(..time_len),
        host: Some(host),
    })
}

/// `<134>` alone, as some senders put directly before `CEF:`.
fn pri_only(text: &str) -> bool {
    matches!(pri(text), Ok(("", _)))
}

/// One token ending in `:`, the RFC 3164 TAG (`sshd[42]:`).
fn syslog_tag(text: &str) -> bool {
    text.ends_with(':') && !text.contains([' ', '\t'])
}

/// `<pri>`: facility and severity, 1 to 3 digits.
fn pri(i: &str) -> IResult<&str, &str> {
    delimited(char('<'), take_while_m_n(1, 3, is_digit), char('>')).parse(i)
}

/// `<pri>1 TIMESTAMP HOST ...`, `-` meaning absent.
fn rfc5424_prefix(i: &str) -> IResult<&str, Prefix<'_>> {
    let (i, (_, _, time, _, host)) =
        (pri, tag("1 "), alt((tag("-"), rfc3339_time)), space1, token).parse(i)?;
    let prefix = Prefix {
        kind: PrefixKind::Rfc5424,
        time: Some(time).filter(|&t| t != "-"),
        host: Some(host).filter(|&h| h != "-"),
    };
    Ok((i, prefix))
}

/// `[<pri>]Mmm dd hh:mm:ss [host]`.
fn rfc3164_prefix(i: &str) -> IResult<&str, Prefix<'_>> {
    let (i, (_, time, host)) = (opt(pri), rfc3164_time, opt(preceded(space1, token))).parse(i)?;
    let prefix = Prefix {
        kind: PrefixKind::Rfc3164,
        time: Some(time),
        host,
    };
    Ok((i, prefix))
}

/// `[<pri>]YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm) [host]`.
fn rfc3339_prefix(i: &str) -> IResult<&str, Prefix<'_>> {
    let (i, (_, time, host)) = (opt(pri), rfc3339_time, opt(preceded(space1, token))).parse(i)?;
    let prefix = Prefix {
        kind: PrefixKind::Rfc3339,
        time: Some(time),
        host,
    };
    Ok((i, prefix))
}

fn rfc3164_time(i: &str) -> IResult<&str, &str> {
    recognize((
        month,
        space1,
        take_while_m_n(1, 2, is_digit),
        char(' '),
        clock,
    ))
    .parse(i)
}

fn rfc3339_time(i: &str) -> IResult<&str, &str> {
    let date = (digits(4), char('-'), digits(2), char('-'), digits(2));
    let fraction = opt((char('.'), digit1));
    let numeric_offset = recognize((one_of("+-"), digits(2), char(':'), digits(2)));
    let offset = alt((tag("Z"), tag("z"), numeric_offset));
    recognize((date, one_of("Tt"), clock, fraction, offset)).parse(i)
}

fn month(i: &str) -> IResult<&str, &str> {
    verify(take(3usize), |m: &str| MONTHS.contains(&m)).parse(i)
}

/// Month abbreviations of RFC 3164, January first.
pub(crate) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `hh:mm:ss`.
fn clock(i: &str) -> IResult<&str, &str> {
    recognize((digits(2), char(':'), digits(2), char(':'), digits(2))).parse(i)
}

/// Exactly `n` ASCII digits, checked as bytes (nom's `take_while_m_n`
/// decodes characters one at a time; this is on every prefixed line's path).
fn digits<'a>(
    n: usize,
) -> impl Parser<&'a str, Output = &'a str, Error = nom::error::Error<&'a str>> {
    move |i: &'a str| match (i.get(..n), i.get(n..)) {
        (Some(digits), Some(rest)) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((rest, digits))
        }
        _ => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Digit,
        ))),
    }
}

/// A run of non-blank characters (a host name).
fn token(i: &str) -> IResult<&str, &str> {
    take_till1(|c| c == ' ' || c == '\t').parse(i)
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

// ---------------------------------------------------------------- header

/// `CEF:<digits>|` at `at`: the version and the position after the `|`.
fn cef_version(line: &str, at: usize) -> Result<(&str, usize), ParseError> {
    let text = slice(line, at, line.len());
    let version_at = at + "CEF:".len();
    let parsed: IResult<&str, &str> = preceded(tag("CEF:"), digit1).parse(text);
    let (rest, version) =
        parsed.map_err(|_| cef_error("CEF version is not a number", version_at))?;
    let pipe_at = line.len() - rest.len();
    if !rest.starts_with('|') {
        return Err(cef_error("expected '|' after the CEF version", pipe_at));
    }
    Ok((version, pipe_at + 1))
}

/// The next `|` at or after `from` that is not escaped by a backslash, and
/// whether a backslash came before it (so the field needs unescaping).
///
/// Header fields are a few bytes long: a byte loop costs less than the setup
/// of a `memchr` call per field.
fn next_header_pipe(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    let mut at = from;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'|' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at += 2; // the backslash and the byte it escapes
            }
            _ => at += 1,
        }
    }
    None
}

/// A header field: surrounding spaces and tabs trimmed, and when `escaped`
/// (it holds a backslash), `\|` and `\\` unescaped.
fn header_value(raw: &str, escaped: bool) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    // Blanks are ASCII, so `start` and `end` are character boundaries.
    let raw = slice(raw, start, end.max(start));
    if !escaped {
        return Cow::Borrowed(raw);
    }
    unescape(raw, |b| match b {
        b'|' => Some('|'),
        b'\\' => Some('\\'),
        _ => None,
    })
}

/// The severity field at `start` and where the extension begins.
///
/// A severity never contains `=`, so an `=` before the closing `|` means the
/// extension began early: right away (`|name|rt=1 ...`, six fields), or after
/// a severity word whose `|` is missing (`|name|1 rt=1 ...`).
fn severity_field<'a>(
    line: &'a str,
    start: usize,
    warnings: &mut Vec<CefWarning>,
) -> Result<(Option<Cow<'a, str>>, usize), ParseError> {
    let bytes = line.as_bytes();
    let (pipe, escaped) = match next_header_pipe(bytes, start) {
        Some((pipe, escaped)) => (Some(pipe), escaped),
        None => (None, true),
    };
    let field_end = pipe.unwrap_or(bytes.len());
    let field = bytes.get(start..field_end).unwrap_or_default();

    if memchr(b'=', field).is_none() {
        let severity = header_value(slice(line, start, field_end), escaped);
        return match pipe {
            Some(pipe) => Ok((Some(severity), pipe + 1)),
            // `|name|` and the end of the line: six fields.
            None if severity.is_empty() => {
                warnings.push(CefWarning::MissingSeverity);
                Ok((None, bytes.len()))
            }
            None => {
                warnings.push(CefWarning::MissingFinalPipe);
                Ok((Some(severity), bytes.len()))
            }
        };
    }

    let word_start = skip_spaces(bytes, start);
    let word_end = bytes
        .get(word_start..)
        .and_then(|rest| memchr(b' ', rest))
        .map_or(bytes.len(), |i| word_start + i);
    let word = bytes.get(word_start..word_end).unwrap_or_default();
    if memchr(b'=', word).is_some() {
        warnings.push(CefWarning::MissingSeverity);
        return Ok((None, word_start));
    }
    let extension_start = skip_spaces(bytes, word_end);
    if starts_with_key(bytes, extension_start) {
        warnings.push(CefWarning::MissingFinalPipe);
        let severity = header_value(slice(line, word_start, word_end), true);
        return Ok((Some(severity), extension_start));
    }
    Err(cef_error(
        "cannot tell the severity from the extension (no '|' after the severity)",
        start,
    ))
}

// ------------------------------------------------------------- extension

/// The extension's `(key, value)` pairs, read lazily in line order.
///
/// Each `=` is a candidate key end; a backward walk over key characters
/// decides whether a key ends there (see the module documentation). The walk
/// stops at the previous space, `=` or `\`, so the scan is linear. A value is
/// only unescaped (copied) when the extension holds a backslash at all, which
/// one `memchr` over the extension tells up front.
///
/// Yields one `Err` (text before the first key, or no `key=` at all) and then
/// nothing more.
pub(crate) struct Extension<'a> {
    line: &'a str,
    /// Where the first key starts (the extension after leading spaces).
    first: usize,
    /// Positions of `=` in `line[first..]`.
    equals: Equals<'a>,
    /// The key being read and where its value starts.
    open: Option<(&'a str, usize)>,
    /// Whether the extension holds a backslash (so values may need unescaping).
    escapes: bool,
    finished: bool,
}

impl<'a> Extension<'a> {
    fn new(line: &'a str, start: usize) -> Extension<'a> {
        let bytes = line.as_bytes();
        let first = skip_spaces(bytes, start);
        let rest = bytes.get(first..).unwrap_or_default();
        Extension {
            line,
            first,
            equals: Equals { bytes: rest, at: 0 },
            open: None,
            escapes: memchr(b'\\', rest).is_some(),
            // An extension of only whitespace holds no pairs.
            finished: rest.iter().all(|&b| is_value_whitespace(b)),
        }
    }

    /// The value in `start..end`: trailing whitespace removed, escapes
    /// replaced.
    fn value(&self, start: usize, end: usize) -> Cow<'a, str> {
        let bytes = self.line.as_bytes();
        // Whitespace bytes are ASCII, never part of a multi-byte character,
        // so trimming bytes keeps `end` on a character boundary.
        let mut end = end.max(start);
        while end > start && bytes.get(end - 1).is_some_and(|&b| is_value_whitespace(b)) {
            end -= 1;
        }
        let raw = slice(self.line, start, end);
        if self.escapes {
            unescape_extension(raw)
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn fail(&mut self, reason: &str) -> Option<Result<(&'a str, Cow<'a, str>), ParseError>> {
        self.finished = true;
        Some(Err(cef_error(reason, self.first)))
    }
}

impl<'a> Iterator for Extension<'a> {
    type Item = Result<(&'a str, Cow<'a, str>), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let bytes = self.line.as_bytes();
        for eq in self.equals.by_ref() {
            let eq = self.first + eq;
            let Some(key_start) = key_start_before(bytes, self.first, eq) else {
                continue; // an `=` inside a value
            };
            let key = slice(self.line, key_start, eq);
            match self.open.replace((key, eq + 1)) {
                None if key_start != self.first => {
                    return self.fail("text before the first extension key");
                }
                None => {}
                // `key_start - 1` is the separator space before the new key.
                Some((key, value_start)) => {
                    return Some(Ok((key, self.value(value_start, key_start - 1))));
                }
            }
        }
        match self.open.take() {
            Some((key, value_start)) => {
                self.finished = true;
                Some(Ok((key, self.value(value_start, bytes.len()))))
            }
            None => self.fail("extension has no key=value pair"),
        }
    }
}

/// Positions of `=` in a byte string, found eight bytes at a time: the
/// `=` of consecutive keys are a few dozen bytes apart, too close for the
/// setup of a vector search (`memchr`) to pay off.
struct Equals<'a> {
    bytes: &'a [u8],
    /// Where to look next.
    at: usize,
}

impl Iterator for Equals<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const EQUALS: u64 = ONES * b'=' as u64;
        while let Some(word) = self.bytes.get(self.at..).and_then(<[u8]>::first_chunk::<8>) {
            // A zero byte where the word has a `=`: the lowest bit set is
            // exact (a borrow only runs upward from a zero byte).
            let x = u64::from_le_bytes(*word) ^ EQUALS;
            let found = x.wrapping_sub(ONES) & !x & (ONES * 0x80);
            if found != 0 {
                let eq = self.at + (found.trailing_zeros() / 8) as usize;
                self.at = eq + 1;
                return Some(eq);
            }
            self.at += 8;
        }
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'=') {
            Some(i) => {
                let eq = self.at + i;
                self.at = eq + 1;
                Some(eq)
            }
            None => {
                self.at = self.bytes.len();
                None
            }
        }
    }
}

/// Where the key ending at the `=` at `eq` starts, if one does: a non-empty
/// run of key bytes preceded by a space, or starting at `first` (the first
/// key, after the header).
fn key_start_before(bytes: &[u8], first: usize, eq: usize) -> Option<usize> {
    let before = bytes.get(first..eq)?;
    let key_len = before.iter().rev().take_while(|&&b| is_key_byte(b)).count();
    let start = eq - key_len;
    let preceded_by_space = start == first || bytes.get(start - 1) == Some(&b' ');
    (key_len > 0 && preceded_by_space).then_some(start)
}

/// Whether `key=` starts at `at`.
fn starts_with_key(bytes: &[u8], at: usize) -> bool {
    let rest = bytes.get(at..).unwrap_or_default();
    let key_len = rest.iter().take_while(|&&b| is_key_byte(b)).count();
    key_len > 0 && rest.get(key_len) == Some(&b'=')
}

/// Any byte but space, `=` and `\` (UTF-8 bytes of non-ASCII characters
/// included: keys may be non-ASCII).
fn is_key_byte(b: u8) -> bool {
    !matches!(b, b' ' | b'=' | b'\\')
}

/// Replaces the extension escapes `\=`, `\\`, `\n` and `\r`.
fn unescape_extension(raw: &str) -> Cow<'_, str> {
    unescape(raw, |b| match b {
        b'=' => Some('='),
        b'\\' => Some('\\'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        // `\|` included: not an extension escape, kept as written.
        _ => None,
    })
}

fn is_value_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c')
}

fn skip_spaces(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest.iter().take_while(|&&b| b == b' ').count()
}

/// Replaces `\x` by `escape(x)` where that is `Some`; any other backslash
/// stays as written. Borrows unless something was replaced.
fn unescape(raw: &str, escape: impl Fn(u8) -> Option<char>) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // raw[..copied] is already in `out`
    let mut at = 0;
    while let Some(i) = bytes.get(at..).and_then(|rest| memchr(b'\\', rest)) {
        let backslash = at + i;
        match bytes.get(backslash + 1).and_then(|&b| escape(b)) {
            Some(c) => {
                let out = out.get_or_insert_with(|| String::with_capacity(raw.len()));
                out.push_str(slice(raw, copied, backslash));
                out.push(c);
                copied = backslash + 2;
                at = backslash + 2;
            }
            None => at = backslash + 1,
        }
    }
    match out {
        Some(mut out) => {
            out.push_str(slice(raw, copied, raw.len()));
            Cow::Owned(out)
        }
        None => Cow::Borrowed(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memchr::memchr_iter;

    fn ext(line: &str) -> Vec<(String, String)> {
        parse_record(line)
            .unwrap()
            .extensions
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_owned()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const H: &str = "CEF:0|V|P|1.0|c|n|5|";

    #[test]
    fn unescape_borrows_without_replacement() {
        let value = |s| unescape(s, |b| (b == b'=').then_some('='));
        assert!(matches!(value("plain"), Cow::Borrowed("plain")));
        assert!(matches!(value(r"a\|b"), Cow::Borrowed(r"a\|b")));
        assert_eq!(value(r"a\=b\"), "a=b\\");
        assert!(matches!(value(r"a\=b"), Cow::Owned(_)));
    }

    #[test]
    fn values_borrow_on_the_common_path() {
        let line = format!("{H}a=1 b=two words");
        let record = parse_record(&line).unwrap();
        assert!(record
            .extensions
            .iter()
            .all(|(_, v)| matches!(v, Cow::Borrowed(_))));
        assert!(matches!(record.vendor, Cow::Borrowed("V")));
    }

    #[test]
    fn common_prefixes_read_as_the_general_parsers_read_them() {
        let texts = [
            "Nov 25 19:46:40 konghq.com",
            "Apr 14 05:39:08 h",
            "Apr 14 05:39:08 host\rx",
            "Apr  4 05:39:08 host",
            "Apr 14 05:39:08",
            "Apr 14 05:39:08 ",
            "Apr 14 05:39:08  host",
            "Apr 14 05:39:08 host app:",
            "Apr 14 05:39:08 host\tx",
            "Foo 14 05:39:08 host",
            "Apr 14 5:39:08 host",
            "Apr 14 05:39:08Zhost",
            "<134>Apr 14 05:39:08 host",
            "2025-11-25T19:46:40Z konghq.com",
            "2025-11-25t19:46:40z h",
            "2025-11-25T19:46:40.123Z host",
            "2025-11-25T19:46:40+02:00 host",
            "2025-11-25T19:46:40Z",
            "2025-11-25T19:46:40Z  host",
            "2025-11-25 19:46:40Z host",
            "20x5-11-25T19:46:40Z host",
            "<134>1 2025-11-25T19:46:40Z host app - - -",
            "Nov 25 19:46:40 h\u{e9}te",
        ];
        let mut fast = 0;
        for text in texts {
            let mut warnings = Vec::new();
            let general = any_prefix(text, &mut warnings);
            if let Some(prefix) = common_prefix(text) {
                fast += 1;
                assert_eq!(Some(prefix), general, "{text:?}");
                assert!(warnings.is_empty(), "{text:?}");
            }
        }
        assert_eq!(fast, 6);
    }

    #[test]
    fn equals_finds_every_equals_sign_in_order() {
        for len in 0..40 {
            for step in 1..12 {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| {
                        if i % step == step - 1 {
                            b'='
                        } else {
                            b'a' + (i % 7) as u8
                        }
                    })
                    .collect();
                let found: Vec<usize> = Equals {
                    bytes: &bytes,
                    at: 0,
                }
                .collect();
                let expected: Vec<usize> = memchr_iter(b'=', &bytes).collect();
                assert_eq!(found, expected, "{len} {step}");
            }
        }
        let high = "é=ü==日本=".as_bytes();
        let found: Vec<usize> = Equals { bytes: high, at: 0 }.collect();
        assert_eq!(found, memchr_iter(b'=', high).collect::<Vec<_>>());
    }

    #[test]
    fn key_detection() {
        let b = b"x=1 ab=2";
        assert_eq!(key_start_before(b, 0, 1), Some(0));
        assert_eq!(key_start_before(b, 0, 6), Some(4));
        assert_eq!(key_start_before(b"a=b=c", 0, 3), None);
        assert_eq!(key_start_before(br"a=x\=y", 0, 4), None);
        assert_eq!(key_start_before(b"=x", 0, 0), None);
    }

    #[test]
    fn whitespace_rule() {
        assert_eq!(
            ext(&format!("{H}a=x   b=y\t \r")),
            pairs(&[("a", "x"), ("b", "y")])
        );
        assert_eq!(
            ext(&format!("{H}a=  lead b=y")),
            pairs(&[("a", "  lead"), ("b", "y")])
        );
    }
}
