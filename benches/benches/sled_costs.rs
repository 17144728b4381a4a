//! What sled 0.34 charges per key and per byte: the measurement behind the
//! store's layout (sorted runs of pages and an event log of its own, see
//! `crates/storage/src/runs.rs` and `log.rs`).
//!
//! Each row writes 400,000 events' worth into a fresh database in atomic
//! batches of 500 events (`apply_batch`, a flush every 10 batches) and
//! reports the time spent in `apply_batch` per event, median of 3 rounds:
//!
//! - `keys/*`: one small key per event (8-byte value): sequential ids,
//!   a minute + 16 hash bytes (format 3's dedupe keys), 21 random bytes;
//! - `values/*`: ~600 bytes of record per event packed into values of the
//!   given size (event chunks), so the cost per byte shows.
//!
//!   cargo bench --manifest-path benches/Cargo.toml --bench sled_costs

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const EVENTS: u64 = 400_000;
const PER_BATCH: u64 = 500;
const RECORD: u64 = 600;

fn hash(i: u64) -> [u8; 32] {
    Sha256::digest(i.to_be_bytes()).into()
}

/// The (key, value) pairs of batch `b`.
fn batch(row: &str, b: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let events = b * PER_BATCH..(b + 1) * PER_BATCH;
    let small = |key: Vec<u8>, i: u64| (key, i.to_be_bytes().to_vec());
    match row {
        "keys/sequential" => events
            .map(|i| small([&b"e"[..], &i.to_be_bytes()].concat(), i))
            .collect(),
        "keys/minute_hash" => events
            .map(|i| {
                let minute = ((i / 12_000) as u32).to_be_bytes();
                small([&b"d"[..], &minute, &hash(i)[..16]].concat(), i)
            })
            .collect(),
        "keys/random" => events.map(|i| small(hash(i)[..21].to_vec(), i)).collect(),
        values => {
            let size: u64 = values
                .strip_prefix("values/")
                .and_then(|s| s.parse().ok())
                .expect("values/<bytes>");
            let count = PER_BATCH * RECORD / size;
            (0..count)
                .map(|p| {
                    let key = [&b"r"[..], &(b * 1000 + p).to_be_bytes()].concat();
                    let value = (0..size).map(|j| (j * 31 + p + b) as u8).collect();
                    (key, value)
                })
                .collect()
        }
    }
}

/// Time spent in `apply_batch` for all events of `row`.
fn round(row: &str) -> Duration {
    let dir = std::env::temp_dir().join(format!("auditsink-sled-costs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(256 << 20)
        .open()
        .expect("open sled");
    let tree = db.open_tree("t").expect("tree");
    let mut applied = Duration::ZERO;
    for b in 0..EVENTS / PER_BATCH {
        let mut writes = sled::Batch::default();
        for (key, value) in batch(row, b) {
            writes.insert(key, value);
        }
        let start = Instant::now();
        tree.apply_batch(writes).expect("apply");
        applied += start.elapsed();
        if b % 10 == 9 {
            db.flush().expect("flush");
        }
    }
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    applied
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects rows.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!("row\tµs per event (median of 3)\tMB/s of values");
    for row in [
        "keys/sequential",
        "keys/minute_hash",
        "keys/random",
        "values/6144",
        "values/16384",
        "values/32768",
    ] {
        if !filter.is_empty() && !filter.iter().any(|f| row.contains(f.as_str())) {
            continue;
        }
        let mut rounds: Vec<Duration> = (0..3).map(|_| round(row)).collect();
        rounds.sort();
        let median = rounds[1];
        let per_event = median.as_secs_f64() * 1e6 / EVENTS as f64;
        let rate = if row.starts_with("values/") {
            format!(
                "{:.0}",
                (EVENTS * RECORD) as f64 / median.as_secs_f64() / 1e6
            )
        } else {
            "-".into()
        };
        println!("{row}\t{per_event:.2}\t{rate}");
    }
}
