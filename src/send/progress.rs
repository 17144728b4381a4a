//! Progress on stderr while `send` runs: an indicatif bar on a terminal,
//! a plain line every 5 s otherwise (a log file, a CI job), or nothing.

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

/// The live counts progress shows, updated by the delivery.
#[derive(Default)]
pub struct Counters {
    /// Lines read from the input.
    pub read: AtomicU64,
    /// Events acknowledged.
    pub acknowledged: AtomicU64,
    /// Batches given up on.
    pub failed_batches: AtomicU64,
}

/// Shows progress until `done` is notified. `total` is the number of events
/// when known beforehand (a bar with a length), else a spinner.
pub async fn show(
    mode: Progress,
    counters: Arc<Counters>,
    total: Option<u64>,
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
        let acknowledged = counters.acknowledged.load(Ordering::Relaxed);
        let failed = counters.failed_batches.load(Ordering::Relaxed);
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
                    "progress: {secs:.0} s, read {}, acknowledged {acknowledged}, failed batches {failed}, {:.0} events/s",
                    counters.read.load(Ordering::Relaxed),
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

fn bar(total: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} acknowledged, {per_sec} {msg}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {elapsed_precise} {pos} acknowledged, {per_sec} {msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
