//! What every destination type implements, and what a send can come to.

use std::future::Future;
use std::pin::Pin;

use auditsink_storage::{ForwardEvent, StoreError};

/// How the reason of an event parked because its stored record is damaged
/// begins.
pub const DAMAGED_RECORD: &str = "the stored record is damaged";

/// The parked reason of an event whose stored record is damaged (`why`).
pub fn damaged_reason(why: &str) -> String {
    format!("{DAMAGED_RECORD}: {why} (`auditsink check` reports it)")
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// The destination has it (acknowledged, or already had it).
    Delivered,
    /// The destination could not take it now (429, 5xx): send it again,
    /// alone, after a pause. It has not been stored there.
    Retry(String),
    /// The destination rejected it for good: parked with why.
    Park {
        /// Status and error type.
        reason: String,
        /// The destination's answer for it.
        answer: String,
    },
}

/// Why a whole batch did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// What happened (logged, and shown as `last_error`).
    pub error: String,
    /// The destination may hold some of the batch (a connection lost
    /// after the request was written, an answer that never came): the
    /// events are resends when sent again.
    pub maybe_delivered: bool,
    /// A configuration problem (bad token, refused credentials) rather
    /// than an outage: the sink shows `failing` at once.
    pub configuration: bool,
    /// The destination refused the request as a whole for good (a 4xx
    /// other than 401/403/408/429), with its answer: the batch is sent in
    /// halves to find the events it refuses, which are parked.
    pub permanent: Option<String>,
}

impl SendFailure {
    /// The destination said no to the whole batch for now; nothing of it was taken.
    pub fn refused(error: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: false,
            configuration: false,
            permanent: None,
        }
    }

    /// Refused for good, with the destination's answer.
    pub fn permanent(error: impl Into<String>, answer: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: false,
            configuration: false,
            permanent: Some(answer.into()),
        }
    }

    /// The outcome is unknown: some of the batch may have arrived.
    pub fn unknown(error: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: true,
            configuration: false,
            permanent: None,
        }
    }

    /// An event of the batch could not be rendered from the store: a
    /// record damaged on its own is refused for good (the batch is sent in
    /// halves down to it, and it is parked, answer empty); any other store
    /// error is retried.
    pub fn store(e: StoreError) -> SendFailure {
        match e {
            StoreError::DamagedEvent { reason, .. } => {
                SendFailure::permanent(damaged_reason(&reason), "")
            }
            e => SendFailure::refused(format!("store: {e}")),
        }
    }

    /// A configuration problem (authentication refused).
    pub fn configuration(error: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: false,
            configuration: true,
            permanent: None,
        }
    }
}

/// The future of one send.
pub type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<ItemOutcome>, SendFailure>> + Send + 'a>>;

/// A destination: sends a batch and says what became of each event (one
/// outcome per event, in order), or why the batch as a whole failed.
pub trait Destination: Send {
    /// Sends `events` (never empty).
    fn send<'a>(&'a mut self, events: &'a [ForwardEvent]) -> SendFuture<'a>;

    /// About how many bytes `event` takes on the wire, for `batch_max_bytes`.
    fn size_hint(&self, event: &ForwardEvent) -> usize {
        event.raw().len() + 256
    }
}

/// This machine's host name, for the syslog header and HEC `host`.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "auditsink".to_owned())
}
