//! The admin listener (plain HTTP, loopback by default): `/healthz`,
//! `/status`, and read access to the store (`/api/events`,
//! `/api/quarantine`) for CLI commands while the server holds the store.

use std::sync::Arc;
use std::time::Instant;

use auditsink_storage::parse_id;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::response::{error_response, json_response, response};
use crate::state::{now_ms, AppState};

/// Largest `limit` one admin query may ask for.
pub const MAX_QUERY_LIMIT: usize = 100_000;

/// Handles a request on the admin listener.
pub async fn handle(
    state: Arc<AppState>,
    started: Instant,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    match request.uri().path() {
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readiness(&state).await,
        "/metrics" => response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(&state.store),
        ),
        "/status" => json_response(StatusCode::OK, &status(&state, started)),
        "/api/events" => list(state, &query, Listing::Events).await,
        "/api/quarantine" => list(state, &query, Listing::Quarantine).await,
        _ => error_response(StatusCode::NOT_FOUND, "unknown admin path"),
    }
}

/// Ready when the webhook listener accepts and the store takes a write: an
/// empty batch goes through the writer and its flush.
async fn readiness(state: &AppState) -> Response<Full<Bytes>> {
    if !state.is_listening() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook listener not accepting",
        );
    }
    let probe = auditsink_storage::Batch {
        source: "readyz".into(),
        ..Default::default()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), state.store.append(probe)).await {
        Ok(Ok(_)) => response(StatusCode::OK, "text/plain", "ready\n"),
        Ok(Err(e)) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("store not writable: {e}"),
        ),
        Err(_) => error_response(StatusCode::SERVICE_UNAVAILABLE, "store write timed out"),
    }
}

fn status(state: &AppState, started: Instant) -> Value {
    let now = now_ms();
    let sources: Vec<Value> = state
        .sources
        .iter()
        .map(|source| {
            let snap = source.status.snapshot();
            let mut entry = json!({
                "name": source.name,
                "path": source.path,
                "format": source.format.to_string(),
                "webhook_status": snap.webhook_status(now, state.inactive_after),
                "last_attempt_at": snap.last_attempt_ms.map(auditsink_storage::format_ms),
            });
            if let (Value::Object(entry), Ok(Value::Object(counters))) =
                (&mut entry, serde_json::to_value(&snap))
            {
                entry.extend(counters);
            }
            entry
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": started.elapsed().as_secs(),
        "store": {
            "path": state.store.path().display().to_string(),
            "size_on_disk_bytes": state.store.size_on_disk().ok(),
        },
        "sources": sources,
    })
}

#[derive(Clone, Copy)]
enum Listing {
    Events,
    Quarantine,
}

/// `?limit=N&after=ID`: NDJSON in arrival order.
async fn list(state: Arc<AppState>, query: &str, listing: Listing) -> Response<Full<Bytes>> {
    let mut limit = 100usize;
    let mut after = None;
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        match key {
            "limit" => match value.parse::<usize>() {
                Ok(n) if n <= MAX_QUERY_LIMIT => limit = n,
                _ => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("limit must be 0..={MAX_QUERY_LIMIT}"),
                    )
                }
            },
            "after" => match parse_id(value) {
                Some(id) => after = Some(id),
                None => {
                    return error_response(StatusCode::BAD_REQUEST, "after must be an event id")
                }
            },
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter {key:?}"),
                )
            }
        }
    }
    let rendered = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut out = String::new();
        let rows: Box<dyn Iterator<Item = Result<Value, auditsink_storage::StoreError>>> =
            match listing {
                Listing::Events => {
                    Box::new(state.store.events(after).map(|r| r.map(|e| e.to_json())))
                }
                Listing::Quarantine => Box::new(
                    state
                        .store
                        .quarantine(after)
                        .map(|r| r.map(|q| q.to_json())),
                ),
            };
        for row in rows.take(limit) {
            out.push_str(&row.map_err(|e| e.to_string())?.to_string());
            out.push('\n');
        }
        Ok(out)
    })
    .await;
    match rendered {
        Ok(Ok(body)) => response(StatusCode::OK, "application/x-ndjson", body),
        Ok(Err(e)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
