//! The delivery engine shared by `send` and `replay`: lines into newline
//! batches, gzip, C keep-alive connections, an events/s pace, Konnect's retry
//! rules, the ledger of acknowledged lines, progress, and the counts.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::body::Bytes;
use tokio::sync::mpsc;

use super::client::{Attempt, Connection, Endpoint};
use super::report::{Stats, Summary};

/// Konnect: at most 4 retries of a batch.
pub const MAX_RETRIES: u32 = 4;

/// Lines to deliver (without terminators), in order.
pub type Lines = Box<dyn Iterator<Item = anyhow::Result<Vec<u8>>> + Send>;

/// How the body is encoded, and the `Content-Encoding` label it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// gzip, labelled with this `Content-Encoding`.
    Gzip(&'static str),
    /// As is, without `Content-Encoding`.
    Identity,
}

impl BodyEncoding {
    /// Reads `--encoding`.
    pub fn parse(text: &str) -> Result<BodyEncoding, String> {
        match text {
            "application/gzip" => Ok(BodyEncoding::Gzip("application/gzip")),
            "gzip" => Ok(BodyEncoding::Gzip("gzip")),
            "x-gzip" => Ok(BodyEncoding::Gzip("x-gzip")),
            "identity" => Ok(BodyEncoding::Identity),
            other => Err(format!(
                "{other:?}: use application/gzip (Konnect's label), gzip, x-gzip or identity"
            )),
        }
    }

    /// The `Content-Encoding` header value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            BodyEncoding::Gzip(label) => Some(label),
            BodyEncoding::Identity => None,
        }
    }

    fn encode(self, plain: &[u8]) -> Bytes {
        match self {
            BodyEncoding::Identity => Bytes::copy_from_slice(plain),
            BodyEncoding::Gzip(_) => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(plain.len() / 4),
                    flate2::Compression::default(),
                );
                // Writing into a Vec cannot fail.
                let _ = encoder.write_all(plain);
                Bytes::from(encoder.finish().unwrap_or_default())
            }
        }
    }
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A plain line every few seconds (stderr is a file or a pipe).
    Lines,
    /// Nothing.
    Off,
}

/// Everything the engine needs besides the lines.
pub struct Options {
    pub endpoint: Endpoint,
    pub batch: usize,
    pub concurrency: usize,
    /// Events per second, at most.
    pub rate: Option<f64>,
    /// Start no batch after this long.
    pub duration: Option<Duration>,
    pub encoding: BodyEncoding,
    pub ledger: Option<std::path::PathBuf>,
    /// Read and encode every batch before the clock starts.
    pub preload: bool,
    /// Limit on one request (connect, send, answer).
    pub timeout: Duration,
    /// One second in Konnect's retry rules (1 s..30 s); smaller in tests.
    pub retry_unit: Duration,
    pub progress: Progress,
}

/// The wait before retry number `retry` (0 for the first retry): the
/// receiver's `Retry-After` (seconds) clamped to 1..=30 units, else
/// 1, 2, 4, 8 units, never more than 30. A unit is 1 s except in tests.
pub fn retry_delay(retry: u32, retry_after_secs: Option<u64>, unit: Duration) -> Duration {
    let units = match retry_after_secs {
        Some(secs) => secs.clamp(1, 30),
        None => (1u64 << retry.min(5)).min(30),
    };
    unit * units as u32
}

/// Whether Konnect retries an answer with this status (500 and 429 only).
pub fn retried_status(status: u16) -> bool {
    status == 500 || status == 429
}

/// One batch: `events` lines joined by `\n`, and the encoded body.
struct Batch {
    number: u64,
    events: u64,
    plain: Bytes,
    body: Option<Bytes>,
}

/// A pace of `rate` events per second: each batch reserves its share of
/// time; a batch never starts before its slot (a token bucket holding one
/// batch: an idle period earns no burst).
struct Pace {
    rate: f64,
    next: Mutex<Instant>,
}

impl Pace {
    async fn wait(&self, events: u64) {
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(events as f64 / self.rate);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

struct Shared {
    options: Options,
    stats: Mutex<Stats>,
    ledger: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    pace: Option<Pace>,
    deadline: Option<Instant>,
    acknowledged: AtomicU64,
    failed_batches: AtomicU64,
    reported_failures: AtomicU64,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// At most this many failed batches are described on stderr.
const REPORTED_FAILURES: u64 = 10;

/// Delivers `lines`; returns the counts once every batch is acknowledged or
/// given up on (or `--duration` ran out).
pub fn run(options: Options, lines: Lines) -> anyhow::Result<Summary> {
    anyhow::ensure!(options.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    if let Some(rate) = options.rate {
        anyhow::ensure!(rate > 0.0, "--rate must be positive");
    }
    let ledger = match &options.ledger {
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the ledger {}", path.display()))?,
        ))),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let read = Arc::new(AtomicU64::new(0));
    let producer_error = Arc::new(Mutex::new(None::<anyhow::Error>));

    // Preloaded: every batch read and encoded before the clock starts.
    // Streamed: a thread reads and batches while the workers send.
    let mut producer = None;
    let (rx, total) = if options.preload {
        let mut batches = Vec::new();
        batch_lines(lines, options.batch, &read, |b| {
            batches.push(b);
            true
        })?;
        encode_all(&mut batches, options.encoding);
        let total: u64 = batches.iter().map(|b| b.events).sum();
        let (tx, rx) = mpsc::channel(batches.len().max(1));
        for batch in batches {
            // The channel has room for them all.
            let _ = tx.try_send(batch);
        }
        (rx, Some(total))
    } else {
        let (tx, rx) = mpsc::channel::<Batch>(options.concurrency * 2);
        let read = read.clone();
        let error = producer_error.clone();
        let batch = options.batch;
        producer = Some(std::thread::spawn(move || {
            let result = batch_lines(lines, batch, &read, |b| tx.blocking_send(b).is_ok());
            if let Err(e) = result {
                *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }));
        (rx, None)
    };

    let started = Instant::now();
    let shared = Arc::new(Shared {
        pace: options.rate.map(|rate| Pace {
            rate,
            next: Mutex::new(started),
        }),
        deadline: options.duration.map(|d| started + d),
        options,
        stats: Mutex::new(Stats::default()),
        ledger,
        acknowledged: AtomicU64::new(0),
        failed_batches: AtomicU64::new(0),
        reported_failures: AtomicU64::new(0),
    });
    let elapsed = runtime.block_on(async {
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let done = Arc::new(tokio::sync::Notify::new());
        let progress = tokio::spawn(show_progress(
            shared.clone(),
            read.clone(),
            total,
            done.clone(),
            started,
        ));
        let workers: Vec<_> = (0..shared.options.concurrency)
            .map(|_| tokio::spawn(worker(shared.clone(), rx.clone())))
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        let elapsed = started.elapsed();
        // Unblocks a producer still waiting to hand over a batch.
        rx.lock().await.close();
        done.notify_one();
        let _ = progress.await;
        elapsed
    });
    if let Some(producer) = producer {
        let _ = producer.join();
    }
    if let Some(ledger) = &shared.ledger {
        let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.flush().context("writing the ledger")?;
        ledger.get_ref().sync_all().context("writing the ledger")?;
    }
    let mut stats = shared.stats().clone();
    stats.events_read = read.load(Ordering::Relaxed);
    let unsent = stats.events_read.saturating_sub(stats.events_sent);
    let summary = Summary {
        stats,
        elapsed,
        unsent,
    };
    if let Some(error) = producer_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        eprint!("{}", summary.to_text());
        return Err(error.context("reading the input"));
    }
    Ok(summary)
}

/// Groups `lines` into batches of `size` and hands each to `sink` (which
/// returns false to stop).
fn batch_lines(
    lines: Lines,
    size: usize,
    read: &AtomicU64,
    mut sink: impl FnMut(Batch) -> bool,
) -> anyhow::Result<()> {
    let mut plain = Vec::new();
    let mut events = 0u64;
    let mut number = 0u64;
    for line in lines {
        let line = line?;
        if events > 0 {
            plain.push(b'\n');
        }
        plain.extend_from_slice(&line);
        events += 1;
        read.fetch_add(1, Ordering::Relaxed);
        if events == size as u64 {
            number += 1;
            let batch = Batch {
                number,
                events,
                plain: Bytes::from(std::mem::take(&mut plain)),
                body: None,
            };
            events = 0;
            if !sink(batch) {
                return Ok(());
            }
        }
    }
    if events > 0 {
        sink(Batch {
            number: number + 1,
            events,
            plain: Bytes::from(plain),
            body: None,
        });
    }
    Ok(())
}

/// Encodes every batch, on all cores.
fn encode_all(batches: &mut [Batch], encoding: BodyEncoding) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = batches.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in batches.chunks_mut(per_thread) {
            scope.spawn(move || {
                for batch in part {
                    batch.body = Some(encoding.encode(&batch.plain));
                }
            });
        }
    });
}

async fn worker(shared: Arc<Shared>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>) {
    let mut connection = Connection::new();
    loop {
        let next = async { rx.lock().await.recv().await };
        let batch = match shared.deadline {
            Some(deadline) => tokio::select! {
                batch = next => batch,
                _ = tokio::time::sleep_until(deadline.into()) => None,
            },
            None => next.await,
        };
        let Some(batch) = batch else { return };
        if let Some(pace) = &shared.pace {
            pace.wait(batch.events).await;
        }
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        deliver(&shared, &mut connection, batch).await;
    }
}

/// Sends one batch, retrying as Konnect does.
async fn deliver(shared: &Shared, connection: &mut Connection, batch: Batch) {
    let options = &shared.options;
    let body = match &batch.body {
        Some(body) => body.clone(),
        None => options.encoding.encode(&batch.plain),
    };
    shared.stats().events_sent += batch.events;
    let mut retry = 0;
    loop {
        let sent = Instant::now();
        let attempt = connection
            .post(&options.endpoint, body.clone(), options.timeout)
            .await;
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let (retry_after, failure) = {
            let mut stats = shared.stats();
            stats.requests += 1;
            if retry > 0 {
                stats.retries += 1;
            }
            match &attempt {
                Attempt::Answered {
                    status,
                    retry_after_secs,
                    body,
                } => {
                    stats.latencies_ms.push(latency_ms);
                    stats.count_status(&status.to_string());
                    if (200..300).contains(status) {
                        stats.acknowledged += batch.events;
                        stats.batches_acknowledged += 1;
                        stats.add_receiver_counts(body);
                        drop(stats);
                        shared
                            .acknowledged
                            .fetch_add(batch.events, Ordering::Relaxed);
                        write_ledger(shared, &batch.plain);
                        return;
                    }
                    let failure = format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                    );
                    if !retried_status(*status) {
                        drop(stats);
                        give_up(shared, &batch, &format!("{failure} (final: not retried)"));
                        return;
                    }
                    (*retry_after_secs, failure)
                }
                Attempt::ConnectionError(error) => {
                    stats.count_status("connection_error");
                    (None, format!("connection error: {error}"))
                }
            }
        };
        if retry == MAX_RETRIES {
            give_up(
                shared,
                &batch,
                &format!("{failure} (after {MAX_RETRIES} retries)"),
            );
            return;
        }
        tokio::time::sleep(retry_delay(retry, retry_after, options.retry_unit)).await;
        retry += 1;
    }
}

fn give_up(shared: &Shared, batch: &Batch, why: &str) {
    {
        let mut stats = shared.stats();
        stats.failed_batches += 1;
        stats.failed_events += batch.events;
    }
    shared.failed_batches.fetch_add(1, Ordering::Relaxed);
    let reported = shared.reported_failures.fetch_add(1, Ordering::Relaxed);
    if reported < REPORTED_FAILURES {
        eprintln!(
            "auditsink: batch {} ({} events) failed: {why}",
            batch.number, batch.events
        );
    } else if reported == REPORTED_FAILURES {
        eprintln!("auditsink: more batches failed (not described; see the summary)");
    }
}

fn write_ledger(shared: &Shared, plain: &[u8]) {
    let Some(ledger) = &shared.ledger else { return };
    let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = ledger
        .write_all(plain)
        .and_then(|_| ledger.write_all(b"\n"))
    {
        eprintln!("auditsink: writing the ledger: {e}");
    }
}

async fn show_progress(
    shared: Arc<Shared>,
    read: Arc<AtomicU64>,
    total: Option<u64>,
    done: Arc<tokio::sync::Notify>,
    started: Instant,
) {
    let mode = shared.options.progress;
    if mode == Progress::Off {
        return;
    }
    let bar = (mode == Progress::Bar).then(|| {
        let bar = match total {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} acknowledged, {per_sec} {msg}"
        } else {
            "{spinner} {elapsed_precise} {pos} acknowledged, {per_sec} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let every = if bar.is_some() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        let finished = tokio::select! {
            _ = ticker.tick() => false,
            _ = done.notified() => true,
        };
        let acknowledged = shared.acknowledged.load(Ordering::Relaxed);
        let failed = shared.failed_batches.load(Ordering::Relaxed);
        match &bar {
            Some(bar) => {
                bar.set_position(acknowledged);
                if failed > 0 {
                    bar.set_message(format!("{failed} batches failed"));
                }
                if finished {
                    bar.finish();
                }
            }
            None if !finished => {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "progress: {:.0} s, read {}, acknowledged {acknowledged}, failed batches {failed}, {:.0} events/s",
                    secs,
                    read.load(Ordering::Relaxed),
                    acknowledged as f64 / secs.max(1e-9)
                );
            }
            None => {}
        }
        if finished {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_konnect_rules() {
        let s = Duration::from_secs(1);
        let waits: Vec<_> = (0..MAX_RETRIES).map(|r| retry_delay(r, None, s)).collect();
        assert_eq!(waits, [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(retry_delay(9, None, s), Duration::from_secs(30));
        assert_eq!(retry_delay(0, Some(0), s), Duration::from_secs(1));
        assert_eq!(retry_delay(0, Some(7), s), Duration::from_secs(7));
        assert_eq!(retry_delay(0, Some(3600), s), Duration::from_secs(30));
        for r in 0..10 {
            for after in [None, Some(0), Some(5), Some(99)] {
                let d = retry_delay(r, after, s);
                assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(30));
            }
        }
    }

    #[test]
    fn only_500_and_429_are_retried() {
        for status in [200, 201, 400, 401, 404, 408, 413, 415, 501, 502, 503, 504] {
            assert!(!retried_status(status), "{status}");
        }
        assert!(retried_status(500) && retried_status(429));
    }

    #[test]
    fn batches_split_lines() {
        let lines: Lines = Box::new((0..7).map(|i| Ok(format!("l{i}").into_bytes())));
        let read = AtomicU64::new(0);
        let mut got = Vec::new();
        batch_lines(lines, 3, &read, |b| {
            got.push((b.events, String::from_utf8(b.plain.to_vec()).unwrap()));
            true
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (3, "l0\nl1\nl2".to_owned()),
                (3, "l3\nl4\nl5".to_owned()),
                (1, "l6".to_owned())
            ]
        );
        assert_eq!(read.load(Ordering::Relaxed), 7);
    }
}
