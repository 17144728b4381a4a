//! The delivery engine shared by `send` and `replay`: batches over C
//! keep-alive connections at an events/s pace, Konnect's retry rules, the
//! ledger of acknowledged lines, and the counts.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{batch_lines, batch_lines_lingering, encode_all, Batch, BodyEncoding, Lines};
use super::client::{Attempt, Connection, Endpoint, Permanent};
use super::progress::{self, Counters, Progress, Total};
use super::report::{Stats, Summary};
use super::retry::{retried_status, retry_delay, MAX_RETRIES};

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
    /// Size of the input, when known beforehand (for the progress).
    pub total: Option<Total>,
}

/// A pace of `rate` events per second: each batch reserves its share of
/// time; a batch never starts before its slot (a token bucket holding one
/// batch: an idle period earns no burst).
struct Pace {
    rate: f64,
    next: Mutex<Instant>,
}

impl Pace {
    /// When a batch of `events` may start.
    fn slot(&self, events: u64) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*next).max(Instant::now());
        *next = start + Duration::from_secs_f64(events as f64 / self.rate);
        start
    }
}

struct Shared {
    options: Options,
    stats: Mutex<Stats>,
    counters: Arc<Counters>,
    ledger: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    pace: Option<Pace>,
    deadline: Option<Instant>,
    reported_failures: AtomicU64,
    /// Start no new batch: a permanent failure or Ctrl-C.
    stop: CancellationToken,
    /// Abandon the batches in flight too: Ctrl-C.
    abort: CancellationToken,
    /// The first failure that no retry could fix.
    permanent: Mutex<Option<Permanent>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the run after a failure no retry can fix (the first one is
    /// reported with its hint).
    fn stop_for(&self, permanent: &Permanent) {
        let mut first = self.permanent.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| permanent.clone());
        self.stop.cancel();
    }
}

/// A streamed input that pauses this long sends what it has (a partial batch).
const LINGER: Duration = Duration::from_secs(1);

/// At most this many failed batches are described on stderr.
const REPORTED_FAILURES: u64 = 10;

/// Delivers `lines`; returns the counts once every batch is acknowledged or
/// given up on (or `--duration` ran out).
pub fn run(options: Options, lines: Lines) -> anyhow::Result<Summary> {
    anyhow::ensure!(options.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    if let Some(rate) = options.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number"
        );
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
    let counters = Arc::new(Counters::default());
    let producer_error = Arc::new(Mutex::new(None::<anyhow::Error>));

    let known_total = options.total;
    // Preloaded: every batch read and encoded before the clock starts.
    // Streamed: a thread reads and batches while the workers send.
    let mut producer = None;
    let (rx, total) = if options.preload {
        let mut batches = Vec::new();
        batch_lines(lines, options.batch, &counters.read, |b| {
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
        (rx, Some(Total::Events(total)))
    } else {
        let (tx, rx) = mpsc::channel::<Batch>(options.concurrency * 2);
        let counters = counters.clone();
        let error = producer_error.clone();
        let batch = options.batch;
        producer = Some(std::thread::spawn(move || {
            let result = batch_lines_lingering(lines, batch, LINGER, &counters.read, |b| {
                tx.blocking_send(b).is_ok()
            });
            if let Err(e) = result {
                *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }));
        (rx, known_total)
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
        counters: counters.clone(),
        ledger,
        reported_failures: AtomicU64::new(0),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        permanent: Mutex::new(None),
    });
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let elapsed = runtime.block_on(async {
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let done = Arc::new(tokio::sync::Notify::new());
        let progress = tokio::spawn(progress::show(
            shared.options.progress,
            counters.clone(),
            total,
            done.clone(),
            started,
        ));
        // Ctrl-C: stop now, abandon what is in flight, print the summary so far.
        let on_interrupt = {
            let (shared, interrupted) = (shared.clone(), interrupted.clone());
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupted.store(true, Ordering::Relaxed);
                    shared.stop.cancel();
                    shared.abort.cancel();
                }
            })
        };
        let workers: Vec<_> = (0..shared.options.concurrency)
            .map(|_| tokio::spawn(worker(shared.clone(), rx.clone())))
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        on_interrupt.abort();
        let elapsed = started.elapsed();
        // Unblocks a producer still waiting to hand over a batch.
        rx.lock().await.close();
        done.notify_one();
        let _ = progress.await;
        elapsed
    });
    if let Some(producer) = producer {
        // Once --duration ran out, the producer may be blocked reading an
        // input that has not ended (a pipe left open): it is not waited for.
        // Otherwise the workers stopped because it had finished.
        let ran_out =
            shared.deadline.is_some_and(|d| Instant::now() >= d) || shared.stop.is_cancelled();
        if !ran_out || producer.is_finished() {
            let _ = producer.join();
        }
    }
    if let Some(ledger) = &shared.ledger {
        let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.flush().context("writing the ledger")?;
        ledger.get_ref().sync_all().context("writing the ledger")?;
    }
    let mut stats = shared.stats().clone();
    stats.events_read = counters.read.load(Ordering::Relaxed);
    let unsent = stats.events_read.saturating_sub(stats.events_sent);
    let permanent = shared
        .permanent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let interrupted = interrupted.load(Ordering::Relaxed);
    let stopped = if interrupted {
        Some("interrupted".to_owned())
    } else if let Some(permanent) = &permanent {
        Some(format!(
            "stopped at the first {}",
            permanent.kind.replace('_', " ")
        ))
    } else if shared.deadline.is_some_and(|d| Instant::now() >= d) {
        Some("--duration ran out".to_owned())
    } else {
        None
    };
    let summary = Summary {
        stats,
        elapsed,
        unsent,
        stopped,
        interrupted,
        permanent,
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

/// Takes batches and delivers them, one at a time, until the input ends or
/// `--duration` runs out.
async fn worker(shared: Arc<Shared>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>) {
    let mut connection = Connection::new();
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let deadline = shared.deadline.unwrap_or(far);
    loop {
        let next = async { rx.lock().await.recv().await };
        let batch = tokio::select! {
            batch = next => batch,
            _ = tokio::time::sleep_until(deadline.into()) => None,
            _ = shared.stop.cancelled() => None,
        };
        let Some(batch) = batch else { return };
        if let Some(pace) = &shared.pace {
            let slot = pace.slot(batch.events);
            // A slot after the deadline is never reached.
            if slot >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(slot.into()) => {}
                _ = shared.stop.cancelled() => return,
            }
        }
        if Instant::now() >= deadline || shared.stop.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = deliver(&shared, &mut connection, batch) => {}
            // Ctrl-C: this batch's fate is unknown (it may have been stored).
            _ = shared.abort.cancelled() => return,
        }
    }
}

/// Sends one batch, retrying as Konnect does.
async fn deliver(shared: &Shared, connection: &mut Connection, batch: Batch) {
    let options = &shared.options;
    let body = batch.body(options.encoding);
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
                        write_ledger(shared, &batch.plain);
                        shared
                            .counters
                            .acknowledged
                            .fetch_add(batch.events, Ordering::Relaxed);
                        shared.counters.finished(batch.events, batch.input_bytes());
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
                Attempt::Permanent(permanent) => {
                    stats.count_status(permanent.kind);
                    drop(stats);
                    give_up(
                        shared,
                        &batch,
                        &format!("{} (final: not retried)", permanent.error),
                    );
                    shared.stop_for(permanent);
                    return;
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
    shared
        .counters
        .failed_batches
        .fetch_add(1, Ordering::Relaxed);
    shared.counters.finished(batch.events, batch.input_bytes());
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
