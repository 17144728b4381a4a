//! `auditsink replay`: resend the stored events of a time window to another
//! receiver, as a Konnect replay job would (a replay job in your own hands).
//!
//! Each event is resent as its `raw` line, byte for byte, so its signature
//! still verifies at the other end, and a receiver that deduplicates (as
//! auditsink does) counts what it already had. The window is on the event
//! time as `auditsink query` has it (`timestamp`, else `received_at`):
//! `--since` inclusive, `--until` exclusive. Events go out in arrival order.
//! The store is read directly (through its time index) when no server holds
//! it, else page by page through the running server's admin listener
//! (`/api/events`), filtered here.

use std::process::ExitCode;
use std::sync::mpsc::{sync_channel, SyncSender};

use anyhow::Context;
use auditsink_server::Config;
use auditsink_storage::{Query, Store, StoreError};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::send::deliver::Lines;
use crate::send::DeliveryArgs;
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    /// Start of the window (RFC 3339, inclusive), on the event time.
    #[arg(long, value_parser = parse_time)]
    since: OffsetDateTime,
    /// End of the window (RFC 3339, exclusive). Default: now.
    #[arg(long, value_parser = parse_time)]
    until: Option<OffsetDateTime>,
    /// Only events received by this configured source (its `name`).
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    location: StoreLocation,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

fn epoch_ms(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Which stored events are replayed.
#[derive(Clone)]
struct Window {
    since_ms: i64,
    until_ms: i64,
    source: Option<String>,
}

impl Window {
    /// Whether an admin row (a stored event as JSON) is in the window.
    fn contains_row(&self, row: &Value) -> bool {
        let source = row.get("source").and_then(Value::as_str).unwrap_or("");
        if self.source.as_deref().is_some_and(|s| s != source) {
            return false;
        }
        let time = match row.get("timestamp").and_then(Value::as_str) {
            Some(t) => Some(t),
            None => row.get("received_at").and_then(Value::as_str),
        };
        time.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(epoch_ms)
            .is_some_and(|ms| self.since_ms <= ms && ms < self.until_ms)
    }
}

/// Lines waiting between the store reader and the sender.
const QUEUE: usize = 10_000;
/// Rows per admin request.
const PAGE: usize = 10_000;

type Sink = SyncSender<anyhow::Result<Vec<u8>>>;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let window = Window {
        since_ms: epoch_ms(args.since),
        until_ms: epoch_ms(args.until.unwrap_or_else(OffsetDateTime::now_utc)),
        source: args.source.clone(),
    };
    anyhow::ensure!(
        window.since_ms < window.until_ms,
        "--since must be before --until"
    );
    let config = match &args.location.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let data_dir = args
        .location
        .data_dir
        .clone()
        .unwrap_or(config.data_dir.clone());
    // Checked before reading anything: a bad URL or CA file is reported now.
    args.delivery.options(false)?;
    let (tx, rx) = sync_channel::<anyhow::Result<Vec<u8>>>(QUEUE);
    let reader = match Store::open(&data_dir.join("store")) {
        Ok(store) => {
            eprintln!(
                "auditsink replay: reading the store in {}",
                data_dir.display()
            );
            std::thread::spawn(move || from_store(&store, &window, &tx))
        }
        Err(StoreError::Locked { .. }) => {
            let addr = std::fs::read_to_string(auditsink_server::admin_addr_file(&data_dir))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(config.admin.listen);
            eprintln!(
                "auditsink replay: the store is in use; reading it through the admin listener at {addr}"
            );
            std::thread::spawn(move || {
                if let Err(e) = from_admin(addr, &window, &tx) {
                    let _ = tx.send(Err(e));
                }
            })
        }
        Err(e) => {
            return Err(e).with_context(|| format!("opening the store in {}", data_dir.display()))
        }
    };
    let lines: Lines = Box::new(rx.into_iter());
    let code = args.delivery.deliver(lines, false);
    let _ = reader.join();
    code
}

/// Sends the raw lines of the stored events in `window`.
fn from_store(store: &Store, window: &Window, tx: &Sink) {
    let query = Query {
        since_ms: Some(window.since_ms),
        until_ms: Some(window.until_ms),
        ..Query::default()
    };
    let events = match store.query(&query) {
        Ok(events) => events,
        Err(e) => {
            let _ = tx.send(Err(anyhow::Error::new(e).context("querying the store")));
            return;
        }
    };
    for event in events {
        let item = match event {
            Ok(stored) => {
                if window.source.as_deref().is_some_and(|s| s != stored.source) {
                    continue;
                }
                Ok(stored.event.raw.into_bytes())
            }
            Err(e) => Err(anyhow::Error::new(e).context("reading the store")),
        };
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

/// Pages through the running server's `/api/events` and sends the raw lines
/// of the events in `window`.
fn from_admin(addr: std::net::SocketAddr, window: &Window, tx: &Sink) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/api/events?limit={PAGE}");
        if let Some(id) = &after {
            path.push_str(&format!("&after={id}"));
        }
        let body = runtime
            .block_on(crate::admin_client::get(addr, &path))
            .context(
                "the store is in use by a running server, and its admin listener did not answer",
            )?;
        let mut rows = 0;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            rows += 1;
            let row: Value = serde_json::from_slice(line)
                .context("the admin listener returned a malformed row")?;
            after = row.get("id").and_then(Value::as_str).map(str::to_owned);
            if !window.contains_row(&row) {
                continue;
            }
            let raw = row
                .get("raw")
                .and_then(Value::as_str)
                .context("an admin row has no raw line")?;
            if tx.send(Ok(raw.as_bytes().to_vec())).is_err() {
                return Ok(());
            }
        }
        if rows < PAGE || after.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn window_is_half_open_on_event_time_else_received_at() {
        let ms = |t: &str| epoch_ms(parse_time(t).unwrap());
        let window = Window {
            since_ms: ms("2025-11-25T19:46:40Z"),
            until_ms: ms("2025-11-25T19:46:41Z"),
            source: None,
        };
        let row = |t: &str| json!({"timestamp": t, "source": "a"});
        assert!(window.contains_row(&row("2025-11-25T19:46:40.000Z")));
        assert!(window.contains_row(&row("2025-11-25T19:46:40.999Z")));
        assert!(!window.contains_row(&row("2025-11-25T19:46:41.000Z")));
        assert!(!window.contains_row(&row("2025-11-25T19:46:39.999Z")));
        let untimed =
            json!({"timestamp": null, "received_at": "2025-11-25T19:46:40.5Z", "source": "a"});
        assert!(window.contains_row(&untimed));
        let only_b = Window {
            source: Some("b".into()),
            ..window
        };
        assert!(!only_b.contains_row(&row("2025-11-25T19:46:40.5Z")));
        assert!(only_b.contains_row(&json!({"timestamp": "2025-11-25T19:46:40.5Z", "source": "b"})));
    }
}
