//! `kill -9` mid-load: every event acknowledged with 200 survives, exactly
//! once, and the store opens without repair.
//!
//! The real binary runs on a real store directory; four client threads
//! deliver batches of unique CEF events concurrently over TLS; the server is
//! killed with SIGKILL at a varying moment while requests are in flight,
//! restarted on the same directory, and killed again, several times. Then
//! the batches whose answer was lost are delivered again (as Konnect
//! retries a connection error), and the store is checked: every line
//! acknowledged is stored once, no line is stored twice, `auditsink check`
//! finds nothing wrong, and no start had to rebuild anything.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{gzip, write_config, TestServer, BIN};
use serde_json::Value;

const TOKEN: &str = "Bearer crash-test-token";
/// Kill/restart cycles; `AUDITSINK_CRASH_CYCLES=50` for a longer soak.
fn cycles() -> u64 {
    std::env::var("AUDITSINK_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

const THREADS: u64 = 4;
const PER_BATCH: u64 = 50;

fn batch_lines(cycle: u64, thread: u64, seq: u64) -> Vec<String> {
    (0..PER_BATCH)
        .map(|i| {
            format!(
                "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt={} src=10.0.0.1 \
                 org_id=org-crash principal_id=c{cycle}t{thread} trace_id={seq}{i:03} \
                 action=retrieve granted=true n=c{cycle}-t{thread}-b{seq}-e{i}",
                1_764_100_000_000 + seq * 1000 + i
            )
        })
        .collect()
}

/// One delivery over TLS; any failure (refused, reset, killed mid-answer)
/// is an `Err`: the outcome is unknown to the client.
fn try_deliver(addr: SocketAddr, ca: &Path, body: &[u8]) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| e.to_string())?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let head = common::request_head(
        "POST",
        "/audit-logs",
        &[
            ("Authorization", TOKEN),
            ("Content-Encoding", "application/gzip"),
        ],
        body.len(),
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(body).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify errors after the data.
    let _ = tls.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let body: Value = serde_json::from_slice(&raw[split + 4..]).map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A small deterministic-per-run jitter source.
fn jitter(seed: &mut u64, max_ms: u64) -> Duration {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    Duration::from_millis((*seed >> 33) % max_ms)
}

#[derive(Default)]
struct Ledger {
    /// Lines of batches answered 200.
    acked: HashSet<String>,
    /// Batches whose answer was lost (connection error while killed).
    unknown: Vec<Vec<String>>,
    acked_batches: u64,
}

/// Every start after a kill opens the store as it is: the verification of
/// the newest events (dedupe entries and index postings) finds nothing to
/// repair, and nothing is rebuilt.
fn assert_opened_as_is(server: &TestServer, after_kill: bool) {
    let open = &server.status()["store"]["open"];
    assert_eq!(
        open["rebuilt"], false,
        "the store was repaired on open: {open}"
    );
    assert_eq!(open["problems"], serde_json::json!([]), "{open}");
    if after_kill {
        assert!(
            open["verified_events"].as_u64().unwrap() > 0,
            "nothing verified on open: {open}"
        );
    }
    let stderr = server.stderr().join("\n");
    assert!(
        !stderr.contains("rebuilding"),
        "the store needed a repair on open: {stderr}"
    );
}

#[test]
fn kill_9_mid_load_loses_no_acknowledged_event() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\nname = \"crash\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"
        ),
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("jitter seed {seed}");

    for cycle in 0..cycles() {
        let server = TestServer::start(dir.path(), &config);
        assert_opened_as_is(&server, cycle > 0);
        let (addr, ca) = (server.addr, server.data_dir().join("tls/cert.pem"));
        let acked_now = Arc::new(AtomicU64::new(0));
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (ledger, acked_now, ca) = (ledger.clone(), acked_now.clone(), ca.clone());
                scope.spawn(move || {
                    for seq in 0.. {
                        let lines = batch_lines(cycle, thread, seq);
                        let body = gzip(lines.join("\n").as_bytes());
                        match try_deliver(addr, &ca, &body) {
                            Ok((200, answer)) => {
                                assert_eq!(answer["received"], PER_BATCH, "{answer}");
                                assert_eq!(answer["stored"], PER_BATCH, "{answer}");
                                let mut ledger = ledger.lock().unwrap();
                                ledger.acked.extend(lines);
                                ledger.acked_batches += 1;
                                acked_now.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, answer)) => {
                                panic!("unexpected answer {status}: {answer}")
                            }
                            Err(_) => {
                                // Killed: this batch's fate is unknown, and
                                // the server is gone.
                                ledger.lock().unwrap().unknown.push(lines);
                                return;
                            }
                        }
                    }
                });
            }
            // Mid-load: once some batches were acknowledged in this cycle,
            // wait a varying moment, then SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked_now.load(Ordering::Relaxed) < 2 + cycle {
                assert!(Instant::now() < deadline, "no delivery succeeded");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(jitter(&mut seed, 400));
            // Then right after the next acknowledgement: what was just
            // answered 200 is the most likely to be lost by a server that
            // answers before its data is on disk.
            let acked = acked_now.load(Ordering::Relaxed);
            while acked_now.load(Ordering::Relaxed) == acked {
                assert!(
                    Instant::now() < deadline + Duration::from_secs(30),
                    "load stalled"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            let killed = Command::new("kill")
                .args(["-KILL", &server.pid().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        });
        drop(server); // reaps the killed process
    }

    // Restart: the store opens as it is (no rebuild), and the batches whose
    // answer was lost are delivered again, as Konnect would retry them.
    let server = TestServer::start(dir.path(), &config);
    assert_opened_as_is(&server, true);
    let ca = server.data_dir().join("tls/cert.pem");
    let unknown = std::mem::take(&mut ledger.lock().unwrap().unknown);
    let mut resent_stored = 0u64;
    for lines in &unknown {
        let body = gzip(lines.join("\n").as_bytes());
        let (status, answer) = try_deliver(server.addr, &ca, &body).unwrap();
        assert_eq!(status, 200, "{answer}");
        let (stored, duplicates) = (
            answer["stored"].as_u64().unwrap(),
            answer["duplicates"].as_u64().unwrap(),
        );
        assert_eq!(stored + duplicates, PER_BATCH, "{answer}");
        assert!(
            stored == 0 || stored == PER_BATCH,
            "a batch is stored whole or not at all: {answer}"
        );
        resent_stored += stored;
        ledger.lock().unwrap().acked.extend(lines.iter().cloned());
    }
    assert!(server.stop().success());

    let data_dir = dir.path().join("data");
    let output = Command::new(BIN)
        .args(["query", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut stored: HashMap<String, u32> = HashMap::new();
    for row in String::from_utf8(output.stdout).unwrap().lines() {
        let row: Value = serde_json::from_str(row).unwrap();
        *stored
            .entry(row["raw"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let ledger = ledger.lock().unwrap();
    for line in &ledger.acked {
        assert_eq!(
            stored.get(line),
            Some(&1),
            "acknowledged line stored {:?} times: {line}",
            stored.get(line)
        );
    }
    assert!(
        stored.values().all(|&n| n == 1),
        "some line is stored twice"
    );
    // Nothing stored that was never sent whole: every stored line belongs to
    // an acknowledged (or re-delivered) batch.
    assert_eq!(stored.len(), ledger.acked.len());

    let check = Command::new(BIN)
        .args(["check", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    eprintln!(
        "{} cycles, {} batches acknowledged before a kill, {} in flight at a kill ({} of them stored before it), {} events, {:.1} s",
        cycles(),
        ledger.acked_batches,
        unknown.len(),
        unknown.len() as u64 - resent_stored / PER_BATCH,
        stored.len(),
        started.elapsed().as_secs_f64()
    );
}
