//! `GET /event/<id>`: one stored event: where and when it was received,
//! its signature state, its normalized fields and the raw line, with links
//! that search by its principal or trace.

use std::fmt::Write;
use std::sync::Arc;

use auditsink_storage::parse_id;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::cell;
use super::html::{error_page, esc, html_response, page, url_encode, Nav};
use crate::state::AppState;

pub(super) async fn render(state: Arc<AppState>, id_text: &str) -> Response<Full<Bytes>> {
    let Some(id) = parse_id(id_text) else {
        return error_page(StatusCode::NOT_FOUND, Nav::Search, "not an event id");
    };
    match tokio::task::spawn_blocking(move || state.store.event(id)).await {
        Ok(Ok(Some(event))) => {
            let row = event.to_json();
            html_response(
                StatusCode::OK,
                page(Nav::Search, "Event", &body(&row), None),
            )
        }
        Ok(Ok(None)) => error_page(StatusCode::NOT_FOUND, Nav::Search, "no event with this id"),
        Ok(Err(e)) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Nav::Search,
            &e.to_string(),
        ),
        Err(e) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Nav::Search,
            &e.to_string(),
        ),
    }
}

/// Keys shown in the summary, in order; the rest of the event follows.
const SUMMARY: [&str; 12] = [
    "id",
    "received_at",
    "source",
    "timestamp",
    "name",
    "signature",
    "format",
    "vendor",
    "product",
    "product_version",
    "event_class_id",
    "severity",
];

fn body(row: &Value) -> String {
    let fields = &row["fields"];
    let mut out = format!(
        "<h1>Event <code>{}</code></h1><p class=\"links\">",
        esc(&cell(&row["id"]))
    );
    for (key, label) in [("principal_id", "principal"), ("trace_id", "trace")] {
        let value = cell(&fields[key]);
        if !value.is_empty() {
            let _ = write!(
                out,
                "<a href=\"/search?{label}={}\">Events of this {label}</a> ",
                esc(&url_encode(&value))
            );
        }
    }
    out.push_str("</p><dl class=\"event\">");
    for key in SUMMARY {
        let value = &row[key];
        if value.is_null() {
            continue;
        }
        let text = cell(value);
        let shown = if key == "signature" {
            format!("<span class=\"sig sig-{0}\">{0}</span>", esc(&text))
        } else {
            esc(&text).to_string()
        };
        let _ = write!(out, "<dt>{key}</dt><dd data-key=\"{key}\">{shown}</dd>");
    }
    for key in ["origin", "sig", "warnings"] {
        if !row[key].is_null() {
            let _ = write!(
                out,
                "<dt>{key}</dt><dd data-key=\"{key}\"><code>{}</code></dd>",
                esc(&cell(&row[key]))
            );
        }
    }
    out.push_str("</dl><h2>Fields</h2><table class=\"fields\"><tbody>");
    if let Value::Object(map) = fields {
        for (key, value) in map {
            let _ = write!(
                out,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(key),
                esc(&cell(value))
            );
        }
    }
    let _ = write!(
        out,
        "</tbody></table><h2>Raw line</h2><pre class=\"raw\" data-key=\"raw\">{}</pre>",
        esc(&cell(&row["raw"]))
    );
    out
}
