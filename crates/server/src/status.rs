//! What each source has seen, for `/status`: the receiver's side of the
//! facts Konnect shows the operator (`last_attempt_at`,
//! `last_response_code`, `webhook_status`), plus counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Counters and last-attempt facts of one source.
#[derive(Debug, Default)]
pub struct SourceStatus {
    inner: Mutex<Snapshot>,
    per_minute: Mutex<MinuteCounts>,
}

/// Minutes of history kept for the events-per-minute chart.
pub const CHART_MINUTES: usize = 24 * 60;

/// Events stored per minute over the last [`CHART_MINUTES`], in a ring
/// indexed by minute since the epoch.
#[derive(Debug)]
struct MinuteCounts {
    counts: Vec<u64>,
    /// The minute (since the epoch) of the last count.
    latest: i64,
}

impl Default for MinuteCounts {
    fn default() -> Self {
        MinuteCounts {
            counts: vec![0; CHART_MINUTES],
            latest: 0,
        }
    }
}

impl MinuteCounts {
    fn slot(minute: i64) -> usize {
        minute.rem_euclid(CHART_MINUTES as i64) as usize
    }

    /// Clears the slots of the minutes between the latest count and `minute`.
    fn advance(&mut self, minute: i64) {
        if minute <= self.latest {
            return;
        }
        let gap = (minute - self.latest).min(CHART_MINUTES as i64);
        for m in minute - gap + 1..=minute {
            self.counts[Self::slot(m)] = 0;
        }
        self.latest = minute;
    }

    fn add(&mut self, minute: i64, n: u64) {
        self.advance(minute);
        if self.latest - minute < CHART_MINUTES as i64 {
            self.counts[Self::slot(minute)] += n;
        }
    }
}

/// A copy of a source's status at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Requests routed to this source (any outcome).
    pub requests: u64,
    /// Requests answered 200.
    pub accepted_requests: u64,
    /// Events stored new.
    pub events_stored: u64,
    /// Events received again (replays, retries).
    pub duplicates: u64,
    /// Lines kept in quarantine.
    pub quarantined: u64,
    /// Requests rejected, by reason (`unauthorized`, `too_large`, ...).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Time of the last request, ms since the epoch.
    #[serde(skip)]
    pub last_attempt_ms: Option<i64>,
    /// Status code of the last request.
    pub last_response_code: Option<u16>,
}

/// The outcome of one request, as recorded.
pub enum Outcome {
    /// Answered 200 with these counts.
    Accepted {
        /// New events.
        stored: u64,
        /// Already stored.
        duplicates: u64,
        /// Quarantined lines.
        quarantined: u64,
    },
    /// Rejected with this status for this reason.
    Rejected {
        /// The status code sent.
        status: u16,
        /// Short reason key.
        reason: &'static str,
    },
}

impl SourceStatus {
    /// Records one request answered at `now_ms`.
    pub fn record(&self, now_ms: i64, outcome: Outcome) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        s.last_attempt_ms = Some(now_ms);
        match outcome {
            Outcome::Accepted {
                stored,
                duplicates,
                quarantined,
            } => {
                s.accepted_requests += 1;
                s.events_stored += stored;
                s.duplicates += duplicates;
                s.quarantined += quarantined;
                s.last_response_code = Some(200);
                drop(s);
                if stored > 0 {
                    self.per_minute
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(now_ms.div_euclid(60_000), stored);
                }
            }
            Outcome::Rejected { status, reason } => {
                *s.rejected.entry(reason).or_default() += 1;
                s.last_response_code = Some(status);
            }
        }
    }

    /// Events stored in each of the last [`CHART_MINUTES`] minutes up to
    /// the one holding `now_ms`, oldest first.
    pub fn per_minute(&self, now_ms: i64) -> Vec<u64> {
        let mut ring = self.per_minute.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms.div_euclid(60_000);
        ring.advance(now);
        (now - CHART_MINUTES as i64 + 1..=now)
            .map(|m| ring.counts[MinuteCounts::slot(m)])
            .collect()
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Snapshot {
    /// `active` when the last delivery succeeded, `failing` when it did not,
    /// `inactive` when nothing came within `inactive_after` (or ever).
    pub fn webhook_status(&self, now_ms: i64, inactive_after: Duration) -> &'static str {
        match (self.last_attempt_ms, self.last_response_code) {
            (Some(at), _) if now_ms.saturating_sub(at) > inactive_after.as_millis() as i64 => {
                "inactive"
            }
            (Some(_), Some(code)) if (200..300).contains(&code) => "active",
            (Some(_), _) => "failing",
            (None, _) => "inactive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_status_follows_last_attempt() {
        let status = SourceStatus::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(status.snapshot().webhook_status(0, hour), "inactive");
        status.record(
            1_000,
            Outcome::Rejected {
                status: 401,
                reason: "unauthorized",
            },
        );
        assert_eq!(status.snapshot().webhook_status(2_000, hour), "failing");
        status.record(
            3_000,
            Outcome::Accepted {
                stored: 2,
                duplicates: 1,
                quarantined: 0,
            },
        );
        let snap = status.snapshot();
        assert_eq!(snap.webhook_status(4_000, hour), "active");
        assert_eq!(snap.webhook_status(3_000 + 3_600_001, hour), "inactive");
        assert_eq!(
            (snap.requests, snap.events_stored, snap.duplicates),
            (2, 2, 1)
        );
        assert_eq!(snap.rejected.get("unauthorized"), Some(&1));
        assert_eq!(snap.last_response_code, Some(200));
    }

    #[test]
    fn per_minute_counts_age_out_after_a_day() {
        let status = SourceStatus::default();
        let accepted = |stored| Outcome::Accepted {
            stored,
            duplicates: 0,
            quarantined: 0,
        };
        let t0 = 1_764_100_000_000 / 60_000 * 60_000;
        status.record(t0, accepted(3));
        status.record(t0 + 59_999, accepted(2));
        status.record(t0 + 120_000, accepted(7));
        let chart = status.per_minute(t0 + 120_000);
        assert_eq!(chart.len(), CHART_MINUTES);
        assert_eq!(&chart[CHART_MINUTES - 3..], &[5, 0, 7]);
        assert_eq!(chart.iter().sum::<u64>(), 12);
        // A day later the first minute has left the chart; the last is still in.
        let day = CHART_MINUTES as i64 * 60_000;
        let later = status.per_minute(t0 + day);
        assert_eq!(later.iter().sum::<u64>(), 7);
        assert_eq!(later[1], 7);
        assert_eq!(status.per_minute(t0 + 120_000 + day).iter().sum::<u64>(), 0);
    }
}
