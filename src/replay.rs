//! `auditsink replay`: resend the stored events of a time window to another
//! receiver, as a Konnect replay job would (a replay job in your own hands).
//!
//! Each event is resent as its `raw` line, byte for byte, so its signature
//! still verifies at the other end, and a receiver that deduplicates (as
//! auditsink does) counts what it already had. The window is on the event
//! time as `auditsink query` has it (`timestamp`, else `received_at`):
//! `--since` inclusive, `--until` exclusive. Events go out in arrival order.
//! The events are selected exactly as `auditsink query --since --until`
//! selects them: from the store directly when no server holds it, else page
//! by page through the running server's admin listener.

use std::process::ExitCode;
use std::sync::mpsc::sync_channel;

use auditsink_storage::{parse_time_bound, Query};

use crate::query::{
    access, check_window, count_via_admin, now_ms, resolve, row_text, select, Access, Row,
};
use crate::send::{DeliveryArgs, Lines, Total};
use crate::StoreLocation;

#[derive(clap::Args)]
#[command(after_help = crate::send::RETRY_AND_EXIT)]
pub struct Args {
    /// Start of the window, inclusive: RFC 3339 (2025-11-25T19:46:40Z), a
    /// UTC date (2025-11-25), an age (90s, 15m, 24h, 7d) or ms since the epoch.
    #[arg(long, value_name = "TIME")]
    since: String,
    /// End of the window, exclusive (same forms as --since). Default: now.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only events received by this configured source (its `name`).
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    location: StoreLocation,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// Stored lines waiting between the store reader and the sender.
const QUEUE: usize = 10_000;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    let since_ms =
        parse_time_bound(&args.since, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until_ms = match &args.until {
        Some(text) => parse_time_bound(text, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?,
        None => now,
    };
    check_window(since_ms, until_ms)?;
    let query = Query {
        since_ms: Some(since_ms),
        until_ms: Some(until_ms),
        ..Query::default()
    };
    // Checked before reading anything: a bad URL or CA file is reported now.
    args.delivery.options(false)?;
    let (config, data_dir) = resolve(&args.location)?;
    let access = access(&data_dir, &config)?;
    match &access {
        Access::Direct(_) => eprintln!(
            "auditsink replay: reading the store in {}",
            data_dir.display()
        ),
        Access::Admin(addr) => eprintln!(
            "auditsink replay: the store is in use; reading it through the admin listener at {addr}"
        ),
    }
    // The number of events, for the progress (answered from the indexes);
    // not known beforehand for one source of several.
    let total = match (&access, &args.source) {
        (_, Some(_)) => None,
        (Access::Direct(store), None) => store.count(&query).ok(),
        (Access::Admin(addr), None) => count_via_admin(*addr, &query).ok(),
    };
    let (tx, rx) = sync_channel::<anyhow::Result<Vec<u8>>>(QUEUE);
    let source = args.source.clone();
    let reader = std::thread::spawn(move || {
        let result = select(&access, &query, &mut |row| {
            let Some(raw) = raw_line(&row, source.as_deref())? else {
                return Ok(true);
            };
            // The sender stopped (--duration): stop reading.
            Ok(tx.send(Ok(raw)).is_ok())
        });
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });
    let lines: Lines = Box::new(rx.into_iter());
    let code = args
        .delivery
        .deliver(lines, false, total.map(Total::Events));
    let _ = reader.join();
    code
}

/// The raw line of a selected event, or `None` when it came through
/// another source than `only_source`.
fn raw_line(row: &Row<'_>, only_source: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    let (source, raw) = match row {
        Row::Event(stored) => (stored.source.clone(), stored.event.raw.clone()),
        Row::Json(_) => {
            let value = row.value()?;
            let raw = row_text(&value, "raw")?.to_owned();
            (
                row_text(&value, "source").unwrap_or_default().to_owned(),
                raw,
            )
        }
    };
    if only_source.is_some_and(|wanted| wanted != source) {
        return Ok(None);
    }
    Ok(Some(raw.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_rows_give_their_raw_line_filtered_by_source() {
        let line = br#"{"id":"1","source":"eu","raw":"CEF:0|a|b|c|d|e|1|x=y sig=abc"}"#;
        let row = Row::Json(line);
        let raw = b"CEF:0|a|b|c|d|e|1|x=y sig=abc".to_vec();
        assert_eq!(raw_line(&row, None).unwrap(), Some(raw.clone()));
        assert_eq!(raw_line(&row, Some("eu")).unwrap(), Some(raw));
        assert_eq!(raw_line(&row, Some("us")).unwrap(), None);
        assert!(raw_line(&Row::Json(br#"{"id":"1"}"#), None).is_err());
    }
}
