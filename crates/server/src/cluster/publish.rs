//! The receiver's side: a delivery's events and quarantined lines become
//! messages, published together, and the delivery is accepted only once
//! the stream has acknowledged every one of them.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::Subject;
use auditsink_parser::{BorrowedEvent, Format};
use auditsink_storage::{event_identity, quarantine_identity, AppendSummary};
use futures_util::{StreamExt, TryStreamExt};
use hyper::body::Bytes;

use super::config::ClusterConfig;
use super::status::ClusterMetrics;
use super::wire::{self, Head};

/// Messages of one delivery awaiting their acknowledgements at once.
const PUBLISH_CONCURRENCY: usize = 1024;

/// One message to publish: its identity (the store's dedupe identity, as
/// the `Nats-Msg-Id`) and its encoding.
#[derive(Debug)]
struct Outgoing {
    id: [u8; 16],
    quarantine: bool,
    payload: Bytes,
}

/// A delivery made ready for [`Publisher::publish`]: the cluster's
/// counterpart of the store's `PreparedBatch`.
#[derive(Debug)]
pub struct Outbox {
    source: String,
    received_at_ms: i64,
    format: Format,
    year_hint: i32,
    messages: Vec<Outgoing>,
    bytes: usize,
}

impl Outbox {
    /// An empty delivery from `source`, parsed with `format` in `year_hint`.
    pub fn new(source: &str, received_at_ms: i64, format: Format, year_hint: i32) -> Outbox {
        Outbox {
            source: source.to_owned(),
            received_at_ms,
            format,
            year_hint,
            messages: Vec::new(),
            bytes: 0,
        }
    }

    fn head(&self) -> Head<'_> {
        Head {
            source: &self.source,
            received_at_ms: self.received_at_ms,
        }
    }

    /// Adds an event (its signature verdict already set).
    pub fn add_event(&mut self, event: &BorrowedEvent<'_>) {
        let payload = wire::encode_event(
            self.head(),
            self.format,
            event.signature,
            self.year_hint,
            event.raw.as_bytes(),
        );
        self.push(event_identity(event), false, payload);
    }

    /// Adds a line kept in quarantine, with why.
    pub fn add_quarantine(&mut self, raw: &[u8], reason: &str) {
        let payload = wire::encode_quarantine(self.head(), reason, raw);
        self.push(quarantine_identity(&self.source, raw), true, payload);
    }

    fn push(&mut self, id: [u8; 16], quarantine: bool, payload: Vec<u8>) {
        self.bytes += payload.capacity();
        self.messages.push(Outgoing {
            id,
            quarantine,
            payload: Bytes::from(payload),
        });
    }

    /// The heap memory it holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.source.capacity()
            + self.bytes
            + self.messages.capacity() * std::mem::size_of::<Outgoing>()
    }
}

/// Why a delivery was not acknowledged by the stream (the receiver answers
/// 500; Konnect retries, and the message ids make the retry safe).
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// Not every acknowledgement came within `ack_timeout`.
    #[error("the stream did not acknowledge the delivery within {0:?} (no quorum?)")]
    TimedOut(std::time::Duration),
    /// The stream refused a message, or the connection failed.
    #[error("publishing to the stream failed: {0}")]
    Failed(String),
}

/// Publishes deliveries to the stream.
pub struct Publisher {
    context: jetstream::Context,
    config: Arc<ClusterConfig>,
    metrics: ClusterMetrics,
}

impl Publisher {
    /// A publisher on `context` (its acknowledgement timeout set).
    pub fn new(
        context: jetstream::Context,
        config: Arc<ClusterConfig>,
        metrics: ClusterMetrics,
    ) -> Publisher {
        Publisher {
            context,
            config,
            metrics,
        }
    }

    /// Publishes every message of `outbox` at once and waits for all of
    /// their acknowledgements, within `ack_timeout`. `stored` and
    /// `quarantined` count the messages the stream took as new,
    /// `duplicates` those it already had (the acknowledgement's duplicate
    /// flag), as the store would have counted them.
    pub async fn publish(&self, outbox: Outbox) -> Result<AppendSummary, PublishFailure> {
        let started = Instant::now();
        let events = Subject::from(self.config.subject(&outbox.source, "events"));
        let quarantine = Subject::from(self.config.subject(&outbox.source, "quarantine"));
        let count = outbox.messages.len() as u64;
        let context = &self.context;
        let acks = futures_util::stream::iter(outbox.messages)
            .map(|message| {
                let subject = if message.quarantine {
                    quarantine.clone()
                } else {
                    events.clone()
                };
                async move {
                    let publish = PublishMessage::build()
                        .payload(message.payload)
                        .message_id(hex(&message.id));
                    let ack = context
                        .send_publish(subject, publish)
                        .await
                        .map_err(|e| PublishFailure::Failed(e.to_string()))?
                        .await
                        .map_err(|e| PublishFailure::Failed(e.to_string()))?;
                    Ok::<_, PublishFailure>((message.quarantine, ack.duplicate))
                }
            })
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .try_fold(AppendSummary::default(), |mut summary, ack| async move {
                match ack {
                    (_, true) => summary.duplicates += 1,
                    (false, false) => summary.stored += 1,
                    (true, false) => summary.quarantined += 1,
                }
                Ok(summary)
            });
        let result = match tokio::time::timeout(self.config.ack_timeout, acks).await {
            Ok(result) => result,
            Err(_) => Err(PublishFailure::TimedOut(self.config.ack_timeout)),
        };
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(summary) => self
                .metrics
                .record_publish(count, summary.duplicates, seconds),
            Err(_) => self.metrics.record_publish_failure(),
        }
        result
    }
}

/// Lowercase hex of an identity: the `Nats-Msg-Id`.
pub fn hex(id: &[u8; 16]) -> String {
    let mut out = String::with_capacity(32);
    for byte in id {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 15), 16).unwrap_or('0'));
    }
    out
}
