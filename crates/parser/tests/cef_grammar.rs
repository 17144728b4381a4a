//! The CEF grammar of `docs/EVENT_SCHEMA.md`, one point per test, through the
//! public reader (`cef::parse_record`) and, where typing matters, through
//! `parse_line`.

use std::borrow::Cow;

use auditsink_parser::cef::{parse_record, CefRecord, CefWarning, PrefixKind};
use auditsink_parser::{parse_line, Format, ParseError, ParseOptions};
use serde_json::{json, Value};

const HEADER: &str = "CEF:0|Vendor|Product|1.0|class|Name|5|";

fn record(line: &str) -> CefRecord<'_> {
    parse_record(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// The extension of `HEADER + extension` as owned pairs.
fn ext(extension: &str) -> Vec<(String, String)> {
    let line = format!("{HEADER}{extension}");
    record(&line)
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

fn cef_error(line: &str) -> (String, usize) {
    match parse_record(line) {
        Err(ParseError::Cef { reason, offset }) => (reason, offset),
        other => panic!("{line:?}: expected a CEF error, got {other:?}"),
    }
}

fn event_fields(line: &str) -> serde_json::Map<String, Value> {
    parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef))
        .unwrap()
        .fields
}

// ---------------------------------------------------------------- header

#[test]
fn header_fields() {
    let r = record("CEF:0|Kong Inc|Konnect|1.0|konnect|Authz.usage|1|rt=1");
    assert_eq!(r.version, "0");
    assert_eq!(r.vendor, "Kong Inc");
    assert_eq!(r.product, "Konnect");
    assert_eq!(r.device_version, "1.0");
    assert_eq!(r.signature_id, "konnect");
    assert_eq!(r.name, "Authz.usage");
    assert_eq!(r.severity.as_deref(), Some("1"));
    assert!(r.prefix.is_none());
    assert!(r.warnings.is_empty());
}

#[test]
fn header_escapes_and_trimming() {
    let r = record(r"CEF:0| Ven\|dor |C:\\dir|a\b|c||5|k=v");
    assert_eq!(r.vendor, "Ven|dor");
    assert_eq!(r.product, r"C:\dir");
    // Not a header escape: kept as written, and still borrowed.
    assert_eq!(r.device_version, Cow::Borrowed(r"a\b"));
    assert!(matches!(r.vendor, Cow::Owned(_)));
    assert_eq!(r.name, "");
}

#[test]
fn escaped_pipe_does_not_end_a_header_field() {
    let r = record(r"CEF:0|V|P|1|c|name with \| pipe|5|k=v");
    assert_eq!(r.name, "name with | pipe");
    assert_eq!(r.severity.as_deref(), Some("5"));
}

#[test]
fn word_severity() {
    let r = record("CEF:0|V|P|1|c|n|very-high|k=v");
    assert_eq!(r.severity.as_deref(), Some("very-high"));
    let event = parse_line(
        b"CEF:0|V|P|1|c|n|very-high|k=v",
        &ParseOptions::new(Format::Auto),
    )
    .unwrap();
    assert_eq!(event.severity, json!("very-high"));
}

#[test]
fn cef_version_1() {
    let r = record("CEF:1|V|P|1|c|n|5|k=v");
    assert_eq!(r.version, "1");
    assert!(r.warnings.is_empty());
    let r = record("CEF:23|V|P|1|c|n|5|k=v");
    assert_eq!(r.warnings, [CefWarning::UnknownVersion]);
}

#[test]
fn version_must_be_digits() {
    let (reason, offset) = cef_error("host CEF:x|V|P|1|c|n|5|");
    assert_eq!(reason, "CEF version is not a number");
    assert_eq!(offset, 9);
    let (reason, offset) = cef_error("CEF:0.1|V|P|1|c|n|5|");
    assert_eq!(reason, "expected '|' after the CEF version");
    assert_eq!(offset, 5);
}

#[test]
fn no_cef_marker_is_an_error() {
    let (reason, offset) = cef_error("Apr 14 05:39:08 host just some text a=b");
    assert!(reason.starts_with("no CEF header"), "{reason}");
    assert_eq!(offset, 0);
}

#[test]
fn truncated_header_before_severity_is_an_error() {
    let line = "CEF:0|V|P|1.0|c";
    let (reason, offset) = cef_error(line);
    assert_eq!(reason, "header truncated after 4 of 7 fields");
    assert_eq!(offset, line.len());
    cef_error("CEF:0");
    cef_error("CEF:0|");
}

#[test]
fn six_field_header_without_severity() {
    let r = record("CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|rt=1681450748406 granted=true");
    assert_eq!(r.name, "Authz.usage");
    assert_eq!(r.severity, None);
    assert_eq!(r.warnings, [CefWarning::MissingSeverity]);
    assert_eq!(r.extensions[0], ("rt", Cow::Borrowed("1681450748406")));
    assert_eq!(r.extensions[1], ("granted", Cow::Borrowed("true")));

    // An unescaped pipe later in a value does not change that reading.
    let r = record("CEF:0|V|P|1|c|n|cs6=a | b k=v");
    assert_eq!(r.severity, None);
    assert_eq!(r.extensions[0], ("cs6", Cow::Borrowed("a | b")));

    let r = record("CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|");
    assert_eq!(r.severity, None);
    assert_eq!(r.warnings, [CefWarning::MissingSeverity]);
    assert!(r.extensions.is_empty());

    let event = parse_line(b"CEF:0|V|P|1|c|n|rt=1", &ParseOptions::new(Format::Auto)).unwrap();
    assert_eq!(event.severity, Value::Null);
    assert_eq!(
        event.warnings,
        ["CEF header has 6 fields: severity missing"]
    );
}

#[test]
fn missing_pipe_between_severity_and_extension() {
    let r = record("CEF:0|V|P|1|c|n|7 rt=1 src=10.0.0.1");
    assert_eq!(r.severity.as_deref(), Some("7"));
    assert_eq!(r.warnings, [CefWarning::MissingFinalPipe]);
    assert_eq!(r.extensions.len(), 2);
}

#[test]
fn header_ending_at_severity() {
    let r = record("CEF:0|V|P|1|c|n|Very High");
    assert_eq!(r.severity.as_deref(), Some("Very High"));
    assert_eq!(r.warnings, [CefWarning::MissingFinalPipe]);
    assert!(r.extensions.is_empty());
}

#[test]
fn severity_and_extension_that_cannot_be_told_apart() {
    let (reason, offset) = cef_error("CEF:0|V|P|1|c|n|very high a=b");
    assert!(reason.starts_with("cannot tell the severity"), "{reason}");
    assert_eq!(offset, "CEF:0|V|P|1|c|n|".len());
}

#[test]
fn empty_extension() {
    assert!(record("CEF:0|V|P|1|c|n|5|").extensions.is_empty());
    assert!(record("CEF:0|V|P|1|c|n|5|   ").extensions.is_empty());
}

// ---------------------------------------------------------------- prefix

#[test]
fn rfc3164_prefix() {
    let r = record("Apr 14 05:39:08 konghq.com CEF:0|V|P|1|c|n|5|k=v");
    let prefix = r.prefix.unwrap();
    assert_eq!(prefix.kind, PrefixKind::Rfc3164);
    assert_eq!(prefix.time, Some("Apr 14 05:39:08"));
    assert_eq!(prefix.host, Some("konghq.com"));
    assert!(r.warnings.is_empty());

    let r = record("<134>Apr  4 05:39:08 host app[42]: CEF:0|V|P|1|c|n|5|k=v");
    let prefix = r.prefix.unwrap();
    assert_eq!(prefix.time, Some("Apr  4 05:39:08"));
    assert_eq!(prefix.host, Some("host"));
    assert!(r.warnings.is_empty(), "a syslog tag is expected");
}

#[test]
fn rfc3339_prefix() {
    let r = record("2023-05-19T00:03:39Z konghq.com CEF:0|V|P|1|c|n|5|k=v");
    let prefix = r.prefix.unwrap();
    assert_eq!(prefix.kind, PrefixKind::Rfc3339);
    assert_eq!(prefix.time, Some("2023-05-19T00:03:39Z"));
    assert_eq!(prefix.host, Some("konghq.com"));
}

#[test]
fn rfc5424_prefix() {
    let r = record(
        "<165>1 2023-05-19T02:03:39.123+02:00 host.example app 1234 ID47 - CEF:0|V|P|1|c|n|5|k=v",
    );
    let prefix = r.prefix.unwrap();
    assert_eq!(prefix.kind, PrefixKind::Rfc5424);
    assert_eq!(prefix.time, Some("2023-05-19T02:03:39.123+02:00"));
    assert_eq!(prefix.host, Some("host.example"));
    assert!(r.warnings.is_empty());

    let r = record("<165>1 - - app - - - CEF:0|V|P|1|c|n|5|k=v");
    let prefix = r.prefix.unwrap();
    assert_eq!((prefix.time, prefix.host), (None, None));
}

#[test]
fn pri_only_prefix_is_no_prefix() {
    let r = record("<134>CEF:0|V|P|1|c|n|5|k=v");
    assert!(r.prefix.is_none());
    assert!(r.warnings.is_empty());
}

#[test]
fn unrecognized_prefix_is_ignored_with_a_warning() {
    let r = record("something odd CEF:0|V|P|1|c|n|5|k=v");
    assert!(r.prefix.is_none());
    assert_eq!(r.warnings, [CefWarning::UnrecognizedPrefix]);
    let r = record("Apr 14 05:39:08 host two words CEF:0|V|P|1|c|n|5|k=v");
    assert_eq!(r.prefix.unwrap().host, Some("host"));
    assert_eq!(r.warnings, [CefWarning::ExtraPrefixText]);
}

// ------------------------------------------------------------- extension

#[test]
fn simple_pairs_in_line_order() {
    assert_eq!(
        ext("b=2 a=1 c=3"),
        pairs(&[("b", "2"), ("a", "1"), ("c", "3")])
    );
}

#[test]
fn spaces_before_the_first_key_are_skipped() {
    assert_eq!(ext("   rt=1 a=b"), pairs(&[("rt", "1"), ("a", "b")]));
}

#[test]
fn text_before_the_first_key_is_an_error() {
    let (reason, offset) = cef_error(&format!("{HEADER} free text a=b"));
    assert_eq!(reason, "text before the first extension key");
    assert_eq!(offset, HEADER.len() + 1);
    let (reason, _) = cef_error(&format!("{HEADER}no pairs here"));
    assert_eq!(reason, "extension has no key=value pair");
}

#[test]
fn values_keep_inner_spaces() {
    assert_eq!(
        ext("user_agent=grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges) rt=1"),
        pairs(&[
            (
                "user_agent",
                "grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)"
            ),
            ("rt", "1"),
        ])
    );
}

#[test]
fn dotted_words_not_followed_by_equals_stay_in_the_value() {
    assert_eq!(
        ext("msg=see x.y and a.b.c here src=1"),
        pairs(&[("msg", "see x.y and a.b.c here"), ("src", "1")])
    );
}

#[test]
fn url_value_with_query_string() {
    assert_eq!(
        ext("request=http://x/?a=b&c=d act=GET"),
        pairs(&[("request", "http://x/?a=b&c=d"), ("act", "GET")])
    );
}

#[test]
fn escaped_equals_in_url_value() {
    assert_eq!(
        ext(r"request=http://x/login_post.html?abc\=def msg=m"),
        pairs(&[
            ("request", "http://x/login_post.html?abc=def"),
            ("msg", "m")
        ])
    );
}

#[test]
fn value_escapes() {
    assert_eq!(
        ext(r"a=x\=y\\z\nw\r b=C:\\Users\\t"),
        pairs(&[("a", "x=y\\z\nw\r"), ("b", r"C:\Users\t")])
    );
}

#[test]
fn other_backslashes_stay_as_written() {
    assert_eq!(
        ext(r"a=\t\q\ b=end\"),
        pairs(&[("a", r"\t\q\"), ("b", r"end\")])
    );
}

#[test]
fn escaped_pipe_in_extension_value_stays_as_written() {
    // `\|` is a header escape only; in an extension it is kept byte for byte.
    assert_eq!(ext(r"cs1=a\|b c=d"), pairs(&[("cs1", r"a\|b"), ("c", "d")]));
}

#[test]
fn unescaped_pipes_in_values() {
    assert_eq!(
        ext("cs6=ContainerImageName | ContainerName | ContainerID cs6Label=Container"),
        pairs(&[
            ("cs6", "ContainerImageName | ContainerName | ContainerID"),
            ("cs6Label", "Container"),
        ])
    );
}

#[test]
fn empty_value_mid_line() {
    assert_eq!(
        ext("actor_id= foo=bar"),
        pairs(&[("actor_id", ""), ("foo", "bar")])
    );
}

#[test]
fn empty_last_value() {
    assert_eq!(ext("spt=1 dpt="), pairs(&[("spt", "1"), ("dpt", "")]));
    assert_eq!(ext("dpt=   "), pairs(&[("dpt", "")]));
}

#[test]
fn multiple_spaces_before_a_key() {
    // Trailing whitespace is padding: trimmed. Leading whitespace is kept.
    assert_eq!(
        ext("a=x    b=y\t  c=  z"),
        pairs(&[("a", "x"), ("b", "y"), ("c", "  z")])
    );
}

#[test]
fn leading_space_of_a_value_is_kept() {
    // As Elastic's decoder does for this NetScaler line.
    assert_eq!(
        ext(
            "msg= Transformed (xout) potential credit card numbers seen in server response cn1=652"
        ),
        pairs(&[
            (
                "msg",
                " Transformed (xout) potential credit card numbers seen in server response"
            ),
            ("cn1", "652"),
        ])
    );
}

#[test]
fn last_value_loses_trailing_whitespace_and_cr() {
    assert_eq!(ext("a=1 b=two  \t\r"), pairs(&[("a", "1"), ("b", "two")]));
}

#[test]
fn unusual_keys() {
    assert_eq!(
        ext("ad.Error_,Code=3221225578 ad.field[0]=field0 a-b=1 ad.foo.name[1]=new_name"),
        pairs(&[
            ("ad.Error_,Code", "3221225578"),
            ("ad.field[0]", "field0"),
            ("a-b", "1"),
            ("ad.foo.name[1]", "new_name"),
        ])
    );
}

#[test]
fn json_inside_a_value() {
    assert_eq!(
        ext(r#"query={"end":"1684270800","start":"1684098000"} rawEvent={"x": "y"}"#),
        pairs(&[
            ("query", r#"{"end":"1684270800","start":"1684098000"}"#),
            ("rawEvent", r#"{"x": "y"}"#),
        ])
    );
}

#[test]
fn unescaped_equals_glued_to_a_value_is_part_of_it() {
    assert_eq!(ext("a=b=c d=e"), pairs(&[("a", "b=c"), ("d", "e")]));
    assert_eq!(ext("a==b"), pairs(&[("a", "=b")]));
}

#[test]
fn duplicate_keys_are_kept_in_the_record() {
    assert_eq!(ext("a=1 a=2"), pairs(&[("a", "1"), ("a", "2")]));
    let event = parse_line(
        format!("{HEADER}a=1 a=2").as_bytes(),
        &ParseOptions::new(Format::Cef),
    )
    .unwrap();
    assert_eq!(event.fields["a"], "2");
    assert_eq!(
        event.warnings,
        ["duplicate extension key \"a\": the last value is kept"]
    );
}

#[test]
fn a_key_repeated_many_times_warns_once() {
    let mut line = format!("{HEADER}sig=x sig=y ");
    for i in 0..1000 {
        line.push_str(&format!("a={i} b={i} sig=z{i} "));
    }
    let event = parse_line(line.trim_end().as_bytes(), &ParseOptions::new(Format::Cef)).unwrap();
    assert_eq!(event.fields["a"], "999");
    assert_eq!(event.sig.as_deref(), Some("z999"));
    assert_eq!(
        event.warnings,
        [
            "duplicate extension key \"sig\": the last value is kept",
            "duplicate extension key \"a\": the last value is kept",
            "duplicate extension key \"b\": the last value is kept",
        ]
    );
}

#[test]
fn utf8_in_values_and_keys() {
    assert_eq!(
        ext("msg=Grüße, 世界 😀 clé=valeur"),
        pairs(&[("msg", "Grüße, 世界 😀"), ("clé", "valeur")])
    );
    let r = record("CEF:0|Vendör|P|1|c|naïve|5|k=v");
    assert_eq!(r.vendor, "Vendör");
    assert_eq!(r.name, "naïve");
}

#[test]
fn crlf_line_endings() {
    let r = record("CEF:0|V|P|1|c|n|5|a=1 b=2\r\n");
    assert_eq!(r.extensions.last().unwrap().1, "2");
    let event = parse_line(
        b"CEF:0|V|P|1|c|n|5|a=1 b=2\r",
        &ParseOptions::new(Format::Auto),
    )
    .unwrap();
    assert_eq!(event.fields["b"], "2");
    assert_eq!(event.raw, "CEF:0|V|P|1|c|n|5|a=1 b=2");
    let event = parse_line(
        b"CEF:0|V|P|1|c|n|5|a=1 b=2\r\n",
        &ParseOptions::new(Format::Auto),
    )
    .unwrap();
    assert_eq!(event.raw, "CEF:0|V|P|1|c|n|5|a=1 b=2");
}

#[test]
fn custom_label_pairs_stay_as_written() {
    let fields = event_fields(&format!("{HEADER}cs1Label=Host ID cs1=abc"));
    assert_eq!(fields["cs1Label"], "Host ID");
    assert_eq!(fields["cs1"], "abc");
}

#[test]
fn sig_is_taken_out_of_the_fields() {
    let event = parse_line(
        format!("{HEADER}a=1 sig=abc_-9").as_bytes(),
        &ParseOptions::new(Format::Auto),
    )
    .unwrap();
    assert_eq!(event.sig.as_deref(), Some("abc_-9"));
    assert!(!event.fields.contains_key("sig"));
}
