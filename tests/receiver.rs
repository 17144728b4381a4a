//! End-to-end: the real binary over real TLS, as Konnect delivers.

mod common;

use common::{corpus, query, write_config, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "Bearer test-token-0123456789";

fn config_with_token(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("[[source]]\nname = \"konnect-us\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\nformat = \"auto\"\n"),
    )
}

fn counts(response: &common::HttpResponse) -> Value {
    assert_eq!(
        response.status,
        200,
        "body: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// Three well-formed CEF lines that need no shared corpus.
fn inline_events() -> Vec<String> {
    (0..3)
        .map(|i| {
            format!(
                "Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=168145074840{i} src=127.0.0.6 \
                 action=retrieve granted=true org_id=o principal_id=p{i} trace_id=389521334733463509{i} \
                 user_agent=grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)"
            )
        })
        .collect()
}

#[test]
fn konnect_samples_over_tls_with_generated_cert_and_token() {
    let (Some(cef), Some(jsonl)) = (corpus("konnect-sample.cef"), corpus("konnect-sample.jsonl"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // No [[source]]: the embedded default source with a generated token.
    let config = write_config(dir.path(), "");
    let server = TestServer::start(dir.path(), &config);
    let token = server.token();
    assert!(token.starts_with("Bearer ") && token.len() > 40, "{token}");
    let stdout = server.stdout_containing("skip_ssl_verification");
    assert!(
        stdout.contains(&token),
        "first run prints the token: {stdout:?}"
    );
    assert!(stdout.contains("PATCH https://us.api.konghq.com/v2/audit-log-webhook"));
    assert!(stdout.contains("\"skip_ssl_verification\":true"));
    assert!(stdout.contains("\"endpoint\":\"https://"));
    assert!(
        !server.stderr().iter().any(|l| l.contains(&token[7..])),
        "the token must never appear in logs"
    );

    let cef_text = std::fs::read(&cef).unwrap();
    let json_text = std::fs::read(&jsonl).unwrap();
    let cef_response = server.deliver(&token, &cef_text);
    assert_eq!(
        counts(&cef_response),
        json!({"received": 60, "stored": 60, "duplicates": 0, "quarantined": 0})
    );
    let json_response = server.deliver(&token, &json_text);
    assert_eq!(
        counts(&json_response),
        json!({"received": 60, "stored": 60, "duplicates": 0, "quarantined": 0})
    );

    // While the server runs, query goes through the admin listener.
    let config_arg = server.config.to_str().unwrap().to_owned();
    let events = query(&["--config", &config_arg]);
    assert_eq!(events.len(), 120);
    let sent: Vec<String> = String::from_utf8(cef_text)
        .unwrap()
        .lines()
        .chain(String::from_utf8(json_text).unwrap().lines())
        .map(str::to_owned)
        .collect();
    for (event, line) in events.iter().zip(&sent) {
        assert_eq!(
            event["raw"],
            json!(line),
            "events come back in arrival order, raw exact"
        );
        assert_eq!(event["source"], "konnect");
        assert_eq!(event["signature"], "unverified");
        assert!(event["id"].as_str().unwrap().len() == 16);
        assert!(event["received_at"].as_str().unwrap().ends_with('Z'));
        assert!(event["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2025-11-25T"));
        assert_eq!(event["vendor"], "KongInc");
        assert!(event["sig"].as_str().unwrap().len() > 80);
        assert!(
            event["fields"].get("sig").is_none(),
            "sig is never duplicated in fields"
        );
        assert!(
            event["fields"]["trace_id"].is_string(),
            "trace_id kept exact as a string"
        );
        assert!(event["fields"]["rt"].is_u64());
    }
    assert_eq!(events[0]["format"], "cef");
    assert_eq!(events[60]["format"], "json");
    assert_eq!(events[0]["fields"]["trace_id"], "5820897414700404846");
    assert_eq!(
        events[0]["fields"]["user_agent"],
        "grpc-node/1.24.11 grpc-c/8.0.0 (linux; chttp2; ganges)"
    );
    assert_eq!(events[0]["name"], "Ingress");
    assert_eq!(events[0]["fields"]["status"], 204);
    assert_eq!(events[60]["fields"]["trace_id"], "5820897414700404846");
    // The same event in both formats normalizes to the same time and fields.
    assert_eq!(events[0]["timestamp"], events[60]["timestamp"]);
    assert_eq!(
        events[0]["fields"].as_object().unwrap().len(),
        events[60]["fields"].as_object().unwrap().len()
    );

    let status = server.status();
    let source = &status["sources"][0];
    assert_eq!(source["name"], "konnect");
    assert_eq!(source["events_stored"], 120);
    assert_eq!(source["last_response_code"], 200);
    assert_eq!(source["webhook_status"], "active");
    assert!(source["last_attempt_at"].is_string());

    assert!(server.stop().success(), "SIGTERM is a clean exit");
    // After the server stopped, query opens the store directly.
    let data_dir = dir.path().join("data");
    assert_eq!(
        query(&["--data-dir", data_dir.to_str().unwrap()]).len(),
        120
    );
    assert_eq!(
        query(&["--data-dir", data_dir.to_str().unwrap(), "--limit", "7"]).len(),
        7
    );

    // The token is shown on first run only.
    let again = TestServer::start(dir.path(), &config);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !again.stdout_now().contains(&token[7..]),
        "token printed again: {}",
        again.stdout_now()
    );
    assert_eq!(again.token(), token, "the saved token is reused");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let body = common::gzip(inline_events().join("\n").as_bytes());
    let (first, rest) = body.split_at(body.len() / 2);
    let mut tls = common::tls_connect(server.addr, &server.data_dir().join("tls/cert.pem"));
    let head = common::request_head(
        "POST",
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "gzip")],
        body.len(),
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(first).unwrap();
    tls.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));

    server.terminate();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !server.exited(),
        "the server waits for the request in flight"
    );
    assert!(
        std::net::TcpStream::connect(server.addr).is_err(),
        "listener closed after SIGTERM"
    );

    tls.write_all(rest).unwrap();
    tls.flush().unwrap();
    let response = common::read_response(&mut tls);
    assert_eq!(
        counts(&response)["stored"],
        3,
        "the in-flight batch is stored and acknowledged"
    );
    assert!(server.stop().success(), "exit 0 after draining");
    let data_dir = dir.path().join("data");
    assert_eq!(query(&["--data-dir", data_dir.to_str().unwrap()]).len(), 3);
}

#[test]
fn wrong_or_missing_authorization_is_401_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let body = inline_events().join("\n");
    for auth in [
        "Bearer wrong",
        "Bearer test-token-012345678",
        "bearer test-token-0123456789",
        "",
    ] {
        let response = server.deliver(auth, body.as_bytes());
        assert_eq!(response.status, 401, "{auth:?}");
    }
    let response = server.post(
        "/audit-logs",
        &[("Content-Encoding", "gzip")],
        &common::gzip(body.as_bytes()),
    );
    assert_eq!(response.status, 401, "missing header");
    let response = server.post("/elsewhere", &[("Authorization", TOKEN)], body.as_bytes());
    assert_eq!(response.status, 404);

    let status = server.status();
    assert_eq!(status["sources"][0]["rejected"]["unauthorized"], 5);
    assert_eq!(status["sources"][0]["events_stored"], 0);
    assert_eq!(status["sources"][0]["webhook_status"], "failing");
    assert_eq!(status["sources"][0]["last_response_code"], 401);
    let (code, rows) = server.admin_get("/api/events");
    assert_eq!((code, rows.as_str()), (200, ""), "nothing stored");
    assert!(
        !server.stderr().iter().any(|l| l.contains("test-token")),
        "tokens never appear in logs"
    );
}

#[test]
fn garbage_line_is_quarantined_and_good_lines_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let mut lines = inline_events();
    lines.insert(1, "this is not an audit event".to_owned());
    lines.insert(3, "{\"rt\": 1, \"trailing\": 2,}".to_owned());
    // Blank lines and a trailing newline are not lines.
    let body = format!("{}\n\n  \n", lines.join("\r\n"));
    let response = server.deliver(TOKEN, body.as_bytes());
    assert_eq!(
        counts(&response),
        json!({"received": 5, "stored": 3, "duplicates": 0, "quarantined": 2})
    );

    let (code, rows) = server.admin_get("/api/quarantine");
    assert_eq!(code, 200);
    let rows: Vec<Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["raw"], "this is not an audit event");
    assert_eq!(rows[1]["raw"], "{\"rt\": 1, \"trailing\": 2,}");
    assert!(rows
        .iter()
        .all(|r| !r["reason"].as_str().unwrap().is_empty() && r["source"] == "konnect-us"));

    let events = query(&["--config", server.config.to_str().unwrap()]);
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["fields"]["principal_id"], "p1");
}

#[test]
fn a_resent_batch_keeps_its_bad_line_once_and_counts_it_as_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let mut lines = inline_events();
    lines.insert(1, "this is not an audit event".to_owned());
    let body = lines.join("\n");
    let first = server.deliver(TOKEN, body.as_bytes());
    assert_eq!(
        counts(&first),
        json!({"received": 4, "stored": 3, "duplicates": 0, "quarantined": 1})
    );
    // Konnect resends a batch it got no answer for.
    let again = server.deliver(TOKEN, body.as_bytes());
    assert_eq!(
        counts(&again),
        json!({"received": 4, "stored": 0, "duplicates": 4, "quarantined": 0})
    );
    let (code, rows) = server.admin_get("/api/quarantine");
    assert_eq!(code, 200);
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert_eq!(server.status()["store"]["quarantine"], 1);
}

#[test]
fn encodings_konnect_and_others_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let line = |i: usize| format!("CEF:0|V|P|1|c|n|1|k={i}");
    for (i, encoding) in ["application/gzip", "gzip", "x-gzip"].iter().enumerate() {
        let response = server.post(
            "/audit-logs",
            &[("Authorization", TOKEN), ("Content-Encoding", encoding)],
            &common::gzip(line(i).as_bytes()),
        );
        assert_eq!(counts(&response)["stored"], 1, "{encoding}");
    }
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut deflate, line(10).as_bytes()).unwrap();
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "deflate")],
        &deflate.finish().unwrap(),
    );
    assert_eq!(counts(&response)["stored"], 1);
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN)],
        line(11).as_bytes(),
    );
    assert_eq!(counts(&response)["stored"], 1, "identity");
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "br")],
        line(12).as_bytes(),
    );
    assert_eq!(response.status, 415);
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "gzip")],
        b"definitely not gzip",
    );
    assert_eq!(response.status, 400, "corrupt gzip is final, and kept");
    let (_, rows) = server.admin_get("/api/quarantine");
    assert!(rows.contains("definitely not gzip"), "{rows}");
    let response = server.post("/audit-logs", &[("Authorization", TOKEN)], b"");
    assert_eq!(
        counts(&response),
        json!({"received": 0, "stored": 0, "duplicates": 0, "quarantined": 0})
    );
}

#[test]
fn restart_keeps_events_and_redelivery_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_token(dir.path());
    let body = inline_events().join("\n");
    {
        let server = TestServer::start(dir.path(), &config);
        assert_eq!(counts(&server.deliver(TOKEN, body.as_bytes()))["stored"], 3);
        assert!(server.stop().success());
    }
    let server = TestServer::start(dir.path(), &config);
    let events = query(&["--config", server.config.to_str().unwrap()]);
    assert_eq!(events.len(), 3, "events survive a restart");
    let again = server.deliver(TOKEN, body.as_bytes());
    assert_eq!(
        counts(&again),
        json!({"received": 3, "stored": 0, "duplicates": 3, "quarantined": 0})
    );
    assert_eq!(server.status()["sources"][0]["duplicates"], 3);
}

#[test]
fn method_other_than_post_is_405() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &config_with_token(dir.path()));
    let response = common::https_request(
        server.addr,
        &server.data_dir().join("tls/cert.pem"),
        "GET",
        "/audit-logs",
        &[("Authorization", TOKEN)],
        b"",
    );
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
}
