//! How a sink is doing, for `/status`, `/metrics` and `auditsink sink list`.

use std::sync::Mutex;

use auditsink_storage::{SinkLag, SinkState};
use serde_json::{json, Value};

/// Consecutive failed attempts after which an outage shows as `failing`
/// (about half a minute of backoff).
const FAILING_AFTER: u32 = 5;

/// The live status of one sink.
#[derive(Debug, Default)]
pub struct SinkHealth {
    inner: Mutex<Snapshot>,
}

/// A copy of a sink's status at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The persisted state, as last read or written.
    pub state: SinkState,
    /// Events parked now (each id of a damaged chunk parked as one entry
    /// counts).
    pub parked: u64,
    /// How far behind it is.
    pub lag: SinkLag,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last failure was a configuration problem (credentials).
    pub configuration_problem: bool,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the destination last took a batch, ms since the epoch.
    pub last_success_ms: Option<i64>,
}

impl Snapshot {
    /// `healthy`, `retrying` (a failure, retried with backoff) or `failing`
    /// (credentials refused, or [`FAILING_AFTER`] failures in a row).
    pub fn state_name(&self) -> &'static str {
        match self.failures {
            0 => "healthy",
            n if n >= FAILING_AFTER || self.configuration_problem => "failing",
            _ => "retrying",
        }
    }
}

impl SinkHealth {
    fn with(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the persisted state and the parked count.
    pub fn set_state(&self, state: &SinkState, parked: u64) {
        self.with(|s| {
            s.state = state.clone();
            s.parked = parked;
        });
    }

    /// Records the lag.
    pub fn set_lag(&self, lag: SinkLag) {
        self.with(|s| s.lag = lag);
    }

    /// Records a batch the destination took.
    pub fn succeeded(&self, now_ms: i64) {
        self.with(|s| {
            s.failures = 0;
            s.configuration_problem = false;
            s.last_success_ms = Some(now_ms);
        });
    }

    /// Records a failed attempt.
    pub fn failed(&self, error: &str, configuration: bool) {
        self.with(|s| {
            s.failures = s.failures.saturating_add(1);
            s.configuration_problem = configuration;
            s.last_error = Some(error.to_owned());
        });
    }
}

/// The `/status` entry of a sink.
pub fn status_json(name: &str, kind: &str, s: &Snapshot, now_ms: i64) -> Value {
    json!({
        "name": name,
        "type": kind,
        "state": s.state_name(),
        "cursor": s.state.cursor,
        "lag_events": s.lag.events,
        "lag_events_capped": s.lag.capped,
        "lag_seconds": s.lag.oldest_received_ms.map(|t| (now_ms.saturating_sub(t)).max(0) / 1000).unwrap_or(0),
        "delivered": s.state.delivered,
        "resent": s.state.resent,
        "parked": s.parked,
        "last_error": s.last_error,
        "last_success_at": s.last_success_ms.map(auditsink_storage::format_ms),
    })
}
