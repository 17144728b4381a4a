//! `GET /search?...`: the `/api/events` parameters (`since`, `until`,
//! `principal`, `trace`, `org`, `name`, `source`, `limit`, `after`) as a
//! form, so that a search can be bookmarked; the matching events as a
//! table in id order with cursor paging, how many match, a histogram of
//! them over time, and the same query as an NDJSON download.
//!
//! Everything is answered from the indexes as `query` does: the page reads
//! `limit + 1` events, the count and the histogram (one pass over the
//! postings) come from the indexes (with `source`, which has no index, they
//! are counted on the events, in one pass).

use std::fmt::Write;
use std::sync::Arc;

use auditsink_storage::{bar_index, format_ms, parse_time_bound, StoreError};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::cell;
use super::html::{bar_chart, esc, html_response, page, query_string, thousands, url_encode, Nav};
use crate::admin::{parse_query, percent_decode, Listing, Selection, MAX_QUERY_LIMIT};
use crate::state::{now_ms, AppState};

/// Rows on a page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 50;
/// Most rows on one page (the NDJSON download has no such limit).
const MAX_PAGE: usize = 1000;
/// Most events read to count and chart a `source` filter (it has no index:
/// about 7 µs each).
const MAX_SOURCE_SCAN: u64 = 100_000;
/// Most bars of the histogram.
const MAX_BARS: u64 = 48;

/// The filters a search form shows, in order: (parameter, label, hint).
const FILTERS: [(&str, &str, &str); 7] = [
    ("since", "Since", "2026-01-31, 24h, RFC 3339"),
    ("until", "Until", "exclusive"),
    ("principal", "Principal", "principal_id"),
    ("trace", "Trace", "trace_id"),
    ("org", "Org", "org_id"),
    ("name", "Name", "e.g. Authz.usage"),
    ("source", "Source", "configured source name"),
];

/// Time range presets: (label, `since`).
const PRESETS: [(&str, &str); 4] = [
    ("1 h", "1h"),
    ("24 h", "24h"),
    ("7 d", "7d"),
    ("30 d", "30d"),
];

pub(super) async fn render(state: Arc<AppState>, query_text: &str) -> Response<Full<Bytes>> {
    let params = match raw_params(query_text) {
        Ok(params) => params,
        Err(e) => return form_page(StatusCode::BAD_REQUEST, &[], &e, ""),
    };
    if params.iter().any(|(_, v)| v.is_empty()) {
        // The form sends its empty fields: go to the clean, bookmarkable URL.
        return redirect(&format!("/search?{}", with(&params, &[])));
    }
    let selection = match parse_query(query_text, Listing::Events, Some(DEFAULT_LIMIT)) {
        Ok(selection) => selection,
        Err(e) => return form_page(StatusCode::BAD_REQUEST, &params, &e, ""),
    };
    if selection.query.limit.unwrap_or(0) > MAX_PAGE {
        let e = format!("limit is at most {MAX_PAGE} on a page; the NDJSON download has them all");
        return form_page(StatusCode::BAD_REQUEST, &params, &e, "");
    }
    let read = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || results(&state, &selection))
    };
    match read.await {
        Ok(Ok(found)) => {
            let html = results_html(&params, &found);
            form_page(StatusCode::OK, &params, "", &html)
        }
        Ok(Err(e)) => form_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &params,
            &e.to_string(),
            "",
        ),
        Err(e) => form_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &params,
            &e.to_string(),
            "",
        ),
    }
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = html_response(
        StatusCode::SEE_OTHER,
        page(Nav::Search, "Search", "<p>Searching…</p>", None),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(location) {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, value);
    }
    response
}

/// The query string's pairs, decoded, in order (for the form and links).
fn raw_params(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((key.to_owned(), percent_decode(value)?))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The parameters with `changes` applied (an empty value removes one);
/// empty values dropped.
fn with(params: &[(String, String)], changes: &[(&str, &str)]) -> String {
    let mut kept: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !changes.iter().any(|(c, _)| c == k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    kept.extend(changes.iter().filter(|(_, v)| !v.is_empty()).copied());
    query_string(kept)
}

struct Found {
    rows: Vec<Value>,
    more: bool,
    total: Total,
    histogram: Option<Histogram>,
}

/// How many events match.
enum Total {
    Exactly(u64),
    /// With `source`, when the other filters select too many to read.
    AtMost(u64),
}

struct Histogram {
    start_ms: i64,
    bar_ms: i64,
    counts: Vec<u64>,
}

fn results(state: &AppState, selection: &Selection) -> Result<Found, StoreError> {
    let limit = selection.query.limit.unwrap_or(DEFAULT_LIMIT);
    let mut page = selection.clone();
    page.query.limit = Some(limit + 1);
    let mut rows = Vec::with_capacity(limit + 1);
    for row in page.events(&state.store)? {
        rows.push(row?.to_json());
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    // The count and histogram cover every match, not only this page.
    let mut all = selection.clone();
    all.query.after = None;
    all.query.limit = None;
    let (total, histogram) = if all.source.is_some() {
        let indexed = Selection {
            source: None,
            ..all.clone()
        }
        .count(&state.store)?;
        if indexed > MAX_SOURCE_SCAN {
            // Reading that many events for an unindexed filter would take
            // seconds: say how many the indexed filters select instead.
            return Ok(Found {
                rows,
                more,
                total: Total::AtMost(indexed),
                histogram: None,
            });
        }
        // One pass over the events: the bars cover every match.
        let histogram = histogram(state, &all)?;
        let total = histogram.as_ref().map_or(0, |h| h.counts.iter().sum());
        (total, histogram.filter(|_| total > 0))
    } else {
        let total = all.count(&state.store)?;
        (
            total,
            if total == 0 {
                None
            } else {
                histogram(state, &all)?
            },
        )
    };
    Ok(Found {
        rows,
        more,
        total: Total::Exactly(total),
        histogram,
    })
}

/// Bars over the query's time range, or (where it is open) the store's
/// whole span, so that they hold every match.
fn histogram(state: &AppState, all: &Selection) -> Result<Option<Histogram>, StoreError> {
    let Some((first, last)) = state.store.time_span()? else {
        return Ok(None);
    };
    let start = all
        .query
        .since_ms
        .unwrap_or(first.div_euclid(60_000) * 60_000);
    let end = all
        .query
        .until_ms
        .unwrap_or((last.div_euclid(60_000) + 1) * 60_000);
    if start >= end {
        return Ok(None);
    }
    let Some((bar_ms, bars)) = bar_layout(start, end) else {
        return Ok(None);
    };
    let mut counts = vec![0u64; bars];
    if all.source.is_some() {
        // No index on the source: place each match by its time.
        let now = now_ms();
        for row in all.events(&state.store)? {
            let row = row?;
            let time = row
                .event
                .timestamp
                .as_deref()
                .and_then(|t| parse_time_bound(t, now).ok())
                .unwrap_or(row.received_at_ms);
            if (start..end).contains(&time) {
                if let Some(count) = bar_index(time, start, bar_ms).and_then(|i| counts.get_mut(i))
                {
                    *count += 1;
                }
            }
        }
    } else {
        counts = state.store.count_by_time(&all.query, start, bar_ms, bars)?;
    }
    Ok(Some(Histogram {
        start_ms: start,
        bar_ms,
        counts,
    }))
}

/// Where bar `i` starts, clamped to `i64` (the bounds may be anywhere in it).
fn bar_start(h: &Histogram, i: usize) -> i64 {
    let start = i128::from(h.start_ms) + i128::from(h.bar_ms) * i as i128;
    i64::try_from(start).unwrap_or(i64::MAX)
}

/// Whole minutes per bar and the number of bars (at most `MAX_BARS`) for
/// `start..end`, `None` if the range is empty. The span is taken in `i128`:
/// `since` and `until` come from the URL and may be anywhere in `i64`.
fn bar_layout(start: i64, end: i64) -> Option<(i64, usize)> {
    let span = u128::try_from(i128::from(end) - i128::from(start))
        .ok()
        .filter(|&s| s > 0)?;
    let bar_ms = span.div_ceil(u128::from(MAX_BARS)).div_ceil(60_000) * 60_000;
    let bars = usize::try_from(span.div_ceil(bar_ms)).ok()?;
    Some((i64::try_from(bar_ms).ok()?, bars))
}

fn form_page(
    status: StatusCode,
    params: &[(String, String)],
    error: &str,
    results: &str,
) -> Response<Full<Bytes>> {
    let mut body =
        String::from("<h1>Search</h1><form class=\"search\" method=\"get\" action=\"/search\">");
    for (key, label, hint) in FILTERS {
        let _ = write!(
            body,
            "<label>{label}<input name=\"{key}\" value=\"{}\" placeholder=\"{}\"></label>",
            esc(param(params, key)),
            esc(hint)
        );
    }
    let limit = param(params, "limit");
    let _ = write!(
        body,
        "<label>Per page<input name=\"limit\" value=\"{}\" placeholder=\"{DEFAULT_LIMIT}\" inputmode=\"numeric\"></label>\
         <button type=\"submit\">Search</button></form><p class=\"presets\">Time range:",
        esc(limit)
    );
    for (label, since) in PRESETS {
        let _ = write!(
            body,
            " <a href=\"/search?{}\">{label}</a>",
            esc(&with(
                params,
                &[("since", since), ("until", ""), ("after", "")]
            ))
        );
    }
    let _ = write!(
        body,
        " <a href=\"/search?{}\">all</a></p>",
        esc(&with(
            params,
            &[("since", ""), ("until", ""), ("after", "")]
        ))
    );
    if !error.is_empty() {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(error));
    }
    body.push_str(results);
    html_response(status, page(Nav::Search, "Search", &body, None))
}

fn results_html(params: &[(String, String)], found: &Found) -> String {
    let mut out = String::new();
    let download = with(
        params,
        &[("after", ""), ("limit", &MAX_QUERY_LIMIT.to_string())],
    );
    let count = match found.total {
        Total::Exactly(n) => format!(
            "<span data-total=\"{n}\">{} matching event{}</span>",
            thousands(n),
            if n == 1 { "" } else { "s" }
        ),
        Total::AtMost(n) => format!(
            "<span data-total-at-most=\"{n}\">at most {} matching events</span> (the source is \
             checked on each event: narrow the other filters to {} or fewer for a count and a \
             histogram)",
            thousands(n),
            thousands(MAX_SOURCE_SCAN)
        ),
    };
    let _ = write!(
        out,
        "<p class=\"summary\">{count} · \
         <a href=\"/api/events?{}\" download=\"auditsink-events.ndjson\">download NDJSON</a></p>",
        esc(&download),
    );
    if let Some(h) = &found.histogram {
        let end = bar_start(h, h.counts.len());
        out.push_str(&bar_chart(
            &h.counts,
            (&format_ms(h.start_ms), &format_ms(end)),
            |max| format!("{} per {}", thousands(max), minutes(h.bar_ms)),
            |i, n| format!("{n} from {}", format_ms(bar_start(h, i))),
        ));
    }
    if found.rows.is_empty() {
        out.push_str("<p class=\"meta\">No events on this page.</p>");
    } else {
        out.push_str(
            "<table class=\"events\"><thead><tr><th>Time</th><th>Name</th><th>Principal</th>\
             <th>Action / outcome</th><th>Source IP</th><th>Signature</th><th>Source</th></tr></thead><tbody>",
        );
        for row in &found.rows {
            event_row(&mut out, row);
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<nav class=\"paging\">");
    if !param(params, "after").is_empty() {
        let _ = write!(
            out,
            "<a href=\"/search?{}\" rel=\"first\">First page</a>",
            esc(&with(params, &[("after", "")]))
        );
    }
    if let (true, Some(last)) = (found.more, found.rows.last()) {
        let _ = write!(
            out,
            "<a href=\"/search?{}\" rel=\"next\">Next page</a>",
            esc(&with(params, &[("after", &cell(&last["id"]))]))
        );
    }
    out.push_str("</nav>");
    out
}

fn event_row(out: &mut String, row: &Value) {
    let fields = &row["fields"];
    let time = match &row["timestamp"] {
        Value::Null => cell(&row["received_at"]),
        t => cell(t),
    };
    let id = cell(&row["id"]);
    let principal = cell(&fields["principal_id"]);
    let principal_link = if principal.is_empty() {
        String::new()
    } else {
        format!(
            "<a href=\"/search?principal={}\">{}</a>",
            esc(&url_encode(&principal)),
            esc(&principal)
        )
    };
    let signature = cell(&row["signature"]);
    let _ = write!(
        out,
        "<tr data-id=\"{id}\"><td class=\"nowrap\"><a href=\"/event/{id}\">{}</a></td><td>{}</td><td>{principal_link}</td>\
         <td>{}</td><td>{}</td><td><span class=\"sig sig-{sig}\">{sig}</span></td><td>{}</td></tr>",
        esc(&time),
        esc(&cell(&row["name"])),
        esc(&outcome(fields)),
        esc(&cell(&fields["src"])),
        esc(&cell(&row["source"])),
        id = esc(&id),
        sig = esc(&signature),
    );
}

/// A bar's width in words.
fn minutes(ms: i64) -> String {
    match ms / 60_000 {
        1 => "minute".to_owned(),
        m if m % 1440 == 0 => format!("{} d", m / 1440),
        m if m % 60 == 0 => format!("{} h", m / 60),
        m => format!("{m} min"),
    }
}

/// `action` and how it ended (`granted`, `success` or `status`).
pub(super) fn outcome(fields: &Value) -> String {
    let action = cell(&fields["action"]);
    let result = match (&fields["granted"], &fields["success"], &fields["status"]) {
        (Value::Bool(true), _, _) => "granted".to_owned(),
        (Value::Bool(false), _, _) => "denied".to_owned(),
        (_, Value::Bool(true), _) => "success".to_owned(),
        (_, Value::Bool(false), _) => "failure".to_owned(),
        (_, _, Value::Null) => String::new(),
        (_, _, status) => cell(status),
    };
    match (action.is_empty(), result.is_empty()) {
        (false, false) => format!("{action} · {result}"),
        (true, _) => result,
        (false, true) => action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_layout_takes_any_bounds_without_overflow() {
        assert_eq!(bar_layout(0, 0), None);
        assert_eq!(bar_layout(10, 0), None);
        assert_eq!(bar_layout(0, 60_000), Some((60_000, 1)));
        assert_eq!(bar_layout(0, 48 * 60_000 + 1), Some((120_000, 25)));
        for (start, end) in [
            (i64::MIN, i64::MAX),
            (-9_223_372_036_854_775_000, 1_700_000_000_000),
            (0, i64::MAX),
        ] {
            let (bar_ms, bars) = bar_layout(start, end).unwrap();
            assert!(
                bars as u64 <= MAX_BARS && bars > 0,
                "{start}..{end}: {bars}"
            );
            // The last event time still lands in a bar.
            let last = bar_index(end - 1, start, bar_ms).unwrap();
            assert!(last < bars, "{start}..{end}: bar {last} of {bars}");
            let h = Histogram {
                start_ms: start,
                bar_ms,
                counts: vec![0; bars],
            };
            assert!(bar_start(&h, bars) >= end - 1);
        }
    }
}
