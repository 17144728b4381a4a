//! vrl's `parse_cef` timed on a file the way `auditsink bench parse` times
//! auditsink, printing the same JSON object, so that
//! `auditsink bench parse FILE --compare-json vrl.json` shows both in one
//! table.
//!
//! The file is read into memory once and split into lines as auditsink
//! splits them (`\n`, a trailing `\r` removed, blank lines skipped); then
//! `. = parse_cef!(.message)` runs over every line, one thread, `--repeat K`
//! times (default 1). Lines vrl rejects count as `failed` (by vrl's error
//! message); vrl has no lenient reading, so `lenient` is 0. Latency: one line
//! in 31 is timed alone (as auditsink does), the rest only in batches;
//! CPU time from `/proc/thread-self/schedstat` (Linux), as auditsink reads it.
//!
//!   cargo run --release --manifest-path benches/Cargo.toml --example vrl_bench_parse -- FILE [--repeat K] > vrl.json

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use auditsink_benches::Vrl;

/// One line in this many is timed alone (a prime, so that repeated passes
/// sample different lines).
const SAMPLE_EVERY: usize = 31;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut repeat = 1usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|k| k.parse().ok())
                    .filter(|&k| k > 0)
                    .ok_or("--repeat needs a positive integer")?;
            }
            _ if file.is_none() => file = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let file = file.ok_or("usage: vrl_bench_parse FILE [--repeat K]")?;
    let body = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
    let lines: Vec<&[u8]> = auditsink_parser::lines(&body).collect();
    let input_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();

    let mut vrl = Vrl::parse_cef();
    // Counts, untimed: one pass, each line once.
    let (mut clean, mut failed) = (0u64, 0u64);
    let mut failed_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        match vrl.run(line) {
            Ok(_) => clean += 1,
            Err(reason) => {
                failed += 1;
                // vrl's messages hold no line content for parse_cef errors
                // worth keeping apart; the first line of the text is the kind.
                let kind = reason.lines().next().unwrap_or_default().to_owned();
                *failed_by_reason.entry(kind).or_default() += 1;
            }
        }
    }

    let mut samples = Vec::with_capacity(lines.len() * repeat / SAMPLE_EVERY + 1);
    let cpu_start = thread_cpu_ns();
    let started = Instant::now();
    let mut n = 0usize;
    for _ in 0..repeat {
        for line in &lines {
            if n % SAMPLE_EVERY == 0 {
                let t = Instant::now();
                let _ = black_box(vrl.run(black_box(line)));
                samples.push(t.elapsed().as_nanos() as u64);
            } else {
                let _ = black_box(vrl.run(black_box(line)));
            }
            n += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_start
        .zip(thread_cpu_ns())
        .map(|(start, end)| end.saturating_sub(start) as f64 / 1e9);
    samples.sort_unstable();
    let quantile = |q: f64| -> u64 {
        if samples.is_empty() {
            return 0;
        }
        let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    let lines_parsed = (lines.len() * repeat) as u64;
    let bytes = input_bytes * repeat as u64;
    let report = serde_json::json!({
        "parser": "vrl 0.38 parse_cef",
        "files": [file],
        "format": "cef",
        "render": false,
        "threads": 1,
        "input_lines": lines.len(),
        "input_bytes": input_bytes,
        "passes": repeat,
        "lines": lines_parsed,
        "bytes": bytes,
        "seconds": seconds,
        "lines_per_s": lines_parsed as f64 / seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
        "clean": clean,
        "lenient": 0,
        "failed": failed,
        "warnings_by_kind": {},
        "failed_by_reason": failed_by_reason,
        "cpu_seconds": cpu_seconds,
        "lines_per_cpu_s": cpu_seconds.map(|cpu| lines_parsed as f64 / cpu),
        "latency_ns": {
            "p50": quantile(0.50),
            "p99": quantile(0.99),
            "max": samples.last().copied().unwrap_or(0),
            "sampled": samples.len(),
        },
        "per_thread": [{
            "thread": 0,
            "lines": lines_parsed,
            "bytes": bytes,
            "seconds": seconds,
            "lines_per_s": lines_parsed as f64 / seconds,
            "mb_per_s": bytes as f64 / seconds / 1e6,
            "cpu_seconds": cpu_seconds,
        }],
    });
    println!("{report}");
    Ok(())
}

/// CPU time of this thread in nanoseconds (Linux: the first field of
/// `/proc/thread-self/schedstat`), as `auditsink bench parse` reads it.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
