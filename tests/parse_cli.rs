//! `auditsink parse`, as EVENT_SCHEMA.md specifies it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn parse(args: &[&str], stdin: &[u8]) -> (std::process::Output, Vec<Value>) {
    let mut child = Command::new(common::BIN)
        .arg("parse")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    let rows = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (output, rows)
}

const INPUT: &str = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 granted=true sig=abc\r\n\
\n\
not an event\n\
   \n\
{\"event_vendor\":\"KongInc\",\"name\":\"n\",\"rt\":\"1681450748406\",\"trace_id\":3895213347334635099,\"sig\":\"xyz\"}\n\
{\"trailing\": 1,}";

#[test]
fn one_output_line_per_non_blank_input_line_in_order() {
    let (output, rows) = parse(&[], INPUT.as_bytes());
    assert!(output.status.success());
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
    let (output, from_file) = parse(&[file.to_str().unwrap()], b"");
    assert!(output.status.success());
    let (_, from_dash) = parse(&["-"], INPUT.as_bytes());
    assert_eq!(from_file, from_dash);

    let (_, forced) = parse(&["--format", "json"], INPUT.as_bytes());
    assert!(
        forced[0]["error"].is_string(),
        "a CEF line read as JSON is an error line"
    );
    assert_eq!(forced[2]["format"], "json");

    let (output, rows) = parse(&["--stats"], INPUT.as_bytes());
    assert_eq!(rows.len(), 4);
    let stderr = String::from_utf8(output.stderr).unwrap();
    for key in ["lines=4", "bytes=", "seconds=", "lines_per_s=", "mb_per_s="] {
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[test]
fn unreadable_input_is_exit_2_with_a_message() {
    let (output, _) = parse(&["/nonexistent/file.log"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/file.log"));
}

#[test]
fn shared_sample_parses_completely() {
    let Some(path) = common::corpus("konnect-sample.cef") else {
        return;
    };
    let (output, rows) = parse(&[path.to_str().unwrap()], b"");
    assert!(output.status.success());
    assert_eq!(rows.len(), 60);
    assert!(rows
        .iter()
        .all(|r| r.get("error").is_none() && r["fields"]["trace_id"].is_string()));
}
