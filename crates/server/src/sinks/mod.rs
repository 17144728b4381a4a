//! Forwarding to the SIEM: durable sinks with a cursor.
//!
//! Each `[[sink]]` reads the event log through the store's public API from
//! its cursor (kept in the store, see [`auditsink_storage::SinkState`]),
//! sends batches to its destination and moves the cursor once the
//! destination acknowledged them ([`runner`]). One file per destination
//! type: [`syslog`], [`splunk_hec`], [`elasticsearch`]. The store is the
//! buffer: ingest does not wait for any sink.

pub mod admin;
pub mod config;
pub mod connect;
pub mod destination;
pub mod elasticsearch;
pub mod health;
mod http_status;
pub mod runner;
pub mod splunk_hec;
pub mod syslog;

#[cfg(test)]
mod render_tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use auditsink_storage::{SinkStart, Store};
use serde_json::Value;
use tokio::sync::watch;

pub use config::SinkConfig;
use config::{SinkType, Start};
use destination::Destination;
use health::SinkHealth;

/// A configured sink as the server holds it.
pub struct Sink {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: SinkType,
    /// Its live status.
    pub health: Arc<SinkHealth>,
}

/// The configured sinks, and their runners until [`SinkSet::spawn`].
#[derive(Default)]
pub struct SinkSet {
    /// Every configured sink.
    pub sinks: Vec<Sink>,
    runners: std::sync::Mutex<Vec<runner::Runner>>,
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("sink {name:?}: {reason}")]
pub struct SinkSetupError {
    /// The sink.
    pub name: String,
    /// Why.
    pub reason: String,
}

impl SinkSet {
    /// Sets up every configured sink: its destination, and its state in
    /// the store (created where `start` says if new). States of sinks no
    /// longer configured are removed, so they hold retention no more.
    pub fn new(configs: &[SinkConfig], store: &Store) -> Result<SinkSet, SinkSetupError> {
        let mut sinks = Vec::new();
        let mut runners = Vec::new();
        for config in configs {
            let fail = |reason: String| SinkSetupError {
                name: config.name.clone(),
                reason,
            };
            let destination: Box<dyn Destination> = match config.kind {
                SinkType::Syslog => Box::new(syslog::Syslog::new(config).map_err(fail)?),
                SinkType::SplunkHec => Box::new(splunk_hec::SplunkHec::new(config).map_err(fail)?),
                SinkType::Elasticsearch => {
                    Box::new(elasticsearch::Elasticsearch::new(config).map_err(fail)?)
                }
            };
            let start = match config.start {
                Start::Beginning => SinkStart::Beginning,
                Start::Now => SinkStart::Now,
            };
            let state = store
                .sink_register(&config.name, start, config.max_lag_days)
                .map_err(|e| fail(e.to_string()))?;
            let health = Arc::new(SinkHealth::default());
            health.set_state(&state, store.sink_parked_count(&config.name).unwrap_or(0));
            runners.push(runner::Runner {
                name: config.name.clone(),
                store: store.clone(),
                destination,
                sources: config.sources.iter().cloned().collect::<HashSet<_>>(),
                batch_max_events: config.batch_max_events,
                batch_max_bytes: config.batch_max_bytes,
                retry_max: Duration::from_secs(config.retry_max_secs),
                health: health.clone(),
                prefetched: None,
                lag_count: None,
            });
            sinks.push(Sink {
                name: config.name.clone(),
                kind: config.kind,
                health,
            });
        }
        let configured: HashSet<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        let states = store.sink_states().map_err(|e| SinkSetupError {
            name: String::new(),
            reason: e.to_string(),
        })?;
        for (name, state) in states {
            if !configured.contains(name.as_str()) {
                tracing::warn!(sink = %name, cursor = state.cursor, "a sink no longer configured: its cursor and parked events are removed");
                store.sink_forget(&name).map_err(|e| SinkSetupError {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(SinkSet {
            sinks,
            runners: std::sync::Mutex::new(runners),
        })
    }

    /// Starts every sink's loop; they stop when `stop` turns true.
    pub fn spawn(&self, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let runners = std::mem::take(&mut *self.runners.lock().unwrap_or_else(|p| p.into_inner()));
        runners
            .into_iter()
            .map(|runner| tokio::spawn(runner.run(stop.clone())))
            .collect()
    }

    /// The configured sink named `name`.
    pub fn get(&self, name: &str) -> Option<&Sink> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// The `/status` entries.
    pub fn status(&self, now_ms: i64) -> Vec<Value> {
        self.sinks
            .iter()
            .map(|s| health::status_json(&s.name, s.kind.as_str(), &s.health.snapshot(), now_ms))
            .collect()
    }

    /// The `/metrics` series (OpenMetrics text, before `# EOF`).
    pub fn metrics(&self, now_ms: i64) -> String {
        use std::fmt::Write;
        if self.sinks.is_empty() {
            return String::new();
        }
        let snapshots: Vec<_> = self
            .sinks
            .iter()
            .map(|s| (s, s.health.snapshot()))
            .collect();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&health::Snapshot) -> i64| {
                let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
                let sample = if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                for (sink, snapshot) in &snapshots {
                    let _ = writeln!(
                        out,
                        "{sample}{{sink=\"{}\",type=\"{}\"}} {}",
                        escape_label(&sink.name),
                        sink.kind.as_str(),
                        value(snapshot)
                    );
                }
            };
        family(
            "auditsink_sink_delivered_events",
            "counter",
            "Events the destination acknowledged.",
            &|s| s.state.delivered as i64,
        );
        family(
            "auditsink_sink_resent_events",
            "counter",
            "Events sent again that the destination may already have had.",
            &|s| s.state.resent as i64,
        );
        family(
            "auditsink_sink_parked_events",
            "gauge",
            "Events parked now (refused for good, or whose stored record does not read).",
            &|s| s.parked as i64,
        );
        family(
            "auditsink_sink_cursor",
            "gauge",
            "The last event id delivered.",
            &|s| s.state.cursor as i64,
        );
        family(
            "auditsink_sink_lag_events",
            "gauge",
            "Events not delivered yet.",
            &|s| s.lag.events as i64,
        );
        family(
            "auditsink_sink_lag_seconds",
            "gauge",
            "Age of the oldest event not delivered yet.",
            &|s| {
                s.lag
                    .oldest_received_ms
                    .map_or(0, |t| now_ms.saturating_sub(t).max(0) / 1000)
            },
        );
        family(
            "auditsink_sink_healthy",
            "gauge",
            "1 when the last attempt succeeded.",
            &|s| i64::from(s.failures == 0),
        );
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
