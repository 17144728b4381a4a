//! The store through the real binary: replays, filtered queries (through the
//! running server's admin listener and directly), export, quarantine list
//! and reprocess, check.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{write_config, TestServer, BIN};
use serde_json::{json, Value};

const TOKEN: &str = "Bearer storage-test-token";
const T0: i64 = 1_764_100_000_000; // 2025-11-25T19:46:40Z

fn source(extra: &str) -> String {
    format!(
        "[[source]]\nname = \"konnect-us\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n{extra}"
    )
}

/// Event `i`: minute `i` after T0, principal `p{i % 3}`, name by parity,
/// its own trace id.
fn line(i: i64) -> String {
    format!(
        "CEF:0|KongInc|Konnect|1.0|konnect|{}|1|rt={} src=10.0.0.1 org_id=org-1 principal_id=p{} trace_id={} action=retrieve granted=true",
        if i % 2 == 0 { "Authz.usage" } else { "Authz.routes" },
        T0 + i * 60_000,
        i % 3,
        9_000_000_000_000_000_000u64 + i as u64,
    )
}

fn body(range: std::ops::Range<i64>) -> String {
    range.map(line).collect::<Vec<_>>().join("\n")
}

fn auditsink(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout_ok(args: &[&str]) -> String {
    let output = auditsink(args);
    assert!(
        output.status.success(),
        "auditsink {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn rows(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn traces(rows: &[Value]) -> Vec<i64> {
    rows.iter()
        .map(|r| {
            r["fields"]["trace_id"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .map(|t| (t - 9_000_000_000_000_000_000) as i64)
                .unwrap()
        })
        .collect()
}

fn minute(i: i64) -> String {
    auditsink_storage::format_ms(T0 + i * 60_000)
}

/// Every query the test makes, with its expected trace numbers; run against
/// the running server and against the stopped store.
fn check_queries(location: &[&str]) {
    let q = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["query"];
        args.extend_from_slice(location);
        args.extend_from_slice(extra);
        rows(&stdout_ok(&args))
    };
    let count = |extra: &[&str]| -> u64 {
        let mut args = vec!["query", "--count"];
        args.extend_from_slice(location);
        args.extend_from_slice(extra);
        stdout_ok(&args).trim().parse().unwrap()
    };
    assert_eq!(q(&[]).len(), 25);
    let (since, until) = (minute(5), minute(9));
    let window = ["--since", &since, "--until", &until];
    assert_eq!(traces(&q(&window)), [5, 6, 7, 8]);
    assert_eq!(count(&window), 4);
    assert_eq!(
        traces(&q(&["--principal", "p1"])),
        [1, 4, 7, 10, 13, 16, 19, 22]
    );
    assert_eq!(
        traces(&q(&[
            "--principal",
            "p1",
            "--name",
            "Authz.usage",
            "--since",
            &since
        ])),
        [10, 16, 22]
    );
    assert_eq!(count(&["--principal", "p1", "--name", "Authz.usage"]), 4);
    assert_eq!(traces(&q(&["--trace", "9000000000000000017"])), [17]);
    assert_eq!(traces(&q(&["--org", "org-1", "--limit", "3"])), [0, 1, 2]);
    assert_eq!(count(&["--org", "nobody"]), 0);
    assert!(q(&["--org", "nobody"]).is_empty());
    // Paging with --after resumes after an id.
    let all = q(&[]);
    let after = all[20]["id"].as_str().unwrap().to_owned();
    assert_eq!(traces(&q(&["--after", &after])), [21, 22, 23, 24]);

    // Table and CEF formats.
    let mut args = vec!["query", "--format", "table", "--principal", "p2"];
    args.extend_from_slice(location);
    let table = stdout_ok(&args);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("PRINCIPAL"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + 8);
    assert!(lines[1].contains("2025-11-25T19:48:40.000Z") && lines[1].contains("p2"));
    let mut args = vec!["query", "--format", "cef", "--limit", "2"];
    args.extend_from_slice(location);
    assert_eq!(stdout_ok(&args), format!("{}\n{}\n", line(0), line(1)));

    // Bad input is reported, not guessed at.
    let mut args = vec!["query", "--since", "yesterday"];
    args.extend_from_slice(location);
    let output = auditsink(&args);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--since"));
}

#[test]
fn replays_queries_export_and_check_with_and_without_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source(""));
    let server = TestServer::start(dir.path(), &config);
    // The same batch three times stores it once.
    for expected in [
        json!({"received": 20, "stored": 20, "duplicates": 0, "quarantined": 0}),
        json!({"received": 20, "stored": 0, "duplicates": 20, "quarantined": 0}),
        json!({"received": 20, "stored": 0, "duplicates": 20, "quarantined": 0}),
    ] {
        let response = server.deliver(TOKEN, body(0..20).as_bytes());
        assert_eq!(response.status, 200);
        assert_eq!(response.json(), expected);
    }
    // A replay overlapping stored events stores only the new ones.
    let response = server.deliver(TOKEN, body(15..25).as_bytes());
    assert_eq!(
        response.json(),
        json!({"received": 10, "stored": 5, "duplicates": 5, "quarantined": 0})
    );
    let status = server.status();
    assert_eq!(status["sources"][0]["duplicates"], 45);
    assert_eq!(status["sources"][0]["events_stored"], 25);

    let config_arg = config.to_str().unwrap().to_owned();
    check_queries(&["--config", &config_arg]);

    // The admin API itself: filters, limit, count.
    let (code, text) = server.admin_get(&format!(
        "/api/events?principal=p0&since={}&limit=2",
        T0 + 60_000
    ));
    assert_eq!(code, 200);
    assert_eq!(traces(&rows(&text)), [3, 6]);
    let (code, text) = server.admin_get("/api/events/count?name=Authz.usage");
    assert_eq!((code, text.trim()), (200, r#"{"count":13}"#));
    let (code, _) = server.admin_get("/api/events?colour=blue");
    assert_eq!(code, 400);
    let (code, _) = server.admin_get("/api/events?since=tomorrowish");
    assert_eq!(code, 400);

    // check refuses to run next to the server.
    let output = auditsink(&["check", "--config", &config_arg]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stop `auditsink serve` first"));

    // Export of a window while the server runs.
    let export = auditsink(&[
        "export",
        "--config",
        &config_arg,
        "--since",
        &minute(20),
        "--until",
        &minute(30),
    ]);
    assert!(export.status.success());
    let exported = rows(&String::from_utf8(export.stdout).unwrap());
    assert_eq!(traces(&exported), [20, 21, 22, 23, 24]);
    let stderr = String::from_utf8_lossy(&export.stderr);
    let last = exported[4]["id"].as_str().unwrap();
    assert!(stderr.contains(&format!("--after {last}")), "{stderr}");

    assert!(server.stop().success());

    // The same answers from the stopped store.
    let data_dir = dir.path().join("data");
    let data_arg = data_dir.to_str().unwrap().to_owned();
    check_queries(&["--data-dir", &data_arg]);
    let out_file = dir.path().join("export.ndjson");
    let export = auditsink(&[
        "export",
        "--data-dir",
        &data_arg,
        "--since",
        &minute(20),
        "--output",
        out_file.to_str().unwrap(),
    ]);
    assert!(export.status.success());
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(rows(&text), exported, "export is the same either way");

    let check = stdout_ok(&["check", "--data-dir", &data_arg]);
    assert!(check.contains("events: 25"), "{check}");
    assert!(check.contains("OK: no problems found"), "{check}");
    let check: Value =
        serde_json::from_str(&stdout_ok(&["check", "--data-dir", &data_arg, "--json"])).unwrap();
    assert_eq!(check["ok"], true);
    assert_eq!(check["dedupe_entries"], 25);
    assert_eq!(check["index_entries"]["principal_id"], 25);
}

fn write_jwks(dir: &Path) -> auditsink_parser::signature::SigningKeyPair {
    use auditsink_parser::signature::SigningKeyPair;
    let pair = SigningKeyPair::generate();
    std::fs::write(dir.join("jwks.json"), SigningKeyPair::jwks(&[&pair])).unwrap();
    pair
}

#[test]
fn quarantine_list_and_reprocess_follow_the_source_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let pair = write_jwks(dir.path());
    let jwks = dir.path().join("jwks.json");
    let with_policy = |policy: &str| {
        write_config(
            dir.path(),
            &source(&format!(
                "jwks = {:?}\nsignatures = \"{policy}\"\n",
                jwks.display().to_string()
            )),
        )
    };
    let config = with_policy("enforce");
    let server = TestServer::start(dir.path(), &config);
    let signed = pair.sign_cef_line(&line(1));
    let unsigned = line(2);
    let lines = format!("{signed}\n{unsigned}\nnot an event at all");
    let response = server.deliver(TOKEN, lines.as_bytes());
    assert_eq!(
        response.json(),
        json!({"received": 3, "stored": 1, "duplicates": 0, "quarantined": 2})
    );
    let config_arg = config.to_str().unwrap().to_owned();
    let listed = rows(&stdout_ok(&["quarantine", "list", "--config", &config_arg]));
    assert_eq!(listed.len(), 2);
    let entry = listed
        .iter()
        .find(|r| r["raw"] == unsigned.as_str())
        .unwrap();
    assert!(entry["reason"]
        .as_str()
        .unwrap()
        .contains("signature missing"));
    assert_eq!(
        rows(&stdout_ok(&[
            "quarantine",
            "list",
            "--config",
            &config_arg,
            "--limit",
            "1"
        ]))
        .len(),
        1
    );
    // Under enforce, reprocessing keeps the unsigned line.
    let summary: Value = serde_json::from_str(&stdout_ok(&[
        "quarantine",
        "reprocess",
        "--config",
        &config_arg,
    ]))
    .unwrap();
    assert_eq!(
        summary,
        json!({"examined": 2, "moved": 0, "duplicates": 0, "kept": 2})
    );
    assert!(server.stop().success());

    // The operator switches the source to `tag`, and reprocesses with the
    // server stopped: the unsigned line becomes an event marked missing.
    let config = with_policy("tag");
    let config_arg = config.to_str().unwrap().to_owned();
    let summary: Value = serde_json::from_str(&stdout_ok(&[
        "quarantine",
        "reprocess",
        "--config",
        &config_arg,
    ]))
    .unwrap();
    assert_eq!(
        summary,
        json!({"examined": 2, "moved": 1, "duplicates": 0, "kept": 1})
    );
    let events = rows(&stdout_ok(&["query", "--config", &config_arg]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["signature"], "valid");
    assert_eq!(events[1]["raw"], unsigned);
    assert_eq!(events[1]["signature"], "missing");
    assert_eq!(events[1]["source"], "konnect-us");
    let left = rows(&stdout_ok(&["quarantine", "list", "--config", &config_arg]));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["raw"], "not an event at all");
    assert!(stdout_ok(&["check", "--config", &config_arg]).contains("OK"));
}

#[test]
fn retention_days_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source(""));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("retention_days = 0\n{text}")).unwrap();
    let output = auditsink(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("retention_days must be at least 1"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&config, format!("retention_days = 30\n{text}")).unwrap();
    let server = TestServer::start(dir.path(), &config);
    assert_eq!(
        server.deliver(TOKEN, body(0..3).as_bytes()).json()["stored"],
        3,
        "events received now are kept"
    );
    assert!(server.stop().success());
}

#[test]
fn large_listings_stream_through_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source(""));
    let server = TestServer::start(dir.path(), &config);
    // About 2 MB of NDJSON: more than one chunk, so the answer is streamed.
    let response = server.deliver(TOKEN, body(0..3000).as_bytes());
    assert_eq!(response.json()["stored"], 3000);
    let config_arg = config.to_str().unwrap().to_owned();
    let all = rows(&stdout_ok(&["query", "--config", &config_arg]));
    assert_eq!(traces(&all), (0..3000).collect::<Vec<_>>());
    let some = rows(&stdout_ok(&[
        "query",
        "--config",
        &config_arg,
        "--limit",
        "2500",
        "--principal",
        "p0",
    ]));
    assert_eq!(traces(&some), (0..3000).step_by(3).collect::<Vec<_>>());
    // A reader that stops early is not an error.
    let mut child = Command::new(BIN)
        .args(["query", "--config", &config_arg])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("\"id\""));
    assert!(child.wait().unwrap().success());
    // The server is still fine.
    assert_eq!(
        server.admin_get("/api/events/count").1.trim(),
        r#"{"count":3000}"#
    );
    assert!(server.stop().success());
}
