//! A full disk heals by itself: the real binary on a small real tmpfs is
//! filled until deliveries fail, the space is freed, and it serves again
//! without a restart, holding every event it acknowledged.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{query, write_config, TestServer, BIN};

const TOKEN: &str = "Bearer heal";

/// A tmpfs mounted for the test's life (unmounted when dropped, also when
/// the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `dir` to the last byte with a file of its own.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for size in [1 << 20, 4096, 1] {
        let block = vec![0xa5; size];
        while file.write_all(&block).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// Delivery `n`: 40 events (unique raw lines) and a line that is no event;
/// every third one only lines that are no events (kept in quarantine, in
/// sled: its flush, not the event log, is what fails on a full disk).
fn batch(n: usize) -> Vec<String> {
    let events = if n % 3 == 0 { 0 } else { 40 };
    let mut lines: Vec<String> = (0..events)
        .map(|i| {
            format!(
                "CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id=heal-{n}-{i} pad={}",
                "p".repeat(400)
            )
        })
        .collect();
    // Small: sled 0.34 can hang for good on close after failing to write a
    // page larger than 128 KiB (a blob file).
    lines.push(format!("not an event {n} {}", "q".repeat(3_000)));
    if events == 0 {
        lines.extend((0..10).map(|i| format!("not an event {n}-{i} {}", "q".repeat(3_000))));
    }
    lines
}

fn events_of(lines: &[String]) -> impl Iterator<Item = &String> {
    lines.iter().filter(|l| l.starts_with("CEF:"))
}

/// What the senders saw: each delivery's statuses in order.
#[derive(Default)]
struct Ledger {
    statuses: BTreeMap<usize, Vec<u16>>,
}

impl Ledger {
    fn acknowledged(&self) -> Vec<usize> {
        self.statuses
            .iter()
            .filter(|(_, s)| s.contains(&200))
            .map(|(n, _)| *n)
            .collect()
    }
    fn count(&self, status: u16) -> usize {
        self.statuses
            .values()
            .flatten()
            .filter(|&&s| s == status)
            .count()
    }
}

/// Delivers batches `first..` one after another, retrying a 500 as Konnect
/// does (but until `stop`), recording every status.
fn sender(
    server: Arc<TestServer>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    first: usize,
    step: usize,
) {
    let mut n = first;
    while !stop.load(Ordering::Acquire) {
        let body = batch(n).join("\n");
        loop {
            let status = server.deliver(TOKEN, body.as_bytes()).status;
            assert!(
                status == 200 || status == 500,
                "delivery {n}: status {status}"
            );
            ledger
                .lock()
                .unwrap()
                .statuses
                .entry(n)
                .or_default()
                .push(status);
            if status == 200 || stop.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        n += step;
    }
}

/// Reads the store through the admin API the whole time: every answer is
/// a listing or an error status, never a broken one.
fn reader(server: Arc<TestServer>, stop: Arc<AtomicBool>) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    while !stop.load(Ordering::Acquire) {
        let (code, body) = server.admin_get("/api/events?limit=200");
        match code {
            200 => {
                for line in body.lines() {
                    let row: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(
                        row.get("raw").is_some() || row.get("error").is_some(),
                        "{row}"
                    );
                }
                ok += 1;
            }
            500 | 503 => refused += 1,
            other => panic!("listing: status {other}: {body}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (ok, refused)
}

/// Kills the server and stops the test's threads if the test fails, before
/// the tmpfs is unmounted.
struct Cleanup {
    pid: u32,
    stop: Arc<AtomicBool>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_disk_heals_without_a_restart_and_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = match Tmpfs::mount(&data, 48) {
        Ok(tmpfs) => tmpfs,
        Err(e) => {
            println!("SKIPPED: cannot mount a tmpfs (needs root): {e}");
            return;
        }
    };
    let config = write_config(
        dir.path(),
        &format!("[[source]]\nname = \"h\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"),
    );
    let server = Arc::new(TestServer::start(dir.path(), &config));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let _cleanup = Cleanup {
        pid: server.pid(),
        stop: stop.clone(),
    };
    for n in 0..3 {
        assert_eq!(
            server.deliver(TOKEN, batch(n).join("\n").as_bytes()).status,
            200
        );
        ledger.lock().unwrap().statuses.insert(n, vec![200]);
    }

    // Three senders and a reader, all through the fill and the recovery.
    let mut senders = Vec::new();
    for k in 0..3 {
        let (server, ledger, stop) = (server.clone(), ledger.clone(), stop.clone());
        senders.push(std::thread::spawn(move || {
            sender(server, ledger, stop, 100 + k, 3)
        }));
    }
    let reading = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || reader(server, stop))
    };
    wait_for(
        "deliveries before the fill",
        Duration::from_secs(60),
        || ledger.lock().unwrap().count(200) >= 8,
    );

    let filler = fill(&data);
    wait_for("500s on a full disk", Duration::from_secs(60), || {
        ledger.lock().unwrap().count(500) >= 6
    });
    wait_for(
        "the store closed to be reopened",
        Duration::from_secs(60),
        || server.status()["store"]["health"]["recovering"] == true,
    );
    let (code, text) = server.admin_get("/readyz");
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("reopens by itself"), "{text}");
    assert!(server.metrics().contains("auditsink_store_recovering 1"));
    // While the disk stays full, it stays closed (the probe fails).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.status()["store"]["health"]["recovering"], true);
    let during = ledger.lock().unwrap().count(200);

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    wait_for("a 200 once space is freed", Duration::from_secs(60), || {
        ledger.lock().unwrap().count(200) > during
    });
    println!(
        "first 200 {} ms after the space was freed",
        freed.elapsed().as_millis()
    );
    wait_for("200s once space is freed", Duration::from_secs(60), || {
        ledger.lock().unwrap().count(200) >= during + 6
    });
    stop.store(true, Ordering::Release);
    for sender in senders {
        sender.join().unwrap();
    }
    let (read_ok, read_refused) = reading.join().unwrap();
    println!("listings: {read_ok} answered, {read_refused} refused while closed");

    let (code, text) = server.admin_get("/readyz");
    assert_eq!(code, 200, "{text}");
    let health = &server.status()["store"]["health"];
    assert_eq!(health["recovering"], false, "{health}");
    assert!(health["recoveries"].as_u64().unwrap() >= 1, "{health}");
    assert!(server.metrics().contains("auditsink_store_recovering 0"));
    assert!(server
        .stderr()
        .iter()
        .any(|l| l.contains("store reopened after a failed write")));

    // Every acknowledged event is there, once, read from the running server.
    let ledger = ledger.lock().unwrap();
    let data_dir = data.to_str().unwrap();
    let stored: Vec<String> = query(&["--data-dir", data_dir])
        .into_iter()
        .map(|e| e["raw"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event stored twice");
    let mut acknowledged = 0;
    for n in ledger.acknowledged() {
        for line in events_of(&batch(n)) {
            assert!(
                unique.contains(line),
                "acknowledged event missing: delivery {n}"
            );
            acknowledged += 1;
        }
    }
    println!(
        "{} deliveries acknowledged ({acknowledged} events), {} answers 500, {} events stored",
        ledger.acknowledged().len(),
        ledger.count(500),
        stored.len()
    );
    drop(ledger);

    // And the store is consistent on its own, after the server is gone.
    Arc::into_inner(server).unwrap().stop();
    let output = Command::new(BIN)
        .args(["check", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
