//! How the input's lines parse: clean, lenient (by warning kind) or failed
//! (by reason). Counted once per input line, before and apart from the timed
//! run, so that classifying costs the timing nothing.

use std::collections::BTreeMap;

use auditsink_parser::{parse_borrowed, ParseError, ParseOptions};
use serde::Serialize;

/// At most this many distinct warning kinds or failure reasons are kept
/// apart; the rest are counted under [`OTHER`] (the texts come from the
/// input, and the report's size must not).
const MAX_KINDS: usize = 64;
const OTHER: &str = "(other)";

/// The outcome of each input line.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Lines read as events without a warning.
    pub clean: u64,
    /// Lines read as events with at least one warning.
    pub lenient: u64,
    /// Lines that are not events (quarantined by the receiver).
    pub failed: u64,
    /// Warnings of the lenient lines, by kind (a line may have several).
    pub warnings_by_kind: BTreeMap<String, u64>,
    /// Failed lines by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
}

/// Parses each line once and counts what came of it.
pub fn count(lines: &[&[u8]], options: &ParseOptions) -> Counts {
    let mut counts = Counts::default();
    for line in lines {
        match parse_borrowed(line, options) {
            Ok(event) if event.warnings.is_empty() => counts.clean += 1,
            Ok(event) => {
                counts.lenient += 1;
                for warning in &event.warnings {
                    add(&mut counts.warnings_by_kind, warning_kind(warning));
                }
            }
            Err(error) => {
                counts.failed += 1;
                add(&mut counts.failed_by_reason, failure_reason(&error));
            }
        }
    }
    counts
}

fn add(counts: &mut BTreeMap<String, u64>, kind: String) {
    if counts.len() < MAX_KINDS || counts.contains_key(&kind) {
        *counts.entry(kind).or_default() += 1;
    } else {
        *counts.entry(OTHER.to_owned()).or_default() += 1;
    }
}

/// A warning without what is particular to the line (a key name, a value).
fn warning_kind(warning: &str) -> String {
    if warning.starts_with("duplicate extension key ") {
        "duplicate extension key (the last value is kept)".to_owned()
    } else if warning.starts_with("cef_version ")
        && warning.ends_with(" is not an integer; ignored")
    {
        "cef_version is not an integer; ignored".to_owned()
    } else {
        warning.to_owned()
    }
}

/// A parse error without its position: the reason lines share.
fn failure_reason(error: &ParseError) -> String {
    match error {
        ParseError::InvalidUtf8 { .. } => "invalid UTF-8".to_owned(),
        ParseError::Empty => "empty line".to_owned(),
        ParseError::Cef { reason, .. } => format!("CEF: {reason}"),
        ParseError::Json { reason } => {
            // serde_json's messages end with " at line L column C".
            let reason = match reason.rfind(" at line ") {
                Some(at) => &reason[..at],
                None => reason,
            };
            format!("JSON: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditsink_parser::Format;

    #[test]
    fn kinds_drop_what_is_particular_to_the_line() {
        let options = ParseOptions::new(Format::Auto);
        let lines: Vec<&[u8]> = vec![
            b"CEF:0|KongInc|Konnect|1.0|konnect|n|1|a=1 a=2",
            b"CEF:0|KongInc|Konnect|1.0|konnect|n|1|b=1 b=2",
            b"CEF:0|KongInc|Konnect|1.0|konnect|n|1|rt=1",
            b"{\"a\":1,}",
            b"{\"b\":[1,,]}",
            b"not CEF",
            b"\xff\xfe",
        ];
        let counts = count(&lines, &options);
        assert_eq!((counts.clean, counts.lenient, counts.failed), (1, 2, 4));
        assert_eq!(
            counts
                .warnings_by_kind
                .values()
                .copied()
                .collect::<Vec<_>>(),
            [2],
            "{:?}",
            counts.warnings_by_kind
        );
        assert_eq!(counts.failed_by_reason.values().sum::<u64>(), 4);
        assert!(counts
            .failed_by_reason
            .keys()
            .all(|reason| !reason.contains(" at line ") && !reason.contains(" at byte ")));
    }

    #[test]
    fn distinct_kinds_are_bounded() {
        let mut kinds = BTreeMap::new();
        for i in 0..1000 {
            add(&mut kinds, format!("kind {i}"));
        }
        assert_eq!(kinds.len(), MAX_KINDS + 1);
        assert_eq!(kinds.values().sum::<u64>(), 1000);
        assert_eq!(kinds[OTHER], 1000 - MAX_KINDS as u64);
    }
}
