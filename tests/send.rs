//! `auditsink send` against a real auditsink (the ledger equals what
//! `query` returns) and against a scripted HTTPS receiver
//! (Konnect's retry rules: connection errors, 429 and 500 are retried, with
//! 1 s..30 s waits and at most 4 retries; anything else is final).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{query, run_bin, simulate_to, write_config, TestServer, BIN};
use serde_json::Value;

const TOKEN: &str = "Bearer send-test";

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `auditsink send ... --json`; (exit code, summary, stderr).
fn send(args: &[&str], stdin: &[u8]) -> (i32, Value, String) {
    let mut all = vec!["send", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_bin(&all, stdin);
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {stderr}"));
    (code, summary, stderr)
}

fn auditsink(dir: &Path, extra: &str) -> TestServer {
    let config = write_config(
        dir,
        &format!("[[source]]\nname = \"test\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n{extra}\n"),
    );
    TestServer::start(dir, &config)
}

fn url(server: &TestServer) -> String {
    format!("https://localhost:{}/audit-logs", server.addr.port())
}

fn cert(server: &TestServer) -> String {
    server.data_dir().join("tls/cert.pem").display().to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn ledger_equals_what_query_returns() {
    let dir = tempfile::tempdir().unwrap();
    let events = simulate_to(
        dir.path(),
        "events.log",
        &["-n", "1234", "--format", "mixed"],
    );
    let jwks = dir.path().join("keys/jwks.json");
    let server = auditsink(
        dir.path(),
        &format!(
            "jwks = {:?}\nsignatures = \"enforce\"",
            jwks.display().to_string()
        ),
    );
    let ledger = dir.path().join("ledger.log");
    let (url, cert) = (url(&server), cert(&server));
    let args = [
        "--url",
        &url,
        "--auth",
        TOKEN,
        "--cacert",
        &cert,
        "--batch",
        "500",
        "--concurrency",
        "3",
        "--ledger",
        ledger.to_str().unwrap(),
        events.to_str().unwrap(),
    ];
    let (code, summary, stderr) = send(&args, b"");
    assert_eq!(code, 0, "{summary} {stderr}");
    assert_eq!(summary["events_read"], 1234);
    assert_eq!(summary["acknowledged"], 1234);
    assert_eq!(summary["failed_batches"], 0);
    assert_eq!(summary["status"], serde_json::json!({"200": 3}));
    assert_eq!(summary["receiver"]["stored"], 1234);
    assert_eq!(
        summary["receiver"]["quarantined"], 0,
        "every signature verifies"
    );
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let acknowledged = lines(&ledger);
    let stored: Vec<String> = query(&["--config", server.config.to_str().unwrap()])
        .iter()
        .map(|e| e["raw"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sorted(acknowledged.clone()), sorted(stored.clone()));
    assert_eq!(sorted(acknowledged), sorted(lines(&events)));

    // The same batches again (a replay): acknowledged, nothing stored twice.
    let (code, summary, _) = send(&args, b"");
    assert_eq!(code, 0);
    assert_eq!(summary["acknowledged"], 1234);
    assert_eq!(summary["receiver"]["duplicates"], 1234);
    assert_eq!(
        query(&["--config", server.config.to_str().unwrap()]).len(),
        1234
    );

    // Stdin, identity encoding, a wrong token: 401 is final.
    let input = std::fs::read(&events).unwrap();
    let (code, summary, stderr) = send(
        &[
            "--url",
            &url,
            "--auth",
            "Bearer wrong",
            "--cacert",
            &cert,
            "--encoding",
            "identity",
        ],
        &input,
    );
    assert_eq!(code, 1);
    assert_eq!(summary["status"]["401"], 3, "{summary}");
    assert!(summary["status"].get("200").is_none());
    assert_eq!(summary["failed_events"], 1234);
    // A receiver that answers before reading a body may close the
    // connection under the next request: that is a connection error, and
    // retried; a 401 never is.
    assert_eq!(
        summary["retries"],
        summary["status"]
            .get("connection_error")
            .cloned()
            .unwrap_or(Value::from(0))
    );
    assert!(stderr.contains("final"), "{stderr}");
}

#[test]
fn certificate_is_checked_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[]);
    let url = server.url("/hook");
    let args = ["--url", &url, "--retry-unit-ms", "1"];
    // Public web roots do not know the test certificate: final at once.
    let (code, summary, _) = send(&args, b"line\n");
    assert_eq!(code, 1);
    assert_eq!(
        summary["status"],
        serde_json::json!({"certificate_error": 1})
    );
    assert!(server.received().is_empty());
    let mut insecure = args.to_vec();
    insecure.push("--insecure");
    let (code, summary, _) = send(&insecure, b"line\n");
    assert_eq!((code, &summary["acknowledged"]), (0, &Value::from(1)));
    assert_eq!(server.received().len(), 1);
}

#[test]
fn konnect_request_shape_and_two_500s_then_200() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[Reply::Status(500), Reply::Status(500)]);
    let url = server.url("/audit-logs?x=1");
    let (code, summary, stderr) = send(
        &[
            "--url",
            &url,
            "--auth",
            TOKEN,
            "--insecure",
            "--retry-unit-ms",
            "100",
        ],
        b"first line\r\n\nsecond line\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["requests"], 3);
    assert_eq!(summary["retries"], 2);
    assert_eq!(summary["acknowledged"], 2);
    assert_eq!(summary["status"], serde_json::json!({"200": 1, "500": 2}));
    let received = server.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/audit-logs?x=1");
        assert_eq!(request.header("authorization"), Some(TOKEN));
        assert_eq!(request.header("content-encoding"), Some("application/gzip"));
        assert_eq!(request.header("content-type"), Some("application/text"));
        assert_eq!(request.decoded_body(), b"first line\nsecond line");
        assert_eq!(request.body, received[0].body, "the same batch is resent");
    }
    let gaps = gaps(&received);
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(3)), "{gaps:?}");
}

#[test]
fn only_connection_errors_429_and_500_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    for status in [400, 401, 404, 408, 413, 415, 501, 502, 503] {
        let server = ScriptedServer::start(dir.path(), &[Reply::Status(status)]);
        let url = server.url("/");
        let (code, summary, stderr) = send(
            &["--url", &url, "--insecure", "--retry-unit-ms", "1"],
            b"a\nb\n",
        );
        assert_eq!(code, 1, "{status}");
        assert_eq!(server.received().len(), 1, "{status} is final");
        assert_eq!(summary["failed_batches"], 1);
        assert_eq!(summary["failed_events"], 2);
        assert_eq!(summary["retries"], 0);
        assert!(stderr.contains(&format!("status {status}")), "{stderr}");
    }
    // A connection closed without an answer, then a 429: both retried.
    let server = ScriptedServer::start(dir.path(), &[Reply::Drop, Reply::Status(429)]);
    let url = server.url("/");
    let (code, summary, _) = send(
        &["--url", &url, "--insecure", "--retry-unit-ms", "1"],
        b"a\n",
    );
    assert_eq!(code, 0);
    assert_eq!(server.received().len(), 3);
    assert_eq!(
        summary["status"],
        serde_json::json!({"200": 1, "429": 1, "connection_error": 1})
    );
}

#[test]
fn at_most_four_retries_with_growing_waits() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[Reply::Status(500); 6]);
    let url = server.url("/");
    let (code, summary, stderr) = send(
        &["--url", &url, "--insecure", "--retry-unit-ms", "25"],
        b"a\n",
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("after 4 retries"), "{stderr}");
    assert_eq!(summary["requests"], 5);
    let received = server.received();
    assert_eq!(received.len(), 5, "1 attempt + 4 retries");
    let gaps = gaps(&received);
    for (gap, units) in gaps.iter().zip([1, 2, 4, 8]) {
        assert!(*gap >= Duration::from_millis(25 * units), "{gaps:?}");
    }
}

#[test]
fn retry_after_is_honoured_within_1_to_30_units() {
    let dir = tempfile::tempdir().unwrap();
    let script = [Reply::RetryAfter(429, 3), Reply::RetryAfter(500, 3600)];
    let server = ScriptedServer::start(dir.path(), &script);
    let url = server.url("/");
    let (code, _, _) = send(
        &["--url", &url, "--insecure", "--retry-unit-ms", "50"],
        b"a\n",
    );
    assert_eq!(code, 0);
    let gaps = gaps(&server.received());
    assert!(gaps[0] >= Duration::from_millis(150), "{gaps:?}");
    // 3600 s asked for: 30 units at most.
    assert!(gaps[1] >= Duration::from_millis(1500), "{gaps:?}");
    assert!(gaps[1] < Duration::from_millis(1500 + 1000), "{gaps:?}");
}

/// With the real unit: Konnect waits at least 1 s before a retry.
#[test]
fn real_backoff_waits_at_least_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[Reply::Status(500), Reply::Status(429)]);
    let url = server.url("/");
    let (code, summary, _) = send(&["--url", &url, "--insecure"], b"a\n");
    assert_eq!(code, 0);
    assert_eq!(summary["retries"], 2);
    let gaps = gaps(&server.received());
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_secs(2), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(5)), "{gaps:?}");
}

#[test]
fn rate_and_duration_bound_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[]);
    let url = server.url("/");
    let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
    // 10 events per batch at 100 events/s: a batch every 100 ms; the run
    // stops starting batches after 0.25 s.
    let (code, summary, _) = send(
        &[
            "--url",
            &url,
            "--insecure",
            "--batch",
            "10",
            "--rate",
            "100",
            "--duration",
            "0.25",
        ],
        input.as_bytes(),
    );
    assert_eq!(code, 0);
    let sent = summary["events_sent"].as_u64().unwrap();
    assert!((20..=30).contains(&sent), "{summary}");
    assert_eq!(summary["acknowledged"].as_u64(), Some(sent));
    let read = summary["events_read"].as_u64().unwrap();
    assert_eq!(summary["unsent_events"].as_u64(), Some(read - sent));
    // Paced (unpaced requests would follow each other within a few ms);
    // each arrival time also carries a TLS handshake's jitter.
    let received = server.received();
    let gaps = gaps(&received);
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(50)),
        "{gaps:?}"
    );
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(mean >= Duration::from_millis(80), "{gaps:?}");
}

#[test]
fn encoding_and_content_type_are_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[]);
    let url = server.url("/");
    for (encoding, content_type) in [("gzip", "text/plain"), ("identity", "application/text")] {
        let (code, _, stderr) = send(
            &[
                "--url",
                &url,
                "--cacert",
                server.ca.to_str().unwrap(),
                "--encoding",
                encoding,
                "--content-type",
                content_type,
            ],
            b"one\ntwo\n",
        );
        assert_eq!(code, 0, "{stderr}");
        let request = server.received().pop().unwrap();
        assert_eq!(request.header("content-type"), Some(content_type));
        if encoding == "identity" {
            assert_eq!(request.header("content-encoding"), None);
            assert_eq!(request.body, b"one\ntwo");
        } else {
            assert_eq!(request.header("content-encoding"), Some("gzip"));
            assert_eq!(&request.body[..2], [0x1f, 0x8b], "a gzip stream");
            assert_eq!(request.decoded_body(), b"one\ntwo");
        }
    }
}

#[test]
fn ledger_holds_only_acknowledged_lines() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 1: 400 (final); batch 2: 500 then 200; batch 3: 200.
    let script = [Reply::Status(400), Reply::Status(500)];
    let server = ScriptedServer::start(dir.path(), &script);
    let url = server.url("/");
    let ledger = dir.path().join("ledger.log");
    let (code, summary, _) = send(
        &[
            "--url",
            &url,
            "--insecure",
            "--batch",
            "2",
            "--retry-unit-ms",
            "1",
            "--ledger",
            ledger.to_str().unwrap(),
        ],
        b"a\nb\nc\nd\ne\n",
    );
    assert_eq!(code, 1, "a batch failed");
    assert_eq!(summary["failed_events"], 2);
    assert_eq!(summary["acknowledged"], 3);
    assert_eq!(std::fs::read_to_string(&ledger).unwrap(), "c\nd\ne\n");
}

#[test]
fn a_refused_connection_is_retried_four_times() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::unused_port();
    let url = format!("https://localhost:{port}/");
    let ledger = dir.path().join("ledger.log");
    let (code, summary, stderr) = send(
        &[
            "--url",
            &url,
            "--insecure",
            "--retry-unit-ms",
            "1",
            "--ledger",
            ledger.to_str().unwrap(),
        ],
        b"a\n",
    );
    assert_eq!(code, 1);
    assert_eq!(
        summary["status"],
        serde_json::json!({"connection_error": 5})
    );
    assert_eq!(summary["retries"], 4);
    assert!(stderr.contains("after 4 retries"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&ledger).unwrap(), "");
}

/// Sends three one-line batches to `url` with the real retry unit (1 s):
/// retried as a connection error, the first batch alone would take 15 s.
/// Returns the exit code, the summary, stderr and how long it took.
fn send_three(url: &str, extra: &[&str]) -> (i32, Value, String, Duration) {
    let mut args = vec!["--url", url, "--batch", "1", "--auth", TOKEN];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let (code, summary, stderr) = send(&args, b"a\nb\nc\n");
    (code, summary, stderr, started.elapsed())
}

/// A failure no retry can fix stops the run at the first batch, at once.
fn assert_stopped_at_once(summary: &Value, kind: &str, took: Duration, stderr: &str) {
    assert_eq!(
        summary["status"],
        serde_json::json!({ kind: 1 }),
        "{stderr}"
    );
    assert_eq!(summary["requests"], 1, "{summary}");
    assert_eq!(summary["retries"], 0, "{summary}");
    assert_eq!(summary["failed_batches"], 1, "{summary}");
    assert_eq!(summary["acknowledged"], 0, "{summary}");
    assert_eq!(
        summary["events_sent"], 1,
        "the other batches are not sent: {summary}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert!(stderr.contains("(final: not retried)"), "{stderr}");
    assert!(stderr.contains("the run stopped there: "), "{stderr}");
}

#[test]
fn an_untrusted_certificate_fails_at_once_with_the_hint() {
    let dir = tempfile::tempdir().unwrap();
    let server = auditsink(dir.path(), "");
    let (code, summary, stderr, took) = send_three(&url(&server), &[]);
    assert_eq!(code, 1);
    assert_stopped_at_once(&summary, "certificate_error", took, &stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(stderr.contains("--cacert PEM, or --insecure"), "{stderr}");
    // With the hint followed, the same receiver takes the batches.
    let (code, summary, stderr, _) = send_three(&url(&server), &["--cacert", &cert(&server)]);
    assert_eq!(
        (code, &summary["acknowledged"]),
        (0, &Value::from(3)),
        "{stderr}"
    );
}

#[test]
fn http_against_the_tls_listener_fails_at_once_with_the_hint() {
    let dir = tempfile::tempdir().unwrap();
    let server = auditsink(dir.path(), "");
    let plain = format!("http://localhost:{}/audit-logs", server.addr.port());
    let (code, summary, stderr, took) = send_three(&plain, &[]);
    assert_eq!(code, 1);
    assert_stopped_at_once(&summary, "protocol_error", took, &stderr);
    assert!(stderr.contains("use https://"), "{stderr}");
}

#[test]
fn https_against_a_plain_http_receiver_fails_at_once_with_the_hint() {
    // A plain-HTTP receiver: it answers the TLS hello with an HTTP 400.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf);
            let _ = tcp.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let (code, summary, stderr, took) =
        send_three(&format!("https://localhost:{port}/"), &["--insecure"]);
    assert_eq!(code, 1);
    assert_stopped_at_once(&summary, "protocol_error", took, &stderr);
    assert!(stderr.contains("use http://"), "{stderr}");
}

#[test]
fn a_name_that_does_not_resolve_fails_at_once() {
    // `.invalid` never resolves (RFC 6761); a resolver that cannot be
    // reached says "temporary failure", which is retried like any
    // connection error, so there is nothing to test then.
    let host = "auditsink-test.invalid";
    if let Err(e) = std::net::ToSocketAddrs::to_socket_addrs(&(host, 443)) {
        if e.to_string().contains("Temporary failure") {
            eprintln!("skipping: this machine's resolver is unavailable ({e})");
            return;
        }
    }
    let (code, summary, stderr, took) = send_three(&format!("https://{host}/"), &[]);
    assert_eq!(code, 1);
    assert_stopped_at_once(&summary, "unknown_host", took, &stderr);
    assert!(stderr.contains("does not resolve"), "{stderr}");
}

#[test]
fn ctrl_c_prints_the_summary_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let server = auditsink(dir.path(), "");
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let input_path = dir.path().join("input.log");
    std::fs::write(&input_path, input).unwrap();
    let ledger = dir.path().join("ledger.log");
    let target = url(&server);
    let child = Command::new(BIN)
        .args([
            "send", "--json", "--url", &target, "--auth", TOKEN, "--batch", "10",
        ])
        .args(["--rate", "100", "--cacert", &cert(&server), "--ledger"])
        .arg(&ledger)
        .arg(&input_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once a batch is acknowledged (its ledger line written).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&ledger).map_or(true, |l| l.is_empty()) {
        assert!(Instant::now() < deadline, "no batch was acknowledged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted_at = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        interrupted_at.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted (Ctrl-C)"), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["stopped"], "interrupted", "{summary}");
    let acknowledged = summary["acknowledged"].as_u64().unwrap();
    assert!((10..2000).contains(&acknowledged), "{summary}");
    // The ledger holds exactly what the summary counts as acknowledged.
    assert_eq!(lines(&ledger).len() as u64, acknowledged);
}

/// `--duration` ends the run on time even when the next batch's slot under
/// `--rate` is later, and even when the input (a pipe) has not ended; a
/// pause in such an input sends the lines read so far.
#[test]
fn duration_ends_the_run_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(dir.path(), &[]);
    let url = server.url("/");
    let input: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let started = Instant::now();
    // 1 event/s in batches of 10: the second batch's slot is at 10 s.
    let (code, summary, _) = send(
        &[
            "--url",
            &url,
            "--insecure",
            "--batch",
            "10",
            "--rate",
            "1",
            "--duration",
            "0.5",
        ],
        input.as_bytes(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 0);
    assert_eq!(summary["events_sent"], 10, "{summary}");
    assert_eq!(summary["unsent_events"], 20, "{summary}");

    // Stdin left open after a few lines: after a 1 s pause they are sent
    // (a partial batch), and the run ends after --duration.
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "send",
            "--json",
            "--url",
            &url,
            "--insecure",
            "--duration",
            "2.5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"x\ny\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("send did not end after --duration with its input still open");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    assert!(status.success());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["events_read"], 2, "{summary}");
    assert_eq!(summary["acknowledged"], 2, "{summary}");
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

/// Time between consecutive requests.
fn gaps(received: &[Received]) -> Vec<Duration> {
    received
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

/// What a [`ScriptedServer`] does with one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Answer with this status and `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// One request a [`ScriptedServer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When its head had arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when `Content-Encoding` says gzip.
    pub fn decoded_body(&self) -> Vec<u8> {
        if self
            .header("content-encoding")
            .is_some_and(|e| e.contains("gzip"))
        {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(self.body.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            self.body.clone()
        }
    }
}

/// An HTTPS test receiver (rustls, certificate for `localhost`) that answers
/// a scripted sequence of replies, then 200 to everything, one request per
/// connection, and records every request with its arrival time.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    /// PEM of its self-signed certificate.
    pub ca: PathBuf,
    received: Arc<Mutex<Vec<Received>>>,
}

impl ScriptedServer {
    pub fn start(dir: &Path, script: &[Reply]) -> ScriptedServer {
        let (config, ca) = common::self_signed_tls(dir, "scripted-server-ca.pem");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let mut script: std::collections::VecDeque<Reply> = script.iter().copied().collect();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let Some(request) = read_request(&mut tls) else {
                    continue;
                };
                log.lock().unwrap().push(request);
                let (status, extra) = match script.pop_front().unwrap_or(Reply::Status(200)) {
                    Reply::Drop => continue,
                    Reply::Status(status) => (status, String::new()),
                    Reply::RetryAfter(status, secs) => (status, format!("Retry-After: {secs}\r\n")),
                };
                let body = format!("{{\"status\":{status}}}");
                let response = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        ScriptedServer { addr, ca, received }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// The requests received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body.
fn read_request(stream: &mut impl Read) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let at = Instant::now();
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        at,
        method,
        path,
        headers,
        body,
    })
}
