//! `parse_borrowed`: the same event as `parse_line`, as a view into the line.
//! Its JSON rendering must be byte for byte the owned event's, on every
//! line the other tests use and on the corpus.

use std::borrow::Cow;
use std::path::PathBuf;

use auditsink_parser::{
    lines, parse_borrowed, parse_line, FieldValue, Format, LineFormat, ParseOptions,
};

fn corpus_lines() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    let mut all = Vec::new();
    for name in [
        "konnect-sample.cef",
        "konnect-sample.jsonl",
        "third-party/elastic-beats-cef-samples.log",
    ] {
        match std::fs::read(dir.join(name)) {
            Ok(body) => all.extend(lines(&body).map(<[u8]>::to_vec)),
            Err(_) => eprintln!("skipping {name}: corpus not found"),
        }
    }
    all
}

const LINES: &[&str] = &[
    "Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 granted=true trace_id=3895213347334635099 sig=abc",
    "<165>1 2023-05-19T02:03:39.123+02:00 host app 1 ID - CEF:1|V\\|x|P\\\\|1|c|n|very-high|a=x\\=y\\\\z\\n b= c=\\| d=é€😀 e=",
    "CEF:0|V|P|1|c|n|rt=1 cs6=a | b",
    "CEF:0|V|P|1|c|n|7 rt=1",
    "CEF:0|V|P|1|c|n|5|a=1 a=2 sig=x sig=y rt=007 status=000 rt=99999999999999999999999",
    "CEF:0|V|P|1|c|n|-3|granted=false success=maybe kong_initiated=true",
    "CEF:99|V|P|1|c|n|5|",
    r#"{"cef_version":"0","event_ts":"2023-04-28T20:52:09Z","rt":"1682715129807","severity":1,"trace_id":18446744073709551615,"granted":true,"sig":"x"}"#,
    r#"{"a":[1,{"b":null}],"c":"\u00e9\n","k\u00e9y":2.50,"name":{"x":1},"event_version":1.0,"severity":"Very-High"}"#,
    r#"{"a":1,"a":2,"rt":1e3,"status":"204","cef_version":"x"}"#,
    r#"{"a":1,}"#,
    "[1,2]",
    "not an event",
    "",
    // Everything a JSON string escapes, in header fields, keys and values.
    "CEF:0|V\"q\"|P\u{1}|1|c|n \u{7f}|5|k\"ey=\"v\" ctl=\u{0}\u{8}\u{c}\u{1b}\u{1f} tab=a\tb back=\\\\ nl=\\n\\r sig=\"s\"",
    "<13>1 - - - - - CEF:0|V|P|1|c|n|1|a=1",
    "Apr 14 05:39:08 CEF:0|V|P|1|c|n|1|a=1",
    "garbage CEF:0|V|P|1|c|n",
    r#"{"event_vendor":["x"],"event_product":{"y":1},"cef_version":1.5,"k\"\u0001":"\u001f\"\\","sig":null,"n":-0.0,"big":123456789012345678901234567890}"#,
];

fn options() -> [ParseOptions; 3] {
    [Format::Auto, Format::Cef, Format::Json].map(|format| ParseOptions {
        format,
        year_hint: 2024,
    })
}

#[test]
fn renders_exactly_like_the_owned_event() {
    let mut all: Vec<Vec<u8>> = LINES.iter().map(|l| l.as_bytes().to_vec()).collect();
    all.extend(corpus_lines());
    // A line with more keys than the small-line duplicate check handles.
    let many: Vec<String> = (0..100).map(|i| format!("k{}={i}", i % 40)).collect();
    all.push(format!("CEF:0|V|P|1|c|n|5|{}", many.join(" ")).into_bytes());
    for line in &all {
        for options in options() {
            let owned = parse_line(line, &options);
            let borrowed = parse_borrowed(line, &options);
            match (owned, borrowed) {
                (Ok(owned), Ok(borrowed)) => {
                    let expected = serde_json::to_string(&owned).unwrap();
                    assert_eq!(
                        serde_json::to_string(&borrowed).unwrap(),
                        expected,
                        "{}",
                        String::from_utf8_lossy(line)
                    );
                    // What `auditsink parse` writes: the same bytes.
                    let mut written = b"left alone".to_vec();
                    borrowed.write_json(&mut written).unwrap();
                    assert_eq!(
                        std::str::from_utf8(&written[10..]).unwrap(),
                        expected,
                        "{}",
                        String::from_utf8_lossy(line)
                    );
                    assert_eq!(borrowed.into_owned(), owned);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} vs {b:?}"),
            }
        }
    }
}

#[test]
fn konnect_cef_lines_borrow_everything() {
    let lines = corpus_lines();
    let cef = lines.iter().filter(|l| !l.starts_with(b"{"));
    let options = ParseOptions::new(Format::Cef);
    for line in cef {
        let event = parse_borrowed(line, &options).unwrap();
        if event.raw.contains('\\') {
            continue; // an escape has to be replaced: that value is a copy
        }
        for (key, value) in &event.fields {
            assert!(matches!(key, Cow::Borrowed(_)), "{key}");
            assert!(
                !matches!(value, FieldValue::Text(Cow::Owned(_)) | FieldValue::Json(_)),
                "{key}: {value:?}"
            );
        }
        for header in [&event.vendor, &event.product, &event.name, &event.sig] {
            assert!(matches!(header, Some(Cow::Borrowed(_)) | None));
        }
    }
}

#[test]
fn typed_values() {
    let line = b"CEF:0|V|P|1|c|n|5|rt=0001681450748406 status=204 granted=true trace_id=3895213347334635099 x=y";
    let event = parse_borrowed(line, &ParseOptions::new(Format::Cef)).unwrap();
    assert_eq!(event.format, LineFormat::Cef);
    assert_eq!(
        event.field("rt"),
        Some(&FieldValue::Digits("1681450748406"))
    );
    assert_eq!(event.field("status"), Some(&FieldValue::Digits("204")));
    assert_eq!(event.field("granted"), Some(&FieldValue::Bool(true)));
    assert_eq!(
        event.field("trace_id").and_then(FieldValue::as_str),
        Some("3895213347334635099")
    );
    assert_eq!(event.severity, FieldValue::Int(5));
    assert_eq!(
        event.timestamp.map(|t| t.to_string()).as_deref(),
        Some("2023-04-14T05:39:08.406Z")
    );
    assert_eq!(event.field("missing"), None);
}
