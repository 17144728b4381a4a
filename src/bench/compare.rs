//! Other parsers' results beside this run: `--compare-json FILE` reads
//! objects of the shape `--json` prints (vrl's, from
//! `benches/examples/vrl_bench_parse.rs`, Elastic's decoder or anyone's own)
//! and adds them as rows of one table.

use std::fmt::Write;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

use super::report::{grouped, nanos, Ratio, Report};

/// One row: another parser's result.
#[derive(Debug, Clone)]
pub struct Other {
    pub parser: String,
    pub threads: u64,
    pub lines_per_s: f64,
    pub mb_per_s: f64,
    /// Lines per CPU second, when the result has it.
    pub lines_per_cpu_s: Option<f64>,
    pub clean: u64,
    pub lenient: u64,
    pub failed: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// The results in `path`: one JSON object, several one after the other, or
/// an array of them.
pub fn read(path: &Path) -> anyhow::Result<Vec<Other>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display().to_string();
    let mut others = Vec::new();
    for value in serde_json::Deserializer::from_slice(&text).into_iter::<Value>() {
        let value = value.with_context(|| format!("{name}: not JSON"))?;
        match value {
            Value::Array(items) => {
                for item in &items {
                    others.push(other(item, &name, others.len() + 1)?);
                }
            }
            item => others.push(other(&item, &name, others.len() + 1)?),
        }
    }
    if others.is_empty() {
        bail!("{name}: no result in it (expected the JSON object `bench parse --json` prints)");
    }
    Ok(others)
}

fn other(value: &Value, name: &str, position: usize) -> anyhow::Result<Other> {
    let number = |pointer: &str| -> anyhow::Result<f64> {
        value
            .pointer(pointer)
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n >= 0.0)
            .with_context(|| {
                format!(
                    "{name}: result {position} has no {:?} (a non-negative number)",
                    &pointer[1..]
                )
            })
    };
    let count = |pointer: &str| number(pointer).map(|n| n as u64);
    let parser = match value.get("parser").and_then(Value::as_str) {
        Some(parser) => parser.chars().take(80).collect(),
        None => format!("{name} #{position}"),
    };
    // Every documented key must be there, even those the table leaves out.
    for key in ["/lines", "/bytes", "/seconds"] {
        number(key)?;
    }
    Ok(Other {
        parser,
        threads: count("/threads")?,
        lines_per_s: number("/lines_per_s")?,
        mb_per_s: number("/mb_per_s")?,
        lines_per_cpu_s: value
            .get("lines_per_cpu_s")
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n > 0.0),
        clean: count("/clean")?,
        lenient: count("/lenient")?,
        failed: count("/failed")?,
        p50: count("/latency_ns/p50")?,
        p99: count("/latency_ns/p99")?,
        max: count("/latency_ns/max")?,
    })
}

fn speedup(this: f64, other: f64) -> f64 {
    if other > 0.0 {
        this / other
    } else {
        f64::INFINITY
    }
}

/// `--json`'s `compared`.
pub fn ratios(report: &Report, others: &[Other]) -> Vec<Ratio> {
    others
        .iter()
        .map(|other| Ratio {
            parser: other.parser.clone(),
            lines_per_s: other.lines_per_s,
            mb_per_s: other.mb_per_s,
            speedup: speedup(report.lines_per_s, other.lines_per_s),
            cpu_speedup: report
                .lines_per_cpu_s
                .zip(other.lines_per_cpu_s)
                .map(|(this, that)| speedup(this, that)),
        })
        .collect()
}

/// This run and the others in one table.
pub fn table(report: &Report, others: &[Other]) -> String {
    let this = Other {
        parser: format!("{} (this run)", report.parser),
        threads: report.threads as u64,
        lines_per_s: report.lines_per_s,
        mb_per_s: report.mb_per_s,
        lines_per_cpu_s: report.lines_per_cpu_s,
        clean: report.clean,
        lenient: report.lenient,
        failed: report.failed,
        p50: report.latency_ns.p50,
        p99: report.latency_ns.p99,
        max: report.latency_ns.max,
    };
    let rows: Vec<&Other> = std::iter::once(&this).chain(others).collect();
    let width = rows
        .iter()
        .map(|row| row.parser.chars().count())
        .max()
        .unwrap_or(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>12}  {:>9}  {:>12}  {:>9}  {:>9}  {:>9}  {:>10}  {:>8}  {:>8}  {:>11}  {:>11}",
        "parser",
        "threads",
        "lines/s",
        "MB/s",
        "lines/cpu-s",
        "p50",
        "p99",
        "max",
        "clean",
        "lenient",
        "failed",
        "this run is",
        "per CPU s",
    );
    for row in &rows {
        let cpu_rate = row
            .lines_per_cpu_s
            .map_or_else(|| "-".to_owned(), |rate| grouped(rate.round() as u64));
        let cpu_ratio = match (report.lines_per_cpu_s, row.lines_per_cpu_s) {
            (Some(this), Some(that)) => format!("{:.1}x", speedup(this, that)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>12}  {:>9.1}  {:>12}  {:>9}  {:>9}  {:>9}  {:>10}  {:>8}  {:>8}  {:>10.1}x  {:>11}",
            row.parser,
            row.threads,
            grouped(row.lines_per_s.round() as u64),
            row.mb_per_s,
            cpu_rate,
            nanos(row.p50),
            nanos(row.p99),
            nanos(row.max),
            grouped(row.clean),
            grouped(row.lenient),
            grouped(row.failed),
            speedup(report.lines_per_s, row.lines_per_s),
            cpu_ratio,
        );
    }
    let input_lines = report.clean + report.lenient + report.failed;
    for other in others {
        let theirs = other.clean + other.lenient + other.failed;
        if theirs != input_lines {
            let _ = writeln!(
                out,
                "note: {} classified {} input lines, this run {}: was it the same input?",
                other.parser,
                grouped(theirs),
                grouped(input_lines)
            );
        }
    }
    out
}
