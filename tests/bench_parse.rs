//! `auditsink bench parse`: its counts are what `auditsink parse` says of
//! the same input, threads share the work without losing or repeating a
//! line, `--json` has every documented key, and `--compare-json` puts
//! another parser's result beside it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// `auditsink bench parse ARGS`: the `--json` object.
fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "parse", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = common::run_bin(&all, b"");
    assert_eq!(code, 0, "{all:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What `auditsink parse` says of `file`: (clean, lenient, failed), the
/// number of warnings, and the failed lines by reason without position.
fn parse_says(file: &Path, format: &str) -> ((u64, u64, u64), u64, BTreeMap<String, u64>) {
    let (code, stdout, stderr) =
        common::run_bin(&["parse", "--format", format, file.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{stderr}");
    let (mut clean, mut lenient, mut failed, mut warnings) = (0, 0, 0, 0);
    let mut reasons = BTreeMap::new();
    for line in stdout.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        if let Some(error) = row["error"].as_str() {
            failed += 1;
            let reason = [" at byte ", " at line "]
                .iter()
                .find_map(|marker| error.rfind(marker).map(|at| &error[..at]))
                .unwrap_or(error);
            let reason = match reason.strip_prefix("invalid UTF-8") {
                Some(_) => "invalid UTF-8",
                None => reason,
            };
            *reasons.entry(reason.to_owned()).or_default() += 1;
        } else if let Some(list) = row["warnings"].as_array() {
            lenient += 1;
            warnings += list.len() as u64;
        } else {
            clean += 1;
        }
    }
    ((clean, lenient, failed), warnings, reasons)
}

fn assert_counts_match(name: &str, file: &Path) {
    for format in ["auto", "cef", "json"] {
        let (counts, warnings, reasons) = parse_says(file, format);
        let report = bench_json(&["--format", format, "--repeat", "1", file.to_str().unwrap()]);
        let at = format!("{name} --format {format}");
        let ours = (
            report["clean"].as_u64().unwrap(),
            report["lenient"].as_u64().unwrap(),
            report["failed"].as_u64().unwrap(),
        );
        assert_eq!(ours, counts, "{at}: clean, lenient, failed");
        assert_eq!(
            report["lines"].as_u64(),
            Some(counts.0 + counts.1 + counts.2),
            "{at}: one pass parses every line once"
        );
        let by_kind: u64 = report["warnings_by_kind"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(by_kind, warnings, "{at}: warnings by kind");
        let by_reason: BTreeMap<String, u64> =
            serde_json::from_value(report["failed_by_reason"].clone()).unwrap();
        assert_eq!(by_reason, reasons, "{at}: failed by reason");
    }
}

#[test]
fn counts_are_what_parse_says_on_the_corpora() {
    for name in [
        "konnect-sample.cef",
        "konnect-sample.jsonl",
        "third-party/elastic-beats-cef-samples.log",
    ] {
        if let Some(path) = common::corpus(name) {
            assert_counts_match(name, &path);
        }
    }
}

#[test]
fn counts_are_what_parse_says_on_every_kind_of_irregular_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("irregular.log");
    std::fs::write(&file, common::irregular::every_kind_of_irregular_line()).unwrap();
    assert_counts_match("irregular lines", &file);
    // The file really has every outcome, several kinds of each.
    let report = bench_json(&["--repeat", "1", file.to_str().unwrap()]);
    assert!(
        report["warnings_by_kind"].as_object().unwrap().len() >= 8,
        "{report}"
    );
    assert!(
        report["failed_by_reason"].as_object().unwrap().len() >= 12,
        "{report}"
    );
}

#[test]
fn two_threads_parse_as_many_lines_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::simulate_to(dir.path(), "sim.log", &["-n", "1500", "--format", "mixed"]);
    let file = file.to_str().unwrap();
    let one = bench_json(&["--threads", "1", "--repeat", "3", file]);
    let two = bench_json(&["--threads", "2", "--repeat", "3", file]);
    assert_eq!(one["input_lines"], 1500);
    for (report, threads) in [(&one, 1), (&two, 2)] {
        assert_eq!(report["threads"], threads);
        assert_eq!(report["lines"], 4500, "{report}");
        let rows = report["per_thread"].as_array().unwrap();
        assert_eq!(rows.len(), threads);
        let per_thread: u64 = rows.iter().map(|r| r["lines"].as_u64().unwrap()).sum();
        assert_eq!(per_thread, 4500);
        let bytes: u64 = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
        assert_eq!(report["bytes"].as_u64(), Some(bytes));
    }
    assert_eq!(one["bytes"], two["bytes"]);
    assert_eq!(
        one["bytes"].as_u64(),
        Some(3 * one["input_bytes"].as_u64().unwrap())
    );
    // The rendering path and a duration-bound run too.
    let rendered = bench_json(&["--threads", "2", "--repeat", "2", "--render", file]);
    assert_eq!(rendered["lines"], 3000);
    assert_eq!(rendered["render"], true);
    let timed = bench_json(&["--duration", "0.3", file]);
    assert!(timed["lines"].as_u64().unwrap() > 0);
    assert!(timed["seconds"].as_f64().unwrap() >= 0.3, "{timed}");
}

const DOCUMENTED_KEYS: &[&str] = &[
    "parser",
    "lines",
    "bytes",
    "seconds",
    "lines_per_s",
    "mb_per_s",
    "threads",
    "clean",
    "lenient",
    "failed",
    "latency_ns",
    "files",
    "format",
    "render",
    "input_lines",
    "input_bytes",
    "passes",
    "warnings_by_kind",
    "failed_by_reason",
    "cpu_seconds",
    "lines_per_cpu_s",
    "per_thread",
];

#[test]
fn json_has_every_documented_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::simulate_to(dir.path(), "sim.log", &["-n", "200"]);
    let report = bench_json(&["--repeat", "20", file.to_str().unwrap()]);
    for key in DOCUMENTED_KEYS {
        assert!(report.get(key).is_some(), "no {key:?} in {report}");
    }
    for key in ["lines", "bytes", "threads", "clean", "lenient", "failed"] {
        assert!(report[key].is_u64(), "{key}: {report}");
    }
    for key in ["seconds", "lines_per_s", "mb_per_s"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    let latency = &report["latency_ns"];
    let (p50, p99, max) = (
        latency["p50"].as_u64().unwrap(),
        latency["p99"].as_u64().unwrap(),
        latency["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
    assert_eq!(latency["sampled"].as_u64(), Some(4000 / 31));
    for key in [
        "thread",
        "lines",
        "bytes",
        "seconds",
        "lines_per_s",
        "mb_per_s",
    ] {
        assert!(
            report["per_thread"][0].get(key).is_some(),
            "per_thread.{key}"
        );
    }
    assert_eq!(report["clean"], 200);
    // The README documents these keys too.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for key in DOCUMENTED_KEYS {
        assert!(
            readme.contains(&format!("`{key}`")),
            "README does not document {key:?}"
        );
    }
}

#[test]
fn compare_json_puts_another_parser_beside_this_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::simulate_to(dir.path(), "sim.log", &["-n", "300"]);
    let file = file.to_str().unwrap();
    // One of this command's own results, and one in the minimal shape.
    let ours = bench_json(&["--repeat", "2", file]);
    let other = serde_json::json!({
        "parser": "other parser 1.0",
        "lines": 300, "bytes": 150_000, "seconds": 0.5, "lines_per_s": 600.0,
        "mb_per_s": 0.3, "threads": 1, "clean": 290, "lenient": 0, "failed": 5,
        "latency_ns": { "p50": 1_600_000, "p99": 2_000_000, "max": 3_000_000 },
    });
    let results = dir.path().join("results.json");
    std::fs::write(&results, format!("{ours}\n{other}\n")).unwrap();

    let (code, stdout, stderr) = common::run_bin(
        &[
            "bench",
            "parse",
            "--repeat",
            "2",
            "--compare-json",
            results.to_str().unwrap(),
            file,
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with("other parser 1.0"))
        .unwrap_or_else(|| panic!("no row for the other parser:\n{stdout}"));
    assert!(row.contains("600") && row.contains("290"), "{row}");
    assert!(stdout.contains("(this run)"), "{stdout}");
    let header = stdout
        .lines()
        .find(|line| line.starts_with("parser "))
        .unwrap();
    for column in [
        "lines/s",
        "MB/s",
        "lines/cpu-s",
        "p50",
        "p99",
        "max",
        "clean",
        "failed",
    ] {
        assert!(header.contains(column), "{header}");
    }
    // It has no CPU time: "-" in both CPU columns.
    assert_eq!(
        row.split_whitespace().filter(|word| *word == "-").count(),
        2,
        "{row}"
    );
    // Its counts cover 295 lines, this run's 300: the table says so.
    assert!(
        stdout.contains("note: other parser 1.0 classified 295 input lines, this run 300"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("note:").count(), 1, "{stdout}");

    let report = bench_json(&[
        "--repeat",
        "2",
        "--compare-json",
        results.to_str().unwrap(),
        file,
    ]);
    let compared = report["compared"].as_array().unwrap();
    assert_eq!(compared.len(), 2);
    assert_eq!(compared[1]["parser"], "other parser 1.0");
    let speedup = compared[1]["speedup"].as_f64().unwrap();
    let expected = report["lines_per_s"].as_f64().unwrap() / 600.0;
    assert!(
        (speedup - expected).abs() < 1e-6 * expected,
        "{speedup} vs {expected}"
    );

    // A result without a documented key is refused before the run.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"parser":"x","lines":1}"#).unwrap();
    let (code, _, stderr) = common::run_bin(
        &[
            "bench",
            "parse",
            "--compare-json",
            bad.to_str().unwrap(),
            file,
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.json") && stderr.contains("bytes"),
        "{stderr}"
    );
}

#[test]
fn stdin_and_empty_input() {
    let (code, stdout, stderr) = common::run_bin(
        &["bench", "parse", "--json", "--repeat", "1"],
        b"CEF:0|V|P|1|c|n|1|a=1\n\nnot an event\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["files"], serde_json::json!(["-"]));
    assert_eq!(
        (report["clean"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let (code, _, stderr) = common::run_bin(&["bench", "parse", "-"], b"\n  \n");
    assert_eq!(code, 2);
    assert!(stderr.contains("no lines"), "{stderr}");
}
