//! The shared corpus: Konnect's CEF and JSON deliveries of the same 60
//! events must normalize identically, and every Elastic Beats CEF sample
//! must parse.

use std::path::PathBuf;

use auditsink_parser::{lines, parse_line, Event, Format, ParseOptions};
use serde_json::{json, Value};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipping: shared corpus not found at {}", dir.display());
        None
    }
}

fn parse_file(path: PathBuf) -> Vec<Event> {
    let body = std::fs::read(&path).unwrap();
    lines(&body)
        .enumerate()
        .map(|(i, line)| {
            parse_line(line, &ParseOptions::new(Format::Auto))
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

#[test]
fn konnect_cef_and_json_normalize_identically() {
    let Some(dir) = corpus_dir() else { return };
    let cef = parse_file(dir.join("konnect-sample.cef"));
    let json = parse_file(dir.join("konnect-sample.jsonl"));
    assert_eq!(cef.len(), 60);
    assert_eq!(json.len(), 60);

    for (i, (c, j)) in cef.iter().zip(&json).enumerate() {
        let at = format!("event {}", i + 1);
        assert!(c.timestamp.is_some(), "{at}");
        assert_eq!(c.timestamp, j.timestamp, "{at}: timestamp");
        assert_eq!(c.cef_version, j.cef_version, "{at}: cef_version");
        assert_eq!(c.vendor, j.vendor, "{at}: vendor");
        assert_eq!(c.product, j.product, "{at}: product");
        assert_eq!(
            c.product_version, j.product_version,
            "{at}: product_version"
        );
        assert_eq!(c.event_class_id, j.event_class_id, "{at}: event_class_id");
        assert_eq!(c.name, j.name, "{at}: name");
        assert_eq!(c.severity, j.severity, "{at}: severity");
        // As maps: key order may differ between the formats.
        assert_eq!(sorted(&c.fields), sorted(&j.fields), "{at}: fields");
        assert!(c.sig.is_some() && j.sig.is_some(), "{at}: sig");
        assert!(
            c.warnings.is_empty() && j.warnings.is_empty(),
            "{at}: warnings"
        );
        assert!(c
            .origin
            .as_ref()
            .is_some_and(|o| o.host.as_deref() == Some("konghq.com")));
    }
}

fn sorted(fields: &serde_json::Map<String, Value>) -> std::collections::BTreeMap<&str, &Value> {
    fields.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

#[test]
fn konnect_typing_on_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    for event in parse_file(dir.join("konnect-sample.cef"))
        .iter()
        .chain(&parse_file(dir.join("konnect-sample.jsonl")))
    {
        let f = &event.fields;
        assert!(f["rt"].is_u64(), "{}", event.raw);
        assert!(f["trace_id"]
            .as_str()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit())));
        assert!(f["kong_initiated"].is_boolean());
        for key in ["granted", "success"] {
            assert!(f.get(key).map_or(true, Value::is_boolean), "{key}");
        }
        assert!(f.get("status").map_or(true, Value::is_u64));
        assert!(!f.contains_key("sig"));
        assert!(event.severity.is_i64());
    }
}

#[test]
fn konnect_corpus_spot_checks() {
    let Some(dir) = corpus_dir() else { return };
    let cef = parse_file(dir.join("konnect-sample.cef"));
    let first = &cef[0];
    assert_eq!(first.timestamp.as_deref(), Some("2025-11-25T19:46:40.018Z"));
    let origin = first.origin.as_ref().unwrap();
    assert_eq!(origin.time.as_deref(), Some("2025-11-25T19:46:40Z"));
    assert_eq!(first.fields["trace_id"], "5820897414700404846");
    assert_eq!(
        first.fields["user_agent"],
        "grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)"
    );
    assert_eq!(first.fields["query"], "{}");
    // `\=` in a Konnect value.
    let escaped = cef
        .iter()
        .find(|e| e.raw.contains(r"query=filter[name]\=prod"))
        .unwrap();
    assert_eq!(escaped.fields["query"], "filter[name]=prod&page[size]=10");
    let with_json = cef
        .iter()
        .find(|e| e.raw.contains("query={\"end\""))
        .unwrap();
    assert_eq!(
        with_json.fields["query"],
        r#"{"end":"1684270800","start":"1684098000"}"#
    );
}

#[test]
fn elastic_beats_samples_all_parse() {
    let Some(dir) = corpus_dir() else { return };
    let events = parse_file(dir.join("third-party/elastic-beats-cef-samples.log"));
    assert_eq!(events.len(), 15);
    for event in &events {
        assert!(
            event.warnings.is_empty(),
            "{}: {:?}",
            event.raw,
            event.warnings
        );
    }

    let field = |needle: &str, key: &str| -> Value {
        let event = events
            .iter()
            .find(|e| e.raw.contains(needle))
            .unwrap_or_else(|| panic!("no sample contains {needle:?}"));
        event
            .fields
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing from {:?}", event.fields))
    };
    assert_eq!(
        field("eicar.exe", "filePath"),
        r"C:\Users\trend\Desktop\eicar.exe"
    );
    assert_eq!(field("message.dll", "filePath"), r"c:\windows\message.dll");
    assert_eq!(
        field("abc\\=def", "request"),
        "http://vpx247.example.net/FFC/login_post.html?abc=def"
    );
    assert_eq!(
        field("eicar.exe", "cs6"),
        "ContainerImageName | ContainerName | ContainerID"
    );
    assert_eq!(field("threatmanager", "ad.field[0]"), "field0");
    assert_eq!(field("threatmanager", "ad.Error_,Code"), "3221225578");
    assert_eq!(field("threatmanager", "ad.foo.name[1]"), "new_name");
    assert_eq!(
        field("threatmanager", "additional.dotfieldName"),
        "new_value"
    );
    assert_eq!(field("Vaporware", "rawEvent"), r#"{"x": "y"}"#);
    assert_eq!(
        field("Deep Security Manager", "msg"),
        "User signed in from 2001:db8::5"
    );
    assert_eq!(
        field("cn1=652", "msg"),
        " Transformed (xout) potential credit card numbers seen in server response"
    );
    assert_eq!(field("Log for TCP Port 80", "cs2"), "0x00 ACK PSH");
    assert_eq!(
        field("Log for TCP Port 80", "TrendMicroDsPacketData"),
        "AFB"
    );
    assert_eq!(field("3002795", "duser"), "(no user)");
    assert_eq!(field("APPFW_SIGNATURE_MATCH", "act"), "not blocked");

    let vaporware = events.iter().find(|e| e.raw.contains("Vaporware")).unwrap();
    assert_eq!(vaporware.severity, json!("very-high"));
    assert_eq!(vaporware.product_version.as_deref(), Some("1.0.0-alpha"));
    let trend = events
        .iter()
        .find(|e| e.raw.contains("Deep Security Manager"))
        .unwrap();
    assert_eq!(trend.vendor.as_deref(), Some("Trend Micro"));
    assert_eq!(trend.severity, json!(3));
}

/// No pair is lost or merged: the number of extension pairs per sample line,
/// as counted by an independent regular expression over the same grammar
/// (and as in Elastic's golden output for these lines).
#[test]
fn elastic_beats_sample_field_counts() {
    let Some(dir) = corpus_dir() else { return };
    let events = parse_file(dir.join("third-party/elastic-beats-cef-samples.log"));
    let expected = [7, 4, 17, 19, 19, 7, 25, 10, 5, 13, 13, 13, 13, 13, 9];
    let counts: Vec<usize> = events.iter().map(|e| e.fields.len()).collect();
    assert_eq!(counts, expected);
}
