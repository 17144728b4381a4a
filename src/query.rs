//! `auditsink query`: stored events, filtered by event time, principal,
//! trace, organisation and name, as NDJSON, a table or CEF lines. Reads the
//! store directly when no server holds it, else asks the running server's
//! admin listener (same filters, same answer).

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use auditsink_server::Config;
use auditsink_storage::{format_id, parse_id, parse_time_bound, Query, Store, StoreError};
use serde_json::Value;

use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: StoreLocation,
    #[command(flatten)]
    filter: Filter,
    /// Output: json (one event per line, as docs/EVENT_SCHEMA.md), table (for
    /// people) or cef (the raw line of CEF events; JSON events rendered as CEF).
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
    /// Print at most N events (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Print only the number of matching events (answered from the indexes).
    #[arg(long)]
    count: bool,
}

/// Which events: every filter given must match. Times are on the event
/// time (`timestamp`, or `received_at` for events without one); `--since`
/// is inclusive, `--until` exclusive. Output is in arrival (id) order.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Filter {
    /// Event time at or after: RFC 3339 (2025-11-25T19:46:40Z), a UTC date
    /// (2025-11-25), an age (90s, 15m, 24h, 7d, 2w) or ms since the epoch.
    #[arg(long)]
    since: Option<String>,
    /// Event time before (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// `fields.principal_id` equals this.
    #[arg(long)]
    principal: Option<String>,
    /// `fields.trace_id` equals this.
    #[arg(long)]
    trace: Option<String>,
    /// `fields.org_id` equals this.
    #[arg(long)]
    org: Option<String>,
    /// The event `name` equals this (e.g. Authz.usage).
    #[arg(long)]
    name: Option<String>,
    /// Only events with an id greater than this (to resume an export).
    #[arg(long)]
    after: Option<String>,
}

impl Filter {
    /// The store query, with ages resolved against the clock now.
    pub fn to_query(&self, limit: Option<usize>) -> anyhow::Result<Query> {
        let now = now_ms();
        let bound = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
            text.as_deref()
                .map(|t| parse_time_bound(t, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        let after = match &self.after {
            Some(text) => Some(
                parse_id(text)
                    .ok_or_else(|| anyhow::anyhow!("--after: {text:?} is not an event id"))?,
            ),
            None => None,
        };
        let since_ms = bound(&self.since, "--since")?;
        let until_ms = bound(&self.until, "--until")?;
        if let (Some(since), Some(until)) = (since_ms, until_ms) {
            check_window(since, until)?;
        }
        Ok(Query {
            since_ms,
            until_ms,
            principal: self.principal.clone(),
            trace: self.trace.clone(),
            org: self.org.clone(),
            name: self.name.clone(),
            after,
            limit,
        })
    }
}

/// A time window must end after it starts: a reversed one is a mistake,
/// not a window without events.
pub(crate) fn check_window(since_ms: i64, until_ms: i64) -> anyhow::Result<()> {
    if since_ms >= until_ms {
        let show = |ms: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| format!("{ms} ms"))
        };
        bail!(
            "the time window is empty: --since ({}) is not before --until ({})",
            show(since_ms),
            show(until_ms)
        );
    }
    Ok(())
}

/// The admin listener's query string for `query` (times as epoch ms, so the
/// client's clock decides what `24h` means).
fn admin_params(query: &Query) -> String {
    let mut params = Vec::new();
    let mut add = |key: &str, value: String| params.push(format!("{key}={}", encode(&value)));
    if let Some(v) = query.since_ms {
        add("since", v.to_string());
    }
    if let Some(v) = query.until_ms {
        add("until", v.to_string());
    }
    for (key, value) in [
        ("principal", &query.principal),
        ("trace", &query.trace),
        ("org", &query.org),
        ("name", &query.name),
    ] {
        if let Some(v) = value {
            add(key, v.clone());
        }
    }
    if let Some(after) = query.after {
        add("after", format_id(after));
    }
    params.join("&")
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Aligned columns for people.
    Table,
    /// CEF lines.
    Cef,
}

/// Rows fetched per admin request when paging through a running server.
const PAGE: usize = 1_000_000;

/// The configuration and data directory a command works on.
pub(crate) fn resolve(location: &StoreLocation) -> anyhow::Result<(Config, PathBuf)> {
    let config = match &location.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let data_dir = location.data_dir.clone().unwrap_or(config.data_dir.clone());
    Ok((config, data_dir))
}

/// Where the store is, open or held by a running server.
pub(crate) enum Access {
    Direct(Store),
    Admin(SocketAddr),
}

/// The store directory of `data_dir`; an error (creating nothing) when there
/// is none, so that a mistyped `--data-dir` is not read as an empty store.
pub(crate) fn existing_store(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("store");
    if !dir.is_dir() {
        bail!(
            "no store in {}: that data directory has never been served \
             (give the server's --data-dir, or its --config to use its data_dir)",
            data_dir.display()
        );
    }
    Ok(dir)
}

/// Opens the store, or finds the running server that holds it.
pub(crate) fn access(data_dir: &Path, config: &Config) -> anyhow::Result<Access> {
    match Store::open(&existing_store(data_dir)?) {
        Ok(store) => Ok(Access::Direct(store)),
        Err(StoreError::Locked { .. }) => Ok(Access::Admin(running_admin_addr(data_dir, config))),
        Err(e) => Err(e).with_context(|| format!("opening the store in {}", data_dir.display())),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    let query = args.filter.to_query(args.limit)?;
    let access = access(&data_dir, &config)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.count {
        let n = match &access {
            Access::Direct(store) => store.count(&query)?,
            Access::Admin(addr) => count_via_admin(*addr, &query)?,
        };
        writeln!(out, "{n}").context("writing output")?;
        out.flush().ok();
        return Ok(ExitCode::SUCCESS);
    }
    let mut printer = Printer::new(args.format);
    select(&access, &query, &mut |row| printer.print(&mut out, row))?;
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}

/// A selected event, as the store hands it out or as the admin sent it.
pub(crate) enum Row<'a> {
    Event(Box<auditsink_storage::StoredEvent>),
    Json(&'a [u8]),
}

impl Row<'_> {
    /// The row as JSON (parsed, for an admin row).
    pub(crate) fn value(&self) -> anyhow::Result<Value> {
        match self {
            Row::Event(event) => Ok(event.to_json()),
            Row::Json(line) => {
                serde_json::from_slice(line).context("the admin listener returned a malformed row")
            }
        }
    }

    /// The row as one NDJSON line (without the newline).
    pub(crate) fn json_line(&self) -> Vec<u8> {
        match self {
            Row::Event(event) => event.to_json().to_string().into_bytes(),
            Row::Json(line) => line.to_vec(),
        }
    }
}

/// The string under `key` of a row's JSON.
pub(crate) fn row_text<'v>(row: &'v Value, key: &str) -> anyhow::Result<&'v str> {
    row.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("an admin row without {key:?}"))
}

/// Feeds every event `query` selects to `each` (in id order), directly or
/// through the admin listener; stops when `each` returns false. Returns
/// how many rows were handed over and the last id.
pub(crate) fn select(
    access: &Access,
    query: &Query,
    each: &mut dyn FnMut(Row<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<(u64, Option<String>)> {
    let mut rows = 0u64;
    let mut last_id: Option<String> = None;
    match access {
        Access::Direct(store) => {
            for event in store.query(query)? {
                let event = event.context("reading the store")?;
                last_id = Some(format_id(event.id));
                rows += 1;
                if !each(Row::Event(Box::new(event)))? {
                    break;
                }
            }
        }
        Access::Admin(addr) => {
            let runtime = crate::admin_stream::runtime()?;
            let mut remaining = query.limit.unwrap_or(usize::MAX);
            let mut page_query = query.clone();
            let mut stopped = false;
            while remaining > 0 && !stopped {
                let page = remaining.min(PAGE);
                let path = format!("/api/events?limit={page}&{}", admin_params(&page_query));
                let mut got = 0usize;
                runtime
                    .block_on(crate::admin_stream::lines(*addr, &path, |line| {
                        let id = row_id(line)?;
                        got += 1;
                        rows += 1;
                        last_id = Some(id);
                        let more = each(Row::Json(line))?;
                        stopped = !more;
                        Ok(more)
                    }))
                    .context(
                        "the store is in use by a running server, and its admin listener did not answer",
                    )?;
                remaining -= got;
                if got < page {
                    break;
                }
                page_query.after = last_id.as_deref().and_then(parse_id);
            }
        }
    }
    Ok((rows, last_id))
}

/// The id of an admin row; an `{"error": ...}` row (a store error after the
/// answer began) is an error.
fn row_id(line: &[u8]) -> anyhow::Result<String> {
    let value: Value =
        serde_json::from_slice(line).context("the admin listener returned a malformed row")?;
    match (value.get("id").and_then(Value::as_str), value.get("error")) {
        (Some(id), _) => Ok(id.to_owned()),
        (None, Some(error)) => bail!("the running server could not read its store: {error}"),
        (None, None) => bail!("the admin listener returned a row without an id"),
    }
}

pub(crate) fn count_via_admin(addr: SocketAddr, query: &Query) -> anyhow::Result<u64> {
    let runtime = crate::admin_stream::runtime()?;
    let mut path = format!("/api/events/count?{}", admin_params(query));
    if let Some(limit) = query.limit {
        path.push_str(&format!("&limit={limit}"));
    }
    let body = runtime.block_on(crate::admin_stream::get(addr, &path))?;
    let value: Value = serde_json::from_slice(&body).context("malformed count")?;
    value["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("malformed count: {value}"))
}

/// Writes rows in the chosen format.
pub(crate) struct Printer {
    format: OutputFormat,
    header_done: bool,
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Printer {
        Printer {
            format,
            header_done: false,
        }
    }

    /// Prints a row; false when the reader went away (`| head`).
    pub(crate) fn print(&mut self, out: &mut impl Write, row: Row<'_>) -> anyhow::Result<bool> {
        let line = match self.format {
            OutputFormat::Json => row.json_line(),
            OutputFormat::Table => {
                let mut text = String::new();
                if !self.header_done {
                    self.header_done = true;
                    text.push_str(&table_row(&[
                        "ID",
                        "TIME",
                        "SOURCE",
                        "NAME",
                        "PRINCIPAL",
                        "DETAIL",
                    ]));
                    text.push('\n');
                }
                text.push_str(&table_line(&row.value()?));
                text.into_bytes()
            }
            OutputFormat::Cef => cef_line(&row.value()?).into_bytes(),
        };
        write_line(out, &line)
    }
}

fn table_row(cells: &[&str; 6]) -> String {
    format!(
        "{:<16}  {:<24}  {:<12}  {:<28}  {:<36}  {}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn table_line(event: &Value) -> String {
    let time = match &event["timestamp"] {
        Value::Null => format!("({})", text(&event["received_at"])),
        t => text(t),
    };
    let fields = &event["fields"];
    let detail: Vec<String> = [
        "action", "granted", "success", "act", "status", "request", "src",
    ]
    .iter()
    .filter_map(|key| fields.get(*key).map(|v| format!("{key}={}", text(v))))
    .collect();
    table_row(&[
        &text(&event["id"]),
        &time,
        &text(&event["source"]),
        &text(&event["name"]),
        &text(&fields["principal_id"]),
        &detail.join(" "),
    ])
}

/// CEF events: their raw line, exactly as received (the evidence, and what
/// their signature covers). JSON events: rendered as a CEF line from the
/// normalized event, with the CEF escapes (no `sig`: it signs the JSON line).
fn cef_line(event: &Value) -> String {
    if event["format"] == "cef" {
        return text(&event["raw"]);
    }
    let header = |v: &Value| text(v).replace('\\', "\\\\").replace('|', "\\|");
    let mut line = format!(
        "CEF:{}|{}|{}|{}|{}|{}|{}|",
        event["cef_version"].as_i64().unwrap_or(0),
        header(&event["vendor"]),
        header(&event["product"]),
        header(&event["product_version"]),
        header(&event["event_class_id"]),
        header(&event["name"]),
        header(&event["severity"]),
    );
    let mut first = true;
    if let Some(fields) = event["fields"].as_object() {
        for (key, value) in fields {
            if !first {
                line.push(' ');
            }
            first = false;
            let value = text(value)
                .replace('\\', "\\\\")
                .replace('=', "\\=")
                .replace('\n', "\\n")
                .replace('\r', "\\r");
            line.push_str(key);
            line.push('=');
            line.push_str(&value);
        }
    }
    line
}

/// The admin address the running server recorded, else the configured one.
pub(crate) fn running_admin_addr(data_dir: &std::path::Path, config: &Config) -> SocketAddr {
    crate::admin_stream::authorize_with(config);
    std::fs::read_to_string(auditsink_server::admin_addr_file(data_dir))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(config.admin.listen)
}

/// Writes one line; false when the reader went away (`| head`).
pub(crate) fn write_line(out: &mut impl Write, line: &[u8]) -> anyhow::Result<bool> {
    match out.write_all(line).and_then(|_| out.write_all(b"\n")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_events_render_as_escaped_cef() {
        let event = json!({
            "format": "json", "cef_version": 0, "vendor": "Kong|Inc", "product": "Konnect",
            "product_version": "1.0", "event_class_id": "identity", "name": "Authz.x",
            "severity": 1,
            "fields": {"a": "x=y\\z", "n": 5, "b": true, "q": {"k": "v"}, "m": "l1\nl2"},
            "raw": "{...}"
        });
        assert_eq!(
            cef_line(&event),
            "CEF:0|Kong\\|Inc|Konnect|1.0|identity|Authz.x|1|a=x\\=y\\\\z n=5 b=true q={\"k\":\"v\"} m=l1\\nl2"
        );
        let cef = json!({"format": "cef", "raw": "Apr 14 host CEF:0|a|b|c|d|e|1|k=v"});
        assert_eq!(cef_line(&cef), "Apr 14 host CEF:0|a|b|c|d|e|1|k=v");
    }

    #[test]
    fn admin_params_are_encoded() {
        let query = Query {
            since_ms: Some(5),
            name: Some("Authz usage&x=1".into()),
            after: Some(255),
            ..Query::default()
        };
        assert_eq!(
            admin_params(&query),
            "since=5&name=Authz%20usage%26x%3D1&after=00000000000000ff"
        );
    }
}
