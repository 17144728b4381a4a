//! What `send` counts, and the summary it prints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// Counters and request latencies of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events read from the input.
    pub events_read: u64,
    /// Events of batches that were sent at least once.
    pub events_sent: u64,
    /// Events of batches the receiver acknowledged (2xx).
    pub acknowledged: u64,
    /// Batches acknowledged.
    pub batches_acknowledged: u64,
    /// Batches given up on: a final status, or retries exhausted.
    pub failed_batches: u64,
    /// Events in those batches.
    pub failed_events: u64,
    /// HTTP requests made (attempts, retries included).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Answers per status code, and `connection_error` for attempts without one.
    pub statuses: BTreeMap<String, u64>,
    /// Latency of every answered request, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Sums of `stored`, `duplicates`, `quarantined` when the receiver's
    /// answers carry them (auditsink's do).
    pub receiver: Option<ReceiverCounts>,
}

/// What an auditsink-like receiver said it did with the acknowledged events.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReceiverCounts {
    pub stored: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

impl Stats {
    /// Adds the counts of an acknowledgement body such as
    /// `{"received":500,"stored":500,"duplicates":0,"quarantined":0}`.
    pub fn add_receiver_counts(&mut self, body: &[u8]) {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let get = |key: &str| map.get(key).and_then(Value::as_u64);
        if let (Some(stored), Some(duplicates), Some(quarantined)) =
            (get("stored"), get("duplicates"), get("quarantined"))
        {
            let counts = self.receiver.get_or_insert_with(ReceiverCounts::default);
            counts.stored += stored;
            counts.duplicates += duplicates;
            counts.quarantined += quarantined;
        }
    }

    pub fn count_status(&mut self, key: &str) {
        *self.statuses.entry(key.to_owned()).or_default() += 1;
    }
}

/// The value at quantile `q` (0..=1) of sorted `values`, nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The final summary of a run.
pub struct Summary {
    pub stats: Stats,
    pub elapsed: Duration,
    /// Events read but never sent (the run stopped first).
    pub unsent: u64,
    /// Why the run stopped before the end of the input, if it did.
    pub stopped: Option<String>,
    /// Ctrl-C ended the run.
    pub interrupted: bool,
    /// The failure that no retry could fix, which stopped the run.
    pub permanent: Option<super::client::Permanent>,
}

impl Summary {
    /// Events of batches sent but neither acknowledged nor given up on:
    /// in flight when the run was interrupted (the receiver may have them).
    pub fn in_flight(&self) -> u64 {
        self.stats
            .events_sent
            .saturating_sub(self.stats.acknowledged + self.stats.failed_events)
    }

    pub fn events_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.acknowledged as f64 / secs
        } else {
            0.0
        }
    }

    fn latencies(&self) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
        let mut sorted = self.stats.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        (
            percentile(&sorted, 0.50),
            percentile(&sorted, 0.90),
            percentile(&sorted, 0.99),
            sorted.last().copied(),
        )
    }

    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let (p50, p90, p99, max) = self.latencies();
        let mut value = json!({
            "events_read": s.events_read,
            "events_sent": s.events_sent,
            "acknowledged": s.acknowledged,
            "failed_batches": s.failed_batches,
            "failed_events": s.failed_events,
            "unsent_events": self.unsent,
            "in_flight_events": self.in_flight(),
            "stopped": self.stopped,
            "batches_acknowledged": s.batches_acknowledged,
            "requests": s.requests,
            "retries": s.retries,
            "status": s.statuses,
            "elapsed_secs": round3(self.elapsed.as_secs_f64()),
            "events_per_sec": self.events_per_sec().round(),
            "latency_ms": {
                "p50": p50.map(round3),
                "p90": p90.map(round3),
                "p99": p99.map(round3),
                "max": max.map(round3),
            },
        });
        if let (Some(counts), Value::Object(map)) = (s.receiver, &mut value) {
            map.insert(
                "receiver".into(),
                json!({
                    "stored": counts.stored,
                    "duplicates": counts.duplicates,
                    "quarantined": counts.quarantined,
                }),
            );
        }
        value
    }

    pub fn to_text(&self) -> String {
        let s = &self.stats;
        let (p50, p90, p99, max) = self.latencies();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let statuses = if s.statuses.is_empty() {
            "-".to_owned()
        } else {
            s.statuses
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut text = format!(
            "events read       {}\n\
             events sent       {}\n\
             acknowledged      {} ({} batches)\n\
             failed batches    {} ({} events)\n",
            s.events_read,
            s.events_sent,
            s.acknowledged,
            s.batches_acknowledged,
            s.failed_batches,
            s.failed_events,
        );
        if self.unsent > 0 {
            let why = self.stopped.as_deref().unwrap_or("the run stopped");
            text.push_str(&format!("not sent          {} ({why})\n", self.unsent));
        }
        if self.in_flight() > 0 {
            text.push_str(&format!(
                "in flight         {} (interrupted: not known whether the receiver stored them)\n",
                self.in_flight()
            ));
        }
        if self.interrupted {
            text.push_str("interrupted       Ctrl-C: the counts are the run so far\n");
        }
        if let Some(c) = s.receiver {
            text.push_str(&format!(
                "receiver says     stored={} duplicates={} quarantined={}\n",
                c.stored, c.duplicates, c.quarantined
            ));
        }
        text.push_str(&format!(
            "requests          {} ({} retries)\n\
             status codes      {statuses}\n\
             elapsed           {:.3} s\n\
             events/s          {:.0} (acknowledged / elapsed)\n\
             latency ms        p50={} p90={} p99={} max={}\n",
            s.requests,
            s.retries,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            ms(p50),
            ms(p90),
            ms(p99),
            ms(max),
        ));
        text
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.9), Some(90.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn receiver_counts_are_summed_when_present() {
        let mut stats = Stats::default();
        stats.add_receiver_counts(br#"{"received":3,"stored":2,"duplicates":1,"quarantined":0}"#);
        stats.add_receiver_counts(br#"{"received":1,"stored":1,"duplicates":0,"quarantined":0}"#);
        stats.add_receiver_counts(b"ok");
        let c = stats.receiver.unwrap();
        assert_eq!((c.stored, c.duplicates, c.quarantined), (3, 1, 0));
    }
}
