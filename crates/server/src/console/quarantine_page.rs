//! `GET /quarantine`: the lines that are not events, with their reasons,
//! in arrival order with cursor paging; and `POST /quarantine/reprocess`,
//! the button that reads them again with the current parser, keys and
//! policies (as `auditsink quarantine reprocess`).
//!
//! The POST is refused from another site before it gets here
//! ([`super::cross_site`]) and must carry the per-process form token.

use std::fmt::Write;
use std::sync::Arc;

use auditsink_storage::{format_ms, StoreError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, Response, StatusCode};

use super::html::{error_page, esc, html_response, page, query_string, thousands, Nav};
use crate::admin::percent_decode;
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 50;
const MAX_PAGE: usize = 1000;
/// Largest form body accepted (a token and little else).
const MAX_FORM_BYTES: usize = 4096;
/// The summary keys the reprocess answer passes back to the page.
const SUMMARY_KEYS: [&str; 4] = ["examined", "moved", "duplicates", "kept"];

struct Params {
    after: Option<u64>,
    limit: usize,
    summary: Vec<(&'static str, u64)>,
}

fn parse(text: &str) -> Result<Params, String> {
    let mut params = Params {
        after: None,
        limit: DEFAULT_LIMIT,
        summary: Vec::new(),
    };
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw)?;
        match key {
            "after" => {
                params.after =
                    Some(auditsink_storage::parse_id(&value).ok_or("after must be an id")?)
            }
            "limit" => match value.parse() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => params.limit = n,
                _ => return Err(format!("limit must be 1..={MAX_PAGE}")),
            },
            key => match SUMMARY_KEYS.iter().find(|k| **k == key) {
                Some(k) => params.summary.push((
                    k,
                    value.parse().map_err(|_| format!("{k} must be a count"))?,
                )),
                None => return Err(format!("unknown parameter {key:?}")),
            },
        }
    }
    Ok(params)
}

pub(super) async fn render(state: Arc<AppState>, query: &str) -> Response<Full<Bytes>> {
    let params = match parse(query) {
        Ok(params) => params,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, Nav::Quarantine, &e),
    };
    let token = state.admin_guard.form_token().to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let total = state.store.quarantine_count();
        let rows = state
            .store
            .quarantine(params.after)
            .take(params.limit + 1)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((params, total, rows))
    });
    let (params, total, mut rows) = match read.await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Nav::Quarantine,
                &e.to_string(),
            )
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Nav::Quarantine,
                &e.to_string(),
            )
        }
    };
    let more = rows.len() > params.limit;
    rows.truncate(params.limit);
    let mut body = format!(
        "<h1>Quarantine</h1><p class=\"summary\"><span data-total=\"{total}\">{} line{} kept</span> \
         that could not be read as events, with the reason.</p>",
        thousands(total as u64),
        if total == 1 { "" } else { "s" }
    );
    if !params.summary.is_empty() {
        body.push_str("<p class=\"notice\" role=\"status\">Reprocessed:");
        for (key, n) in &params.summary {
            let _ = write!(
                body,
                " <span data-key=\"{key}\">{key} {}</span>",
                thousands(*n)
            );
        }
        body.push_str("</p>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/quarantine/reprocess\" class=\"reprocess\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\">Reprocess all</button> \
         <span class=\"meta\">reads every line again with the current parser, keys and signature policy; \
         what is now an event moves to the events</span></form>",
        esc(&token)
    );
    if !rows.is_empty() {
        body.push_str(
            "<table class=\"quarantine\"><thead><tr><th>Received</th><th>Source</th><th>Reason</th>\
             <th>Line</th></tr></thead><tbody>",
        );
        for row in &rows {
            let _ = write!(
                body,
                "<tr data-id=\"{:016x}\"><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{}</td><td><pre class=\"raw\">{}</pre></td></tr>",
                row.id,
                esc(&format_ms(row.received_at_ms)),
                esc(&row.source),
                esc(row.reason.text()),
                esc(&String::from_utf8_lossy(&row.raw)),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<nav class=\"paging\">");
    if params.after.is_some() {
        body.push_str("<a href=\"/quarantine\" rel=\"first\">First page</a>");
    }
    if let (true, Some(last)) = (more, rows.last()) {
        let _ = write!(
            body,
            "<a href=\"/quarantine?{}\" rel=\"next\">Next page</a>",
            esc(&query_string([
                ("after", format!("{:016x}", last.id).as_str()),
                ("limit", params.limit.to_string().as_str()),
            ]))
        );
    }
    body.push_str("</nav>");
    html_response(
        StatusCode::OK,
        page(Nav::Quarantine, "Quarantine", &body, None),
    )
}

/// `POST /quarantine/reprocess` (form `token=...`): reprocesses, then
/// sends the browser back to the quarantine page with the summary.
pub(super) async fn reprocess(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                Nav::Quarantine,
                "the form is too large",
            )
        }
    };
    let token = std::str::from_utf8(&body)
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(|t| percent_decode(t).ok());
    if !token.is_some_and(|t| state.admin_guard.form_token_matches(&t)) {
        return error_page(
            StatusCode::FORBIDDEN,
            Nav::Quarantine,
            "the form token is missing or stale: reload the quarantine page and try again",
        );
    }
    match crate::admin::reprocess_quarantine(state).await {
        Ok(summary) => {
            let counts = [
                summary.examined,
                summary.moved,
                summary.duplicates,
                summary.kept,
            ]
            .map(|n| n.to_string());
            let location = format!(
                "/quarantine?{}",
                query_string(
                    SUMMARY_KEYS
                        .iter()
                        .copied()
                        .zip(counts.iter().map(String::as_str))
                )
            );
            let mut response = html_response(
                StatusCode::SEE_OTHER,
                page(Nav::Quarantine, "Reprocessed", "<p>Reprocessed.</p>", None),
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, value);
            }
            response
        }
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, Nav::Quarantine, &e),
    }
}
