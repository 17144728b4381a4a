//! ED25519 signature verification on the shared Konnect sample (60 CEF and
//! 60 JSON lines, signed by the key in `konnect-sample-jwks.json`):
//! `KeySet::verify_line` one line at a time against `KeySet::verify_lines`
//! on batches of 60 and 500 lines (the sample repeated), and on 500 lines
//! of which one is forged (its batch fails).
//!
//! One iteration verifies `n` lines; lines/s is `n / time` (criterion's
//! `thrpt` with `Throughput::Elements`).
//!
//!   cargo bench --manifest-path benches/Cargo.toml --bench verify

use std::hint::black_box;

use auditsink_benches::{corpus_dir, corpus_lines};
use auditsink_parser::signature::KeySet;
use auditsink_parser::{LineFormat, SignatureStatus};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The sample's lines, each with its format.
type Lines = Vec<(Vec<u8>, LineFormat)>;

fn sample() -> Option<(KeySet, Lines)> {
    let jwks_path = corpus_dir().join("konnect-sample-jwks.json");
    let Ok(jwks) = std::fs::read(&jwks_path) else {
        eprintln!("skipping: {} not found", jwks_path.display());
        return None;
    };
    let keys = KeySet::from_jwks(&jwks).expect("the sample JWKS is valid");
    let cef = corpus_lines("konnect-sample.cef")?;
    let json = corpus_lines("konnect-sample.jsonl")?;
    let lines: Lines = cef
        .into_iter()
        .map(|l| (l, LineFormat::Cef))
        .chain(json.into_iter().map(|l| (l, LineFormat::Json)))
        .collect();
    for (line, format) in &lines {
        assert_eq!(
            keys.verify_line(line, *format),
            SignatureStatus::Valid,
            "every sample line verifies"
        );
    }
    Some((keys, lines))
}

fn verify(c: &mut Criterion) {
    let Some((keys, lines)) = sample() else {
        return;
    };
    for (name, format) in [("cef", LineFormat::Cef), ("json", LineFormat::Json)] {
        let one: Vec<&[u8]> = lines
            .iter()
            .filter(|(_, f)| *f == format)
            .map(|(l, _)| l.as_slice())
            .collect();
        let mut group = c.benchmark_group(format!("verify_konnect_{name}"));
        group.throughput(Throughput::Elements(one.len() as u64));
        group.bench_function(BenchmarkId::new("verify_line", one.len()), |b| {
            b.iter(|| {
                for line in &one {
                    black_box(keys.verify_line(black_box(line), format));
                }
            })
        });
        for size in [60, 500] {
            let batch: Vec<(&[u8], LineFormat)> = one
                .iter()
                .cycle()
                .take(size)
                .map(|l| (*l, format))
                .collect();
            group.throughput(Throughput::Elements(size as u64));
            group.bench_function(BenchmarkId::new("verify_lines", size), |b| {
                b.iter(|| {
                    let statuses = keys.verify_lines(black_box(&batch));
                    debug_assert!(statuses.iter().all(|s| *s == SignatureStatus::Valid));
                    black_box(statuses)
                })
            });
        }
        // A request with one forged line: the line in the middle with one
        // byte of its payload changed.
        let mut forged = one[250 % one.len()].to_vec();
        let at = forged.iter().position(|&c| c == b'=').expect("a field") + 1;
        forged[at] ^= 1;
        let mut batch: Vec<(&[u8], LineFormat)> =
            one.iter().cycle().take(500).map(|l| (*l, format)).collect();
        batch[250] = (&forged, format);
        assert_eq!(keys.verify_line(&forged, format), SignatureStatus::Invalid);
        group.throughput(Throughput::Elements(500));
        group.bench_function(BenchmarkId::new("verify_lines_one_forged", 500), |b| {
            b.iter(|| {
                let statuses = keys.verify_lines(black_box(&batch));
                debug_assert_eq!(
                    statuses
                        .iter()
                        .filter(|s| **s != SignatureStatus::Valid)
                        .count(),
                    1
                );
                black_box(statuses)
            })
        });
        group.finish();
    }
}

criterion_group!(signatures, verify);
criterion_main!(signatures);
