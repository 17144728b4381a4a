//! `type = "elasticsearch"` (also OpenSearch): `POST /_bulk` with one
//! `create` action per event whose `_id` is the event's dedupe identity, so
//! a resend (after a crash, a retry, a Konnect replay) can never make a
//! second document: a `409` for an item means the index has it already.
//! Per item: 200/201/409 delivered; 429 and 5xx sent again alone; anything
//! else (a mapping error) parked.

use std::time::Duration;

use auditsink_parser::write_json_string;
use auditsink_storage::{ForwardEvent, StoreError};
use base64::Engine;
use hyper::body::Bytes;
use serde_json::Value;

use super::config::SinkConfig;
use super::connect::{tls_config, HttpClient};
use super::destination::{Destination, ItemOutcome, SendFailure, SendFuture};
use super::http_status::{classify, Verdict};

/// An Elasticsearch or OpenSearch cluster.
pub struct Elasticsearch {
    client: HttpClient,
    index: String,
    authorization: Option<String>,
}

impl Elasticsearch {
    /// From the sink's configuration (reads the credentials' environment
    /// variables).
    pub fn new(config: &SinkConfig) -> Result<Elasticsearch, String> {
        let tls = tls_config(config.ca_file.as_deref(), config.insecure)?;
        let url = config.url.as_deref().unwrap_or_default();
        let authorization = match (&config.api_key_env, &config.username, &config.password_env) {
            (Some(variable), _, _) => Some(format!("ApiKey {}", env(variable)?)),
            (None, Some(user), Some(variable)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", env(variable)?))
            )),
            _ => None,
        };
        Ok(Elasticsearch {
            client: HttpClient::new(url, tls, Duration::from_secs(config.timeout_secs))?,
            index: config.index.clone().unwrap_or_default(),
            authorization,
        })
    }

    /// The NDJSON body: a `create` action and the document per event.
    pub fn body(&self, events: &[ForwardEvent]) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::with_capacity(events.iter().map(|e| e.raw().len() * 2 + 500).sum());
        for event in events {
            body.extend_from_slice(b"{\"create\":{\"_index\":");
            write_json_string(&index_name(&self.index, event.event_time_ms()), &mut body);
            // 32 hex digits: nothing to escape.
            body.extend_from_slice(b",\"_id\":\"");
            body.extend_from_slice(event.identity()?.as_bytes());
            body.extend_from_slice(b"\"}}\n");
            event.write_json(&mut body)?;
            body.push(b'\n');
        }
        Ok(body)
    }
}

fn env(variable: &str) -> Result<String, String> {
    std::env::var(variable).map_err(|_| format!("environment variable {variable} is not set"))
}

/// `pattern` with `%Y`, `%m` and `%d` replaced by the UTC date of `time_ms`.
pub fn index_name(pattern: &str, time_ms: i64) -> String {
    if !pattern.contains('%') {
        return pattern.to_owned();
    }
    let date = auditsink_storage::format_ms(time_ms);
    pattern
        .replace("%Y", date.get(0..4).unwrap_or("0000"))
        .replace("%m", date.get(5..7).unwrap_or("00"))
        .replace("%d", date.get(8..10).unwrap_or("00"))
}

/// What became of each item, from a `_bulk` answer.
fn item_outcomes(answer: &[u8], expected: usize) -> Result<Vec<ItemOutcome>, SendFailure> {
    let value: Value = serde_json::from_slice(answer)
        .map_err(|e| SendFailure::unknown(format!("_bulk answer is not JSON: {e}")))?;
    let items = value
        .get("items")
        .and_then(Value::as_array)
        .filter(|items| items.len() == expected)
        .ok_or_else(|| {
            SendFailure::unknown(format!(
                "_bulk answer does not have {expected} items: {}",
                super::http_status::excerpt(answer)
            ))
        })?;
    Ok(items
        .iter()
        .map(|item| {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            match status {
                200 | 201 | 409 => ItemOutcome::Delivered,
                429 | 500..=599 => ItemOutcome::Retry(format!("item status {status}")),
                _ => {
                    let error = &result["error"];
                    let kind = error["type"].as_str().unwrap_or("unknown error");
                    let why = error["reason"].as_str().unwrap_or("");
                    ItemOutcome::Park {
                        reason: format!("status {status}: {kind}: {why}"),
                        answer: result.to_string(),
                    }
                }
            }
        })
        .collect())
}

impl Destination for Elasticsearch {
    fn send<'a>(&'a mut self, events: &'a [ForwardEvent]) -> SendFuture<'a> {
        Box::pin(async move {
            let body = Bytes::from(self.body(events).map_err(SendFailure::store)?);
            let mut headers = vec![("content-type", "application/x-ndjson".to_owned())];
            if let Some(auth) = &self.authorization {
                headers.push(("authorization", auth.clone()));
            }
            let answer = self.client.post("/_bulk", &headers, body).await?;
            match classify(answer.status) {
                Verdict::Success => item_outcomes(&answer.body, events.len()),
                verdict => Err(verdict.failure("_bulk", &answer)),
            }
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
    fn index_pattern_takes_the_event_date() {
        assert_eq!(
            index_name("audit-%Y.%m.%d", 1_700_000_000_000),
            "audit-2023.11.14"
        );
        assert_eq!(index_name("audit", 0), "audit");
    }

    #[test]
    fn items_map_to_outcomes() {
        let answer = br#"{"errors":true,"items":[
            {"create":{"status":201}},{"create":{"status":409}},
            {"create":{"status":429}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;
        let outcomes = item_outcomes(answer, 4).unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Delivered);
        assert_eq!(outcomes[1], ItemOutcome::Delivered);
        assert!(matches!(outcomes[2], ItemOutcome::Retry(_)));
        assert!(
            matches!(&outcomes[3], ItemOutcome::Park { reason, .. } if reason.contains("mapper_parsing"))
        );
        assert!(item_outcomes(answer, 3).unwrap_err().maybe_delivered);
    }
}
