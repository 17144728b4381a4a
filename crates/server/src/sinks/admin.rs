//! The admin listener's sink endpoints, for `auditsink sink` while the
//! server holds the store (the listener's access rules apply: a POST needs
//! the admin authorization when one is set, and is refused cross-site):
//!
//! - `GET /api/sinks`: every sink's status (as in `/status`);
//! - `GET /api/sinks/parked?name=N`: its parked entries (the first
//!   [`MAX_PARKED_LISTED`]), each an event or a damaged chunk's ids;
//! - `POST /api/sinks/retry?name=N`: marks them to be sent again;
//! - `POST /api/sinks/rewind?name=N&since=T`: sends again every event
//!   whose time is `T` or later.

use std::sync::Arc;

use auditsink_storage::{format_id, format_ms, parse_time_bound, ParkedEvent, Query, Store};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::response::{error_response, json_response};
use crate::state::{now_ms, AppState};

/// Most parked events one listing returns (each keeps up to 4 KiB of answer).
pub const MAX_PARKED_LISTED: usize = 10_000;

/// Whether `path` is one of these endpoints.
pub fn is_sink_path(path: &str) -> bool {
    path == "/api/sinks" || path.starts_with("/api/sinks/")
}

/// Answers a request to one of these endpoints.
pub async fn answer(
    state: Arc<AppState>,
    method: &Method,
    path: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        match crate::admin::percent_decode(raw) {
            Ok(value) => params.push((key.to_owned(), value)),
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
        }
    }
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let expected = if path == "/api/sinks" || path == "/api/sinks/parked" {
        Method::GET
    } else {
        Method::POST
    };
    if method != expected {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, &format!("use {expected}"));
    }
    if path == "/api/sinks" {
        return json_response(
            StatusCode::OK,
            &json!({ "sinks": state.sinks.status(now_ms()) }),
        );
    }
    let Some(name) = param("name") else {
        return error_response(StatusCode::BAD_REQUEST, "name= is required");
    };
    if state.sinks.get(name).is_none() {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no sink named {name:?} is configured"),
        );
    }
    let request = match path {
        "/api/sinks/parked" => SinkRequest::Parked,
        "/api/sinks/retry" => SinkRequest::Retry,
        "/api/sinks/rewind" => {
            let Some(since) = param("since") else {
                return error_response(StatusCode::BAD_REQUEST, "since= is required");
            };
            match parse_time_bound(since, now_ms()) {
                Ok(since_ms) => SinkRequest::Rewind { since_ms },
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("since: {e}")),
            }
        }
        _ => return error_response(StatusCode::NOT_FOUND, "no such sink endpoint"),
    };
    let store = state.store.clone();
    let name = name.to_owned();
    let result = tokio::task::spawn_blocking(move || match request {
        SinkRequest::Parked => store
            .sink_parked(&name, MAX_PARKED_LISTED)
            .map(|parked| Value::Array(parked.iter().map(parked_json).collect()))
            .map_err(|e| e.to_string()),
        SinkRequest::Retry => store
            .sink_retry(&name)
            .map(|marked| json!({ "sink": name, "marked": marked }))
            .map_err(|e| e.to_string()),
        SinkRequest::Rewind { since_ms } => rewind(&store, &name, since_ms),
    })
    .await;
    match result {
        Ok(Ok(value)) => json_response(StatusCode::OK, &value),
        Ok(Err(e)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// What a request about one sink asks, its parameters checked (a bad one
/// is the client's error, answered before the store is touched).
enum SinkRequest {
    Parked,
    Retry,
    Rewind { since_ms: i64 },
}

/// A parked entry as listed: `id` to `last` the ids it stands for (equal
/// for one event; a stored chunk that did not read stands for all of its
/// ids), `events` how many.
pub fn parked_json(parked: &ParkedEvent) -> Value {
    json!({
        "id": format_id(parked.id),
        "last": format_id(parked.last),
        "events": parked.id_count(),
        "reason": parked.reason,
        "answer": parked.answer,
        "parked_at": format_ms(parked.parked_at_ms),
        "retry": parked.retry,
    })
}

/// Moves sink `name`'s cursor back so that every event whose time is
/// `since_ms` or later is sent again (and the ones received after the
/// first of them); what it did.
pub fn rewind(store: &Store, name: &str, since_ms: i64) -> Result<Value, String> {
    let first = store
        .query(&Query {
            since_ms: Some(since_ms),
            limit: Some(1),
            ..Query::default()
        })
        .map_err(|e| e.to_string())?
        .next()
        .transpose()
        .map_err(|e| e.to_string())?;
    let cursor = match first {
        Some(event) => event.id - 1,
        None => store.last_durable_id().map_err(|e| e.to_string())?,
    };
    let state = store
        .sink_rewind(name, cursor)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("sink {name:?} has no state in the store"))?;
    Ok(json!({ "sink": name, "cursor": state.cursor }))
}
