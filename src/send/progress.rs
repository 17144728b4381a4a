//! Progress on stderr while `send` runs: an indicatif bar on a terminal,
//! a plain line every 5 s otherwise (a log file, a CI job), or nothing.
//! When the size of the input is known (a file, or every batch preloaded)
//! both show the share done and an estimate of the time left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The size of the whole input, when known beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Events (every batch was read before sending).
    Events(u64),
    /// Bytes of the input file.
    Bytes(u64),
}

/// The live counts progress shows, updated by the delivery.
#[derive(Default)]
pub struct Counters {
    /// Lines read from the input.
    pub read: AtomicU64,
    /// Events acknowledged.
    pub acknowledged: AtomicU64,
    /// Batches given up on.
    pub failed_batches: AtomicU64,
    /// Events of the batches finished (acknowledged or given up on).
    pub done_events: AtomicU64,
    /// Input bytes of those batches (their lines and line ends).
    pub done_bytes: AtomicU64,
}

impl Counters {
    /// Counts a finished batch of `events` lines holding `bytes` input bytes.
    pub fn finished(&self, events: u64, bytes: u64) {
        self.done_events.fetch_add(events, Ordering::Relaxed);
        self.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// How far along the input is, against `total`.
    fn position(&self, total: Option<Total>) -> u64 {
        match total {
            Some(Total::Bytes(_)) => self.done_bytes.load(Ordering::Relaxed),
            _ => self.done_events.load(Ordering::Relaxed),
        }
    }
}

/// Shows progress until `done` is notified.
pub async fn show(
    mode: Progress,
    counters: Arc<Counters>,
    total: Option<Total>,
    done: Arc<tokio::sync::Notify>,
    started: Instant,
) {
    if mode == Progress::Off {
        return;
    }
    let bar = (mode == Progress::Bar).then(|| bar(total));
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
        let line = status(&counters, started.elapsed());
        match &bar {
            Some(bar) => {
                bar.set_position(
                    counters
                        .position(total)
                        .min(bar.length().unwrap_or(u64::MAX)),
                );
                bar.set_message(line);
                if finished {
                    bar.finish();
                }
            }
            None if !finished => {
                let mut line =
                    format!("progress: {:.0} s, {line}", started.elapsed().as_secs_f64());
                if let Some(total) = total {
                    line.push_str(&share_done(
                        counters.position(Some(total)),
                        total,
                        started.elapsed(),
                    ));
                }
                eprintln!("{line}");
            }
            None => {}
        }
        if finished {
            return;
        }
    }
}

/// `read N, acknowledged M, R events/s` (and failed batches, if any): the
/// rate as a whole number.
fn status(counters: &Counters, elapsed: Duration) -> String {
    let acknowledged = counters.acknowledged.load(Ordering::Relaxed);
    let failed = counters.failed_batches.load(Ordering::Relaxed);
    let rate = acknowledged as f64 / elapsed.as_secs_f64().max(1e-3);
    let mut line = format!(
        "read {}, acknowledged {acknowledged}, {rate:.0} events/s",
        counters.read.load(Ordering::Relaxed),
    );
    if failed > 0 {
        line.push_str(&format!(", {failed} batches failed"));
    }
    line
}

/// `, 42% done, about 17 s left` for the plain lines.
fn share_done(position: u64, total: Total, elapsed: Duration) -> String {
    let all = match total {
        Total::Events(n) | Total::Bytes(n) => n.max(1),
    };
    let share = (position as f64 / all as f64).min(1.0);
    let mut text = format!(", {:.0}% done", share * 100.0);
    if share > 0.0 {
        let left = elapsed.as_secs_f64() * (1.0 - share) / share;
        text.push_str(&format!(", about {left:.0} s left"));
    }
    text
}

fn bar(total: Option<Total>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(Total::Events(n) | Total::Bytes(n)) => (
            indicatif::ProgressBar::new(n),
            "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% ETA {eta} {msg}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {elapsed_precise} {msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers_and_the_share_has_an_estimate() {
        let counters = Counters::default();
        counters.read.store(1000, Ordering::Relaxed);
        counters.acknowledged.store(500, Ordering::Relaxed);
        assert_eq!(
            status(&counters, Duration::from_millis(1500)),
            "read 1000, acknowledged 500, 333 events/s"
        );
        counters.failed_batches.store(2, Ordering::Relaxed);
        assert!(status(&counters, Duration::from_secs(1)).ends_with(", 2 batches failed"));
        assert_eq!(
            share_done(250, Total::Bytes(1000), Duration::from_secs(10)),
            ", 25% done, about 30 s left"
        );
        assert_eq!(
            share_done(0, Total::Events(10), Duration::from_secs(1)),
            ", 0% done"
        );
        counters.finished(3, 120);
        assert_eq!(counters.position(Some(Total::Bytes(1000))), 120);
        assert_eq!(counters.position(Some(Total::Events(10))), 3);
    }
}
