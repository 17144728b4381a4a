//! Parsing throughput on Konnect-shaped lines: the shared sample's 60 events,
//! CEF and JSON, through `auditsink_parser::parse_line`.

use std::path::Path;

use auditsink_parser::{parse_line, Format, ParseOptions};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn sample(name: &str) -> Option<Vec<Vec<u8>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus").join(name);
    match std::fs::read(&path) {
        Ok(text) => Some(auditsink_parser::lines(&text).map(<[u8]>::to_vec).collect()),
        Err(_) => {
            eprintln!("skipping {name}: {} not found", path.display());
            None
        }
    }
}

fn bench_format(c: &mut Criterion, name: &str, file: &str, format: Format) {
    let Some(lines) = sample(file) else { return };
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let options = ParseOptions::new(format);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("auditsink_parse_line", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_line(black_box(line), &options));
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_format(c, "konnect_cef_60_lines", "konnect-sample.cef", Format::Cef);
    bench_format(c, "konnect_json_60_lines", "konnect-sample.jsonl", Format::Json);
}

criterion_group!(parse, benches);
criterion_main!(parse);
