//! The result of a run, as one JSON object (`--json`, the shape
//! `--compare-json` reads) or as text for a person.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::counts::Counts;
use super::input::{self, Input};
use super::timed::{self, Run};
use super::ParseArgs;

/// Everything `--json` prints. The keys up to `latency_ns` are the
/// documented minimum another parser's result must have to be compared.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Which parser and path was timed.
    pub parser: String,
    /// Lines parsed in the timed run (all passes, all threads).
    pub lines: u64,
    /// Their bytes, terminators not counted.
    pub bytes: u64,
    /// Wall time of the timed run.
    pub seconds: f64,
    pub lines_per_s: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    pub threads: usize,
    /// Input lines (each counted once) read without a warning.
    pub clean: u64,
    /// Input lines read with at least one warning.
    pub lenient: u64,
    /// Input lines that are not events.
    pub failed: u64,
    /// Per-line latency of the sampled lines.
    pub latency_ns: Latency,
    pub files: Vec<String>,
    pub format: String,
    pub render: bool,
    /// Non-blank lines of the input, and their bytes.
    pub input_lines: u64,
    pub input_bytes: u64,
    /// How many times the input was parsed (`lines / input_lines`; a
    /// fraction when a duration ended the run).
    pub passes: f64,
    pub warnings_by_kind: BTreeMap<String, u64>,
    pub failed_by_reason: BTreeMap<String, u64>,
    /// The workers' CPU time (Linux), and lines per CPU second: fair
    /// between runs on a machine whose load changed; `null` elsewhere.
    pub cpu_seconds: Option<f64>,
    pub lines_per_cpu_s: Option<f64>,
    pub per_thread: Vec<ThreadRow>,
    /// This run against each `--compare-json` result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compared: Vec<Ratio>,
}

/// How this run compares with another, in `--json`'s `compared`.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub parser: String,
    pub lines_per_s: f64,
    pub mb_per_s: f64,
    /// This run's lines/s divided by the other's.
    pub speedup: f64,
    /// The same per CPU second, when both results have it.
    pub cpu_speedup: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    /// How many lines were timed alone (one in `sample_every`).
    pub sampled: u64,
    pub sample_every: u64,
}

#[derive(Debug, Serialize)]
pub struct ThreadRow {
    pub thread: usize,
    pub lines: u64,
    pub bytes: u64,
    /// From the common start to this worker's end.
    pub seconds: f64,
    pub lines_per_s: f64,
    pub mb_per_s: f64,
    pub cpu_seconds: Option<f64>,
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl Report {
    pub fn new(
        input: &Input,
        lines: &[&[u8]],
        args: &ParseArgs,
        counts: &Counts,
        run: &Run,
    ) -> Report {
        let latency = run.latency();
        let total_lines = run.lines();
        let total_bytes = run.bytes();
        let path = if args.render {
            "parse_borrowed + JSON rendering"
        } else {
            "parse_borrowed"
        };
        Report {
            parser: format!("auditsink {} {path}", env!("CARGO_PKG_VERSION")),
            lines: total_lines,
            bytes: total_bytes,
            seconds: run.seconds,
            lines_per_s: per_second(total_lines, run.seconds),
            mb_per_s: per_second(total_bytes, run.seconds) / 1e6,
            threads: run.threads.len(),
            clean: counts.clean,
            lenient: counts.lenient,
            failed: counts.failed,
            latency_ns: Latency {
                p50: latency.quantile(0.50),
                p99: latency.quantile(0.99),
                max: latency.max(),
                sampled: latency.total(),
                sample_every: timed::SAMPLE_EVERY,
            },
            files: input.names(),
            format: args.format.to_string(),
            render: args.render,
            input_lines: lines.len() as u64,
            input_bytes: input::bytes_of(lines),
            passes: total_lines as f64 / lines.len().max(1) as f64,
            warnings_by_kind: counts.warnings_by_kind.clone(),
            failed_by_reason: counts.failed_by_reason.clone(),
            cpu_seconds: run.cpu_seconds(),
            lines_per_cpu_s: run.cpu_seconds().map(|cpu| per_second(total_lines, cpu)),
            per_thread: run
                .threads
                .iter()
                .enumerate()
                .map(|(thread, t)| ThreadRow {
                    thread,
                    lines: t.lines,
                    bytes: t.bytes,
                    seconds: t.seconds,
                    lines_per_s: per_second(t.lines, t.seconds),
                    mb_per_s: per_second(t.bytes, t.seconds) / 1e6,
                    cpu_seconds: t.cpu_seconds,
                })
                .collect(),
            compared: Vec::new(),
        }
    }

    /// The report for a person.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let what = if self.render {
            "parse and render to JSON (no output)"
        } else {
            "parse only (no rendering, no output)"
        };
        let _ = writeln!(
            out,
            "{}: {} lines, {} in {}, format {}, {what}",
            self.parser,
            grouped(self.input_lines),
            megabytes(self.input_bytes),
            match self.files.as_slice() {
                [one] => one.clone(),
                many => format!("{} inputs", many.len()),
            },
            self.format,
        );
        let _ = writeln!(
            out,
            "timed: {} lines ({:.2} passes), {}, {:.3} s, {} thread{}",
            grouped(self.lines),
            self.passes,
            megabytes(self.bytes),
            self.seconds,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
        );
        let _ = writeln!(
            out,
            "  total     {:>12} lines/s  {:>9.1} MB/s",
            grouped(self.lines_per_s.round() as u64),
            self.mb_per_s
        );
        for row in &self.per_thread {
            let _ = writeln!(
                out,
                "  thread {:<2} {:>12} lines/s  {:>9.1} MB/s  {:>12} lines",
                row.thread,
                grouped(row.lines_per_s.round() as u64),
                row.mb_per_s,
                grouped(row.lines),
            );
        }
        if let (Some(cpu), Some(rate)) = (self.cpu_seconds, self.lines_per_cpu_s) {
            let _ = writeln!(
                out,
                "  cpu       {:>12} lines per CPU second ({cpu:.3} CPU s)",
                grouped(rate.round() as u64),
            );
        }
        let _ = writeln!(
            out,
            "latency per line: p50 {}  p99 {}  max {}  ({} lines timed alone, 1 in {})",
            nanos(self.latency_ns.p50),
            nanos(self.latency_ns.p99),
            nanos(self.latency_ns.max),
            grouped(self.latency_ns.sampled),
            self.latency_ns.sample_every,
        );
        let _ = writeln!(
            out,
            "input lines: {} clean, {} lenient, {} failed",
            grouped(self.clean),
            grouped(self.lenient),
            grouped(self.failed),
        );
        for (title, kinds) in [
            (
                "warnings of the lenient lines, by kind",
                &self.warnings_by_kind,
            ),
            ("failed lines, by reason", &self.failed_by_reason),
        ] {
            if kinds.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {title}:");
            for (kind, count) in kinds {
                let _ = writeln!(out, "    {:>10}  {kind}", grouped(*count));
            }
        }
        out
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A duration in the unit that reads best.
pub fn nanos(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(nanos(950), "950 ns");
        assert_eq!(nanos(12_500), "12.5 µs");
        assert_eq!(nanos(4_098_900), "4.1 ms");
        assert_eq!(nanos(45_000_000), "45.0 ms");
    }
}
