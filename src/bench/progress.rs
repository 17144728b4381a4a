//! The progress line on a terminal (stderr) while a long run goes on: shown
//! from the first second on, rewritten in place, erased at the end.

use std::io::Write;
use std::time::{Duration, Instant};

/// Nothing is shown for a run shorter than this.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// How often the line is rewritten.
const EVERY: Duration = Duration::from_millis(500);

pub struct Line {
    enabled: bool,
    /// How long the run lasts, when it stops after a time.
    duration: Option<Duration>,
    /// Lines the run parses, when it stops after passes.
    total_lines: Option<u64>,
    shown_at: Option<Instant>,
}

impl Line {
    pub fn new(enabled: bool, duration: Option<Duration>, total_lines: Option<u64>) -> Line {
        Line {
            enabled,
            duration,
            total_lines,
            shown_at: None,
        }
    }

    pub fn show(&mut self, started: Instant, lines: u64) {
        let elapsed = started.elapsed();
        if !self.enabled
            || elapsed < QUIET_FOR
            || self.shown_at.is_some_and(|at| at.elapsed() < EVERY)
        {
            return;
        }
        self.shown_at = Some(Instant::now());
        let rate = lines as f64 / elapsed.as_secs_f64();
        let of = match (self.duration, self.total_lines) {
            (None, Some(total)) if total > 0 => {
                format!(
                    "{:.0} % of {} lines",
                    lines as f64 * 100.0 / total as f64,
                    total
                )
            }
            (Some(duration), _) => format!("of {:.0} s", duration.as_secs_f64()),
            _ => String::new(),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2Kbench parse: {:.1} s {of}, {lines} lines, {rate:.0} lines/s",
            elapsed.as_secs_f64()
        );
        let _ = stderr.flush();
    }

    pub fn clear(&mut self) {
        if self.shown_at.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}
