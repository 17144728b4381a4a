//! `type = "splunk_hec"`: Splunk's HTTP Event Collector,
//! `POST /services/collector/event` with `Authorization: Splunk <token>`,
//! one JSON object per event:
//!
//! ```text
//! {"time":1733540400.123,"host":"h","source":"konnect","sourcetype":"konnect:audit:cef","event":{...}}
//! ```
//!
//! With `indexer_ack = true` every request carries the sink's
//! `X-Splunk-Request-Channel`, and a batch counts as delivered only once
//! `/services/collector/ack` says its `ackId` is indexed. A 400 naming an
//! `invalid-event-number` parks that event; the ones before it were taken,
//! the ones after it are sent again. 401/403 (a token problem) are retried
//! with backoff and shown as `failing`, never parked.

use std::time::{Duration, Instant};

use auditsink_parser::LineFormat;
use std::io::Write;

use auditsink_parser::write_json_string;
use auditsink_storage::{ForwardEvent, StoreError};
use hyper::body::Bytes;
use serde_json::Value;

use super::config::SinkConfig;
use super::connect::{tls_config, HttpClient};
use super::destination::{local_hostname, Destination, ItemOutcome, SendFailure, SendFuture};
use super::http_status::{classify, excerpt, Verdict};

/// How often the ack endpoint is asked, at first (doubling up to 1 s).
const ACK_POLL_START: Duration = Duration::from_millis(50);

/// A Splunk HEC endpoint.
pub struct SplunkHec {
    client: HttpClient,
    authorization: String,
    channel: Option<String>,
    index: Option<String>,
    sourcetype: Option<String>,
    host: String,
    ack_timeout: Duration,
}

impl SplunkHec {
    /// From the sink's configuration (reads `token_env`).
    pub fn new(config: &SinkConfig) -> Result<SplunkHec, String> {
        let token = match (&config.token, &config.token_env) {
            (Some(token), _) => token.clone(),
            (None, Some(variable)) => std::env::var(variable)
                .map_err(|_| format!("environment variable {variable} is not set"))?,
            (None, None) => return Err("no token".into()),
        };
        let tls = tls_config(config.ca_file.as_deref(), config.insecure)?;
        Ok(SplunkHec {
            client: HttpClient::new(
                config.url.as_deref().unwrap_or_default(),
                tls,
                Duration::from_secs(config.timeout_secs),
            )?,
            authorization: format!("Splunk {token}"),
            channel: config.indexer_ack.then(new_channel),
            index: config.index.clone(),
            sourcetype: config.sourcetype.clone(),
            host: config.host.clone().unwrap_or_else(local_hostname),
            ack_timeout: Duration::from_secs(config.timeout_secs.max(10) * 2),
        })
    }

    /// Appends one event's HEC object and a newline to `out`: `time`,
    /// `host`, `source`, `sourcetype`, `index` (when set), `event`.
    pub fn object(&self, event: &ForwardEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let ms = event.event_time_ms();
        let sourcetype = self.sourcetype.as_deref().unwrap_or(match event.format() {
            LineFormat::Cef => "konnect:audit:cef",
            LineFormat::Json => "konnect:audit:json",
        });
        // Seconds with the ms as three decimals: a JSON number as written.
        let _ = write!(
            out,
            "{{\"time\":{}.{:03},\"host\":",
            ms.div_euclid(1000),
            ms.rem_euclid(1000)
        );
        write_json_string(&self.host, out);
        out.extend_from_slice(b",\"source\":");
        write_json_string(event.source(), out);
        out.extend_from_slice(b",\"sourcetype\":");
        write_json_string(sourcetype, out);
        if let Some(index) = &self.index {
            out.extend_from_slice(b",\"index\":");
            write_json_string(index, out);
        }
        out.extend_from_slice(b",\"event\":");
        event.write_json(out)?;
        out.extend_from_slice(b"}\n");
        Ok(())
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("authorization", self.authorization.clone()),
            ("content-type", "application/json".to_owned()),
        ];
        if let Some(channel) = &self.channel {
            headers.push(("x-splunk-request-channel", channel.clone()));
        }
        headers
    }

    /// Waits until the indexers acknowledged `ack_id`.
    async fn wait_for_ack(&mut self, ack_id: u64) -> Result<(), SendFailure> {
        let started = Instant::now();
        let mut pause = ACK_POLL_START;
        loop {
            let body = Bytes::from(serde_json::json!({ "acks": [ack_id] }).to_string());
            let headers = self.headers();
            let answer = self
                .client
                .post("/services/collector/ack", &headers, body)
                .await;
            match answer {
                Ok(answer) if classify(answer.status) == Verdict::Success => {
                    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                    if value["acks"][ack_id.to_string()].as_bool() == Some(true) {
                        return Ok(());
                    }
                }
                Ok(answer) if classify(answer.status) == Verdict::Unauthorized => {
                    return Err(SendFailure {
                        maybe_delivered: true,
                        ..Verdict::Unauthorized.failure("ack", &answer)
                    });
                }
                Ok(answer) => {
                    tracing::debug!(status = answer.status, "HEC ack poll failed; polling on");
                }
                Err(e) => tracing::debug!(error = %e.error, "HEC ack poll failed; polling on"),
            }
            if started.elapsed() >= self.ack_timeout {
                return Err(SendFailure::unknown(format!(
                    "ackId {ack_id} not acknowledged within {:?}",
                    self.ack_timeout
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// A random channel id (UUID v4 form), one per sink per run.
fn new_channel() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The outcomes of a 400 that names the invalid event `index`.
fn invalid_event(events: usize, index: usize, answer: &[u8]) -> Vec<ItemOutcome> {
    (0..events)
        .map(|i| match i.cmp(&index) {
            std::cmp::Ordering::Less => ItemOutcome::Delivered,
            std::cmp::Ordering::Equal => ItemOutcome::Park {
                reason: format!("HEC 400: {}", excerpt(answer)),
                answer: String::from_utf8_lossy(answer).into_owned(),
            },
            std::cmp::Ordering::Greater => {
                ItemOutcome::Retry("after an invalid event in the same request".into())
            }
        })
        .collect()
}

impl Destination for SplunkHec {
    fn send<'a>(&'a mut self, events: &'a [ForwardEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut body = Vec::with_capacity(events.iter().map(|e| e.raw().len() * 2 + 400).sum());
            for event in events {
                self.object(event, &mut body).map_err(SendFailure::store)?;
            }
            let headers = self.headers();
            let answer = self
                .client
                .post("/services/collector/event", &headers, Bytes::from(body))
                .await?;
            let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            match classify(answer.status) {
                Verdict::Success => {}
                Verdict::Permanent if answer.status == 400 => {
                    if let Some(index) = value["invalid-event-number"]
                        .as_u64()
                        .map(|n| n as usize)
                        .filter(|&n| n < events.len())
                    {
                        return Ok(invalid_event(events.len(), index, &answer.body));
                    }
                    return Err(Verdict::Permanent.failure("HEC event", &answer));
                }
                verdict => return Err(verdict.failure("HEC event", &answer)),
            }
            if self.channel.is_some() {
                let ack_id = value["ackId"].as_u64().ok_or_else(|| {
                    SendFailure::unknown(format!(
                        "HEC answered without an ackId (is indexer acknowledgement on for the token?): {}",
                        excerpt(&answer.body)
                    ))
                })?;
                self.wait_for_ack(ack_id).await?;
            }
            Ok(vec![ItemOutcome::Delivered; events.len()])
        })
    }

    fn size_hint(&self, event: &ForwardEvent) -> usize {
        event.raw().len() * 2 + 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_is_a_uuid() {
        let channel = new_channel();
        assert_eq!(channel.len(), 36);
        assert_eq!(channel.as_bytes()[14], b'4');
        assert_ne!(channel, new_channel());
    }

    #[test]
    fn an_invalid_event_is_parked_and_the_rest_sent_again() {
        let outcomes = invalid_event(
            4,
            1,
            br#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#,
        );
        assert_eq!(outcomes[0], ItemOutcome::Delivered);
        assert!(matches!(outcomes[1], ItemOutcome::Park { .. }));
        assert!(matches!(outcomes[2], ItemOutcome::Retry(_)));
    }
}
