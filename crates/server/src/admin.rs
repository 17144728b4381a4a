//! The admin listener (plain HTTP, loopback by default): the web console
//! (`/`, see [`crate::console`]), `/healthz`, `/readyz`, `/metrics`,
//! `/status`, and access to the store for CLI
//! commands while the server holds it: `/api/events` (filtered, streamed
//! NDJSON), `/api/events/count`, `/api/quarantine`, `/api/gaps`,
//! `POST /api/quarantine/reprocess`, and the sinks' `/api/sinks...`
//! (see [`crate::sinks::admin`]).
//!
//! Why one piece (about 530 lines): one listener's routing with the
//! answers that only read the server's state (health, readiness, status,
//! metrics) and the streamed store listings they share; the console and
//! the sinks' routes are modules of their own.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use auditsink_parser::ParseOptions;
use auditsink_storage::{
    parse_id, parse_time_bound, Query, Reparse, Store, StoreError, StoredEvent,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::response::{error_response, json_response, response};
use crate::state::{now_ms, AppState};

pub(crate) use crate::percent::percent_decode;

/// Largest `limit` one admin query may ask for (listings are streamed, so
/// this bounds the time of one request, not memory).
pub const MAX_QUERY_LIMIT: usize = 10_000_000;

/// The admin listener's response body: whole for small answers, streamed
/// for store listings.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// Handles a request on the admin listener: access rules first (see
/// [`crate::console::AdminGuard`]), then the console's pages or the API.
pub async fn handle(
    state: Arc<AppState>,
    started: Instant,
    request: Request<Incoming>,
) -> Response<AdminBody> {
    let mut response = route_request(state, started, request).await;
    crate::console::harden(&mut response);
    response
}

async fn route_request(
    state: Arc<AppState>,
    started: Instant,
    request: Request<Incoming>,
) -> Response<AdminBody> {
    if let Some(refusal) = state.admin_guard.refuse(&request) {
        return whole(refusal);
    }
    if request.method() == Method::POST && crate::console::cross_site(request.headers()) {
        return whole(error_response(
            StatusCode::FORBIDDEN,
            "cross-site request refused",
        ));
    }
    if crate::console::is_console_path(request.uri().path()) {
        return whole(crate::console::serve(state, started, request).await);
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    if crate::sinks::admin::is_sink_path(request.uri().path()) {
        let path = request.uri().path().to_owned();
        return whole(crate::sinks::admin::answer(state, request.method(), &path, &query).await);
    }
    if request.uri().path() == "/api/quarantine/reprocess" {
        if request.method() != Method::POST {
            return whole(error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        return whole(reprocess(state).await);
    }
    if request.method() != Method::GET {
        return whole(not_a_webhook(&state, &request));
    }
    match request.uri().path() {
        "/api/events" => list(state, &query, Listing::Events).await,
        "/api/events/count" => whole(count(state, &query).await),
        "/api/quarantine" => list(state, &query, Listing::Quarantine).await,
        "/api/gaps" => whole(crate::gaps::answer(state, &query).await),
        path => whole(route(&state, started, path).await),
    }
}

/// The 405 for a POST (or any other non-GET) to the admin listener, which
/// is most often a webhook sent to the wrong port: says where webhooks go.
fn not_a_webhook(state: &AppState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let urls: Vec<String> = match state.webhook_addr() {
        Some(addr) => {
            // A wildcard bind has no one address to give: use the host the
            // client reached the admin listener by.
            let host = if addr.ip().is_unspecified() {
                request
                    .headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
                    .map(|a| a.host().to_owned())
                    .unwrap_or_else(|| "localhost".to_owned())
            } else {
                addr.ip().to_string()
            };
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            state
                .sources
                .iter()
                .map(|s| format!("https://{host}:{}{}", addr.port(), s.path))
                .collect()
        }
        None => Vec::new(),
    };
    let error = match urls.as_slice() {
        [] => "use GET: this is the admin listener; webhooks go to the HTTPS listener ([server] listen)".to_owned(),
        urls => format!(
            "use GET: this is the admin listener; webhooks go to the HTTPS listener ([server] listen): POST to {}",
            urls.join(" or ")
        ),
    };
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": error, "webhook_urls": urls }),
    );
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static("GET"),
    );
    response
}

fn whole(response: Response<Full<Bytes>>) -> Response<AdminBody> {
    response.map(BodyExt::boxed)
}

async fn route(state: &Arc<AppState>, started: Instant, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readiness(state).await,
        "/metrics" => response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            with_sink_metrics(state.metrics.render(&state.store), state),
        ),
        "/status" => json_response(StatusCode::OK, &status(state, started)),
        _ => error_response(StatusCode::NOT_FOUND, "unknown admin path"),
    }
}

/// Ready when the webhook listener accepts and the store takes a write: it
/// is not closed after a failed write (it reopens by itself), the last
/// write that stored something did not fail, and an empty batch goes
/// through the writer and its flush.
async fn readiness(state: &AppState) -> Response<Full<Bytes>> {
    if !state.is_listening() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook listener not accepting",
        );
    }
    let health = state.store.health();
    if health.recovering {
        let mut text = format!(
            "store not writable: closed since a write failed ({}); it reopens by itself \
             once writes succeed again (free disk space)",
            health.reason.as_deref().unwrap_or("unknown")
        );
        if let Some(e) = &health.last_attempt_error {
            text.push_str(&format!(
                "; {} attempts so far, the last: {e}",
                health.failed_attempts
            ));
        }
        return error_response(StatusCode::SERVICE_UNAVAILABLE, &text);
    }
    if let Some(e) = state.store.last_write_error() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("store not writable: the last write failed: {e}"),
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
    // Path first, then counters and sizes (events, disk usage, batches and
    // flushes: the group-commit factor), then what opening it found.
    let mut store = json!({ "path": state.store.path().display().to_string() });
    if let (Value::Object(store), Ok(Value::Object(stats))) =
        (&mut store, serde_json::to_value(state.store.stats()))
    {
        store.extend(stats);
    }
    store["open"] = serde_json::to_value(state.store.open_report()).unwrap_or(Value::Null);
    store["health"] = serde_json::to_value(state.store.health()).unwrap_or(Value::Null);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": started.elapsed().as_secs(),
        "store": store,
        "sources": sources,
        "cluster": state.cluster.as_ref().map(|c| c.status()),
        "sinks": state.sinks.status(now),
    })
}

/// The metrics text with the sinks' series before its `# EOF`.
fn with_sink_metrics(mut text: String, state: &AppState) -> String {
    let sinks = state.sinks.metrics(now_ms());
    if !sinks.is_empty() {
        let at = text.rfind("# EOF").unwrap_or(text.len());
        text.insert_str(at, &sinks);
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    Events,
    Quarantine,
}

/// Listings up to this size are answered whole (with a `Content-Length`);
/// longer ones are streamed in chunks of about this size.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered between the store reader and a slow client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What an events listing selects: the store's query, and `source`, which
/// has no index: it is checked on each event the query yields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub query: Query,
    pub source: Option<String>,
}

impl Selection {
    /// The selected events in id order, at most the query's limit.
    pub fn events(&self, store: &Store) -> Result<Rows<StoredEvent>, StoreError> {
        let Some(source) = self.source.clone() else {
            return Ok(Box::new(store.query(&self.query)?));
        };
        let unlimited = Query {
            limit: None,
            ..self.query.clone()
        };
        Ok(Box::new(
            store
                .query(&unlimited)?
                .filter(move |row| row.as_ref().map_or(true, |e| e.source == source))
                .take(self.query.limit.unwrap_or(usize::MAX)),
        ))
    }

    /// How many events it selects: from the indexes, or, with `source`,
    /// by reading the events the rest of the query selects.
    pub fn count(&self, store: &Store) -> Result<u64, StoreError> {
        if self.source.is_none() {
            return store.count(&self.query);
        }
        let mut n = 0;
        for row in self.events(store)? {
            row?;
            n += 1;
        }
        Ok(n)
    }
}

/// Reads the query string of a listing: `limit` (default 100), `after`, and
/// for events the filters `since`, `until` (RFC 3339, a date, an age such as
/// `24h`, or epoch ms; on the event time), `principal`, `trace`, `org`,
/// `name`, `source`.
pub(crate) fn parse_query(
    text: &str,
    listing: Listing,
    default_limit: Option<usize>,
) -> Result<Selection, String> {
    let mut source = None;
    let mut query = Query {
        limit: default_limit,
        ..Query::default()
    };
    let now = now_ms();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw)?;
        let filter = listing == Listing::Events;
        match key {
            "limit" => match value.parse::<usize>() {
                Ok(n) if n <= MAX_QUERY_LIMIT => query.limit = Some(n),
                _ => return Err(format!("limit must be 0..={MAX_QUERY_LIMIT}")),
            },
            "after" => {
                query.after = Some(parse_id(&value).ok_or("after must be an event id")?);
            }
            "since" if filter => query.since_ms = Some(parse_time_bound(&value, now)?),
            "until" if filter => query.until_ms = Some(parse_time_bound(&value, now)?),
            "principal" if filter => query.principal = Some(value),
            "trace" if filter => query.trace = Some(value),
            "org" if filter => query.org = Some(value),
            "name" if filter => query.name = Some(value),
            "source" if filter => source = Some(value),
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    Ok(Selection { query, source })
}

/// A response body fed by a channel: the listing is produced on a blocking
/// thread while hyper sends what is ready.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Rows read from the store, movable to a blocking thread.
pub(crate) type Rows<T> = Box<dyn Iterator<Item = Result<T, StoreError>> + Send>;

/// Renders rows into `out` until it holds about a chunk or the rows end;
/// true when they ended. A store error mid-way ends the listing with an
/// `{"error": ...}` line (the status line is already sent).
fn fill(rows: &mut Rows<Value>, out: &mut Vec<u8>) -> bool {
    while out.len() < CHUNK_BYTES {
        match rows.next() {
            None => return true,
            Some(Ok(row)) => {
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, &row);
                out.push(b'\n');
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "store read failed during a listing");
                let _ = serde_json::to_writer(&mut *out, &json!({ "error": e.to_string() }));
                out.push(b'\n');
                return true;
            }
        }
    }
    false
}

/// `GET /api/events?...` and `GET /api/quarantine?limit&after`: NDJSON in
/// id (arrival) order. A short answer comes whole; a long one is streamed
/// as it is read, so memory does not grow with `limit`.
async fn list(state: Arc<AppState>, query: &str, listing: Listing) -> Response<AdminBody> {
    let selection = match parse_query(query, listing, Some(100)) {
        Ok(selection) => selection,
        Err(e) => return whole(error_response(StatusCode::BAD_REQUEST, &e)),
    };
    // Plan and read the first chunk off the async workers.
    let first = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let query = &selection.query;
        let mut rows: Rows<Value> = match listing {
            Listing::Events => Box::new(
                selection
                    .events(&state.store)?
                    .map(|r| r.map(|e| e.to_json())),
            ),
            Listing::Quarantine => Box::new(
                state
                    .store
                    .quarantine(query.after)
                    .take(query.limit.unwrap_or(usize::MAX))
                    .map(|r| r.map(|q| q.to_json())),
            ),
        };
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
        let done = fill(&mut rows, &mut chunk);
        Ok((rows, chunk, done))
    })
    .await;
    let (mut rows, chunk, done) = match first {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => {
            return whole(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            ))
        }
        Err(e) => {
            return whole(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            ))
        }
    };
    if done {
        return whole(response(StatusCode::OK, "application/x-ndjson", chunk));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut chunk = chunk;
        loop {
            // A closed channel means the client went away: stop reading.
            if tx
                .blocking_send(Bytes::from(std::mem::take(&mut chunk)))
                .is_err()
            {
                return;
            }
            chunk.reserve(CHUNK_BYTES + 4096);
            if fill(&mut rows, &mut chunk) {
                let _ = tx.blocking_send(Bytes::from(chunk));
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `GET /api/events/count?...`: `{"count": N}` from the indexes (the same
/// filters as `/api/events`; without `limit`, no limit).
async fn count(state: Arc<AppState>, query: &str) -> Response<Full<Bytes>> {
    let selection = match parse_query(query, Listing::Events, None) {
        Ok(selection) => selection,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
    };
    match tokio::task::spawn_blocking(move || selection.count(&state.store)).await {
        Ok(Ok(n)) => json_response(StatusCode::OK, &json!({ "count": n })),
        Ok(Err(e)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /api/quarantine/reprocess`: reads every quarantined line again
/// with the current parser, its source's format and (when the source
/// checks signatures) its current keys and policy; moves what is now an
/// event into the events and keeps the rest. Lines of a source no longer
/// configured are read as `auto`, without signature checks.
async fn reprocess(state: Arc<AppState>) -> Response<Full<Bytes>> {
    match reprocess_quarantine(state).await {
        Ok(summary) => json_response(StatusCode::OK, &json!(summary)),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Reprocesses the quarantine (as `POST /api/quarantine/reprocess`
/// describes); the summary, logged.
pub(crate) async fn reprocess_quarantine(
    state: Arc<AppState>,
) -> Result<auditsink_storage::ReprocessSummary, String> {
    let year = time::OffsetDateTime::now_utc().year();
    let result = tokio::task::spawn_blocking(move || {
        let reparse_for = |name: &str| {
            let source = state.sources.iter().find(|s| s.name == name);
            let format = source.map_or(auditsink_parser::Format::Auto, |s| s.format);
            let signatures = source.and_then(|s| s.signatures.as_ref());
            Reparse {
                options: ParseOptions {
                    format,
                    year_hint: year,
                },
                keys: signatures.map(|check| check.keys.get()),
                enforce: signatures
                    .is_some_and(|check| check.policy == crate::config::SignaturePolicy::Enforce),
            }
        };
        state.store.reprocess_quarantine(&reparse_for)
    })
    .await;
    match result {
        Ok(Ok(summary)) => {
            tracing::info!(
                moved = summary.moved,
                duplicates = summary.duplicates,
                kept = summary.kept,
                "quarantine reprocessed"
            );
            Ok(summary)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
