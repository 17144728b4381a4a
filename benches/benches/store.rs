//! The store: durable batch append of Konnect-shaped events, against the
//! physical limit measured in the same run, and a time-range query over a
//! store of 1M events.
//!
//! Events are the shared sample's 60 Konnect CEF lines, each copy made
//! unique (its `sig`, `trace_id` and `rt` rewritten, so every event is new to
//! the dedupe and the time index spreads them 100 ms apart), parsed (as the
//! receiver does, into borrowed views of the lines) before the clock
//! starts: what is timed is what the receiver does next, preparing a
//! `PreparedBatch` (encoding, identity, index terms) and
//! `Store::append_prepared` (dedupe look-ups, index entries, the event log
//! append and sync, one atomic sled batch, the group-commit flush), and
//! nothing else.
//!
//! - `append_500/store/N`: N threads each append one batch of 500 events at
//!   once (N concurrent deliveries); an iteration ends when all N are
//!   durable. Throughput is events.
//! - `append_500/plain_file/N`: the same raw lines (newline-terminated)
//!   appended to a plain file, one `fdatasync` per batch, N threads at once:
//!   the physical limit the store is compared with.
//! - `append_500/store_stream/8` and `plain_file_stream/8`: the same, but
//!   each of the 8 threads appends 8 batches back to back (sustained load,
//!   as 8 connections deliver), 32,000 events per iteration.
//! - `retention/expire_100k`: a retention run that removes all of a
//!   store's 100,000 events (received long ago) with their index entries;
//!   the store is filled anew, outside the clock, for every run.
//! - `crafted_line/escaped_values/N`: one CEF line of N escaped values
//!   (`k0=a\=b0 k1=a\=b1 ...`), parsed and prepared (as the receiver does
//!   before the append); `crafted_line/repeated_key/N`: one line of one key
//!   N times. Both were quadratic (the encoder searched the whole line for
//!   each string that is not a slice of it, and each repetition carried a
//!   warning). Throughput is the line's bytes.
//! - `query_1m/*`: over a store of 1M events (built once, outside the timed
//!   loop, in `$AUDITSINK_BENCH_STORE` or `/tmp/auditsink-bench-store-1m`,
//!   reused when it already holds them): every event of a one-hour window
//!   (36,000 events), the first 100 of it, and its count.
//!
//! After the runs it prints, per store row, the group-commit factor
//! (batches per flush) and the time one append took (from handing the
//! prepared batch over to its answer: median, 99th percentile, longest,
//! which shows a merge or a flush that held answers up), and the store's
//! size per event (sled's size on disk after a flush plus the
//! event log's segment files) beside the raw line's size.
//!
//!   cargo bench --manifest-path benches/Cargo.toml --bench store
//!   cargo bench --manifest-path benches/Cargo.toml --bench store -- crafted_line

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auditsink_benches::corpus_lines;
use auditsink_parser::{lines, parse_borrowed, BorrowedEvent, Format, ParseOptions};
use auditsink_storage::{PreparedBatch, Query, Store, StoreOptions};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

const BATCH: usize = 500;
/// Batches each appender sends back to back in the `*_stream` rows.
const STREAM: usize = 8;
const STORE_1M: u64 = 1_000_000;
/// Event `n` happens at `T0 + n * STEP_MS`.
const T0: i64 = 1_764_100_000_000;
const STEP_MS: i64 = 100;

/// Unique Konnect-shaped events made from the sample lines.
struct Events {
    templates: Vec<String>,
    options: ParseOptions,
    next: AtomicU64,
}

/// One batch: its raw lines, newline-terminated.
struct Delivery {
    raw: Vec<u8>,
}

impl Delivery {
    /// Its events as the receiver parses them: views into the lines.
    fn parse<'a>(&'a self, options: &ParseOptions) -> Vec<BorrowedEvent<'a>> {
        lines(&self.raw)
            .map(|line| parse_borrowed(line, options).expect("a sample line parses"))
            .collect()
    }
}

/// What the receiver does with a delivery's parsed events: prepare each
/// (encoding, identity, index terms) and append them.
fn append_parsed(store: &Store, events: &[BorrowedEvent<'_>]) -> u64 {
    append_received(store, events, now_ms())
}

/// [`append_parsed`], received at `received_at_ms`.
fn append_received(store: &Store, events: &[BorrowedEvent<'_>], received_at_ms: i64) -> u64 {
    let mut prepared = PreparedBatch::new("konnect", received_at_ms);
    for event in events {
        prepared.add_event(event);
    }
    store
        .append_prepared_blocking(prepared)
        .expect("append")
        .stored
}

impl Events {
    fn new() -> Option<Events> {
        let templates = corpus_lines("konnect-sample.cef")?
            .into_iter()
            .map(|l| String::from_utf8(l).expect("the sample is UTF-8"))
            .collect();
        Some(Events {
            templates,
            options: ParseOptions::new(Format::Cef),
            next: AtomicU64::new(0),
        })
    }

    fn starting_at(self, n: u64) -> Events {
        self.next.store(n, Ordering::Relaxed);
        self
    }

    /// Line `n`: template `n % 60` with its own `rt`, `trace_id` and `sig`.
    fn line(&self, n: u64) -> String {
        let template = &self.templates[(n % self.templates.len() as u64) as usize];
        let mut out = String::with_capacity(template.len() + 16);
        for (i, part) in template.split(' ').enumerate() {
            if i > 0 {
                out.push(' ');
            }
            if part.starts_with("rt=") {
                out.push_str(&format!("rt={}", T0 + n as i64 * STEP_MS));
            } else if part.starts_with("trace_id=") {
                out.push_str(&format!("trace_id={}", 1_000_000_000_000 + n));
            } else if part.starts_with("sig=") {
                let mut sig = [0u8; 64];
                for (j, chunk) in sig.chunks_mut(8).enumerate() {
                    let word = n
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .rotate_left(j as u32 * 7);
                    chunk.copy_from_slice(&word.to_be_bytes());
                }
                out.push_str("sig=");
                base64url(&sig, &mut out);
            } else {
                out.push_str(part);
            }
        }
        out
    }

    fn delivery(&self) -> Delivery {
        let first = self.next.fetch_add(BATCH as u64, Ordering::Relaxed);
        let mut raw = Vec::with_capacity(BATCH * 520);
        for n in first..first + BATCH as u64 {
            raw.extend_from_slice(self.line(n).as_bytes());
            raw.push(b'\n');
        }
        Delivery { raw }
    }
}

fn base64url(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn bench_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("AUDITSINK_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("auditsink-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

/// Runs `work` for each of `deliveries` on its own thread, all at once, and
/// returns the time until the last one finished.
fn concurrently<T: Send>(deliveries: Vec<T>, work: impl Fn(T) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for delivery in deliveries {
            let work = &work;
            scope.spawn(move || work(delivery));
        }
    });
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let Some(events) = Events::new() else {
        return;
    };
    let dir = bench_dir("append");
    // Times come from `append_group`'s configuration, which the command
    // line overrides.
    let mut group = c.benchmark_group("append_500");
    let mut commit = Vec::new();
    let latencies = Mutex::new(Vec::new());
    // (appenders, batches each delivers back to back, row suffix): one
    // batch each ends every iteration at a barrier; STREAM each is
    // sustained load, as 8 connections deliver, group commits overlapping.
    for (appenders, each, suffix) in [(1usize, 1, ""), (8, 1, ""), (8, STREAM, "_stream")] {
        group.throughput(Throughput::Elements((appenders * each * BATCH) as u64));
        let id = |name: &str| BenchmarkId::new(format!("{name}{suffix}"), appenders);
        // A new store and file for each row, removed after it: what the
        // rows append adds up to gigabytes.
        let row_dir = dir.join(format!("row{suffix}-{appenders}"));
        let store = Store::open(&row_dir.join("store")).expect("open the store");
        let plain = Mutex::new(
            File::options()
                .create(true)
                .append(true)
                .open(row_dir.join("plain.log"))
                .expect("open the plain file"),
        );
        group.bench_function(id("plain_file"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let streams: Vec<Vec<Vec<u8>>> = (0..appenders)
                        .map(|_| (0..each).map(|_| events.delivery().raw).collect())
                        .collect();
                    total += concurrently(streams, |raws| {
                        for raw in raws {
                            // One O_APPEND write per batch (atomic
                            // placement), then its own fdatasync, outside
                            // the lock.
                            let file = {
                                let mut file = plain.lock().unwrap();
                                file.write_all(&raw).expect("plain write");
                                file.try_clone().expect("clone the plain file")
                            };
                            file.sync_data().expect("fdatasync");
                        }
                    });
                }
                total
            })
        });
        let (batches0, flushes0) = store.commit_counts();
        group.bench_function(id("store"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let deliveries: Vec<Vec<Delivery>> = (0..appenders)
                        .map(|_| (0..each).map(|_| events.delivery()).collect())
                        .collect();
                    let streams: Vec<Vec<Vec<BorrowedEvent>>> = deliveries
                        .iter()
                        .map(|stream| stream.iter().map(|d| d.parse(&events.options)).collect())
                        .collect();
                    total += concurrently(streams, |stream| {
                        let mut took = Vec::with_capacity(stream.len());
                        for parsed in stream {
                            let start = Instant::now();
                            let stored = append_parsed(&store, &parsed);
                            took.push(start.elapsed());
                            assert_eq!(stored, BATCH as u64, "every event is new");
                        }
                        latencies.lock().unwrap().extend(took);
                    });
                }
                total
            })
        });
        let (batches1, flushes1) = store.commit_counts();
        let mut took = std::mem::take(&mut *latencies.lock().unwrap());
        took.sort_unstable();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        commit.push((
            format!("store{suffix}/{appenders}"),
            batches1 - batches0,
            flushes1 - flushes0,
            [at(0.5), at(0.99), took.last().copied().unwrap_or_default()],
        ));
        drop(store);
        let _ = std::fs::remove_dir_all(&row_dir);
    }
    group.finish();
    for (row, batches, flushes, [p50, p99, max]) in commit {
        eprintln!(
            "{row}: {batches} batches in {flushes} flushes \
             ({:.2} batches per flush); one append took {p50:.2?} (median), \
             {p99:.2?} (p99), {max:.2?} (longest)",
            batches as f64 / flushes.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 1M-event store: reused if `path` already holds it, else built with
/// 8 concurrent appenders.
fn store_1m(events: Events, path: &Path) -> Store {
    let options = StoreOptions {
        verify_on_open: 0,
        ..StoreOptions::default()
    };
    if let Ok(store) = Store::open_with(path, options.clone()) {
        if store.event_count() as u64 == STORE_1M {
            return store;
        }
    }
    let _ = std::fs::remove_dir_all(path);
    let store = Store::open_with(path, options).expect("open the 1M store");
    let started = Instant::now();
    let events = events.starting_at(0);
    let rounds = STORE_1M as usize / BATCH / 8;
    for round in 0..rounds {
        let deliveries: Vec<Delivery> = (0..8).map(|_| events.delivery()).collect();
        concurrently(deliveries, |delivery| {
            append_parsed(&store, &delivery.parse(&events.options));
        });
        if round % 50 == 49 {
            eprintln!(
                "building the 1M store: {} events, {:.0} s",
                store.event_count(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    assert_eq!(store.event_count() as u64, STORE_1M);
    store
}

fn query(c: &mut Criterion) {
    let Some(events) = Events::new() else {
        return;
    };
    let raw_bytes: u64 = (0..600).map(|n| events.line(n).len() as u64 + 1).sum();
    let path = std::env::var_os("AUDITSINK_BENCH_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("auditsink-bench-store-1m"));
    let store = store_1m(events, &path);
    store.flush().expect("flush");
    let on_disk = store.size_on_disk().expect("size on disk");
    eprintln!(
        "1M store at {}: {} bytes on disk (sled and the event log), {:.0} bytes per event; \
         raw line {:.0} bytes",
        path.display(),
        on_disk,
        on_disk as f64 / STORE_1M as f64,
        raw_bytes as f64 / 600.0
    );

    // One hour in the middle of the stored span: 36,000 events.
    let since = T0 + (STORE_1M as i64 / 2) * STEP_MS;
    let hour = Query {
        since_ms: Some(since),
        until_ms: Some(since + 3_600_000),
        ..Query::default()
    };
    let expected = (3_600_000 / STEP_MS) as u64;
    assert_eq!(store.count(&hour).unwrap(), expected);

    let mut group = c.benchmark_group("query_1m");
    group.sample_size(20);
    group.throughput(Throughput::Elements(expected));
    group.bench_function("one_hour_all", |b| {
        b.iter(|| {
            let n = store
                .query(&hour)
                .unwrap()
                .try_fold(0u64, |n, e| e.map(|_| n + 1))
                .unwrap();
            assert_eq!(n, expected);
        })
    });
    group.throughput(Throughput::Elements(100));
    let first_100 = Query {
        limit: Some(100),
        ..hour.clone()
    };
    group.bench_function("one_hour_first_100", |b| {
        b.iter(|| {
            let n = store
                .query(&first_100)
                .unwrap()
                .try_fold(0usize, |n, e| e.map(|_| n + 1))
                .unwrap();
            assert_eq!(n, 100);
        })
    });
    group.throughput(Throughput::Elements(expected));
    group.bench_function("one_hour_count", |b| {
        b.iter(|| assert_eq!(store.count(&hour).unwrap(), expected))
    });
    group.finish();
}

/// Events a retention run removes in `retention/expire_100k`.
const EXPIRED: u64 = 100_000;

fn retention(c: &mut Criterion) {
    let Some(events) = Events::new() else {
        return;
    };
    let mut group = c.benchmark_group("retention");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(EXPIRED));
    group.bench_function("expire_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir("retention");
                let store = Store::open(&dir).expect("open the store");
                for _ in 0..EXPIRED as usize / BATCH {
                    let delivery = events.delivery();
                    append_received(&store, &delivery.parse(&events.options), T0);
                }
                let start = Instant::now();
                let summary = store.apply_retention(T0 + 1).expect("retention");
                total += start.elapsed();
                assert_eq!(summary.events_removed, EXPIRED);
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        })
    });
    group.finish();
}

/// The `crafted_line` rows' lines: (row, N, line).
fn crafted_lines() -> Vec<(&'static str, usize, String)> {
    let header = "CEF:0|KongInc|Konnect|1.0|c|n|1|";
    let mut out = Vec::new();
    for n in [10_000, 100_000] {
        let values: Vec<String> = (0..n).map(|i| format!(r"k{i}=a\=b{i}")).collect();
        out.push(("escaped_values", n, format!("{header}{}", values.join(" "))));
    }
    for n in [40_000, 400_000] {
        let values: Vec<String> = (0..n).map(|i| format!("k=v{i}")).collect();
        out.push(("repeated_key", n, format!("{header}{}", values.join(" "))));
    }
    out
}

fn crafted(c: &mut Criterion) {
    let options = ParseOptions::new(Format::Cef);
    let mut group = c.benchmark_group("crafted_line");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (row, n, line) in crafted_lines() {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_function(BenchmarkId::new(row, n), |b| {
            b.iter(|| {
                let event = parse_borrowed(line.as_bytes(), &options).expect("it parses");
                let mut prepared = PreparedBatch::new("konnect", T0);
                prepared.add_event(&event);
                prepared
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = append_group;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = append
}
criterion_group!(benches, retention, query, crafted);
criterion_main!(append_group, benches);
