//! `parse_line`: format detection, errors, the normalized event of both
//! formats and the Konnect typing rules.

use auditsink_parser::{
    parse_line, Event, Format, LineFormat, ParseError, ParseOptions, SignatureStatus,
};
use serde_json::{json, Value};

fn parse(line: &str) -> Event {
    parse_line(line.as_bytes(), &ParseOptions::new(Format::Auto))
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn parse_err(line: &[u8]) -> ParseError {
    match parse_line(line, &ParseOptions::new(Format::Auto)) {
        Err(e) => e,
        Ok(event) => panic!("expected an error, got {event:?}"),
    }
}

fn json_reason(line: &str) -> String {
    match parse_err(line.as_bytes()) {
        ParseError::Json { reason } => reason,
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

const KONNECT_CEF: &str = "Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 action=retrieve granted=true org_id=b065b594-6afc-4658-9101-5d9cf3f36b7b principal_id=87655c36-8d63-48fe-9a1e-53b28dfbc19b trace_id=3895213347334635099 user_agent=grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges) sig=fnjOUISTC2uLWTqCcmwUuOWa_daa4vEPxxUn2-QPVU1dmB-Ed2y2mwoB9dq94JJz2tF6Ok41Bci4FGwk4FhxAg";

#[test]
fn schema_example_renders_as_documented() {
    let event = parse(KONNECT_CEF);
    let expected = json!({
        "format": "cef",
        "timestamp": "2023-04-14T05:39:08.406Z",
        "cef_version": 0,
        "vendor": "KongInc",
        "product": "Konnect",
        "product_version": "1.0",
        "event_class_id": "konnect",
        "name": "Authz.usage",
        "severity": 1,
        "fields": {
            "rt": 1681450748406u64,
            "src": "127.0.0.6",
            "action": "retrieve",
            "granted": true,
            "org_id": "b065b594-6afc-4658-9101-5d9cf3f36b7b",
            "principal_id": "87655c36-8d63-48fe-9a1e-53b28dfbc19b",
            "trace_id": "3895213347334635099",
            "user_agent": "grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)"
        },
        "origin": { "time": "Apr 14 05:39:08", "host": "konghq.com" },
        "sig": "fnjOUISTC2uLWTqCcmwUuOWa_daa4vEPxxUn2-QPVU1dmB-Ed2y2mwoB9dq94JJz2tF6Ok41Bci4FGwk4FhxAg",
        "signature": "unverified",
        "raw": KONNECT_CEF,
    });
    assert_eq!(serde_json::to_value(&event).unwrap(), expected);
    // Field order is line order.
    let keys: Vec<_> = event.fields.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "rt",
            "src",
            "action",
            "granted",
            "org_id",
            "principal_id",
            "trace_id",
            "user_agent"
        ]
    );
    // And the rendering's key order is the schema's.
    let rendered = serde_json::to_string(&event).unwrap();
    assert!(rendered
        .starts_with(r#"{"format":"cef","timestamp":"2023-04-14T05:39:08.406Z","cef_version":0,"#));
    assert!(!rendered.contains("warnings"));
}

#[test]
fn konnect_json_example() {
    let line = r#"{"action":"read","cef_version":"0","event_class_id":"identity","event_product":"Konnect","event_ts":"2023-04-28T20:52:09Z","event_vendor":"KongInc","event_version":"1.0","granted":true,"name":"Authz.identity-provider","org_id":"o","principal_id":"p","rt":1682715129807,"severity":1,"src":"127.0.0.6","trace_id":3895213347334635099,"user_agent":"grpc-go/1.54.0","sig":"Jm73"}"#;
    let event = parse(line);
    assert_eq!(event.format, LineFormat::Json);
    assert_eq!(event.timestamp.as_deref(), Some("2023-04-28T20:52:09.807Z"));
    assert_eq!(event.cef_version, Some(0));
    assert_eq!(event.vendor.as_deref(), Some("KongInc"));
    assert_eq!(event.product.as_deref(), Some("Konnect"));
    assert_eq!(event.product_version.as_deref(), Some("1.0"));
    assert_eq!(event.event_class_id.as_deref(), Some("identity"));
    assert_eq!(event.name.as_deref(), Some("Authz.identity-provider"));
    assert_eq!(event.severity, json!(1));
    assert_eq!(event.sig.as_deref(), Some("Jm73"));
    assert_eq!(event.signature, SignatureStatus::Unverified);
    let origin = event.origin.as_ref().unwrap();
    assert_eq!(origin.time.as_deref(), Some("2023-04-28T20:52:09Z"));
    assert_eq!(origin.host, None);
    assert_eq!(
        Value::Object(event.fields.clone()),
        json!({
            "action": "read", "granted": true, "org_id": "o", "principal_id": "p",
            "rt": 1682715129807u64, "src": "127.0.0.6",
            "trace_id": "3895213347334635099", "user_agent": "grpc-go/1.54.0"
        })
    );
    assert_eq!(event.raw, line);
}

// ------------------------------------------------------ detection, errors

#[test]
fn auto_detection() {
    assert_eq!(parse("  \t{\"a\":1}").format, LineFormat::Json);
    assert_eq!(parse("CEF:0|V|P|1|c|n|5|a=1").format, LineFormat::Cef);
    assert_eq!(
        parse("Apr 14 05:39:08 h CEF:0|V|P|1|c|n|5|a=1").format,
        LineFormat::Cef
    );
}

#[test]
fn forced_formats() {
    let cef = b"CEF:0|V|P|1|c|n|5|a=1";
    assert!(matches!(
        parse_line(cef, &ParseOptions::new(Format::Json)),
        Err(ParseError::Json { .. })
    ));
    let json = br#"{"a":1}"#;
    assert!(matches!(
        parse_line(json, &ParseOptions::new(Format::Cef)),
        Err(ParseError::Cef { .. })
    ));
    assert!(parse_line(json, &ParseOptions::new(Format::Json)).is_ok());
    assert!(parse_line(cef, &ParseOptions::new(Format::Cef)).is_ok());
}

#[test]
fn empty_and_blank_lines() {
    assert_eq!(parse_err(b""), ParseError::Empty);
    assert_eq!(parse_err(b" \t "), ParseError::Empty);
    assert_eq!(parse_err(b"\r"), ParseError::Empty);
    assert_eq!(parse_err(b"\r\n"), ParseError::Empty);
}

#[test]
fn invalid_utf8_is_quarantined() {
    let line = b"CEF:0|V|P|1|c|n|5|msg=caf\xe9 ok=1";
    assert_eq!(parse_err(line), ParseError::InvalidUtf8 { offset: 25 });
    assert_eq!(parse_err(line).to_string(), "invalid UTF-8 at byte 25");
    assert_eq!(
        parse_err(b"{\"a\":\"\xff\"}"),
        ParseError::InvalidUtf8 { offset: 6 }
    );
}

#[test]
fn text_without_cef_marker_is_not_guessed() {
    let error = parse_err(b"hello world a=b");
    assert_eq!(
        error.to_string(),
        "CEF: no CEF header (\"CEF:\" not found) at byte 0"
    );
}

#[test]
fn json_trailing_comma_is_an_error() {
    let reason = json_reason(r#"{"cef_version":0,"name":"x",}"#);
    assert!(
        reason.starts_with("trailing comma at line 1 column"),
        "{reason}"
    );
}

#[test]
fn json_non_objects_are_errors() {
    // `auto` reads only `{` lines as JSON (the schema's rule): an array line
    // is then not CEF either. Read as JSON, the reason names the shape.
    assert!(matches!(parse_err(b"[1,2,3]"), ParseError::Cef { .. }));
    assert_eq!(
        parse_line(b"[1,2,3]", &ParseOptions::new(Format::Json)).unwrap_err(),
        ParseError::Json {
            reason: "not a JSON object: found array".into()
        }
    );
    assert_eq!(
        parse_err(b"{\"a\":1} {\"b\":2}")
            .to_string()
            .split(" at ")
            .next(),
        Some("JSON: trailing characters")
    );
    assert_eq!(
        parse_line(b"42", &ParseOptions::new(Format::Json))
            .unwrap_err()
            .to_string(),
        "JSON: not a JSON object: found number"
    );
}

// ------------------------------------------------------- Konnect typing

#[test]
fn trace_id_above_2_pow_53_is_exact() {
    for digits in [
        "9007199254740993",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let event = parse(&format!(r#"{{"trace_id":{digits}}}"#));
        assert_eq!(event.fields["trace_id"], Value::String(digits.into()));
        let event = parse(&format!(r#"{{"trace_id":"{digits}"}}"#));
        assert_eq!(event.fields["trace_id"], Value::String(digits.into()));
        let event = parse(&format!("CEF:0|V|P|1|c|n|5|trace_id={digits}"));
        assert_eq!(event.fields["trace_id"], Value::String(digits.into()));
    }
}

#[test]
fn trace_id_that_is_not_an_integer_stays_as_given() {
    assert_eq!(
        parse(r#"{"trace_id":1.50}"#).fields["trace_id"].to_string(),
        "1.50"
    );
    assert!(parse(r#"{"trace_id":1e3}"#).fields["trace_id"].is_number());
    assert_eq!(parse(r#"{"trace_id":"abc"}"#).fields["trace_id"], "abc");
}

#[test]
fn rt_as_string_and_number() {
    let expected = Some("2023-04-14T05:39:08.406Z");
    for line in [
        r#"{"rt":1681450748406}"#,
        r#"{"rt":"1681450748406"}"#,
        "CEF:0|V|P|1|c|n|5|rt=1681450748406",
    ] {
        let event = parse(line);
        assert_eq!(event.fields["rt"], json!(1681450748406u64), "{line}");
        assert_eq!(event.timestamp.as_deref(), expected, "{line}");
    }
}

#[test]
fn rt_that_is_not_a_number_stays_a_string() {
    let event = parse("2025-05-19T00:03:39Z konghq.com CEF:0|ExampleOrg|Konnect|1.0|AUTHENTICATION_TYPE_PAT|AUTHENTICATION_OUTCOME_SUCCESS|0|rt=3958q3097698 src=127.0.0.1");
    assert_eq!(event.fields["rt"], "3958q3097698");
    // The timestamp falls back to the prefix time.
    assert_eq!(event.timestamp.as_deref(), Some("2025-05-19T00:03:39.000Z"));
}

#[test]
fn rt_out_of_range_falls_back() {
    let event = parse(r#"{"rt":"253402300800000","event_ts":"2023-04-28T20:52:09Z"}"#);
    assert_eq!(event.fields["rt"], json!(253402300800000u64));
    assert_eq!(event.timestamp.as_deref(), Some("2023-04-28T20:52:09.000Z"));
    let event = parse(r#"{"rt":-5}"#);
    assert_eq!(event.timestamp, None);
    let event = parse(r#"{"rt":99999999999999999999999}"#);
    assert_eq!(event.fields["rt"].to_string(), "99999999999999999999999");
    assert_eq!(event.timestamp, None);
}

#[test]
fn cef_version_string_and_number() {
    assert_eq!(parse(r#"{"cef_version":0}"#).cef_version, Some(0));
    assert_eq!(parse(r#"{"cef_version":"0"}"#).cef_version, Some(0));
    assert_eq!(parse(r#"{"cef_version":"1"}"#).cef_version, Some(1));
    let event = parse(r#"{"cef_version":"zero"}"#);
    assert_eq!(event.cef_version, None);
    assert_eq!(
        event.warnings,
        [r#"cef_version "zero" is not an integer; ignored"#]
    );
    assert_eq!(parse("CEF:1|V|P|1|c|n|5|a=b").cef_version, Some(1));
}

#[test]
fn cef_version_out_of_range() {
    let line = "CEF:99999999999999999999|V|P|1|c|n|5|a=b";
    match parse_err(line.as_bytes()) {
        ParseError::Cef { reason, offset } => {
            assert_eq!(reason, "CEF version out of range");
            assert_eq!(offset, 4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn severity_typing() {
    assert_eq!(parse(r#"{"severity":1}"#).severity, json!(1));
    assert_eq!(parse(r#"{"severity":"1"}"#).severity, json!(1));
    assert_eq!(
        parse(r#"{"severity":"Very-High"}"#).severity,
        json!("Very-High")
    );
    assert_eq!(parse(r#"{"severity":2.5}"#).severity, json!(2.5));
    assert_eq!(parse(r#"{"a":1}"#).severity, Value::Null);
    assert_eq!(parse("CEF:0|V|P|1|c|n|10|a=b").severity, json!(10));
    assert_eq!(
        parse("CEF:0|V|P|1|c|n|Very-High|a=b").severity,
        json!("Very-High")
    );
}

#[test]
fn status_and_booleans() {
    let cef = parse(
        "CEF:0|V|P|1|c|n|5|status=204 granted=false success=true kong_initiated=maybe other=true",
    );
    assert_eq!(cef.fields["status"], json!(204));
    assert_eq!(cef.fields["granted"], json!(false));
    assert_eq!(cef.fields["success"], json!(true));
    assert_eq!(cef.fields["kong_initiated"], json!("maybe"));
    assert_eq!(
        cef.fields["other"],
        json!("true"),
        "only the Konnect attributes are typed"
    );

    let json = parse(
        r#"{"status":"404","granted":true,"success":"false","kong_initiated":false,"other":"1"}"#,
    );
    assert_eq!(json.fields["status"], json!(404));
    assert_eq!(json.fields["granted"], json!(true));
    assert_eq!(json.fields["success"], json!(false));
    assert_eq!(json.fields["kong_initiated"], json!(false));
    assert_eq!(json.fields["other"], json!("1"));
}

#[test]
fn json_values_keep_their_type() {
    let event = parse(
        r#"{"n":1.50,"o":{"k":[1,null]},"b":true,"z":null,"big":123456789012345678901234567890}"#,
    );
    assert_eq!(event.fields["n"].to_string(), "1.50");
    assert_eq!(event.fields["o"], json!({"k": [1, null]}));
    assert_eq!(event.fields["b"], json!(true));
    assert_eq!(event.fields["z"], Value::Null);
    assert_eq!(
        event.fields["big"].to_string(),
        "123456789012345678901234567890"
    );
}

#[test]
fn json_missing_header_keys_are_null() {
    let event = parse(r#"{"a":1}"#);
    assert_eq!(
        (
            event.cef_version,
            event.vendor,
            event.product,
            event.name,
            event.sig
        ),
        (None, None, None, None, None)
    );
    assert_eq!(event.origin, None);
    assert_eq!(event.timestamp, None);
    let rendered = serde_json::to_value(parse(r#"{"a":1}"#)).unwrap();
    assert_eq!(rendered["vendor"], Value::Null);
    assert_eq!(rendered["sig"], Value::Null);
    assert!(rendered.get("origin").is_none());
}

#[test]
fn json_non_string_header_keys() {
    let event =
        parse(r#"{"event_version":1.0,"name":true,"event_vendor":null,"event_product":["K"]}"#);
    assert_eq!(event.product_version.as_deref(), Some("1.0"));
    assert_eq!(event.name.as_deref(), Some("true"));
    assert_eq!(event.vendor, None);
    assert_eq!(event.product.as_deref(), Some(r#"["K"]"#));
    assert_eq!(
        event.warnings,
        ["event_product is a JSON array; kept as JSON text"]
    );
}

// ------------------------------------------------------------ timestamps

#[test]
fn timestamp_from_prefix_times() {
    let tail = "CEF:0|V|P|1|c|n|5|a=b";
    let rfc3339 = parse(&format!("2023-05-19T02:03:39.5+02:00 h {tail}"));
    assert_eq!(
        rfc3339.timestamp.as_deref(),
        Some("2023-05-19T00:03:39.500Z")
    );
    let origin = rfc3339.origin.unwrap();
    assert_eq!(origin.time.as_deref(), Some("2023-05-19T02:03:39.5+02:00"));
    assert_eq!(origin.host.as_deref(), Some("h"));

    let rfc5424 = parse(&format!(
        "<34>1 2023-05-19T00:03:39.123456Z h app - - - {tail}"
    ));
    assert_eq!(
        rfc5424.timestamp.as_deref(),
        Some("2023-05-19T00:03:39.123Z")
    );

    let line = format!("Apr 14 05:39:08 h {tail}");
    let rfc3164 = parse_line(
        line.as_bytes(),
        &ParseOptions {
            format: Format::Auto,
            year_hint: 2023,
        },
    )
    .unwrap();
    assert_eq!(
        rfc3164.timestamp.as_deref(),
        Some("2023-04-14T05:39:08.000Z")
    );
    assert_eq!(
        parse(&line).timestamp.as_deref(),
        Some("1970-04-14T05:39:08.000Z")
    );

    let none = parse(tail);
    assert_eq!(none.timestamp, None);
    assert_eq!(none.origin, None);
}

#[test]
fn rt_wins_over_prefix_and_event_ts() {
    let event = parse("2023-05-19T00:03:39Z h CEF:0|V|P|1|c|n|5|rt=1681450748406");
    assert_eq!(event.timestamp.as_deref(), Some("2023-04-14T05:39:08.406Z"));
    let event = parse(r#"{"event_ts":"2023-05-19T00:03:39Z","rt":"1681450748406"}"#);
    assert_eq!(event.timestamp.as_deref(), Some("2023-04-14T05:39:08.406Z"));
}

#[test]
fn unparsable_event_ts_gives_no_timestamp() {
    let event = parse(r#"{"event_ts":"yesterday"}"#);
    assert_eq!(event.timestamp, None);
    assert_eq!(event.origin.unwrap().time.as_deref(), Some("yesterday"));
}

#[test]
fn lib_doc_example() {
    let line = b"CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 granted=true";
    let event = parse_line(line, &ParseOptions::new(Format::Auto)).unwrap();
    assert_eq!(event.name.as_deref(), Some("Authz.usage"));
    assert_eq!(event.timestamp.as_deref(), Some("2023-04-14T05:39:08.406Z"));
}
