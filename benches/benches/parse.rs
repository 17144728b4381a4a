//! Parsing throughput on Konnect-shaped lines (the shared sample's 60
//! events), auditsink against vrl's `parse_cef` / `parse_json` run as Vector
//! users run them (a compiled `. = parse_cef!(.message)` over an event whose
//! `.message` is the line), in the same run.
//!
//! One iteration parses all 60 lines; criterion's throughput is their bytes,
//! so `thrpt` is MB/s of input and lines/s is 60 / `time`.
//!
//! What each auditsink row measures:
//! - `auditsink_record`: `cef::parse_record`, the CEF split alone (prefix,
//!   header, extension pairs, unescaped, borrowed): the zero-copy reader.
//! - `auditsink_borrowed`: `parse_borrowed`, the whole normalized event
//!   (typing, timestamp, sig, duplicate keys) as a view into the line.
//! - `auditsink_event`: `parse_line`, the owned `Event` (every string
//!   copied, fields in a serde_json map): what the server stores today.
//! - `*_to_json`: the same, rendered to JSON (what `auditsink parse` does).
//!
//! vrl's rows include building the one-field event (`{"message": line}`)
//! it runs on, which Vector's source has done before `remap` runs; that is
//! a copy of the line and a small map, well under 1% of its time here.
//!
//!   cargo bench --manifest-path benches/Cargo.toml --bench parse

use std::hint::black_box;

use auditsink_benches::{corpus_lines, Vrl};
use auditsink_parser::{cef, parse_borrowed, parse_line, Format, ParseOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn throughput(lines: &[Vec<u8>]) -> Throughput {
    Throughput::Bytes(lines.iter().map(|l| l.len() as u64).sum())
}

fn cef_lines(c: &mut Criterion) {
    let Some(lines) = corpus_lines("konnect-sample.cef") else {
        return;
    };
    let texts: Vec<&str> = lines
        .iter()
        .map(|l| std::str::from_utf8(l).expect("the sample is UTF-8"))
        .collect();
    let options = ParseOptions::new(Format::Cef);
    let mut vrl = Vrl::parse_cef();
    // Both sides must accept every line, or the comparison is meaningless.
    for line in &lines {
        assert!(parse_line(line, &options).is_ok());
        assert!(vrl.run(line).is_ok(), "vrl rejects a sample line");
    }

    let mut group = c.benchmark_group("konnect_cef_60_lines");
    group.throughput(throughput(&lines));
    group.bench_function("auditsink_record", |b| {
        b.iter(|| {
            for text in &texts {
                let _ = black_box(cef::parse_record(black_box(text)));
            }
        })
    });
    group.bench_function("auditsink_borrowed", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_borrowed(black_box(line), &options));
            }
        })
    });
    group.bench_function("auditsink_event", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_line(black_box(line), &options));
            }
        })
    });
    let mut out = Vec::with_capacity(1 << 16);
    group.bench_function("auditsink_borrowed_to_json", |b| {
        b.iter(|| {
            out.clear();
            for line in &lines {
                if let Ok(event) = parse_borrowed(black_box(line), &options) {
                    let _ = serde_json::to_writer(&mut out, &event);
                }
            }
            black_box(out.len())
        })
    });
    group.bench_function("auditsink_event_to_json", |b| {
        b.iter(|| {
            out.clear();
            for line in &lines {
                if let Ok(event) = parse_line(black_box(line), &options) {
                    let _ = serde_json::to_writer(&mut out, &event);
                }
            }
            black_box(out.len())
        })
    });
    group.bench_function("vrl_parse_cef", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(vrl.run(black_box(line)));
            }
        })
    });
    group.finish();
}

fn json_lines(c: &mut Criterion) {
    let Some(lines) = corpus_lines("konnect-sample.jsonl") else {
        return;
    };
    let options = ParseOptions::new(Format::Json);
    let mut vrl = Vrl::parse_json();
    for line in &lines {
        assert!(parse_line(line, &options).is_ok());
        assert!(vrl.run(line).is_ok(), "vrl rejects a sample line");
    }

    let mut group = c.benchmark_group("konnect_json_60_lines");
    group.throughput(throughput(&lines));
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(serde_json::from_slice::<serde_json::Value>(black_box(line)));
            }
        })
    });
    group.bench_function("auditsink_borrowed", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_borrowed(black_box(line), &options));
            }
        })
    });
    group.bench_function("auditsink_event", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_line(black_box(line), &options));
            }
        })
    });
    group.bench_function("vrl_parse_json", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(vrl.run(black_box(line)));
            }
        })
    });
    group.finish();
}

criterion_group!(parse, cef_lines, json_lines);
criterion_main!(parse);
