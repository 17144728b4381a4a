//! Property tests (proptest):
//!
//! - any CEF event written by a correct escaping encoder (header: `\` and `|`
//!   escaped; extension values: `\`, `=`, newline and CR escaped) reads back
//!   to the same header fields and extension pairs, in order;
//! - any bytes, and any jumble of CEF/JSON tokens, never make the parser
//!   panic, and the owned and borrowed events always render alike.
//!
//! What the grammar cannot represent, and the generator therefore avoids: a
//! header field starting or ending with a space or tab (header fields are
//! trimmed), a value ending with a space, tab, vertical tab or form feed
//! (values lose trailing whitespace), a severity holding `=` (a `=` before
//! the closing `|` means the extension began early). Keys are any non-empty
//! text without space, `=` or `\`.

use std::collections::BTreeMap;

use auditsink_parser::cef::parse_record;
use auditsink_parser::{parse_borrowed, parse_line, Format, ParseOptions};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// An event before encoding: what the line means.
#[derive(Debug, Clone)]
struct CefEvent {
    prefix: &'static str,
    version: u8,
    header: [String; 5],
    severity: String,
    leading_spaces: usize,
    extension: Vec<(String, String)>,
}

fn escape_header(text: &str) -> String {
    text.replace('\\', r"\\").replace('|', r"\|")
}

fn escape_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '=' => out.push_str(r"\="),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            other => out.push(other),
        }
    }
    out
}

/// The encoder under which every event must read back.
fn render(event: &CefEvent) -> String {
    let mut line = format!("{}CEF:{}|", event.prefix, event.version);
    for field in &event.header {
        line.push_str(&escape_header(field));
        line.push('|');
    }
    line.push_str(&escape_header(&event.severity));
    line.push('|');
    line.push_str(&" ".repeat(event.leading_spaces));
    for (i, (key, value)) in event.extension.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(key);
        line.push('=');
        line.push_str(&escape_value(value));
    }
    line
}

/// Any text without surrounding spaces or tabs.
fn header_text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.trim_matches([' ', '\t']).to_owned())
}

/// Any text, including spaces, tabs, pipes, `=`, backslashes, newlines and
/// CRs, without trailing space, tab, vertical tab or form feed.
fn value_text() -> impl Strategy<Value = String> {
    let tricky = prop_oneof![
        Just(" ".to_owned()),
        Just("|".to_owned()),
        Just("=".to_owned()),
        Just("\\".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\t".to_owned()),
        Just(" k=v".to_owned()),
        Just("\\|".to_owned()),
        Just("a=b&c=d".to_owned()),
        Just(" x.y".to_owned()),
        "\\PC{0,4}",
    ];
    vec(tricky, 0..6).prop_map(|parts| {
        parts
            .concat()
            .trim_end_matches([' ', '\t', '\x0b', '\x0c'])
            .to_owned()
    })
}

fn key_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z][a-zA-Z0-9_.\\[\\],-]{0,12}", "[^ =\\\\]{1,8}",]
}

fn cef_event() -> impl Strategy<Value = CefEvent> {
    (
        prop_oneof![
            Just(""),
            Just("Apr 14 05:39:08 konghq.com "),
            Just("2023-05-19T00:03:39Z host "),
            Just("<134>"),
        ],
        0u8..2,
        [
            header_text(),
            header_text(),
            header_text(),
            header_text(),
            header_text(),
        ],
        "[0-9a-zA-Z-]{0,10}",
        0usize..3,
        vec((key_text(), value_text()), 0..10),
    )
        .prop_map(
            |(prefix, version, header, severity, leading_spaces, extension)| CefEvent {
                prefix,
                version,
                header,
                severity,
                leading_spaces,
                extension,
            },
        )
}

/// Keys that parse_line types (or takes out of `fields`).
const TYPED_KEYS: &[&str] = &[
    "rt",
    "status",
    "trace_id",
    "granted",
    "success",
    "kong_initiated",
    "sig",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn encoded_events_read_back(event in cef_event()) {
        let line = render(&event);
        let record = parse_record(&line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
        prop_assert_eq!(record.version, event.version.to_string());
        let header = [
            &record.vendor,
            &record.product,
            &record.device_version,
            &record.signature_id,
            &record.name,
        ];
        for (read, meant) in header.iter().zip(&event.header) {
            prop_assert_eq!(&***read, meant.as_str(), "{:?}", line);
        }
        prop_assert_eq!(record.severity.as_deref(), Some(event.severity.as_str()));
        let pairs: Vec<(&str, &str)> = record.extensions.iter().map(|(k, v)| (*k, &**v)).collect();
        let meant: Vec<(&str, &str)> =
            event.extension.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(pairs, meant, "{:?}", line);
        prop_assert!(record.warnings.is_empty(), "{:?}: {:?}", line, record.warnings);

        // The normalized event: the same values (the last of a repeated key).
        let event_read = parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef))
            .map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
        let last: BTreeMap<&str, &str> =
            event.extension.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (key, value) in last {
            if TYPED_KEYS.contains(&key) {
                continue;
            }
            prop_assert_eq!(&event_read.fields[key], &Value::String(value.to_owned()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        exercise(&bytes)?;
    }

    #[test]
    fn token_jumbles_never_panic(parts in vec(prop_oneof![
        Just("CEF:0|".to_owned()), Just("|".to_owned()), Just("\\".to_owned()),
        Just("=".to_owned()), Just(" ".to_owned()), Just("\\|".to_owned()),
        Just("\\=".to_owned()), Just(" sig=".to_owned()), Just(" rt=".to_owned()),
        Just("{".to_owned()), Just("}".to_owned()), Just("\"".to_owned()),
        Just(":".to_owned()), Just(",".to_owned()), Just("\"sig\":".to_owned()),
        Just("\r".to_owned()), Just("\n".to_owned()), Just("Apr 14 05:39:08 ".to_owned()),
        Just("<134>1 ".to_owned()), "[a-z0-9é😀]{1,3}",
    ], 0..40)) {
        exercise(parts.concat().as_bytes())?;
    }
}

/// Every entry point on `bytes`; the owned and borrowed events render alike,
/// through serde and through `write_json`.
fn exercise(bytes: &[u8]) -> Result<(), TestCaseError> {
    for format in [Format::Auto, Format::Cef, Format::Json] {
        let options = ParseOptions {
            format,
            year_hint: 2024,
        };
        match (parse_line(bytes, &options), parse_borrowed(bytes, &options)) {
            (Ok(owned), Ok(borrowed)) => {
                let expected = serde_json::to_string(&owned).unwrap();
                prop_assert_eq!(&expected, &serde_json::to_string(&borrowed).unwrap());
                let mut written = Vec::new();
                borrowed.write_json(&mut written).unwrap();
                prop_assert_eq!(&expected, &String::from_utf8(written).unwrap());
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = parse_record(text);
    }
    for format in [
        auditsink_parser::LineFormat::Cef,
        auditsink_parser::LineFormat::Json,
    ] {
        let _ = auditsink_parser::signature::signed_payload(bytes, format);
    }
    Ok(())
}
