//! The windows `replay --gaps` asks Konnect to replay, from the receiver's
//! record (`GET /api/gaps`): around every second in which a source answered
//! anything but 200, over every time the receiver was not running
//! (between one run's last sign of life and the next run's start: even a
//! short restart, as Konnect may have dropped a batch then), and over every
//! second of event time in which lines arrived whose signature did not
//! verify (altered on the way, or signed by a key the receiver lacked: the
//! replay resends Konnect's own lines). A window around an answer or a
//! downtime starts `margin` early, since a batch holds events from before
//! it was sent; a signature failure's second is already event time.
//! Overlapping windows are merged.

use serde_json::Value;

/// A time window, ms since the epoch: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The windows of `record` (the admin answer), for `source` (all when
/// `None`), each at least `margin_ms` before what it covers, merged,
/// within `[oldest_ms, now_ms]`.
pub fn windows(
    record: &Value,
    source: Option<&str>,
    margin_ms: i64,
    oldest_ms: i64,
    now_ms: i64,
) -> Vec<Window> {
    let mut raw = Vec::new();
    for answer in record
        .get("answers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let wanted = source.map_or(true, |s| {
            answer.get("source").and_then(Value::as_str) == Some(s)
        });
        if let (true, Some(at)) = (wanted, answer.get("at_ms").and_then(Value::as_i64)) {
            raw.push(Window {
                start_ms: at - margin_ms,
                end_ms: at + 1000,
            });
        }
    }
    for failure in record
        .get("signature_failures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let wanted = source.map_or(true, |s| {
            failure.get("source").and_then(Value::as_str) == Some(s)
        });
        if let (true, Some(at)) = (wanted, failure.get("at_ms").and_then(Value::as_i64)) {
            raw.push(Window {
                start_ms: at,
                end_ms: at + 1000,
            });
        }
    }
    let runs: Vec<(i64, i64)> = record
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|run| {
            Some((
                run.get("started_ms")?.as_i64()?,
                run.get("alive_ms")?.as_i64()?,
            ))
        })
        .collect();
    for pair in runs.windows(2) {
        let (_, last_alive) = pair[0];
        let (next_start, _) = pair[1];
        if next_start > last_alive {
            raw.push(Window {
                start_ms: last_alive - margin_ms,
                end_ms: next_start + 1000,
            });
        }
    }
    merge(raw, oldest_ms, now_ms)
}

/// Clamps to `[oldest, now]`, drops empty windows, merges overlapping ones.
fn merge(mut raw: Vec<Window>, oldest_ms: i64, now_ms: i64) -> Vec<Window> {
    for window in &mut raw {
        window.start_ms = window.start_ms.max(oldest_ms);
        window.end_ms = window.end_ms.min(now_ms);
    }
    raw.retain(|w| w.start_ms < w.end_ms);
    raw.sort_by_key(|w| w.start_ms);
    let mut out: Vec<Window> = Vec::new();
    for window in raw {
        match out.last_mut() {
            Some(last) if window.start_ms <= last.end_ms => {
                last.end_ms = last.end_ms.max(window.end_ms)
            }
            _ => out.push(window),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_and_downtimes_become_merged_windows() {
        let record = json!({
            "answers": [
                {"source": "us", "at_ms": 100_000},
                {"source": "us", "at_ms": 101_000},
                {"source": "eu", "at_ms": 500_000},
            ],
            "runs": [
                {"started_ms": 0, "alive_ms": 200_000},
                {"started_ms": 260_000, "alive_ms": 300_000},
                {"started_ms": 302_000, "alive_ms": 900_000},
            ],
        });
        let w = |start_ms, end_ms| Window { start_ms, end_ms };
        let all = windows(&record, None, 10_000, 0, 1_000_000);
        assert_eq!(
            all,
            vec![
                w(90_000, 102_000),
                w(190_000, 261_000),
                w(290_000, 303_000),
                w(490_000, 501_000)
            ]
        );
        let us = windows(&record, Some("us"), 10_000, 95_000, 1_000_000);
        assert_eq!(us[0], w(95_000, 102_000));
        assert_eq!(us.len(), 3, "downtimes concern every source");
        let merged = windows(&record, None, 200_000, 0, 1_000_000);
        assert_eq!(merged, vec![w(0, 501_000)]);
        assert!(windows(&json!({}), None, 1, 0, 10).is_empty());
        // A signature failure's second is event time: no margin before it.
        let signed = json!({
            "signature_failures": [
                {"source": "us", "at_ms": 700_000, "count": 3},
                {"source": "eu", "at_ms": 800_000, "count": 1},
            ],
        });
        assert_eq!(
            windows(&signed, Some("us"), 10_000, 0, 1_000_000),
            vec![w(700_000, 701_000)]
        );
        assert_eq!(windows(&signed, None, 10_000, 0, 1_000_000).len(), 2);
    }
}
