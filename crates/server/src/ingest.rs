//! One delivery: route, authorize, admit, read, decode, parse, verify,
//! store, answer. Decoding to preparing the records is [`crate::prepare`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use auditsink_storage::{AppendSummary, QuarantineReason};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT,
    RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::Presented;
use crate::budget::OverBudget;
use crate::decode::Encoding;
use crate::metrics::RequestRecord;
use crate::prepare::{Pending, Prepare, Prepared, Target, Watch};
use crate::request_body::{Progress, ReadError, RequestBody};
use crate::response::{error_response, json_response};
use crate::state::{now_ms, AppState, Refused, Source};
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
            crate::gaps::record_answer(state, &source.name, now, status);
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
    let mut admitted = state
        .admit(declared.unwrap_or(limits.max_body_bytes))
        .map_err(|refused| match refused {
            Refused::Busy => overloaded(),
            Refused::Memory(over) => over_budget(over),
        })?;
    let body = match request_body
        .read_all(limits.max_body_bytes, limits.body_read_timeout, declared)
        .await
    {
        Ok(body) => body,
        Err(e) => return Err(unreadable(state, source, e, sizes).await),
    };
    sizes.compressed = body.len() as u64;
    let mut memory = admitted.memory.take();
    memory.resize(body.len() as u64).map_err(over_budget)?;
    // Dropped with this future when the client goes: the preparation stops.
    let (watch, abandoned) = Watch::new();
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
        memory,
        abandoned,
        abandoned_total: state.metrics.abandoned.clone(),
        target: target(state),
    };
    let preparing = state.metrics.preparing.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        preparing.inc();
        let prepared = work.run(body);
        preparing.dec();
        prepared
    })
    .await
    .map_err(|e| {
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("batch preparation failed: {e}"),
        )
    })?;
    watch.disarm();
    match prepared {
        Prepared::Batch {
            received,
            decompressed,
            batch,
            memory,
            signature_failures,
        } => {
            sizes.decompressed = decompressed;
            let summary = commit(state, batch).await?;
            drop(memory);
            if !signature_failures.is_empty() {
                crate::gaps::record_signature_failures(state, &source.name, &signature_failures);
            }
            Ok(Accepted { received, summary })
        }
        Prepared::OverBudget(over) => Err(over_budget(over)),
        // Only seen if the client left as the work ended; no one reads it.
        Prepared::Abandoned => Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "abandoned",
            "the client disconnected",
        )),
        Prepared::TooLarge(message) => Err(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            message,
        )),
        Prepared::Corrupt { batch, message } => {
            // Konnect does not retry a 400: keep the body so nothing is lost.
            commit(state, batch).await?;
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
            let mut batch = Pending::new(
                target(state),
                &source.name,
                now_ms(),
                source.format,
                time::OffsetDateTime::now_utc().year(),
            );
            batch.add_quarantine(
                &received,
                &QuarantineReason::Body(format!(
                    "{message} (the {} bytes received before it, as sent)",
                    received.len()
                )),
            );
            match commit(state, batch).await {
                Ok(_) => Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    format!(
                        "{message}; the {} bytes received were kept in quarantine",
                        received.len()
                    ),
                ),
                Err(rejection) => rejection,
            }
        }
    }
}

/// Where this process's deliveries go: the cluster's stream (a receiver
/// with `[cluster]`) or the local store.
fn target(state: &AppState) -> Target {
    match state.cluster.as_ref().and_then(|c| c.publisher.as_ref()) {
        Some(_) => Target::Cluster,
        None => Target::Store,
    }
}

/// Makes a prepared delivery durable: on disk in the store, or
/// acknowledged by a quorum of the stream's replicas.
async fn commit(state: &AppState, batch: Pending) -> Result<AppendSummary, Rejection> {
    match batch {
        Pending::Store(batch) => state
            .store
            .append_prepared(batch)
            .await
            .map_err(storage_failure),
        Pending::Cluster(outbox) => {
            let publisher = state
                .cluster
                .as_ref()
                .and_then(|c| c.publisher.as_ref())
                .ok_or_else(|| {
                    Rejection::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "a cluster delivery without a publisher",
                    )
                })?;
            publisher.publish(outbox).await.map_err(cluster_failure)
        }
    }
}

fn cluster_failure(e: crate::cluster::PublishFailure) -> Rejection {
    tracing::error!(error = %e, "publishing a delivery to the stream failed");
    // 500: Konnect retries it; the message ids make the retry safe.
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cluster",
        "the cluster did not acknowledge the delivery; retry later",
    )
}

fn overloaded() -> Rejection {
    Rejection::new(
        StatusCode::TOO_MANY_REQUESTS,
        "overloaded",
        "too much work in flight; retry shortly",
    )
}

/// Past `max_inflight_memory`: 429 while other requests hold it, 413 when
/// this one alone needs more than all of it.
fn over_budget(over: OverBudget) -> Rejection {
    match over {
        OverBudget::Busy => Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too much memory in flight; retry shortly",
        ),
        OverBudget::Never { limit } => Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request needs more memory than max_inflight_memory ({limit} bytes)"),
        ),
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
