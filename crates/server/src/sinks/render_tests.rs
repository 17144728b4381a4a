//! The sinks render from the stored record ([`ForwardEvent`]) what they
//! rendered from the owned event before: these tests keep the former
//! renderings (from `StoredEvent::to_json()`, `serde_json::Value`) and
//! compare them byte for byte on every corpus line and on edge cases,
//! through a real store.

use std::path::PathBuf;

use auditsink_parser::{parse_line, Format, LineFormat, ParseOptions};
use auditsink_storage::{Batch, ForwardEvent, Store, StoredEvent};
use serde_json::Value;

use super::elasticsearch::{index_name, Elasticsearch};
use super::splunk_hec::SplunkHec;
use super::syslog::Syslog;

/// The former event time: `timestamp` parsed as RFC 3339, else received.
fn old_time_ms(event: &StoredEvent) -> i64 {
    event
        .event
        .timestamp
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(event.received_at_ms)
}

fn old_syslog(event: &StoredEvent, hostname: &str, json: bool) -> Vec<u8> {
    let msgid = match event.event.format {
        LineFormat::Cef => "cef",
        LineFormat::Json => "json",
    };
    let mut message = format!(
        "<110>1 {} {} auditsink - {msgid} - ",
        auditsink_storage::format_ms(old_time_ms(event)),
        hostname
    )
    .into_bytes();
    if json {
        message.extend_from_slice(event.to_json().to_string().as_bytes());
    } else {
        message.extend_from_slice(event.event.raw.as_bytes());
    }
    let mut out = message.len().to_string().into_bytes();
    out.push(b' ');
    out.extend_from_slice(&message);
    out
}

fn old_hec(event: &StoredEvent, host: &str, index: Option<&str>) -> Vec<u8> {
    let ms = old_time_ms(event);
    let sourcetype = match event.event.format {
        LineFormat::Cef => "konnect:audit:cef",
        LineFormat::Json => "konnect:audit:json",
    };
    let mut object = serde_json::Map::new();
    let time = format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    object.insert(
        "time".into(),
        time.parse::<serde_json::Number>()
            .map(Value::Number)
            .unwrap_or(Value::Null),
    );
    object.insert("host".into(), Value::String(host.to_owned()));
    object.insert("source".into(), Value::String(event.source.clone()));
    object.insert("sourcetype".into(), Value::String(sourcetype.to_owned()));
    if let Some(index) = index {
        object.insert("index".into(), Value::String(index.to_owned()));
    }
    object.insert("event".into(), event.to_json());
    let mut out = Value::Object(object).to_string().into_bytes();
    out.push(b'\n');
    out
}

fn old_es(event: &StoredEvent, pattern: &str) -> Vec<u8> {
    let action = serde_json::json!({"create": {
        "_index": index_name(pattern, old_time_ms(event)),
        "_id": event.identity(),
    }});
    let mut body = action.to_string().into_bytes();
    body.push(b'\n');
    body.extend_from_slice(event.to_json().to_string().as_bytes());
    body.push(b'\n');
    body
}

fn config(sink: &str) -> super::config::SinkConfig {
    let config = crate::Config::from_toml(sink).unwrap();
    config.sinks.into_iter().next().unwrap()
}

/// Lines whose rendering takes the less common paths.
const EDGE_CASES: &[&str] = &[
    // Escapes in header, keys, values; a quote and a backslash; a tab.
    r#"CEF:0|Kong\|Inc|Kon"nect|1.0|id|na\\me "q"|3|k=a\=b c=line\nbreak d=tab	here e=é"#,
    // A syslog prefix (origin time and host), no rt: the receive time.
    "<134>Dec 31 23:59:58 host-1 CEF:0|Kong|Konnect|1|a|b|1|src=10.0.0.1",
    // Severity as text, empty values, a number-like string with zeros.
    "CEF:0|Kong|Konnect|1|a|b|High|rt=1764100000123 status=007 empty= x=y",
    // rt out of range for a timestamp.
    "CEF:0|Kong|Konnect|1|a|b|1|rt=999999999999999999999",
    // Control characters in the raw line.
    "CEF:0|Kong|Konnect|1|a|b|1|msg=bell\u{7}esc\u{1b} rt=1764100000123",
    // JSON: nested values, big and fractional numbers, null, booleans.
    r#"{"rt":1764100000123,"name":"n","severity":5,"nested":{"a":[1,2.50,{"b":null}]},"big":123456789012345678901234567890,"neg":-12,"f":1e400,"t":true,"s":"q\"\\\u0001"}"#,
    // JSON: a timestamp that is not the canonical rendering (an offset),
    // and one before 1970.
    r#"{"timestamp":"2026-01-01T10:00:00.5+02:00","name":"offset"}"#,
    r#"{"timestamp":"1969-12-31T23:59:59.999Z","name":"old"}"#,
    r#"{"event_ts":"2026-01-01T00:00:00Z","severity":"7","name":"s"}"#,
    // Duplicate keys (the last value, first place).
    r#"{"a":1,"b":2,"a":"three"}"#,
];

fn lines() -> Vec<String> {
    let mut lines: Vec<String> = EDGE_CASES.iter().map(|l| l.to_string()).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    let mut found = 0;
    for name in [
        "konnect-sample.cef",
        "konnect-sample.jsonl",
        "third-party/elastic-beats-cef-samples.log",
    ] {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => {
                found += 1;
                lines.extend(
                    text.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(String::from),
                );
            }
            Err(e) => {
                eprintln!("corpus file {name} not read ({e}): compared on the edge cases only")
            }
        }
    }
    if found == 0 {
        eprintln!(
            "no corpus at {}: only the edge cases are compared",
            dir.display()
        );
    }
    lines
}

#[test]
fn rendering_from_the_record_is_the_former_rendering() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut events = Vec::new();
    for line in lines() {
        if let Ok(event) = parse_line(line.as_bytes(), &ParseOptions::new(Format::Auto)) {
            events.push(event);
        }
    }
    assert!(events.len() >= EDGE_CASES.len() - 1, "edge cases parse");
    // Two sources, one with characters JSON escapes; a receive time before
    // 1970 for the events without a time of their own.
    for (source, received_at_ms) in [("konnect", 1_800_000_000_123), ("odd \"src\"\\", -1_500)] {
        store
            .append_blocking(Batch {
                source: source.into(),
                received_at_ms,
                events: events.clone(),
                quarantine: Vec::new(),
            })
            .unwrap();
        // Same lines again: duplicates, so the second source needs others.
        events.iter_mut().for_each(|e| e.raw.push(' '));
    }
    let stored: Vec<StoredEvent> = store.events(None).map(Result::unwrap).collect();
    let forward: Vec<ForwardEvent> = store
        .forward_events(0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), forward.len());
    assert!(stored.len() > EDGE_CASES.len());

    let raw = Syslog::new(&config(
        "[[sink]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"127.0.0.1:601\"\nhost = \"h\"\n",
    ))
    .unwrap();
    let json = Syslog::new(&config(
        "[[sink]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"127.0.0.1:601\"\nhost = \"h\"\npayload = \"json\"\n",
    ))
    .unwrap();
    let hec = SplunkHec::new(&config(
        "[[sink]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nhost = \"h\\\"1\"\n",
    ))
    .unwrap();
    let hec_index = SplunkHec::new(&config(
        "[[sink]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nhost = \"h\"\nindex = \"main\"\n",
    ))
    .unwrap();
    let es = Elasticsearch::new(&config(
        "[[sink]]\nname = \"e\"\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:1\"\nindex = \"audit-%Y.%m.%d\"\n",
    ))
    .unwrap();

    let mut syslog_frames = Vec::new();
    for (old, new) in stored.iter().zip(&forward) {
        assert_eq!(old.id, new.id);
        assert_eq!(old.source, new.source());
        assert_eq!(old.event.raw, new.raw());
        assert_eq!(old.event.format, new.format());
        assert_eq!(old_time_ms(old), new.event_time_ms(), "{}", old.event.raw);
        assert_eq!(old.identity(), new.identity().unwrap());
        let mut out = Vec::new();
        new.write_json(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            old.to_json().to_string(),
            "{}",
            old.event.raw
        );

        let mut out = Vec::new();
        raw.frame(new, &mut out).unwrap();
        assert_eq!(out, old_syslog(old, "h", false), "{}", old.event.raw);
        syslog_frames.extend_from_slice(&out);
        let mut out = Vec::new();
        json.frame(new, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(old_syslog(old, "h", true)).unwrap()
        );
        let mut out = Vec::new();
        hec.object(new, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(old_hec(old, "h\"1", None)).unwrap()
        );
        let mut out = Vec::new();
        hec_index.object(new, &mut out).unwrap();
        assert_eq!(out, old_hec(old, "h", Some("main")));
    }
    // A batch's frames and body are the events' one after the other.
    let mut batch = Vec::new();
    for event in &forward {
        raw.frame(event, &mut batch).unwrap();
    }
    assert_eq!(batch, syslog_frames);
    let old_body: Vec<u8> = stored
        .iter()
        .flat_map(|e| old_es(e, "audit-%Y.%m.%d"))
        .collect();
    assert_eq!(
        String::from_utf8(es.body(&forward).unwrap()).unwrap(),
        String::from_utf8(old_body).unwrap()
    );

    // One event by id reads the same as in the scan.
    let last = forward.last().unwrap();
    let again = store.forward_event(last.id).unwrap().unwrap();
    assert_eq!(again.raw(), last.raw());
    assert!(store.forward_event(last.id + 1000).unwrap().is_none());
}
