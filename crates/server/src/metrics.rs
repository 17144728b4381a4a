//! Prometheus metrics (`GET /metrics` on the admin listener), in the
//! OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    source: String,
    form: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

type HistogramFamily = Family<SourceLabels, Histogram, fn() -> Histogram>;

/// Everything `/metrics` reports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    events: Family<EventLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    duration: HistogramFamily,
    batch_lines: HistogramFamily,
    /// Open connections on the webhook listener.
    pub connections_open: Gauge,
    /// Requests being handled.
    pub inflight_requests: Gauge,
    /// Body bytes reserved by requests being handled.
    pub inflight_bytes: Gauge,
    /// Memory reserved by requests being handled (`max_inflight_memory`).
    pub inflight_memory: Gauge,
    /// Requests in their CPU-bound stage (decode, parse, verify, prepare).
    pub preparing: Gauge,
    /// Preparations stopped because their client had gone.
    pub abandoned: Counter,
    store_size: Gauge,
    commit_batches: Gauge,
    commit_flushes: Gauge,
    store_recovering: Gauge,
    store_recoveries: Gauge,
    store_reopen_failures: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn lines_histogram() -> Histogram {
    // 1 .. ~65k lines
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("auditsink");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Webhook requests by source and status code",
            requests.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Lines by source and outcome (stored, duplicate, quarantined)",
            events.clone(),
        );
        let bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "received_bytes",
            "Request body bytes by source, as sent (compressed) and decompressed",
            bytes.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Webhook request duration",
            duration.clone(),
        );
        let batch_lines: HistogramFamily = Family::new_with_constructor(lines_histogram);
        registry.register(
            "batch_lines",
            "Lines per accepted request",
            batch_lines.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        Metrics {
            connections_open: gauge(
                &mut registry,
                "connections_open",
                "Open webhook connections",
            ),
            inflight_requests: gauge(
                &mut registry,
                "inflight_requests",
                "Webhook requests being handled",
            ),
            inflight_bytes: gauge(
                &mut registry,
                "inflight_bytes",
                "Body bytes reserved by requests being handled",
            ),
            inflight_memory: gauge(
                &mut registry,
                "inflight_memory_bytes",
                "Memory reserved by requests being handled (max_inflight_memory)",
            ),
            preparing: gauge(
                &mut registry,
                "preparing_requests",
                "Requests being decoded, parsed, verified and prepared",
            ),
            abandoned: {
                let counter = Counter::default();
                registry.register(
                    "abandoned_preparations",
                    "Preparations stopped because their client had gone",
                    counter.clone(),
                );
                counter
            },
            store_size: gauge(
                &mut registry,
                "store_size_bytes",
                "Bytes the store occupies on disk",
            ),
            commit_batches: gauge(
                &mut registry,
                "store_batches",
                "Batches appended since start",
            ),
            commit_flushes: gauge(
                &mut registry,
                "store_flushes",
                "Flushes to disk since start (group commit)",
            ),
            store_recovering: gauge(
                &mut registry,
                "store_recovering",
                "1 while the store is closed after a failed write, until it reopens by itself",
            ),
            store_recoveries: gauge(
                &mut registry,
                "store_recoveries",
                "Times the store was reopened after a failed write since start",
            ),
            store_reopen_failures: gauge(
                &mut registry,
                "store_reopen_failed_attempts",
                "Attempts to reopen the store that failed in the current outage",
            ),
            registry,
            requests,
            events,
            bytes,
            duration,
            batch_lines,
        }
    }
}

/// What one answered request contributes.
pub struct RequestRecord<'a> {
    /// Source name (`-` when no source matched).
    pub source: &'a str,
    /// Status code sent.
    pub status: u16,
    /// Handling time.
    pub seconds: f64,
    /// Body bytes as sent.
    pub compressed_bytes: u64,
    /// Body bytes after decompression.
    pub decompressed_bytes: u64,
    /// Lines received, stored, duplicated, quarantined (accepted requests).
    pub lines: Option<[u64; 4]>,
}

impl Metrics {
    /// The registry, for metrics registered after start (the cluster's).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Records one answered request.
    pub fn record(&self, r: RequestRecord<'_>) {
        let source = r.source.to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                source: source.clone(),
                status: r.status,
            })
            .inc();
        self.duration
            .get_or_create(&SourceLabels {
                source: source.clone(),
            })
            .observe(r.seconds);
        for (form, value) in [
            ("compressed", r.compressed_bytes),
            ("decompressed", r.decompressed_bytes),
        ] {
            if value > 0 {
                self.bytes
                    .get_or_create(&BytesLabels {
                        source: source.clone(),
                        form,
                    })
                    .inc_by(value);
            }
        }
        if let Some([received, stored, duplicates, quarantined]) = r.lines {
            self.batch_lines
                .get_or_create(&SourceLabels {
                    source: source.clone(),
                })
                .observe(received as f64);
            for (outcome, value) in [
                ("stored", stored),
                ("duplicate", duplicates),
                ("quarantined", quarantined),
            ] {
                self.events
                    .get_or_create(&EventLabels {
                        source: source.clone(),
                        outcome,
                    })
                    .inc_by(value);
            }
        }
    }

    /// The text exposition, with store figures read now.
    pub fn render(&self, store: &auditsink_storage::Store) -> String {
        if let Ok(size) = store.size_on_disk() {
            self.store_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let (batches, flushes) = store.commit_counts();
        self.commit_batches
            .set(i64::try_from(batches).unwrap_or(i64::MAX));
        self.commit_flushes
            .set(i64::try_from(flushes).unwrap_or(i64::MAX));
        let health = store.health();
        self.store_recovering.set(i64::from(health.recovering));
        self.store_recoveries
            .set(i64::try_from(health.recoveries).unwrap_or(i64::MAX));
        self.store_reopen_failures
            .set(i64::try_from(health.failed_attempts).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
