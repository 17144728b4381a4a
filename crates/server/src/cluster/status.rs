//! What `/status` and `/metrics` say about the cluster: the connection,
//! publishing (latency, acknowledgements, duplicates), the stream, and the
//! indexer's consumer lag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::config::ClusterConfig;

/// How often the stream's and the consumer's state are read.
const POLL: Duration = Duration::from_secs(2);

/// The stream and consumer as last read.
#[derive(Debug, Default, Clone)]
struct Observed {
    stream_messages: Option<u64>,
    stream_bytes: Option<u64>,
    consumer_pending: Option<u64>,
    consumer_ack_pending: Option<u64>,
    consumer_redelivered: Option<u64>,
    error: Option<String>,
}

/// The cluster's counters, shared by the receiver, the indexer and the
/// admin listener (cheap to clone: every field is shared).
#[derive(Clone)]
pub struct ClusterMetrics {
    connected: Gauge,
    published: Counter,
    duplicates: Counter,
    publish_failures: Counter,
    publish_seconds: Histogram,
    publish_micros_total: Arc<AtomicU64>,
    deliveries: Arc<AtomicU64>,
    indexed_messages: Counter,
    indexed_stored: Counter,
    indexed_duplicates: Counter,
    consumer_pending: Gauge,
    consumer_ack_pending: Gauge,
    stream_messages: Gauge,
    stream_bytes: Gauge,
    observed: Arc<Mutex<Observed>>,
}

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterMetrics")
    }
}

impl ClusterMetrics {
    /// New counters, registered in `registry` (prefixed `cluster_`).
    pub fn new(registry: &mut Registry) -> ClusterMetrics {
        let registry = registry.sub_registry_with_prefix("cluster");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let publish_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "publish_duration_seconds",
            "Time from the first publish of a delivery to its last acknowledgement",
            publish_seconds.clone(),
        );
        ClusterMetrics {
            connected: gauge(registry, "connected", "1 while connected to a NATS server"),
            published: counter(
                registry,
                "published_messages",
                "Messages the stream acknowledged (new and duplicate)",
            ),
            duplicates: counter(
                registry,
                "duplicate_messages",
                "Messages the stream acknowledged as duplicates (Nats-Msg-Id seen in the duplicate window)",
            ),
            publish_failures: counter(
                registry,
                "publish_failures",
                "Deliveries answered 500 because the stream did not acknowledge every message",
            ),
            publish_seconds,
            publish_micros_total: Arc::default(),
            deliveries: Arc::default(),
            indexed_messages: counter(
                registry,
                "indexed_messages",
                "Messages the indexer wrote to its store and acknowledged",
            ),
            indexed_stored: counter(
                registry,
                "indexed_stored",
                "Events and quarantined lines the indexer stored new",
            ),
            indexed_duplicates: counter(
                registry,
                "indexed_duplicates",
                "Messages the indexer's store already had (redeliveries, replays past the window)",
            ),
            consumer_pending: gauge(
                registry,
                "consumer_pending_messages",
                "Messages in the stream not yet delivered to this indexer (its lag)",
            ),
            consumer_ack_pending: gauge(
                registry,
                "consumer_ack_pending_messages",
                "Messages delivered to this indexer and not yet acknowledged",
            ),
            stream_messages: gauge(registry, "stream_messages", "Messages held by the stream"),
            stream_bytes: gauge(registry, "stream_bytes", "Bytes held by the stream"),
            observed: Arc::default(),
        }
    }

    /// Records a delivery the stream acknowledged whole.
    pub fn record_publish(&self, messages: u64, duplicates: u64, seconds: f64) {
        self.published.inc_by(messages);
        self.duplicates.inc_by(duplicates);
        self.publish_seconds.observe(seconds);
        self.publish_micros_total
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a delivery the stream did not acknowledge whole.
    pub fn record_publish_failure(&self) {
        self.publish_failures.inc();
    }

    /// Records messages the indexer stored and acknowledged.
    pub fn record_indexed(&self, messages: u64, stored: u64, duplicates: u64) {
        self.indexed_messages.inc_by(messages);
        self.indexed_stored.inc_by(stored);
        self.indexed_duplicates.inc_by(duplicates);
    }

    /// `/status`'s `cluster` object.
    pub fn status(&self, config: &ClusterConfig, role: &str, client: &async_nats::Client) -> Value {
        let observed = self.observed.lock().map(|o| o.clone()).unwrap_or_default();
        let deliveries = self.deliveries.load(Ordering::Relaxed);
        let mean_ms = (deliveries > 0).then(|| {
            self.publish_micros_total.load(Ordering::Relaxed) as f64 / deliveries as f64 / 1000.0
        });
        json!({
            "role": role,
            "connection": connection_state(client),
            "stream": config.stream,
            "replicas": config.replicas,
            "stream_messages": observed.stream_messages,
            "stream_bytes": observed.stream_bytes,
            "published_deliveries": deliveries,
            "published_messages": self.published.get(),
            "duplicate_messages": self.duplicates.get(),
            "publish_failures": self.publish_failures.get(),
            "publish_latency_ms_mean": mean_ms,
            "durable": (role != "receiver").then_some(&config.durable),
            "indexed_messages": self.indexed_messages.get(),
            "indexed_stored": self.indexed_stored.get(),
            "indexed_duplicates": self.indexed_duplicates.get(),
            "consumer_pending": observed.consumer_pending,
            "consumer_ack_pending": observed.consumer_ack_pending,
            "consumer_redelivered": observed.consumer_redelivered,
            "last_error": observed.error,
        })
    }

    /// Reads the stream's (and, for an indexer, its consumer's) state every
    /// few seconds until `stop`.
    pub async fn watch(
        self,
        context: jetstream::Context,
        client: async_nats::Client,
        config: Arc<ClusterConfig>,
        indexer: bool,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            self.connected.set(i64::from(connected));
            let observed = observe(&context, &config, indexer).await;
            let set = |gauge: &Gauge, value: Option<u64>| {
                if let Some(value) = value {
                    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
                }
            };
            set(&self.stream_messages, observed.stream_messages);
            set(&self.stream_bytes, observed.stream_bytes);
            set(&self.consumer_pending, observed.consumer_pending);
            set(&self.consumer_ack_pending, observed.consumer_ack_pending);
            if let Ok(mut slot) = self.observed.lock() {
                *slot = observed;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Reads the stream's and the consumer's state, with a short timeout.
async fn observe(context: &jetstream::Context, config: &ClusterConfig, indexer: bool) -> Observed {
    let read = async {
        let mut observed = Observed::default();
        let mut stream = context
            .get_stream(&config.stream)
            .await
            .map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        observed.stream_messages = Some(info.state.messages);
        observed.stream_bytes = Some(info.state.bytes);
        if indexer {
            match stream.consumer_info(&config.durable).await {
                Ok(info) => {
                    observed.consumer_pending = Some(info.num_pending);
                    observed.consumer_ack_pending = Some(info.num_ack_pending as u64);
                    observed.consumer_redelivered = Some(info.num_redelivered as u64);
                }
                Err(e) => observed.error = Some(format!("consumer {}: {e}", config.durable)),
            }
        }
        Ok::<_, String>(observed)
    };
    match tokio::time::timeout(POLL, read).await {
        Ok(Ok(observed)) => observed,
        Ok(Err(error)) => Observed {
            error: Some(error),
            ..Observed::default()
        },
        Err(_) => Observed {
            error: Some("the stream's state could not be read in time".to_owned()),
            ..Observed::default()
        },
    }
}

/// The client's connection, as `/status` says it.
pub fn connection_state(client: &async_nats::Client) -> &'static str {
    match client.connection_state() {
        async_nats::connection::State::Connected => "connected",
        async_nats::connection::State::Disconnected => "disconnected",
        async_nats::connection::State::Pending => "connecting",
    }
}
