//! Times `Store::check` on a damaged store: `populate DIR N` writes N
//! Konnect-like events (batches of 500), `damage DIR` flips one byte in the
//! middle of the first event log segment, `check DIR` opens the store (no
//! verification on open) and runs `check`, printing the wall time, the bytes
//! read (rchar of /proc/self/io) and the problems found.

use std::path::Path;
use std::time::Instant;

use auditsink_parser::{parse_line, Format, ParseOptions};
use auditsink_storage::{Batch, Store, StoreOptions};

fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("rchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[2]);
    match args[1].as_str() {
        "populate" => {
            let n: u32 = args[3].parse().unwrap();
            let store = Store::open(dir).unwrap();
            let options = ParseOptions::new(Format::Cef);
            let t0 = 1_700_000_000_000i64;
            for start in (0..n).step_by(500) {
                let events = (start..(start + 500).min(n))
                    .map(|i| {
                        let line = format!(
                            "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt={} src=10.0.{}.{} \
                             org_id=org-{} principal_id=user-{} trace_id={} action=retrieve n={i}",
                            t0 + i as i64 * 1000,
                            i % 200,
                            i % 250,
                            i % 7,
                            i % 1000,
                            i
                        );
                        parse_line(line.as_bytes(), &options).unwrap()
                    })
                    .collect();
                store
                    .append_blocking(Batch {
                        source: "konnect".into(),
                        received_at_ms: t0,
                        events,
                        quarantine: Vec::new(),
                    })
                    .unwrap();
            }
            println!("{} events", store.event_count());
        }
        "damage" => {
            let mut segments: Vec<_> = std::fs::read_dir(dir.join("events"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            segments.sort();
            let path = &segments[0];
            let mut bytes = std::fs::read(path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(path, bytes).unwrap();
            println!("flipped byte {middle} of {}", path.display());
        }
        "check" => {
            let store = Store::open_with(
                dir,
                StoreOptions {
                    verify_on_open: 0,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let (read, started) = (rchar(), Instant::now());
            let report = store.check().unwrap();
            let elapsed = started.elapsed();
            println!(
                "check {:.2} s, {} MB read, {} events, {} problems",
                elapsed.as_secs_f64(),
                (rchar() - read) / 1_000_000,
                report.events,
                report.problem_count
            );
        }
        other => panic!("unknown command {other}"),
    }
}
