//! The timed run: worker threads parse the lines held in memory, chunk by
//! chunk, until the passes are done or the time is up.
//!
//! Throughput comes from the clock read once per chunk of [`CHUNK_LINES`]
//! lines. Latency comes from sampling: one line in [`SAMPLE_EVERY`] is timed
//! alone (two `Instant::now()` calls, tens of nanoseconds, inside the chunk
//! time: well under 1 % of it), the others are not timed one by one, so
//! measuring latency does not distort throughput. The stride is prime, so
//! repeated passes sample different lines.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use auditsink_parser::{parse_borrowed, ParseOptions};

use super::latency::Histogram;
use super::progress;

/// Lines a worker takes at a time.
pub const CHUNK_LINES: usize = 256;
/// One line in this many is timed alone for the latency histogram.
pub const SAMPLE_EVERY: u64 = 31;

/// When the run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After the whole input has been parsed this many times.
    Passes(u64),
    /// At the first chunk boundary after this long.
    After(Duration),
}

/// What to time.
pub struct Job<'a> {
    pub lines: &'a [&'a [u8]],
    pub options: &'a ParseOptions,
    pub threads: usize,
    pub stop: Stop,
    /// Render each event to JSON too (into a buffer that is then dropped).
    pub render: bool,
    /// Show a progress line on stderr.
    pub progress: bool,
}

/// What one worker did.
pub struct ThreadResult {
    pub lines: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// CPU time the worker used in the run, where the kernel tells.
    pub cpu_seconds: Option<f64>,
    pub latency: Histogram,
}

/// What the run did: per worker, and the wall time from the common start
/// to the last worker's end.
pub struct Run {
    pub threads: Vec<ThreadResult>,
    pub seconds: f64,
}

impl Run {
    pub fn lines(&self) -> u64 {
        self.threads.iter().map(|t| t.lines).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.threads.iter().map(|t| t.bytes).sum()
    }

    /// The workers' CPU time, when every worker's is known.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.threads.iter().map(|t| t.cpu_seconds).sum()
    }

    pub fn latency(&self) -> Histogram {
        let mut all = Histogram::default();
        for thread in &self.threads {
            all.merge(&thread.latency);
        }
        all
    }
}

/// State the workers share.
struct Shared<'a> {
    job: &'a Job<'a>,
    /// Bytes of each chunk of the input.
    chunk_bytes: Vec<u64>,
    /// The next chunk to take, counted over all passes.
    next_chunk: AtomicU64,
    /// Lines parsed so far (for the progress line).
    lines_done: AtomicU64,
    finished: AtomicUsize,
    start: Barrier,
}

pub fn run(job: &Job<'_>) -> anyhow::Result<Run> {
    let chunk_bytes: Vec<u64> = job
        .lines
        .chunks(CHUNK_LINES)
        .map(super::input::bytes_of)
        .collect();
    let shared = Shared {
        job,
        chunk_bytes,
        next_chunk: AtomicU64::new(0),
        lines_done: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
        start: Barrier::new(job.threads + 1),
    };
    let total_lines = match job.stop {
        Stop::Passes(passes) => Some(passes.saturating_mul(job.lines.len() as u64)),
        Stop::After(_) => None,
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..job.threads)
            .map(|_| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name("bench-parse".into())
                    .spawn_scoped(scope, move || {
                        if shared.job.render {
                            work::<true>(shared)
                        } else {
                            work::<false>(shared)
                        }
                    })
            })
            .collect::<Result<_, _>>()?;
        shared.start.wait();
        let started = Instant::now();
        let duration = match job.stop {
            Stop::After(duration) => Some(duration),
            Stop::Passes(_) => None,
        };
        let mut line = progress::Line::new(job.progress, duration, total_lines);
        while shared.finished.load(Ordering::Acquire) < job.threads {
            std::thread::sleep(Duration::from_millis(100));
            line.show(started, shared.lines_done.load(Ordering::Relaxed));
        }
        line.clear();
        let mut threads = Vec::with_capacity(job.threads);
        let mut first_start = None::<Instant>;
        let mut last_end = None::<Instant>;
        for worker in workers {
            let (result, start, end) = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
            first_start = Some(first_start.map_or(start, |s| s.min(start)));
            last_end = Some(last_end.map_or(end, |e| e.max(end)));
            threads.push(result);
        }
        let seconds = match (first_start, last_end) {
            (Some(start), Some(end)) => (end - start).as_secs_f64(),
            _ => 0.0,
        };
        Ok(Run { threads, seconds })
    })
}

/// One worker: takes chunks until the stop, parsing (and rendering when
/// `RENDER`) every line. Returns its result and when it started and ended.
fn work<const RENDER: bool>(shared: &Shared<'_>) -> (ThreadResult, Instant, Instant) {
    let job = shared.job;
    let chunks = shared.chunk_bytes.len() as u64;
    let total_chunks = match job.stop {
        Stop::Passes(passes) => passes.saturating_mul(chunks),
        Stop::After(_) => u64::MAX,
    };
    let mut latency = Histogram::default();
    let mut rendered = Vec::with_capacity(1 << 14);
    let (mut lines, mut bytes, mut sampled) = (0u64, 0u64, 0u64);
    shared.start.wait();
    let start = Instant::now();
    let cpu_start = super::cpu::thread_cpu_ns();
    let deadline = match job.stop {
        Stop::After(duration) => Some(start + duration),
        Stop::Passes(_) => None,
    };
    let mut now = start;
    loop {
        if deadline.is_some_and(|deadline| now >= deadline) {
            break;
        }
        let chunk = shared.next_chunk.fetch_add(1, Ordering::Relaxed);
        if chunk >= total_chunks {
            break;
        }
        let index = (chunk % chunks) as usize;
        let first = index * CHUNK_LINES;
        let chunk_lines = &job.lines[first..(first + CHUNK_LINES).min(job.lines.len())];
        for line in chunk_lines {
            sampled += 1;
            if sampled == SAMPLE_EVERY {
                sampled = 0;
                let before = Instant::now();
                parse_one::<RENDER>(line, job.options, &mut rendered);
                latency.record(before.elapsed().as_nanos() as u64);
            } else {
                parse_one::<RENDER>(line, job.options, &mut rendered);
            }
        }
        lines += chunk_lines.len() as u64;
        bytes += shared.chunk_bytes[index];
        shared
            .lines_done
            .fetch_add(chunk_lines.len() as u64, Ordering::Relaxed);
        now = Instant::now();
    }
    let cpu_seconds = match (cpu_start, super::cpu::thread_cpu_ns()) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start) as f64 / 1e9),
        _ => None,
    };
    shared.finished.fetch_add(1, Ordering::Release);
    let result = ThreadResult {
        lines,
        bytes,
        seconds: (now - start).as_secs_f64(),
        cpu_seconds,
        latency,
    };
    (result, start, now)
}

#[inline(always)]
fn parse_one<const RENDER: bool>(line: &[u8], options: &ParseOptions, rendered: &mut Vec<u8>) {
    if RENDER {
        rendered.clear();
        let ok = crate::parse::render_line(black_box(line), options, rendered).is_ok();
        black_box((ok, rendered.len()));
    } else {
        // Dropped here: freeing the event is part of what a parse costs.
        let _ = black_box(parse_borrowed(black_box(line), options));
    }
}
