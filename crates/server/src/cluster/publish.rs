//! The receiver's side: a delivery's events and quarantined lines become
//! messages, published together, and the delivery is accepted only once
//! the stream has acknowledged every one of them.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::Subject;
use auditsink_parser::{BorrowedEvent, Format};
use auditsink_storage::{event_identity, quarantine_identity, AppendSummary, QuarantineReason};
use futures_util::{StreamExt, TryStreamExt};
use hyper::body::Bytes;

use super::config::ClusterConfig;
use super::status::ClusterMetrics;
use super::wire::{self, Head};

/// Messages of one delivery awaiting their acknowledgements at once.
const PUBLISH_CONCURRENCY: usize = 1024;
/// The first and the longest wait before publishing a message again.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(500);

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
    pub fn add_quarantine(&mut self, raw: &[u8], reason: &QuarantineReason) {
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
    /// Not every acknowledgement came within `ack_timeout` (publishes
    /// that failed meanwhile were retried until then).
    #[error(
        "the stream did not acknowledge the delivery within {after:?} (no quorum, or NATS unreachable?); last error: {}",
        last_error.as_deref().unwrap_or("none (no answer)")
    )]
    TimedOut {
        /// `ack_timeout`.
        after: std::time::Duration,
        /// The last publish error seen, if any.
        last_error: Option<String>,
    },
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
        let last_error = std::sync::Mutex::new(None);
        let last_error = &last_error;
        let acks = futures_util::stream::iter(outbox.messages)
            .map(|message| {
                let subject = if message.quarantine {
                    quarantine.clone()
                } else {
                    events.clone()
                };
                async move { Ok(publish_one(context, subject, message, last_error).await) }
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
            Err(_) => Err(PublishFailure::TimedOut {
                after: self.config.ack_timeout,
                last_error: last_error.lock().ok().and_then(|mut e| e.take()),
            }),
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

/// Publishes one message until the stream acknowledges it. A failure
/// that a moment may cure (no stream leader during an election after a
/// node was lost: "no responders") is retried with the same message id,
/// which makes the retry safe; [`Publisher::publish`]'s `ack_timeout`
/// bounds it all.
async fn publish_one(
    context: &jetstream::Context,
    subject: Subject,
    message: Outgoing,
    last_error: &std::sync::Mutex<Option<String>>,
) -> (bool, bool) {
    let id = hex(&message.id);
    let mut backoff = RETRY_FIRST;
    loop {
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(&id);
        let result = match context.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(ack) => return (message.quarantine, ack.duplicate),
            Err(error) => {
                tracing::debug!(%error, "publish failed; retrying within ack_timeout");
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(error);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
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
