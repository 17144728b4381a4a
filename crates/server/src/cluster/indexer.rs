//! The indexer's side: a durable pull consumer on the stream, whose
//! messages are appended to the local store (group commit, as deliveries
//! are) and acknowledged only once the store has them on disk. A message
//! redelivered (after a crash, or an acknowledgement lost) is counted as a
//! duplicate by the store's dedupe and stored once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use auditsink_parser::{parse_borrowed, ParseOptions};
use auditsink_storage::{AppendSummary, PreparedBatch, QuarantineReason, Store};
use futures_util::{FutureExt, StreamExt};

use super::config::ClusterConfig;
use super::status::ClusterMetrics;
use super::wire::{self, Message};

/// Messages asked for per pull request.
const PULL_BATCH: usize = 2000;
/// Most messages appended (and then acknowledged) together.
const MAX_GROUP: usize = 4000;
/// How long the stream waits for an acknowledgement before redelivering:
/// far longer than a store append takes, short enough that a restarted
/// indexer soon gets what its predecessor had not acknowledged.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages delivered and not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 20_000;
/// The wait before consuming again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// The source name of a message this version cannot read (kept in
/// quarantine, whole).
const UNREADABLE_SOURCE: &str = "cluster";

/// Consumes the stream into `store` until `stop`; failures (NATS away, the
/// store recovering) are logged and retried.
pub async fn run(
    context: jetstream::Context,
    config: Arc<ClusterConfig>,
    store: Store,
    metrics: ClusterMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match consume(&context, &config, &store, &metrics, &mut stop).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, durable = %config.durable, "indexer: consuming failed; retrying");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// The durable consumer's settings.
fn consumer_config(config: &ClusterConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.durable.clone()),
        description: Some("auditsink indexer".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// Consumes until `stop` (`Ok`) or a failure (`Err`).
async fn consume(
    context: &jetstream::Context,
    config: &ClusterConfig,
    store: &Store,
    metrics: &ClusterMetrics,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let stream = context
        .get_stream(&config.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?;
    let consumer: pull::Stream = stream
        .get_or_create_consumer(&config.durable, consumer_config(config))
        .await
        .map_err(|e| format!("consumer {}: {e}", config.durable))?
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| format!("consumer {}: {e}", config.durable))?;
    let mut messages = consumer;
    tracing::info!(durable = %config.durable, stream = %config.stream, "indexer consuming");
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return Ok(()),
            next = messages.next() => next,
        };
        let first = first
            .ok_or("the consumer's message stream ended")?
            .map_err(|e| e.to_string())?;
        let mut group = vec![first];
        // What has already arrived joins the group, without waiting.
        while group.len() < MAX_GROUP {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => group.push(message),
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "indexer: pull status");
                    break;
                }
                _ => break,
            }
        }
        let summary = append(store, &group).await?;
        for message in &group {
            message
                .ack()
                .await
                .map_err(|e| format!("acknowledging: {e}"))?;
        }
        metrics.record_indexed(
            group.len() as u64,
            summary.stored + summary.quarantined,
            summary.duplicates,
        );
    }
}

/// Appends the messages to the store and returns once they are on disk.
async fn append(store: &Store, group: &[jetstream::Message]) -> Result<AppendSummary, String> {
    let payloads: Vec<_> = group.iter().map(|m| m.payload.clone()).collect();
    let batches = tokio::task::spawn_blocking(move || prepare(&payloads))
        .await
        .map_err(|e| format!("preparing: {e}"))?;
    let appends = batches
        .into_iter()
        .map(|batch| store.append_prepared(batch));
    let summaries = futures_util::future::try_join_all(appends)
        .await
        .map_err(|e| format!("store: {e}"))?;
    Ok(summaries
        .into_iter()
        .fold(AppendSummary::default(), |mut all, one| {
            all.stored += one.stored;
            all.duplicates += one.duplicates;
            all.quarantined += one.quarantined;
            all
        }))
}

/// The store batches of a group of messages: one per run of messages from
/// the same delivery (source and receive time), as the receiver had them.
pub fn prepare(payloads: &[impl AsRef<[u8]>]) -> Vec<PreparedBatch> {
    let mut batches = Batches::default();
    for payload in payloads {
        let payload = payload.as_ref();
        match wire::decode(payload) {
            Ok(Message::Event {
                head,
                format,
                signature,
                year_hint,
                raw,
            }) => {
                let batch = batches.for_delivery(head.source, head.received_at_ms);
                let options = ParseOptions { format, year_hint };
                match parse_borrowed(raw, &options) {
                    Ok(mut event) => {
                        event.signature = signature;
                        batch.add_event(&event);
                    }
                    // The receiver parsed it: only a different parser
                    // version gets here. Kept, with why.
                    Err(e) => batch.add_quarantine(raw, &e.to_string().into()),
                }
            }
            Ok(Message::Quarantine {
                head,
                reason,
                body,
                raw,
            }) => {
                let reason = if body {
                    QuarantineReason::Body(reason.to_owned())
                } else {
                    QuarantineReason::Line(reason.to_owned())
                };
                batches
                    .for_delivery(head.source, head.received_at_ms)
                    .add_quarantine(raw, &reason);
            }
            Err(e) => {
                tracing::error!(error = %e, "indexer: a message it cannot read; kept in quarantine whole");
                batches
                    .for_delivery(UNREADABLE_SOURCE, crate::state::now_ms())
                    .add_quarantine(
                        payload,
                        &QuarantineReason::Body(format!("unreadable cluster message: {e}")),
                    );
            }
        }
    }
    batches.done
}

/// Store batches being filled, the last one open.
#[derive(Default)]
struct Batches {
    done: Vec<PreparedBatch>,
    open: Option<(String, i64)>,
}

impl Batches {
    /// The batch of the delivery (`source`, `received_at_ms`): the open
    /// one if it is that delivery's, else a new one.
    fn for_delivery(&mut self, source: &str, received_at_ms: i64) -> &mut PreparedBatch {
        let same = self
            .open
            .as_ref()
            .is_some_and(|(s, at)| s == source && *at == received_at_ms);
        if !same || self.done.is_empty() {
            self.done.push(PreparedBatch::new(source, received_at_ms));
            self.open = Some((source.to_owned(), received_at_ms));
        }
        let last = self.done.len() - 1;
        &mut self.done[last]
    }
}
