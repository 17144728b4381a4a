//! HTTP semantics a sender relies on: an answer sent before the body was
//! read reaches curl (h2 and HTTP/1.1) and a client that writes its whole
//! body before reading (lingering close); HEAD has no body; exactly one
//! `Authorization`; a malformed body is kept; a bare CR separates events;
//! idle connections give way to deliveries on both listeners. Real binary,
//! real TLS, real curl and Python clients where the machine has them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{gzip, read_one_response, request_head, tls_connect, write_config, TestServer};
use serde_json::Value;

const TOKEN: &str = "Bearer semantics";

fn start(dir: &Path, limits: &str) -> TestServer {
    let config = write_config(
        dir,
        &format!("[limits]\n{limits}\n[[source]]\nname = \"s\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"),
    );
    TestServer::start(dir, &config)
}

fn ca(server: &TestServer) -> PathBuf {
    server.data_dir().join("tls/cert.pem")
}

/// `n` distinct CEF lines of some 300 bytes each (they compress poorly, as
/// real ones with ids and signatures do).
fn batch(prefix: &str, n: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            let noise: String = (0..240)
                .map(|_| {
                    // xorshift64: noise gzip cannot shrink much
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from_digit((state % 16) as u32, 16).unwrap()
                })
                .collect();
            format!("CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id={prefix}-{i} sig={noise}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `program --version` runs; prints why the caller skips if not.
fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping the {program} part: {program} is not installed");
    }
    found
}

/// curl's (status, exit code) for a POST of the file `body`.
fn curl_post(server: &TestServer, version: &str, headers: &[&str], body: &Path) -> (String, i32) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", version])
        .arg("--cacert")
        .arg(ca(server))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()));
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(format!(
            "https://127.0.0.1:{}/audit-logs",
            server.addr.port()
        ))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

/// Python's `http.client`, which writes the whole body before it reads the
/// answer: the status it saw, or the exception it got.
const PYTHON_WHOLE_BODY_CLIENT: &str = r#"
import http.client, ssl, sys
port, ca, auth, path, encoding = sys.argv[1:6]
body = open(path, "rb").read()
context = ssl.create_default_context(cafile=ca)
connection = http.client.HTTPSConnection("127.0.0.1", int(port), context=context, timeout=60)
headers = {"Authorization": auth, "Content-Length": str(len(body))}
if encoding != "identity":
    headers["Content-Encoding"] = encoding
try:
    connection.request("POST", "/audit-logs", body=body, headers=headers)
    print(connection.getresponse().status)
except Exception as e:
    print("error:", type(e).__name__, e)
"#;

fn python_post(server: &TestServer, auth: &str, body: &Path, encoding: &str) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_WHOLE_BODY_CLIENT)
        .arg(server.addr.port().to_string())
        .arg(ca(server))
        .arg(auth)
        .arg(body)
        .arg(encoding)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn early_answers_reach_curl_over_h2_and_http1_and_a_whole_body_client() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults: max_body_bytes is 16 MiB, lingering reads up to 64 MiB.
    let server = start(dir.path(), "");
    let small = dir.path().join("500-lines.gz");
    std::fs::write(&small, gzip(batch("wrong-token", 500).as_bytes())).unwrap();
    assert!(std::fs::metadata(&small).unwrap().len() > 64 * 1024);
    let large = dir.path().join("20MiB");
    std::fs::write(&large, vec![b'x'; 20 * 1024 * 1024]).unwrap();
    let wrong = "Authorization: Bearer wrong";
    let right = format!("Authorization: {TOKEN}");

    let mut checked = 0;
    if have("curl") {
        for version in ["--http2", "--http1.1"] {
            let answer = curl_post(&server, version, &[wrong, "Content-Encoding: gzip"], &small);
            assert_eq!(
                answer,
                ("401".into(), 0),
                "curl {version}, wrong token, 500 lines"
            );
            let answer = curl_post(&server, version, &[&right], &large);
            assert_eq!(answer, ("413".into(), 0), "curl {version}, 20 MiB");
            let answer = curl_post(&server, version, &[wrong], &large);
            assert_eq!(
                answer,
                ("401".into(), 0),
                "curl {version}, wrong token, 20 MiB"
            );
            checked += 3;
        }
    }
    if have("python3") {
        assert_eq!(python_post(&server, TOKEN, &large, "identity"), "413");
        assert_eq!(
            python_post(&server, "Bearer wrong", &large, "identity"),
            "401"
        );
        assert_eq!(python_post(&server, "Bearer wrong", &small, "gzip"), "401");
        checked += 3;
    }
    if checked > 0 {
        let status = server.status();
        let rejected = &status["sources"][0]["rejected"];
        assert!(
            rejected["unauthorized"].as_u64().unwrap() >= 2,
            "{rejected}"
        );
        assert!(rejected["too_large"].as_u64().unwrap() >= 1, "{rejected}");
    }
    // Still serving, on a fresh connection.
    assert_eq!(
        server.deliver(TOKEN, batch("after", 3).as_bytes()).status,
        200
    );
}

#[test]
fn lingering_gives_up_on_a_client_that_stops_sending() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "lingering_timeout_secs = 1\nlingering_time_secs = 3\nkeep_alive_idle_secs = 60",
    );
    let mut tls = tls_connect(server.addr, &ca(&server));
    let head = request_head(
        "POST",
        "/audit-logs",
        &[("Authorization", "Bearer wrong")],
        1_000_000,
    )
    .replace("Connection: close\r\n", "");
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&[b'x'; 1000]).unwrap();
    tls.flush().unwrap();
    let response = read_one_response(&mut tls);
    assert_eq!(response.status, 401);
    assert_eq!(response.header("connection"), Some("close"));
    // The rest never comes: the connection closes after lingering_timeout_secs.
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let _ = tls.read(&mut buffer);
    let took = started.elapsed();
    eprintln!("lingering gave up after {took:?}");
    assert!(took < Duration::from_secs(20), "held {took:?}");
}

#[test]
fn sigterm_does_not_wait_for_a_lingering_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "lingering_timeout_secs = 60\nlingering_time_secs = 60",
    );
    let mut tls = tls_connect(server.addr, &ca(&server));
    let head = request_head(
        "POST",
        "/audit-logs",
        &[("Authorization", "Bearer wrong")],
        1_000_000,
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&[b'x'; 1000]).unwrap();
    tls.flush().unwrap();
    assert_eq!(read_one_response(&mut tls).status, 401);
    // The answer is out and the connection only lingers: a stop drops it.
    let started = Instant::now();
    let status = server.stop();
    let took = started.elapsed();
    eprintln!("exit after SIGTERM with a lingering connection: {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
}

#[test]
fn head_over_h2_gets_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    if !have("curl") {
        return;
    }
    for version in ["--http2", "--http1.1"] {
        let output = Command::new("curl")
            .args(["-s", "-I", version, "--cacert"])
            .arg(ca(&server))
            .arg(format!(
                "https://127.0.0.1:{}/audit-logs",
                server.addr.port()
            ))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "curl -I {version}: {head}");
        assert!(head.contains(" 405"), "{head}");
        assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    }
}

#[test]
fn more_than_one_authorization_header_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let body = batch("auth", 1);
    for headers in [
        [("Authorization", TOKEN), ("Authorization", "Bearer wrong")],
        [("Authorization", "Bearer wrong"), ("Authorization", TOKEN)],
        [("Authorization", TOKEN), ("Authorization", TOKEN)],
    ] {
        let response = server.post("/audit-logs", &headers, body.as_bytes());
        assert_eq!(response.status, 401, "{headers:?}");
        assert!(
            response.json()["error"]
                .as_str()
                .unwrap()
                .contains("more than one Authorization"),
            "{}",
            response.json()
        );
    }
    let response = server.post("/audit-logs", &[("Authorization", TOKEN)], body.as_bytes());
    assert_eq!(response.status, 200);
}

fn quarantine(server: &TestServer) -> Vec<Value> {
    let (code, rows) = server.admin_get("/api/quarantine");
    assert_eq!(code, 200);
    rows.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn malformed_chunked_framing_is_400_and_kept_in_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let line = "CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id=framed";
    let mut tls = tls_connect(server.addr, &ca(&server));
    write!(
        tls,
        "POST /audit-logs HTTP/1.1\r\nHost: localhost\r\nAuthorization: {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\nZZ not a size\r\n",
        line.len()
    )
    .unwrap();
    tls.flush().unwrap();
    let response = read_one_response(&mut tls);
    assert_eq!(response.status, 400);
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("malformed request body framing"), "{error}");
    assert!(error.contains("kept in quarantine"), "{error}");
    let rows = quarantine(&server);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["raw"], line);
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("malformed request body framing"),
        "{reason}"
    );
    assert_eq!(
        server.status()["sources"][0]["rejected"]["malformed_body"],
        1
    );
}

#[test]
fn a_bare_cr_separates_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let body = (0..3)
        .map(|i| format!("CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id=cr-{i}"))
        .collect::<Vec<_>>()
        .join("\r");
    let response = server.deliver(TOKEN, body.as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        serde_json::json!({"received": 3, "stored": 3, "duplicates": 0, "quarantined": 0})
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_head_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A long idle timeout, so only the head timeout can close it.
    let server = start(
        dir.path(),
        "header_read_timeout_secs = 1\nkeep_alive_idle_secs = 60",
    );
    let mut tls = tls_connect(server.addr, &ca(&server));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let result = tls.read(&mut buffer);
    let took = started.elapsed();
    eprintln!("a silent TLS connection was closed after {took:?} ({result:?})");
    assert!(matches!(result, Ok(0) | Err(_)), "{result:?}");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "closed only after {took:?}");
}

/// `n` TLS connections with their handshakes done, holding still.
fn idle_tls_connections(server: &TestServer, n: usize) -> Vec<Tls> {
    (0..n)
        .map(|_| {
            let mut tls = tls_connect(server.addr, &ca(server));
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            tls
        })
        .collect()
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A connection with a request in progress: its head and the first 10 bytes
/// of `body` sent (the rest is the caller's to send).
fn request_in_progress(server: &TestServer, body: &str) -> Tls {
    let mut tls = tls_connect(server.addr, &ca(server));
    let head = request_head(
        "POST",
        "/audit-logs",
        &[("Authorization", TOKEN)],
        body.len(),
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&body.as_bytes()[..10]).unwrap();
    tls.flush().unwrap();
    tls
}

/// This process's soft limit on open files (the server inherits it).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn a_delivery_is_served_promptly_with_1024_idle_connections_open() {
    // Both ends hold 1,024 connections, plus the server's store and listeners.
    if open_files_limit().is_some_and(|limit| limit < 1200) {
        eprintln!("skipping: the open-files limit (ulimit -n) is below 1200");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The default connection limit (1024); head and idle timeouts far longer
    // than the test, so only making room can serve the delivery.
    let server = start(
        dir.path(),
        "header_read_timeout_secs = 120\nkeep_alive_idle_secs = 120",
    );
    // One connection in the middle of a request: never closed for room.
    let body = batch("busy", 2);
    let mut busy = request_in_progress(&server, &body);
    let started = Instant::now();
    let idle = idle_tls_connections(&server, 1023);
    eprintln!(
        "1023 idle TLS connections opened in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let response = server.deliver(TOKEN, batch("prompt", 5).as_bytes());
    let took = started.elapsed();
    eprintln!("delivery with 1024 connections open answered in {took:?}");
    assert_eq!(response.status, 200);
    assert!(took < Duration::from_secs(15), "delivery waited {took:?}");

    // The busy one was left alone and completes.
    busy.write_all(&body.as_bytes()[10..]).unwrap();
    busy.flush().unwrap();
    assert_eq!(common::read_response(&mut busy).status, 200);
    drop(idle);
}

#[test]
fn connections_with_requests_in_progress_hold_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "max_connections = 2");
    let body = batch("held", 2);
    let mut held: Vec<_> = (0..2)
        .map(|_| request_in_progress(&server, &body))
        .collect();
    // Let both requests reach the server before the third connects.
    std::thread::sleep(Duration::from_millis(500));
    let mut third = tls_connect(server.addr, &ca(&server));
    third
        .sock
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        third.conn.complete_io(&mut third.sock).is_err() || third.conn.is_handshaking(),
        "a third connection is not served while two are busy"
    );
    let mut first = held.remove(0);
    first.write_all(&body.as_bytes()[10..]).unwrap();
    first.flush().unwrap();
    assert_eq!(common::read_response(&mut first).status, 200);
    drop(first);
    third
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while third.conn.is_handshaking() {
        third
            .conn
            .complete_io(&mut third.sock)
            .expect("served once a slot frees");
    }
}

#[test]
fn healthz_answers_promptly_with_64_idle_admin_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "header_read_timeout_secs = 120\nkeep_alive_idle_secs = 120",
    );
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(server.admin).unwrap())
        .collect();
    // Let the admin listener take them all.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (code, body) = server.admin_get("/healthz");
    let took = started.elapsed();
    eprintln!("/healthz with 64 idle admin connections answered in {took:?}");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert!(took < Duration::from_secs(15), "/healthz waited {took:?}");
    drop(idle);
}

#[test]
fn a_post_to_the_admin_listener_says_where_webhooks_go() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let mut tcp = TcpStream::connect(server.admin).unwrap();
    let body = gzip(b"CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1");
    write!(
        tcp,
        "POST /audit-logs HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    tcp.write_all(&body).unwrap();
    let response = common::read_response(&mut tcp);
    assert_eq!(response.status, 405);
    let answer = response.json();
    let url = format!("https://127.0.0.1:{}/audit-logs", server.addr.port());
    assert_eq!(answer["webhook_urls"], serde_json::json!([url]));
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("HTTPS listener") && error.contains(&url),
        "{error}"
    );
}
