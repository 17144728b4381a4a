//! What both targets check on any input.

use auditsink_parser::signature::signed_payload;
use auditsink_parser::{parse_borrowed, parse_line, Format, LineFormat, ParseOptions};

/// Parses `data` with `format` through both entry points and checks that
/// they agree, that an event's `raw` is the line, and that signature
/// payload extraction does not panic and only ever removes bytes.
pub fn check(data: &[u8], format: Format, line_format: LineFormat) {
    let options = ParseOptions {
        format,
        year_hint: 2024,
    };
    let owned = parse_line(data, &options);
    let borrowed = parse_borrowed(data, &options);
    match (&owned, borrowed) {
        (Ok(owned), Ok(borrowed)) => {
            let line = data.strip_suffix(b"\n").unwrap_or(data);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert_eq!(owned.raw.as_bytes(), line);
            let a = serde_json::to_string(owned).expect("an event renders");
            let b = serde_json::to_string(&borrowed).expect("an event renders");
            assert_eq!(a, b, "borrowed and owned renderings differ");
            // The rendering is valid JSON that reads back as the same event.
            let back: auditsink_parser::Event = serde_json::from_str(&a).expect("reads back");
            assert_eq!(&back, owned);
        }
        (Err(a), Err(b)) => assert_eq!(a, &b),
        (a, b) => panic!("parse_line {a:?} but parse_borrowed {b:?}"),
    }
    if let Some(signed) = signed_payload(data, line_format) {
        assert!(signed.payload.len() < data.len());
    }
}
