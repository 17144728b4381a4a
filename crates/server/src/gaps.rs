//! The receiver's record of what it may have missed (the store's
//! [`auditsink_storage::Gaps`]): each non-200 answer of a source, the
//! receiver's runs kept up to date while it serves, and `GET /api/gaps` on
//! the admin listener, which `auditsink konnect replay --gaps` reads.

use std::sync::Arc;
use std::time::Duration;

use auditsink_storage::{format_ms, parse_time_bound};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::response::{error_response, json_response};
use crate::state::{now_ms, AppState};

/// How often a running receiver records that it is alive: a receiver that
/// was killed was down from at most this long after its last record.
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);

/// Old entries are pruned this often (and at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Records a non-200 answer of `source` (a failure to record is logged:
/// the answer itself is what matters).
pub fn record_answer(state: &AppState, source: &str, at_ms: i64, status: u16) {
    if let Err(e) = state
        .store
        .gaps()
        .and_then(|gaps| gaps.record_answer(source, at_ms, status))
    {
        tracing::warn!(source, status, error = %e, "cannot record the answer for replay --gaps");
    }
}

/// Records the event times of lines of `source` whose signature failed (a
/// failure to record is logged, as for answers).
pub fn record_signature_failures(state: &AppState, source: &str, event_times_ms: &[i64]) {
    if let Err(e) = state
        .store
        .gaps()
        .and_then(|gaps| gaps.record_signature_failures(source, event_times_ms, now_ms()))
    {
        tracing::warn!(source, error = %e, "cannot record signature failures for replay --gaps");
    }
}

/// Records this run from start to `stop`: started now, alive every
/// [`ALIVE_EVERY`], stopped cleanly when `stop` changes.
pub async fn keep_run(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // The handle is taken anew for each record: one held across a reopening
    // of the store (after a failed write) would keep the old database open.
    let gaps = || state.store.gaps();
    let started = match gaps().and_then(|gaps| gaps.start_run(now_ms())) {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record this run for replay --gaps");
            return;
        }
    };
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if last_prune.map_or(true, |at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            if let Ok(gaps) = gaps() {
                let _ = tokio::task::spawn_blocking(move || gaps.prune(now_ms())).await;
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(ALIVE_EVERY) => {}
        }
        if let Err(e) = gaps().and_then(|gaps| gaps.alive(started, now_ms())) {
            tracing::warn!(error = %e, "cannot record that the receiver is alive");
        }
    }
    if let Err(e) = gaps().and_then(|gaps| gaps.stopped(started, now_ms())) {
        tracing::warn!(error = %e, "cannot record the end of this run");
    }
}

/// `GET /api/gaps?since=T` (default 7 days back): the non-200 answers per
/// source and second, the receiver's runs, and the signature failures per
/// source and event second, as one JSON object.
pub async fn answer(state: Arc<AppState>, query: &str) -> Response<Full<Bytes>> {
    let now = now_ms();
    let mut since = now - 7 * 86_400_000;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", value)) => match parse_time_bound(value, now) {
                Ok(ms) => since = ms,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
            },
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter {pair:?}"),
                )
            }
        }
    }
    let result = tokio::task::spawn_blocking(move || {
        let gaps = state.store.gaps()?;
        Ok::<_, auditsink_storage::StoreError>((
            gaps.answers(since)?,
            gaps.runs(since)?,
            gaps.signature_failures(since)?,
        ))
    })
    .await;
    let (answers, runs, signature_failures) = match result {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let answers: Vec<Value> = answers
        .iter()
        .map(|a| {
            json!({
                "source": a.source,
                "at": format_ms(a.second_ms),
                "at_ms": a.second_ms,
                "statuses": a.statuses.iter()
                    .map(|(status, count)| json!({"status": status, "count": count}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "started_at": format_ms(r.started_ms),
                "started_ms": r.started_ms,
                "alive_at": format_ms(r.alive_ms),
                "alive_ms": r.alive_ms,
                "stopped": r.stopped,
            })
        })
        .collect();
    let signature_failures: Vec<Value> = signature_failures
        .iter()
        .map(|f| {
            json!({
                "source": f.source,
                "at": format_ms(f.second_ms),
                "at_ms": f.second_ms,
                "count": f.count,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "since": format_ms(since),
            "answers": answers,
            "runs": runs,
            "signature_failures": signature_failures,
        }),
    )
}
