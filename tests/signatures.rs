//! Konnect signatures end to end: keygen, the verify command, and the
//! server's `tag` and `enforce` policies with keys from a file or an https URL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use auditsink_parser::signature::SigningKeyPair;
use common::{query, write_config, TestServer, BIN};
use serde_json::{json, Value};

const TOKEN: &str = "Bearer sig-test";

fn keygen(dir: &Path) -> SigningKeyPair {
    let output = Command::new(BIN).arg("keygen").arg(dir).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = std::fs::read_to_string(dir.join("private.key")).unwrap();
    SigningKeyPair::from_secret_base64url(secret.trim()).unwrap()
}

fn cef(i: usize) -> String {
    format!(
        "Nov 25 19:46:40 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=176410000000{i} \
         src=10.0.0.{i} action=retrieve granted=true org_id=o principal_id=p{i} trace_id=582089741470040484{i} \
         user_agent=grpc-go/1.54.0"
    )
}

fn json_line(i: usize) -> String {
    format!(
        "{{\"action\":\"read\",\"cef_version\":0,\"event_class_id\":\"identity\",\"event_product\":\"Konnect\",\
         \"event_vendor\":\"KongInc\",\"event_version\":\"1.0\",\"name\":\"Authz.identity-provider\",\
         \"rt\":176410000000{i},\"severity\":1,\"trace_id\":389521334733463509{i}}}"
    )
}

/// Flips one character of the payload, keeping the signature.
fn forge(signed: &str) -> String {
    signed
        .replacen("granted=true", "granted=fals", 1)
        .replacen("\"read\"", "\"edit\"", 1)
}

/// (valid CEF, valid JSON, forged CEF, unsigned CEF)
fn mixed_batch(pair: &SigningKeyPair) -> Vec<String> {
    vec![
        pair.sign_cef_line(&cef(1)),
        pair.sign_json_line(&json_line(2)).unwrap(),
        forge(&pair.sign_cef_line(&cef(3))),
        cef(4),
    ]
}

fn run_verify(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("verify")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn keygen_then_verify_lines() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let pair = keygen(&keys);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("private.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = Command::new(BIN).arg("keygen").arg(&keys).output().unwrap();
    assert!(!again.status.success(), "keygen never overwrites a key");

    let jwks = keys.join("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let batch = mixed_batch(&pair);
    let input = format!("{}\n\n", batch.join("\n"));
    let (code, stdout, stderr) = run_verify(&["--jwks", jwks], input.as_bytes());
    assert_eq!(stdout, "1 valid\n2 valid\n3 invalid\n4 missing\n");
    assert_eq!(code, 1, "an invalid line is exit 1");
    assert!(
        stderr.contains("lines=4 valid=2 invalid=1 missing=1"),
        "{stderr}"
    );

    let file = dir.path().join("good.log");
    std::fs::write(&file, format!("{}\n{}\n", batch[0], batch[1])).unwrap();
    let (code, stdout, _) = run_verify(&["--jwks", jwks, file.to_str().unwrap()], b"");
    assert_eq!((code, stdout.as_str()), (0, "1 valid\n2 valid\n"));

    // A key set that does not hold the signing key.
    let other = keygen(&dir.path().join("other"));
    assert_ne!(other.kid(), pair.kid());
    let other_jwks = dir.path().join("other/jwks.json");
    let (code, stdout, _) = run_verify(
        &[
            "--jwks",
            other_jwks.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!((code, stdout.as_str()), (1, "1 invalid\n2 invalid\n"));
}

#[test]
fn shared_sample_verifies_in_both_formats() {
    let (Some(cef), Some(jsonl), Some(jwks)) = (
        common::corpus("konnect-sample.cef"),
        common::corpus("konnect-sample.jsonl"),
        common::corpus("konnect-sample-jwks.json"),
    ) else {
        return;
    };
    for file in [cef, jsonl] {
        let (code, stdout, stderr) = run_verify(
            &["--jwks", jwks.to_str().unwrap(), file.to_str().unwrap()],
            b"",
        );
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.lines().filter(|l| l.ends_with(" valid")).count(), 60);
        assert!(stderr.contains("valid=60 invalid=0 missing=0"));
    }
}

/// Runs `serve` with `config`, expecting a startup error (exit 2); its stderr.
fn serve_fails(config: &Path) -> String {
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "serve should refuse to start"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn source_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!("[[source]]\nname = \"signed\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n{extra}\n"),
    )
}

fn deliver(server: &TestServer, lines: &[String]) -> Value {
    let response = server.deliver(TOKEN, lines.join("\n").as_bytes());
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn quarantine_rows(server: &TestServer) -> Vec<Value> {
    let (_, body) = server.admin_get("/api/quarantine");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn enforce_stores_valid_and_quarantines_forged_and_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let pair = keygen(&dir.path().join("keys"));
    let jwks = dir.path().join("keys/jwks.json");
    let config = source_config(
        dir.path(),
        &format!(
            "jwks = {:?}\nsignatures = \"enforce\"",
            jwks.display().to_string()
        ),
    );
    let server = TestServer::start(dir.path(), &config);
    let batch = mixed_batch(&pair);
    assert_eq!(
        deliver(&server, &batch),
        json!({"received": 4, "stored": 2, "duplicates": 0, "quarantined": 2}),
        "a forgery is answered 200 (not retried forever) but not stored as an event"
    );
    let events = query(&["--config", server.config.to_str().unwrap()]);
    let raws: Vec<&str> = events.iter().map(|e| e["raw"].as_str().unwrap()).collect();
    assert_eq!(raws, [batch[0].as_str(), batch[1].as_str()]);
    assert!(events.iter().all(|e| e["signature"] == "valid"));
    let rows = quarantine_rows(&server);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["raw"], json!(batch[2]));
    assert!(rows[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("signature invalid"));
    assert_eq!(rows[1]["raw"], json!(batch[3]));
    assert_eq!(rows[1]["reason"], "signature missing");

    // Re-verification of the store while the server holds it (through its
    // admin listener), then after it stopped (directly): the same.
    let jwks = jwks.to_str().unwrap();
    let (code, running, stderr) = run_verify(
        &[
            "--jwks",
            jwks,
            "--store",
            "--config",
            server.config.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(server.stop().success());
    let data_dir = dir.path().join("data");
    let (code, stopped, stderr) = run_verify(
        &[
            "--jwks",
            jwks,
            "--store",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stopped.lines().count(), 2);
    assert!(stopped.lines().all(|l| l.ends_with(" valid")));
    assert_eq!(running, stopped);
}

#[test]
fn tag_stores_everything_with_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let pair = keygen(&dir.path().join("keys"));
    let jwks = dir.path().join("keys/jwks.json").display().to_string();
    // `signatures` defaults to tag when jwks is set.
    let server = TestServer::start(
        dir.path(),
        &source_config(dir.path(), &format!("jwks = {jwks:?}")),
    );
    assert_eq!(
        deliver(&server, &mixed_batch(&pair)),
        json!({"received": 4, "stored": 4, "duplicates": 0, "quarantined": 0})
    );
    let events = query(&["--config", server.config.to_str().unwrap()]);
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["signature"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["valid", "valid", "invalid", "missing"]);
}

#[test]
fn signature_failures_are_kept_for_replay_gaps_by_event_second() {
    let dir = tempfile::tempdir().unwrap();
    let pair = keygen(&dir.path().join("keys"));
    let jwks = dir.path().join("keys/jwks.json").display().to_string();
    let server = TestServer::start(
        dir.path(),
        &source_config(dir.path(), &format!("jwks = {jwks:?}")),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let second = |ms: i64| ms - ms.rem_euclid(1000);
    let at =
        |ms: i64, i: usize| cef(i).replace(&format!("rt=176410000000{i}"), &format!("rt={ms}"));
    let (forged_at, unsigned_at) = (now - 3_600_000, now - 60_000);
    let batch = vec![
        pair.sign_cef_line(&at(now - 120_000, 1)),
        forge(&pair.sign_cef_line(&at(forged_at, 2))),
        at(unsigned_at, 3),
        // Older than Konnect can replay: nothing to ask for.
        forge(&pair.sign_cef_line(&at(now - 10 * 86_400_000, 4))),
    ];
    deliver(&server, &batch);
    let (status, body) = server.admin_get("/api/gaps");
    assert_eq!(status, 200, "{body}");
    let gaps: Value = serde_json::from_str(&body).unwrap();
    let failures: Vec<(String, i64, u64)> = gaps["signature_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["source"].as_str().unwrap().to_owned(),
                f["at_ms"].as_i64().unwrap(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("signed".to_owned(), second(forged_at), 1),
            ("signed".to_owned(), second(unsigned_at), 1)
        ]
    );
    assert_eq!(
        gaps["answers"],
        json!([]),
        "every delivery was answered 200"
    );
}

#[test]
fn key_rotation_accepts_either_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = keygen(&dir.path().join("old"));
    let new = keygen(&dir.path().join("new"));
    let jwks = dir.path().join("both.json");
    std::fs::write(&jwks, SigningKeyPair::jwks(&[&old, &new])).unwrap();
    let config = source_config(
        dir.path(),
        &format!(
            "jwks = {:?}\nsignatures = \"enforce\"",
            jwks.display().to_string()
        ),
    );
    let server = TestServer::start(dir.path(), &config);
    let lines = vec![
        old.sign_cef_line(&cef(1)),
        new.sign_cef_line(&cef(2)),
        old.sign_cef_line(&cef(3)),
    ];
    assert_eq!(deliver(&server, &lines)["stored"], 3);
}

#[test]
fn malformed_jwks_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("bad.json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"not-a-key"}]}"#,
    )
    .unwrap();
    let config = source_config(
        dir.path(),
        &format!("jwks = {:?}", jwks.display().to_string()),
    );
    let stderr = serve_fails(&config);
    assert!(
        stderr.contains("bad.json") && stderr.contains("k1"),
        "{stderr}"
    );

    std::fs::write(&jwks, "not json").unwrap();
    assert!(serve_fails(&config).contains("bad.json"));
}

/// Serves `body` over HTTPS on 127.0.0.1 to every request, as a key server
/// would; returns its address and CA file. The listener thread ends with the test.
fn key_server(
    dir: &Path,
    body: String,
) -> (
    std::net::SocketAddr,
    PathBuf,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (config, ca) = common::self_signed_tls(dir, "key-server-ca.pem");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let serving = up.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            if !serving.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // drop the connection: the key server is "down"
            }
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, ca, up)
}

#[test]
fn jwks_from_https_url_and_its_kept_copy() {
    let dir = tempfile::tempdir().unwrap();
    let pair = SigningKeyPair::generate();
    let (addr, ca, up) = key_server(dir.path(), SigningKeyPair::jwks(&[&pair]));
    let url = format!(
        "https://localhost:{}/v2/audit-log-webhook/jwks.json",
        addr.port()
    );
    let config = source_config(
        dir.path(),
        &format!(
            "jwks = {url:?}\njwks_ca = {:?}\nsignatures = \"enforce\"",
            ca.display().to_string()
        ),
    );
    {
        let server = TestServer::start(dir.path(), &config);
        assert_eq!(
            deliver(&server, &[pair.sign_cef_line(&cef(1))])["stored"],
            1
        );
        assert!(server.stop().success());
    }
    assert!(
        dir.path().join("data/jwks/signed.json").exists(),
        "last good copy kept on disk"
    );

    // The key server goes away: a restart still verifies from the kept copy.
    up.store(false, std::sync::atomic::Ordering::SeqCst);
    let server = TestServer::start(dir.path(), &config);
    assert!(
        server
            .stderr()
            .iter()
            .any(|l| l.contains("using the kept copy")),
        "{:?}",
        server.stderr()
    );
    assert_eq!(
        deliver(&server, &[pair.sign_cef_line(&cef(2)), cef(3)])["stored"],
        1
    );
}

#[test]
fn jwks_url_unreachable_without_a_copy_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::unused_port();
    let config = source_config(
        dir.path(),
        &format!("jwks = \"https://localhost:{port}/jwks.json\""),
    );
    let stderr = serve_fails(&config);
    assert!(
        stderr.contains("fetch failed") && stderr.contains("no earlier copy"),
        "{stderr}"
    );
}

#[test]
fn enforce_on_the_shared_konnect_sample() {
    let (Some(cef), Some(jwks)) = (
        common::corpus("konnect-sample.cef"),
        common::corpus("konnect-sample-jwks.json"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = source_config(
        dir.path(),
        &format!(
            "jwks = {:?}\nsignatures = \"enforce\"",
            jwks.display().to_string()
        ),
    );
    let server = TestServer::start(dir.path(), &config);
    let mut lines: Vec<String> = std::fs::read_to_string(cef)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // One byte changed in a value: Konnect's signature no longer matches.
    let tampered = lines[5].replacen("src=10.", "src=11.", 1);
    assert_ne!(tampered, lines[5]);
    lines.push(tampered);
    assert_eq!(
        deliver(&server, &lines),
        json!({"received": 61, "stored": 60, "duplicates": 0, "quarantined": 1})
    );
    let rows = quarantine_rows(&server);
    assert!(rows[0]["raw"].as_str().unwrap().contains("src=11."));
}
