//! One delivery: route, authorize, admit, read, decode, parse, verify,
//! store, answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use auditsink_parser::signature::KeySet;
use auditsink_parser::{
    lines, parse_borrowed, BorrowedEvent, Format, ParseOptions, SignatureStatus,
};
use auditsink_storage::{AppendSummary, PreparedBatch};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT,
    RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::Presented;
use crate::config::SignaturePolicy;
use crate::decode::{decode, DecodeError, Encoding};
use crate::metrics::RequestRecord;
use crate::request_body::{Progress, ReadError, RequestBody};
use crate::response::{error_response, json_response};
use crate::state::{now_ms, AppState, Source};
use crate::status::Outcome;

/// What `Retry-After` says on a 429: Konnect waits at least 1 s anyway.
const RETRY_AFTER_SECS: &str = "1";

/// A request refused; nothing of it was stored (except a corrupt body, kept
/// in quarantine).
struct Rejection {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// An accepted request.
struct Accepted {
    received: u64,
    summary: AppendSummary,
}

/// Body sizes seen, for metrics.
#[derive(Default)]
struct Sizes {
    compressed: u64,
    decompressed: u64,
}

/// Handles a request on the HTTPS listener.
pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    let mut body = RequestBody::new(body);
    let response = answer(&state, peer, &head, &mut body).await;
    finish(&state, &head, body, response)
}

/// After an answer sent before the body was read whole: over HTTP/1.1 the
/// connection closes after it, and in both protocols the rest of the body is
/// read and discarded first (within bounds), so the client gets the answer.
fn finish(
    state: &AppState,
    head: &hyper::http::request::Parts,
    body: RequestBody<Incoming>,
    mut response: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let progress = body.progress();
    if body.is_finished() {
        return response;
    }
    let h1 = head.version < hyper::Version::HTTP_2;
    if h1 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    // An HTTP/1.1 client waiting for `100 Continue` sends no body after a
    // final answer; a client that was too slow (408) is not waited for.
    let awaiting_continue = h1
        && progress == Progress::Unread
        && head
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if progress != Progress::TimedOut && !awaiting_continue {
        let already_read = body.bytes_read();
        state
            .limits
            .lingering
            .spawn(body.into_inner(), already_read);
    }
    response
}

async fn answer(
    state: &AppState,
    peer: SocketAddr,
    head: &hyper::http::request::Parts,
    body: &mut RequestBody<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let Some(source) = state.source_for(head.uri.path()).cloned() else {
        tracing::debug!(%peer, path = head.uri.path(), "no source at this path");
        state.metrics.record(RequestRecord {
            source: "-",
            status: 404,
            seconds: started.elapsed().as_secs_f64(),
            compressed_bytes: 0,
            decompressed_bytes: 0,
            lines: None,
        });
        return error_response(
            StatusCode::NOT_FOUND,
            "no webhook is configured at this path",
        );
    };
    let mut sizes = Sizes::default();
    let result = deliver(state, &source, head, body, &mut sizes).await;
    let now = now_ms();
    let seconds = started.elapsed().as_secs_f64();
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut record = RequestRecord {
        source: &source.name,
        status: 200,
        seconds,
        compressed_bytes: sizes.compressed,
        decompressed_bytes: sizes.decompressed,
        lines: None,
    };
    match result {
        Ok(Accepted { received, summary }) => {
            let AppendSummary {
                stored,
                duplicates,
                quarantined,
            } = summary;
            source.status.record(
                now,
                Outcome::Accepted {
                    stored,
                    duplicates,
                    quarantined,
                },
            );
            record.lines = Some([received, stored, duplicates, quarantined]);
            state.metrics.record(record);
            tracing::info!(
                source = %source.name, %peer, status = 200, received, stored, duplicates, quarantined,
                duration_ms, "delivery"
            );
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "received": received,
                    "stored": stored,
                    "duplicates": duplicates,
                    "quarantined": quarantined,
                }),
            )
        }
        Err(rejection) => {
            let status = rejection.status.as_u16();
            source.status.record(
                now,
                Outcome::Rejected {
                    status,
                    reason: rejection.reason,
                },
            );
            record.status = status;
            state.metrics.record(record);
            tracing::warn!(
                source = %source.name, %peer, status, reason = rejection.reason,
                message = %rejection.message, duration_ms, "delivery rejected"
            );
            let mut response = error_response(rejection.status, &rejection.message);
            let headers = response.headers_mut();
            match rejection.status {
                StatusCode::METHOD_NOT_ALLOWED => {
                    headers.insert(ALLOW, HeaderValue::from_static("POST"));
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
                }
                _ => {}
            }
            response
        }
    }
}

async fn deliver(
    state: &AppState,
    source: &Source,
    head: &hyper::http::request::Parts,
    request_body: &mut RequestBody<Incoming>,
    sizes: &mut Sizes,
) -> Result<Accepted, Rejection> {
    if head.method != Method::POST {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            "use POST",
        ));
    }
    let headers = &head.headers;
    let authorizations = headers.get_all(AUTHORIZATION).iter();
    let presented = match Presented::from_values(authorizations.map(HeaderValue::as_bytes)) {
        Presented::None => None,
        Presented::One(value) => Some(value),
        Presented::Several => {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "more than one Authorization header",
            ))
        }
    };
    if !source.authorizer.allows(presented) {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong or missing Authorization",
        ));
    }
    let encoding = Encoding::from_header(headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes))
        .ok_or_else(|| {
            Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "unsupported Content-Encoding: use gzip, x-gzip, application/gzip, deflate or identity",
        )
        })?;
    let limits = &state.limits;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(too_large(limits.max_body_bytes));
    }
    // Reserve the body's size (the most it may be, when not declared) before
    // reading it: past the in-flight budget, answer 429 (Konnect retries it)
    // instead of queueing without bound.
    let _admitted = state
        .admit(declared.unwrap_or(limits.max_body_bytes))
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "too much work in flight; retry shortly",
            )
        })?;
    let body = match request_body
        .read_all(limits.max_body_bytes, limits.body_read_timeout, declared)
        .await
    {
        Ok(body) => body,
        Err(e) => return Err(unreadable(state, source, e, sizes).await),
    };
    sizes.compressed = body.len() as u64;
    let work = Prepare {
        source: source.name.clone(),
        format: source.format,
        encoding,
        max_decompressed: limits.max_decompressed_bytes,
        max_lines: limits.max_lines_per_request,
        received_at_ms: now_ms(),
        signatures: source
            .signatures
            .as_ref()
            .map(|check| (check.policy, check.keys.get())),
    };
    let prepared = tokio::task::spawn_blocking(move || work.run(&body))
        .await
        .map_err(|e| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("batch preparation failed: {e}"),
            )
        })?;
    match prepared {
        Prepared::Batch {
            received,
            decompressed,
            batch,
        } => {
            sizes.decompressed = decompressed;
            let summary = state
                .store
                .append_prepared(batch)
                .await
                .map_err(storage_failure)?;
            Ok(Accepted { received, summary })
        }
        Prepared::TooLarge(message) => Err(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            message,
        )),
        Prepared::Corrupt { batch, message } => {
            // Konnect does not retry a 400: keep the body so nothing is lost.
            state
                .store
                .append_prepared(batch)
                .await
                .map_err(storage_failure)?;
            Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "corrupt_body",
                format!("{message}; the raw body was kept in quarantine"),
            ))
        }
    }
}

/// The answer to a body that could not be read whole. A malformed one
/// (HTTP/1.1 framing) is final, 400: a retry would send the same bytes, so
/// what arrived is kept in quarantine with the reason, like an undecodable
/// gzip body.
async fn unreadable(
    state: &AppState,
    source: &Source,
    error: ReadError,
    sizes: &mut Sizes,
) -> Rejection {
    match error {
        ReadError::TooLarge => too_large(state.limits.max_body_bytes),
        ReadError::TimedOut => Rejection::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "request body not received in time",
        ),
        ReadError::Aborted { error } => Rejection::new(
            StatusCode::BAD_REQUEST,
            "body_read",
            format!("error reading body: {error}"),
        ),
        ReadError::Malformed { received, error } => {
            sizes.compressed = received.len() as u64;
            let message = format!("malformed request body framing: {error}");
            if received.is_empty() {
                return Rejection::new(StatusCode::BAD_REQUEST, "malformed_body", message);
            }
            let mut batch = PreparedBatch::new(&source.name, now_ms());
            batch.add_quarantine(
                &received,
                &format!(
                    "{message} (the {} bytes received before it, as sent)",
                    received.len()
                ),
            );
            match state.store.append_prepared(batch).await {
                Ok(_) => Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    format!(
                        "{message}; the {} bytes received were kept in quarantine",
                        received.len()
                    ),
                ),
                Err(e) => storage_failure(e),
            }
        }
    }
}

fn too_large(limit: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body exceeds {limit} bytes"),
    )
}

fn storage_failure(e: auditsink_storage::StoreError) -> Rejection {
    tracing::error!(error = %e, "store append failed");
    // 500: Konnect retries it.
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        "storage failure; retry later",
    )
}

/// The CPU-bound part of a delivery, run off the async workers: decode,
/// parse (borrowed events, never owned ones), verify, and prepare the
/// store's records.
struct Prepare {
    source: String,
    format: Format,
    encoding: Encoding,
    max_decompressed: u64,
    max_lines: usize,
    received_at_ms: i64,
    signatures: Option<(SignaturePolicy, Arc<KeySet>)>,
}

enum Prepared {
    Batch {
        received: u64,
        decompressed: u64,
        batch: PreparedBatch,
    },
    TooLarge(String),
    Corrupt {
        batch: PreparedBatch,
        message: String,
    },
}

impl Prepare {
    fn run(self, body: &[u8]) -> Prepared {
        let mut batch = PreparedBatch::new(&self.source, self.received_at_ms);
        let text = match decode(self.encoding, body, self.max_decompressed) {
            Ok(text) => text,
            Err(e @ DecodeError::TooLarge { .. }) => return Prepared::TooLarge(e.to_string()),
            Err(e @ DecodeError::Corrupt { .. }) => {
                let message = e.to_string();
                batch.add_quarantine(body, &format!("undecodable request body: {message}"));
                return Prepared::Corrupt { batch, message };
            }
        };
        let options = ParseOptions {
            format: self.format,
            year_hint: time::OffsetDateTime::now_utc().year(),
        };
        let mut events = Vec::new();
        for (count, line) in lines(&text).enumerate() {
            if count >= self.max_lines {
                return Prepared::TooLarge(format!(
                    "request has more than {} lines",
                    self.max_lines
                ));
            }
            match parse_borrowed(line, &options) {
                Ok(event) => events.push(event),
                Err(e) => batch.add_quarantine(line, &e.to_string()),
            }
        }
        let received = (events.len() + batch.quarantine_count()) as u64;
        if let Some((policy, keys)) = &self.signatures {
            check_signatures(&mut events, keys, *policy, &mut batch);
        }
        for event in &events {
            batch.add_event(event);
        }
        Prepared::Batch {
            received,
            decompressed: text.len() as u64,
            batch,
        }
    }
}

/// Verifies every event's signature (one batch verification for the whole
/// request) and records the outcome; under `enforce`, moves events whose
/// signature is invalid or missing to quarantine with the reason.
fn check_signatures(
    events: &mut Vec<BorrowedEvent<'_>>,
    keys: &KeySet,
    policy: SignaturePolicy,
    batch: &mut PreparedBatch,
) {
    let lines: Vec<_> = events
        .iter()
        .map(|e| (e.raw.as_bytes(), e.format))
        .collect();
    let statuses = keys.verify_lines(&lines);
    let mut statuses = statuses.into_iter();
    events.retain_mut(|event| {
        let status = statuses.next().unwrap_or(SignatureStatus::Invalid);
        event.signature = status;
        let reason = match status {
            SignatureStatus::Invalid => {
                "signature invalid: it verifies against none of the source's keys"
            }
            SignatureStatus::Missing => "signature missing",
            SignatureStatus::Valid | SignatureStatus::Unverified => "",
        };
        if policy == SignaturePolicy::Enforce && !reason.is_empty() {
            batch.add_quarantine(event.raw.as_bytes(), reason);
            false
        } else {
            true
        }
    });
}
