//! One batch, delivered as Konnect delivers it, through `send`'s client and
//! retry rules: newline-separated lines, gzip labelled `application/gzip`,
//! the channel's `Content-Type`, the configured `Authorization`, the
//! certificate checked unless `skip_ssl_verification`; a connection error,
//! 500 and 429 are retried (at most 4 times), anything else is final.

use hyper::body::Bytes;

use super::ledger::{Fate, Outcome};
use super::state::{now_ms, Channel, Emulator, Generated, Target};
use crate::send::batch::BodyEncoding;
use crate::send::client::{Attempt, Connection, Endpoint, Trust};
use crate::send::retry::{retried_status, retry_delay, MAX_RETRIES};

const ENCODING: BodyEncoding = BodyEncoding::Gzip("application/gzip");

/// Delivers `events` to `target`; records every attempt in the channel's
/// status and the outcome in the ledger. True when acknowledged.
pub async fn deliver(
    emulator: &Emulator,
    channel: &Channel,
    target: &Target,
    events: &[Generated],
    replay: bool,
) -> bool {
    let (status, attempts) = attempts(emulator, channel, target, events).await;
    let acknowledged = (200..300).contains(&status);
    let fate = match (acknowledged, replay) {
        (true, false) => Fate::Acknowledged,
        (true, true) => Fate::Replayed,
        (false, _) => Fate::Dropped,
    };
    emulator.ledger.record(
        events,
        &Outcome {
            channel: &channel.name(),
            fate,
            replay,
            status,
            attempts,
            at_ms: now_ms(),
        },
    );
    acknowledged
}

/// The attempts: (last status, 0 for no answer; attempts made).
async fn attempts(
    emulator: &Emulator,
    channel: &Channel,
    target: &Target,
    events: &[Generated],
) -> (u16, u32) {
    let settings = &emulator.settings;
    let trust = match (&settings.cacert, target.skip_ssl_verification) {
        (_, true) => Trust::Insecure,
        (Some(ca), false) => Trust::CaFile(ca.clone()),
        (None, false) => Trust::WebRoots,
    };
    let endpoint = match Endpoint::new(
        &target.endpoint,
        &trust,
        target.authorization.as_deref(),
        channel.content_type(),
        ENCODING.header(),
    ) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!(
                "auditsink emulate konnect: {}: cannot deliver to {}: {e:#}",
                channel.name(),
                target.endpoint
            );
            channel.attempted(now_ms(), 0);
            return (0, 0);
        }
    };
    let mut plain = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            plain.push(b'\n');
        }
        plain.extend_from_slice(event.line.as_bytes());
    }
    let body: Bytes = ENCODING.encode(&plain);
    let mut connection = Connection::new();
    let mut retry = 0;
    loop {
        let attempt = connection
            .post(&endpoint, body.clone(), settings.timeout)
            .await;
        let (status, retry_after) = match attempt {
            Attempt::Answered {
                status,
                retry_after_secs,
                ..
            } => (status, retry_after_secs),
            // Konnect has no notion of a failure no retry can fix: an
            // untrusted certificate is a connection error to it, retried.
            Attempt::ConnectionError(_) | Attempt::Permanent(_) => (0, None),
        };
        channel.attempted(now_ms(), status);
        let retried = status == 0 || retried_status(status);
        if !retried || retry == MAX_RETRIES {
            return (status, retry + 1);
        }
        tokio::time::sleep(retry_delay(retry, retry_after, settings.retry_unit)).await;
        retry += 1;
    }
}
