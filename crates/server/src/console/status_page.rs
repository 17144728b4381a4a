//! `GET /`: a card per source, Konnect's way of telling whether deliveries
//! arrive (active / failing / inactive), with its counters and events per
//! minute over the last 24 hours; then the store. Reloads itself.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use auditsink_storage::format_ms;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

use super::html::{bar_chart, esc, html_response, page, thousands, Nav};
use crate::state::{now_ms, AppState, Source};
use crate::status::CHART_MINUTES;

/// Minutes per bar of the events chart.
const BAR_MINUTES: usize = 10;
/// Seconds between reloads of the page.
const REFRESH_SECS: u32 = 10;

pub(super) async fn render(state: Arc<AppState>, started: Instant) -> Response<Full<Bytes>> {
    // The store's size walks its files: off the async workers.
    let body = tokio::task::spawn_blocking(move || body(&state, started)).await;
    match body {
        Ok(body) => html_response(
            StatusCode::OK,
            page(Nav::Status, "Status", &body, Some(REFRESH_SECS)),
        ),
        Err(e) => super::html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Nav::Status,
            &e.to_string(),
        ),
    }
}

fn body(state: &AppState, started: Instant) -> String {
    let now = now_ms();
    let mut out = format!(
        "<h1>Status</h1><p class=\"meta\">auditsink {} · up {} · as of {}</p><section class=\"cards\">",
        env!("CARGO_PKG_VERSION"),
        duration(started.elapsed().as_secs()),
        esc(&format_ms(now)),
    );
    for source in &state.sources {
        source_card(&mut out, state, source, now);
    }
    out.push_str("</section>");
    sinks_card(&mut out, state, now);
    store_card(&mut out, state);
    out
}

/// The forwarding sinks, when any is configured: state, cursor, lag,
/// counters and the last error.
fn sinks_card(out: &mut String, state: &AppState, now: i64) {
    let sinks = state.sinks.status(now);
    if sinks.is_empty() {
        return;
    }
    out.push_str(
        "<section class=\"card sinks\"><h2>Sinks</h2><table><thead><tr><th>sink</th><th>state</th>\
         <th>cursor</th><th>lag</th><th>delivered</th><th>resent</th><th>parked</th>\
         <th>last success</th><th>last error</th></tr></thead><tbody>",
    );
    for sink in &sinks {
        let text = |key: &str| sink[key].as_str().unwrap_or("").to_owned();
        let number = |key: &str| thousands(sink[key].as_u64().unwrap_or(0));
        let state_name = text("state");
        let badge = match state_name.as_str() {
            "healthy" => "active",
            "retrying" => "inactive",
            _ => "failing",
        };
        let _ = write!(
            out,
            "<tr data-sink=\"{name}\"><td>{name} <span class=\"meta\">{kind}</span></td>\
             <td><span class=\"badge badge-{badge}\" data-badge=\"{state}\">{state}</span></td>\
             <td>{cursor}</td><td>{lag} events, {lag_secs} s</td><td>{delivered}</td><td>{resent}</td>\
             <td>{parked}</td><td>{success}</td><td>{error}</td></tr>",
            name = esc(&text("name")),
            kind = esc(&text("type")),
            state = esc(&state_name),
            cursor = sink["cursor"].as_u64().unwrap_or(0),
            lag = number("lag_events"),
            lag_secs = sink["lag_seconds"].as_i64().unwrap_or(0),
            delivered = number("delivered"),
            resent = number("resent"),
            parked = number("parked"),
            success = esc(&sink["last_success_at"].as_str().map_or("never".to_owned(), str::to_owned)),
            error = esc(&text("last_error")),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn source_card(out: &mut String, state: &AppState, source: &Source, now: i64) {
    let snap = source.status.snapshot();
    let badge = snap.webhook_status(now, state.inactive_after);
    let _ = write!(
        out,
        "<article class=\"card source\" data-source=\"{name}\"><h2>{name} \
         <span class=\"badge badge-{badge}\" data-badge=\"{badge}\">{badge}</span></h2>\
         <p class=\"meta\"><code>{path}</code> · {format}</p><dl>",
        name = esc(&source.name),
        path = esc(&source.path),
        format = esc(&source.format.to_string()),
    );
    let last_attempt = snap.last_attempt_ms.map_or("never".to_owned(), format_ms);
    let last_code = snap
        .last_response_code
        .map_or("–".to_owned(), |c| c.to_string());
    for (key, label, value) in [
        (
            "last_attempt_at",
            "last attempt",
            esc(&last_attempt).to_string(),
        ),
        ("last_response_code", "last response", last_code),
        ("requests", "requests", thousands(snap.requests)),
        (
            "accepted_requests",
            "accepted",
            thousands(snap.accepted_requests),
        ),
        ("events_stored", "stored", thousands(snap.events_stored)),
        ("duplicates", "duplicates", thousands(snap.duplicates)),
        ("quarantined", "quarantined", thousands(snap.quarantined)),
    ] {
        let _ = write!(out, "<dt>{label}</dt><dd data-key=\"{key}\">{value}</dd>");
    }
    out.push_str("</dl><h3>Rejections</h3>");
    if snap.rejected.is_empty() {
        out.push_str("<p class=\"meta\">none</p>");
    } else {
        out.push_str("<dl class=\"rejections\">");
        for (reason, n) in &snap.rejected {
            let _ = write!(
                out,
                "<dt>{}</dt><dd data-key=\"rejected.{}\">{}</dd>",
                esc(reason),
                esc(reason),
                thousands(*n)
            );
        }
        out.push_str("</dl>");
    }
    // Ten-minute bars: a minute's bar would be a fraction of a pixel wide.
    let per_minute = source.status.per_minute(now);
    let bars: Vec<u64> = per_minute
        .chunks(BAR_MINUTES)
        .map(|c| c.iter().sum())
        .collect();
    let total: u64 = bars.iter().sum();
    let _ = write!(
        out,
        "<h3>Events stored per minute, last 24 h <span class=\"meta\">({} in all since start)</span></h3>",
        thousands(total)
    );
    let first_minute = now.div_euclid(60_000) - CHART_MINUTES as i64 + 1;
    let per_min = |n: u64| format!("{:.1}/min", n as f64 / BAR_MINUTES as f64);
    out.push_str(&bar_chart(&bars, ("24 h ago", "now"), per_min, |i, n| {
        let from = (first_minute + (i * BAR_MINUTES) as i64) * 60_000;
        format!(
            "{n} in the {BAR_MINUTES} min from {} ({})",
            format_ms(from),
            per_min(n)
        )
    }));
    out.push_str("</article>");
}

fn store_card(out: &mut String, state: &AppState) {
    let stats = state.store.stats();
    let open = state.store.open_report();
    let _ = write!(
        out,
        "<section class=\"card store\"><h2>Store</h2><dl>\
         <dt>path</dt><dd><code>{}</code></dd>\
         <dt>events</dt><dd data-key=\"store.events\">{}</dd>\
         <dt>quarantined</dt><dd data-key=\"store.quarantine\"><a href=\"/quarantine\">{}</a></dd>\
         <dt>size on disk</dt><dd>{}</dd>\
         <dt>retention</dt><dd>{}</dd>\
         <dt>last retention run</dt><dd>{}</dd>\
         <dt>commits</dt><dd>{} batches in {} flushes</dd>\
         <dt>opening check</dt><dd>{} events verified{}</dd></dl>",
        esc(&state.store.path().display().to_string()),
        thousands(stats.events),
        thousands(stats.quarantine),
        stats.size_on_disk_bytes.map_or("unknown".to_owned(), bytes),
        stats
            .retention_days
            .map_or("forever".to_owned(), |d| format!("{d} days")),
        stats
            .retention_last_run_ms
            .map_or("never".to_owned(), format_ms),
        thousands(stats.batches),
        thousands(stats.flushes),
        thousands(open.verified_events),
        if open.problems.is_empty() {
            String::new()
        } else {
            format!(
                ", {} problem(s){}",
                open.problems.len(),
                if open.rebuilt {
                    ", indexes rebuilt"
                } else {
                    ""
                }
            )
        },
    );
    out.push_str("</section>");
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
