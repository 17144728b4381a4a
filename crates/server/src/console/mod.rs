//! The web console on the admin listener: server-rendered pages over the
//! same store reads as the admin API.
//!
//! - `/` ([`status_page`]): a card per source (badge, last attempt,
//!   counters, events per minute over 24 h), the store; reloads itself.
//! - `/search` ([`search_page`]): the `/api/events` parameters as a form,
//!   a results table with cursor paging, a histogram and an NDJSON link.
//! - `/event/<id>` ([`event_page`]): one event, its fields and raw line.
//! - `/quarantine` ([`quarantine_page`]): the kept lines, and a reprocess
//!   button (`POST /quarantine/reprocess`).
//!
//! Pages are plain HTML with everything from the store escaped ([`html`]);
//! the one script (`assets/console.js`) only reloads the status page. The
//! assets are compiled into the binary. Access rules are in [`guard`].

mod event_page;
mod guard;
mod html;
mod paths;
mod quarantine_page;
mod search_page;
mod status_page;

use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response, StatusCode};

pub(crate) use guard::cross_site;
pub use guard::AdminGuard;
pub(crate) use html::harden;
pub(crate) use paths::is_console_path;

use crate::state::AppState;

const CONSOLE_CSS: &str = include_str!("assets/console.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// Answers a console path (see [`is_console_path`]).
pub(crate) async fn serve(
    state: Arc<AppState>,
    started: Instant,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let method = request.method().clone();
    let allowed = if path == "/quarantine/reprocess" {
        Method::POST
    } else {
        Method::GET
    };
    if method != allowed {
        let mut refusal = html::error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            html::Nav::Status,
            &format!("use {allowed}"),
        );
        if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
            refusal.headers_mut().insert(ALLOW, value);
        }
        return refusal;
    }
    match path.as_str() {
        "/" => status_page::render(state, started).await,
        "/search" => search_page::render(state, &query).await,
        "/quarantine" => quarantine_page::render(state, &query).await,
        "/quarantine/reprocess" => quarantine_page::reprocess(state, request).await,
        "/assets/console.css" => asset("text/css; charset=utf-8", CONSOLE_CSS),
        "/assets/console.js" => asset("text/javascript; charset=utf-8", CONSOLE_JS),
        path => match path.strip_prefix("/event/") {
            Some(id) => event_page::render(state, id).await,
            None => html::error_page(StatusCode::NOT_FOUND, html::Nav::Status, "no such page"),
        },
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = crate::response::response(StatusCode::OK, content_type, body);
    harden(&mut response);
    response
}

/// A short text of a JSON value for a table cell: strings as they are,
/// `null` as nothing, anything else as JSON.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
