//! `auditsink parse`, as docs/EVENT_SCHEMA.md specifies it.

mod common;

use serde_json::Value;

/// Runs `auditsink parse ARGS` on `stdin`: (exit code, stderr, the
/// output lines as JSON).
fn parse(args: &[&str], stdin: &[u8]) -> (i32, String, Vec<Value>) {
    let args: Vec<&str> = std::iter::once("parse")
        .chain(args.iter().copied())
        .collect();
    let (code, stdout, stderr) = common::run_bin(&args, stdin);
    let rows = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, stderr, rows)
}

const INPUT: &str = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 granted=true sig=abc\r\n\
\n\
not an event\n\
   \n\
{\"event_vendor\":\"KongInc\",\"name\":\"n\",\"rt\":\"1681450748406\",\"trace_id\":3895213347334635099,\"sig\":\"xyz\"}\n\
{\"trailing\": 1,}";

#[test]
fn one_output_line_per_non_blank_input_line_in_order() {
    let (code, _, rows) = parse(&[], INPUT.as_bytes());
    assert_eq!(code, 0);
    assert_eq!(rows.len(), 4, "blank lines are not lines");
    assert_eq!(rows[0]["format"], "cef");
    assert_eq!(rows[0]["timestamp"], "2023-04-14T05:39:08.406Z");
    assert_eq!(rows[0]["fields"]["granted"], true);
    assert_eq!(rows[0]["sig"], "abc");
    assert_eq!(rows[0]["signature"], "unverified");
    assert_eq!(
        rows[0]["raw"],
        "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 granted=true sig=abc",
        "raw excludes the CRLF terminator"
    );
    assert!(rows[0].get("id").is_none(), "no store keys in parse output");
    assert_eq!(rows[1].as_object().unwrap().len(), 2);
    assert_eq!(rows[1]["raw"], "not an event");
    assert!(!rows[1]["error"].as_str().unwrap().is_empty());
    assert_eq!(rows[2]["format"], "json");
    assert_eq!(rows[2]["fields"]["trace_id"], "3895213347334635099");
    assert_eq!(rows[2]["timestamp"], "2023-04-14T05:39:08.406Z");
    assert!(
        rows[3]["error"].as_str().unwrap().starts_with("JSON"),
        "{}",
        rows[3]
    );
}

#[test]
fn file_argument_dash_format_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.log");
    std::fs::write(&file, INPUT).unwrap();
    let (code, _, from_file) = parse(&[file.to_str().unwrap()], b"");
    assert_eq!(code, 0);
    let (_, _, from_dash) = parse(&["-"], INPUT.as_bytes());
    assert_eq!(from_file, from_dash);

    let (_, _, forced) = parse(&["--format", "json"], INPUT.as_bytes());
    assert!(
        forced[0]["error"].is_string(),
        "a CEF line read as JSON is an error line"
    );
    assert_eq!(forced[2]["format"], "json");

    let (_, stderr, rows) = parse(&["--stats"], INPUT.as_bytes());
    assert_eq!(rows.len(), 4);
    for key in ["lines=4", "bytes=", "seconds=", "lines_per_s=", "mb_per_s="] {
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[test]
fn unreadable_input_is_exit_2_with_a_message() {
    let (code, stderr, _) = parse(&["/nonexistent/file.log"], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/file.log"));
}

#[test]
fn shared_sample_parses_completely() {
    let Some(path) = common::corpus("konnect-sample.cef") else {
        return;
    };
    let (code, _, rows) = parse(&[path.to_str().unwrap()], b"");
    assert_eq!(code, 0);
    assert_eq!(rows.len(), 60);
    assert!(rows
        .iter()
        .all(|r| r.get("error").is_none() && r["fields"]["trace_id"].is_string()));
}
