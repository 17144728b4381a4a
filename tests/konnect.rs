//! `auditsink konnect ...` against `auditsink emulate konnect`, and both
//! against a real `auditsink serve`: real processes, real HTTP to the
//! emulated API, real TLS and gzip deliveries, a real store and a real
//! stopped receiver.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{query, read_response, request_head, unused_port, write_config, TestServer, BIN};
use serde_json::{json, Value};

/// A running emulator, killed when dropped.
struct Emulator {
    child: Child,
    addr: SocketAddr,
    ledger: PathBuf,
}

impl Emulator {
    /// Fast clocks: batches every 200 ms, a retry second of 50 ms (a batch
    /// is dropped 0.75 s after its first failed attempt), jobs that wait
    /// `job_delay_ms` in each of accepted and pending.
    fn start(dir: &Path, pat: Option<&str>, job_delay_ms: u64) -> Emulator {
        Emulator::start_with(dir, pat, job_delay_ms, &[])
    }

    fn start_with(dir: &Path, pat: Option<&str>, job_delay_ms: u64, extra: &[&str]) -> Emulator {
        let ledger = dir.join("ledger.ndjson");
        let mut command = Command::new(BIN);
        command
            .args([
                "emulate",
                "konnect",
                "--listen",
                "127.0.0.1:0",
                "--rate",
                "40",
            ])
            .args(["--retry-unit-ms", "50"])
            .args([
                "--timeout",
                "10",
                "--job-delay-ms",
                &job_delay_ms.to_string(),
            ])
            .arg("--ledger")
            .arg(&ledger)
            .args(extra);
        if !extra.contains(&"--batch-interval-ms") {
            command.args(["--batch-interval-ms", "200"]);
        }
        if let Some(pat) = pat {
            command.args(["--pat", pat]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first
            .split("listening on http")
            .nth(1)
            .map(|rest| rest.trim_start_matches('s').trim_start_matches("://"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .parse()
            .unwrap();
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Emulator {
            child,
            addr,
            ledger,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One API request with this bearer token (none when `None`).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let mut tcp = TcpStream::connect(self.addr).unwrap();
        tcp.write_all(request_head(method, path, &headers, body.len()).as_bytes())
            .unwrap();
        tcp.write_all(body.as_bytes()).unwrap();
        let response = read_response(&mut tcp);
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    /// The ledger so far: (seq -> raw line, seq -> fates).
    fn ledger(&self) -> (BTreeMap<u64, String>, BTreeMap<u64, Vec<String>>) {
        let text = std::fs::read_to_string(&self.ledger).unwrap_or_default();
        let mut raw = BTreeMap::new();
        let mut fates: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue; // a line being written
            };
            let seq = record["seq"].as_u64().unwrap();
            raw.insert(seq, record["raw"].as_str().unwrap().to_owned());
            fates
                .entry(seq)
                .or_default()
                .push(record["fate"].as_str().unwrap().to_owned());
        }
        (raw, fates)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `auditsink konnect --api-url URL ARGS` with `KONNECT_TOKEN`; (exit code,
/// stdout, stderr).
fn konnect(emulator: &Emulator, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .args(["konnect", "--api-url", &emulator.url()])
        .args(args)
        .env_remove("KONNECT_TOKEN");
    if let Some(token) = token {
        command.env("KONNECT_TOKEN", token);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Polls `check` every 100 ms until it holds (panics after `secs`).
fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config on a fixed port (the endpoint Konnect knows survives restarts).
fn receiver_config(dir: &Path) -> (PathBuf, String) {
    let port = unused_port();
    let config = write_config(dir, "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    std::fs::write(&config, text).unwrap();
    (config, format!("https://localhost:{port}/audit-logs"))
}

fn source_status(server: &TestServer) -> Value {
    server.status()["sources"][0].clone()
}

const PAT: &str = "kpat_emulated_0123456789";

#[test]
fn every_konnect_command_against_the_emulator_with_its_error_answers() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), Some(PAT), 1500);
    let (config, endpoint) = receiver_config(dir.path());
    let server = TestServer::start(dir.path(), &config);
    let config_arg = config.to_str().unwrap();

    // PAT rules: no Authorization, a wrong token.
    let (status, body) = emulator.call("GET", "/v2/audit-log-webhook", None, None);
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("Authorization"));
    assert_eq!(
        emulator
            .call("GET", "/v2/audit-log-webhook", Some("nope"), None)
            .0,
        401
    );
    let (code, out, err) = konnect(&emulator, Some("kpat_wrong_secret"), &["jwks"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("401") && err.contains("KONNECT_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("kpat_wrong_secret") && !out.contains("kpat_wrong_secret"));
    let (code, _, err) = konnect(&emulator, None, &["jwks"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("KONNECT_TOKEN") && err.contains("--token-file"),
        "{err}"
    );

    // jwks, with the token from a file.
    let token_file = dir.path().join("pat");
    std::fs::write(&token_file, format!("{PAT}\n")).unwrap();
    let jwks = dir.path().join("jwks.json");
    let (code, _, err) = konnect(
        &emulator,
        None,
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "jwks",
            "--out",
            jwks.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let keys: Value = serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
    assert_eq!(keys["keys"][0]["crv"], "Ed25519");

    // connect: the source's token, enabled, skip_ssl_verification for the
    // generated certificate; authorization is never shown back.
    let (code, out, err) = konnect(
        &emulator,
        Some(PAT),
        &["connect", "--endpoint", &endpoint, "-c", config_arg],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&endpoint) && err.contains("skip_ssl_verification"),
        "{out}{err}"
    );
    assert!(!out.contains(&server.token()) && !err.contains(&server.token()));
    let (_, webhook) = emulator.call("GET", "/v2/audit-log-webhook", Some(PAT), None);
    assert_eq!(webhook["endpoint"], endpoint.as_str());
    assert_eq!(webhook["enabled"], true);
    assert_eq!(webhook["skip_ssl_verification"], true);
    assert!(webhook.get("authorization").is_none(), "{webhook}");

    // A webhook that points elsewhere is replaced only with --force.
    let elsewhere = endpoint.replace("localhost", "127.0.0.1");
    let (code, _, err) = konnect(
        &emulator,
        Some(PAT),
        &["connect", "--endpoint", &elsewhere, "-c", config_arg],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = konnect(
        &emulator,
        Some(PAT),
        &[
            "connect",
            "--endpoint",
            &endpoint,
            "--force",
            "-c",
            config_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");

    // status: both ends agree once deliveries flow.
    wait_for("both ends to agree", 30, || {
        let (code, out, _) = konnect(&emulator, Some(PAT), &["status", "-c", config_arg]);
        code == 0 && out.contains("verdict: ok: both ends agree")
    });

    // Replay windows: more than 7 days back, reversed; a second job.
    let (code, _, err) = konnect(
        &emulator,
        Some(PAT),
        &["replay", "--since", "8d", "-c", config_arg],
    );
    assert_eq!(code, 2);
    assert!(err.contains("7 days"), "{err}");
    let day = 86_400_000i64;
    let now = now_ms();
    let at = |ms: i64| json!(rfc3339(ms));
    let put = |start: i64, end: i64| {
        emulator.call(
            "PUT",
            "/v2/audit-log-replay-job",
            Some(PAT),
            Some(json!({"start_at": at(start), "end_at": at(end)})),
        )
    };
    let (status, body) = put(now - 8 * day, now - 7 * day);
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("7 days"));
    let (status, body) = put(now - 60_000, now - 120_000);
    assert_eq!(status, 400, "{body}");
    let (status, body) = put(now - 60_000, now);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(put(now - 60_000, now).0, 409);
    let (code, _, err) = konnect(
        &emulator,
        Some(PAT),
        &["replay", "--since", "1m", "-c", config_arg],
    );
    assert_eq!(code, 2);
    assert!(err.contains("409"), "{err}");
    wait_for("the first job to complete", 30, || {
        emulator
            .call("GET", "/v2/audit-log-replay-job", Some(PAT), None)
            .1["status"]
            == "completed"
    });
    let (code, out, err) = konnect(
        &emulator,
        Some(PAT),
        &[
            "replay",
            "--since",
            "30s",
            "--poll-ms",
            "200",
            "-c",
            config_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("completed") && out.contains("duplicates"),
        "{out}"
    );
    assert!(err.contains("replay job: pending"), "progress: {err}");

    // Dev Portal: a destination, the portal's webhook pointed at it.
    let (code, out, err) = konnect(
        &emulator,
        Some(PAT),
        &[
            "connect",
            "--portal",
            "portal-1",
            "--endpoint",
            &endpoint,
            "-c",
            config_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Dev Portal portal-1"), "{out}");
    let (_, destinations) = emulator.call("GET", "/v2/audit-log-destinations", Some(PAT), None);
    assert_eq!(destinations["data"].as_array().unwrap().len(), 1);
    wait_for("Dev Portal events in the store", 30, || {
        query(&["--config", config_arg])
            .iter()
            .any(|e| e["product"] == "Dev-Portal")
    });
    let (code, out, _) = konnect(
        &emulator,
        Some(PAT),
        &["status", "--portal", "portal-1", "-c", config_arg],
    );
    assert_eq!(code, 0, "{out}");
    server.stop();
}

#[test]
fn end_to_end_a_stopped_receiver_then_replay_gaps_gives_the_ledger_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), None, 200);
    let (config, endpoint) = receiver_config(dir.path());
    let config_arg = config.to_str().unwrap();
    let server = TestServer::start(dir.path(), &config);
    let (code, _, err) = konnect(
        &emulator,
        Some("any"),
        &["connect", "--endpoint", &endpoint, "-c", config_arg],
    );
    assert_eq!(code, 0, "{err}");
    wait_for("events to flow", 30, || {
        source_status(&server)["events_stored"]
            .as_u64()
            .unwrap_or(0)
            > 40
    });
    let (code, out, _) = konnect(&emulator, Some("any"), &["status", "-c", config_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("both ends agree"), "{out}");

    // Down long enough for batches to be dropped after Konnect's retries.
    server.stop();
    wait_for("dropped batches", 30, || {
        let (_, fates) = emulator.ledger();
        fates
            .values()
            .filter(|f| f.contains(&"dropped".to_owned()))
            .count()
            >= 20
    });
    let (code, out, _) = konnect(&emulator, Some("any"), &["status", "-c", config_arg]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no HTTP answer") && out.contains("not running"),
        "{out}"
    );
    let server = TestServer::start(dir.path(), &config);

    let (code, out, err) = konnect(
        &emulator,
        Some("any"),
        &[
            "replay",
            "--gaps",
            "--margin",
            "5",
            "--poll-ms",
            "200",
            "-c",
            config_arg,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("window(s) to replay") && out.contains("completed"),
        "{out}"
    );

    // Stop generating; let the batches in flight finish.
    let (status, _) = emulator.call(
        "PATCH",
        "/v2/audit-log-webhook",
        Some("any"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(status, 200);
    let mut last = 0;
    wait_for("the ledger to settle", 30, || {
        std::thread::sleep(Duration::from_millis(1000));
        let n = std::fs::read_to_string(&emulator.ledger)
            .unwrap()
            .lines()
            .count();
        std::mem::replace(&mut last, n) == n
    });

    let (raw, fates) = emulator.ledger();
    let stored: Vec<String> = query(&["--config", config_arg])
        .iter()
        .map(|e| e["raw"].as_str().unwrap().to_owned())
        .collect();
    let stored_set: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "an event stored twice");
    let generated: BTreeSet<&String> = raw.values().collect();
    assert_eq!(
        stored_set, generated,
        "the store is not the emulator's ledger"
    );
    let lost: Vec<&u64> = fates
        .iter()
        .filter(|(_, f)| !f.iter().any(|f| f == "acknowledged" || f == "replayed"))
        .map(|(seq, _)| seq)
        .collect();
    assert!(lost.is_empty(), "events never acknowledged: {lost:?}");
    let dropped = fates
        .values()
        .filter(|f| f.contains(&"dropped".to_owned()))
        .count();
    assert!(dropped >= 20);

    // Every event delivered twice (a live delivery and a replay, in either
    // order) is one duplicate at the receiver; the replay's own count is
    // among them.
    let twice = fates
        .values()
        .filter(|f| f.contains(&"acknowledged".to_owned()) && f.contains(&"replayed".to_owned()))
        .count() as u64;
    assert!(twice > 0, "the replay windows held no acknowledged event");
    assert_eq!(source_status(&server)["duplicates"].as_u64(), Some(twice));
    let words: Vec<&str> = out.split([' ', ',', ';']).collect();
    let reported: u64 = words
        .windows(2)
        .filter(|w| w[1] == "duplicates")
        .map(|w| w[0].parse::<u64>().unwrap())
        .sum();
    assert!(reported > 0 && reported <= twice, "{out}");

    // The receiver's record of its runs survived the restart.
    let (_, gaps) = server.admin_get("/api/gaps");
    let gaps: Value = serde_json::from_str(&gaps).unwrap();
    assert!(gaps["runs"].as_array().unwrap().len() >= 2, "{gaps}");
    server.stop();
}

#[test]
fn a_wrong_token_configured_in_konnect_shows_401_and_status_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(dir.path(), None, 200);
    let (config, endpoint) = receiver_config(dir.path());
    let config_arg = config.to_str().unwrap();
    let server = TestServer::start(dir.path(), &config);
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "Bearer not-the-receivers-token\n").unwrap();
    let (code, _, err) = konnect(
        &emulator,
        Some("any"),
        &[
            "connect",
            "--endpoint",
            &endpoint,
            "--authorization-file",
            wrong.to_str().unwrap(),
            "-c",
            config_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_for("Konnect to see 401", 30, || {
        emulator
            .call("GET", "/v2/audit-log-webhook/status", Some("any"), None)
            .1["last_response_code"]
            == 401
    });
    let (code, out, _) = konnect(&emulator, Some("any"), &["status", "-c", config_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401") && out.contains("token mismatch"),
        "{out}"
    );
    // The receiver recorded its 401s for replay --gaps.
    let (_, gaps) = server.admin_get("/api/gaps");
    assert!(gaps.contains("\"status\":401"), "{gaps}");

    // Konnect checking the self-signed certificate: no HTTP answer.
    let (status, _) = emulator.call(
        "PATCH",
        "/v2/audit-log-webhook",
        Some("any"),
        Some(json!({"skip_ssl_verification": false})),
    );
    assert_eq!(status, 200);
    wait_for("Konnect to fail the TLS handshake", 30, || {
        emulator
            .call("GET", "/v2/audit-log-webhook/status", Some("any"), None)
            .1["last_response_code"]
            == 0
    });
    let (code, out, _) = konnect(&emulator, Some("any"), &["status", "-c", config_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no HTTP answer") && out.contains("self-signed"),
        "{out}"
    );
    server.stop();
}

#[test]
fn the_emulator_serves_its_api_over_https_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let emulator = Emulator::start_with(
        dir.path(),
        None,
        200,
        &["--tls", "--tls-dir", tls_dir.to_str().unwrap()],
    );
    let output = Command::new(BIN)
        .args([
            "konnect",
            "--api-url",
            &format!("https://localhost:{}", emulator.addr.port()),
        ])
        .arg("--api-cacert")
        .arg(tls_dir.join("tls/cert.pem"))
        .arg("jwks")
        .env("KONNECT_TOKEN", "any")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let jwks: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(stderr.contains("1 signing key(s)"), "{stderr}");
}

/// A request as received: path, headers (names lowercased), gunzipped body.
type Seen = (String, Vec<(String, String)>, String);

/// A plain-HTTP receiver that answers every request with the status the
/// test sets, and keeps each request's path, headers and gunzipped body.
struct ScriptedReceiver {
    addr: SocketAddr,
    answer: std::sync::Arc<std::sync::atomic::AtomicU16>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl ScriptedReceiver {
    fn start() -> ScriptedReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, s) = (answer.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (a, s) = (a.clone(), s.clone());
                std::thread::spawn(move || serve_scripted(stream, &a, &s));
            }
        });
        ScriptedReceiver { addr, answer, seen }
    }

    fn set(&self, status: u16) {
        self.answer
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }
}

fn serve_scripted(
    stream: TcpStream,
    answer: &std::sync::atomic::AtomicU16,
    seen: &std::sync::Mutex<Vec<Seen>>,
) {
    use std::io::Read;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_string(&mut plain)
            .unwrap();
        let path = request_line.split(' ').nth(1).unwrap().to_owned();
        seen.lock().unwrap().push((path, headers, plain));
        let status = answer.load(std::sync::atomic::Ordering::SeqCst);
        let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn the_emulator_delivers_and_retries_exactly_as_konnect() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = ScriptedReceiver::start();
    receiver.set(500);
    let emulator = Emulator::start_with(
        dir.path(),
        None,
        200,
        &["--allow-http", "--batch-interval-ms", "1500"],
    );
    let endpoint = format!("http://{}/org", receiver.addr);
    let (status, body) = emulator.call(
        "PATCH",
        "/v2/audit-log-webhook",
        Some("any"),
        Some(json!({"endpoint": endpoint, "authorization": "Splunk s3cret", "log_format": "json", "enabled": true})),
    );
    assert_eq!(status, 200, "{body}");

    // The outcome (attempts, fate) of a batch answered `status` with every
    // attempt: the second such batch (the first may have begun before the
    // answer changed).
    let outcome = |status: u16| {
        let mut found = None;
        wait_for(&format!("two batches answered {status}"), 30, || {
            let text = std::fs::read_to_string(&emulator.ledger).unwrap_or_default();
            let mut batches: Vec<(String, u64, String)> = Vec::new();
            for record in text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            {
                let at = record["at"].as_str().unwrap().to_owned();
                if record["status"] == status
                    && batches.last().map_or(true, |(last, _, _)| *last != at)
                {
                    batches.push((
                        at,
                        record["attempts"].as_u64().unwrap(),
                        record["fate"].as_str().unwrap().to_owned(),
                    ));
                }
            }
            found = batches
                .get(1)
                .map(|(_, attempts, fate)| (*attempts, fate.clone()));
            found.is_some()
        });
        found.unwrap()
    };
    // 500 and 429: 4 retries, then dropped; any other answer is final.
    assert_eq!(outcome(500), (5, "dropped".to_owned()));
    receiver.set(429);
    assert_eq!(outcome(429), (5, "dropped".to_owned()));
    receiver.set(400);
    assert_eq!(outcome(400), (1, "dropped".to_owned()));
    receiver.set(200);
    assert_eq!(outcome(200), (1, "acknowledged".to_owned()));

    // The wire: POST, Konnect's labels, the configured Authorization, and
    // newline-separated JSON lines signed with the emulator's key.
    let requests = receiver.seen.lock().unwrap().clone();
    let (path, headers, plain) = requests.last().unwrap();
    assert_eq!(path, "/org");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-encoding"), Some("application/gzip"));
    assert_eq!(header("content-type"), Some("application/text"));
    assert_eq!(header("authorization"), Some("Splunk s3cret"));
    assert!(
        plain.lines().count() >= 2 && plain.lines().all(|l| l.starts_with('{')),
        "{plain}"
    );
    let (_, jwks) = emulator.call("GET", "/v2/audit-log-webhook/jwks.json", Some("any"), None);
    let jwks_file = dir.path().join("emulator-jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let lines_file = dir.path().join("lines");
    std::fs::write(&lines_file, plain).unwrap();
    let output = Command::new(BIN)
        .args([
            "verify",
            "--jwks",
            jwks_file.to_str().unwrap(),
            lines_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("invalid"));

    // A Dev Portal destination: text/plain, Dev-Portal events.
    let (status, destination) = emulator.call(
        "POST",
        "/v2/audit-log-destinations",
        Some("any"),
        Some(json!({"name": "p", "endpoint": format!("http://{}/portal", receiver.addr), "log_format": "cef"})),
    );
    assert_eq!(status, 201, "{destination}");
    let (status, body) = emulator.call(
        "PATCH",
        "/v2/portals/p1/audit-log-webhook",
        Some("any"),
        Some(json!({"audit_log_destination_id": destination["id"], "enabled": true})),
    );
    assert_eq!(status, 200, "{body}");
    wait_for("a portal batch", 30, || {
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(path, headers, plain)| {
                path == "/portal"
                    && headers.contains(&("content-type".to_owned(), "text/plain".to_owned()))
                    && plain.contains("|KongInc|Dev-Portal|")
            })
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
