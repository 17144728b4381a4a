//! `auditsink replay`: the stored events of a time window (and of one
//! source) are resent, as their raw lines, to a second auditsink; exactly
//! that window arrives, through the admin listener while the first server
//! runs and from the store directly once it is stopped.

mod common;

use std::path::Path;

use common::{query, run_bin, simulate_to, write_config, TestServer};
use serde_json::Value;

const TOKEN: &str = "Bearer replay-test";

fn url(server: &TestServer, path: &str) -> String {
    format!("https://localhost:{}{path}", server.addr.port())
}

fn cert(server: &TestServer) -> String {
    server.data_dir().join("tls/cert.pem").display().to_string()
}

/// `auditsink send FILE` to `server` at `path`; asserts every event is acknowledged.
fn send(server: &TestServer, path: &str, file: &Path) {
    let (code, stdout, stderr) = run_bin(
        &[
            "send",
            "--quiet",
            "--url",
            &url(server, path),
            "--auth",
            TOKEN,
            "--cacert",
            &cert(server),
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stdout} {stderr}");
}

fn raws(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["raw"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn replay_resends_exactly_a_window_to_another_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    // Two sources whose events interleave in time.
    let eu = simulate_to(dir.path(), "eu.log", &["-n", "300", "--seed", "7"]);
    let us = simulate_to(
        dir.path(),
        "us.log",
        &["-n", "300", "--seed", "8", "--format", "json"],
    );
    let source = |name: &str| {
        format!("[[source]]\nname = \"{name}\"\npath = \"/{name}\"\nauthorization = {TOKEN:?}\n")
    };
    let a_config = write_config(&a_dir, &format!("{}{}", source("eu"), source("us")));
    let a = TestServer::start(&a_dir, &a_config);
    send(&a, "/eu", &eu);
    send(&a, "/us", &us);
    let jwks = dir.path().join("keys/jwks.json");
    let b_config = write_config(
        &b_dir,
        &format!(
            "{}jwks = {:?}\nsignatures = \"enforce\"\n",
            source("in"),
            jwks.display().to_string()
        ),
    );
    let b = TestServer::start(&b_dir, &b_config);

    // The window: from the 100th to the 200th eu event's time, as RFC 3339
    // and as epoch ms (the forms `query` takes).
    let stored = query(&["--config", a_config.to_str().unwrap()]);
    assert_eq!(stored.len(), 600);
    let eu_stored: Vec<&Value> = stored.iter().filter(|e| e["source"] == "eu").collect();
    let since = eu_stored[100]["timestamp"].as_str().unwrap().to_owned();
    let until_ms = eu_stored[200]["fields"]["rt"].as_i64().unwrap();
    let until = eu_stored[200]["timestamp"].as_str().unwrap().to_owned();
    let in_window = |e: &&Value| {
        let t = e["timestamp"].as_str().unwrap();
        since.as_str() <= t && t < until.as_str()
    };
    let window_of = |source: Option<&str>| -> Vec<String> {
        let selected: Vec<Value> = stored
            .iter()
            .filter(in_window)
            .filter(|e| source.map_or(true, |s| e["source"] == s))
            .cloned()
            .collect();
        raws(&selected)
    };
    let (eu_window, all_window) = (window_of(Some("eu")), window_of(None));
    assert_eq!(eu_window.len(), 100);
    assert!(all_window.len() > 150, "the sources interleave");

    let replay = |extra: &[&str]| -> (Value, String) {
        let b_url = url(&b, "/in");
        let b_cert = cert(&b);
        let mut args = vec![
            "replay",
            "--config",
            a_config.to_str().unwrap(),
            "--url",
            &b_url,
            "--auth",
            TOKEN,
            "--cacert",
            &b_cert,
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run_bin(&args, b"");
        assert_eq!(code, 0, "{stdout} {stderr}");
        (serde_json::from_str(stdout.trim()).unwrap(), stderr)
    };

    // A is running: its store is read through its admin listener. Only the
    // eu events of the window arrive, in arrival order, signatures valid.
    let until_arg = until_ms.to_string();
    let (summary, stderr) = replay(&["--since", &since, "--until", &until_arg, "--source", "eu"]);
    assert!(stderr.contains("admin listener"), "{stderr}");
    assert_eq!(summary["events_read"], 100, "{summary}");
    assert_eq!(summary["receiver"]["stored"], 100);
    let in_b = query(&["--config", b_config.to_str().unwrap()]);
    assert_eq!(raws(&in_b), eu_window, "exactly the window, in order");
    assert!(in_b.iter().all(|e| e["signature"] == "valid"));

    // A stopped: its store is read directly. Every source this time: B
    // already has the eu events (duplicates), the us ones are new.
    assert!(a.stop().success());
    let (summary, stderr) = replay(&["--since", &since, "--until", &until]);
    assert!(stderr.contains("reading the store"), "{stderr}");
    assert_eq!(summary["events_read"], all_window.len());
    assert_eq!(summary["receiver"]["duplicates"], 100);
    assert_eq!(summary["receiver"]["stored"], all_window.len() - 100);
    let mut in_b = raws(&query(&["--config", b_config.to_str().unwrap()]));
    let mut expected = all_window.clone();
    in_b.sort();
    expected.sort();
    assert_eq!(in_b, expected);

    // An empty window sends nothing and succeeds; a reversed one is refused.
    let (summary, _) = replay(&["--since", "2000-01-01", "--until", "2000-01-02"]);
    assert_eq!(summary["events_read"], 0);
    let (code, _, stderr) = run_bin(
        &[
            "replay",
            "--config",
            a_config.to_str().unwrap(),
            "--since",
            &until,
            "--until",
            &since,
            "--url",
            "https://localhost:1/",
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the time window is empty: --since"),
        "{stderr}"
    );
}
