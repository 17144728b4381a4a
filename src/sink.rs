//! `auditsink sink`: the forwarding sinks' cursors and parked events.
//!
//! - `list`: each sink's state, cursor, lag and counters (JSON lines);
//! - `parked NAME`: the events the destination refused for good, with why;
//! - `retry NAME`: sends the parked events again;
//! - `rewind NAME --since T`: sends again every event from time `T` on
//!   (after the SIEM lost an index, say).
//!
//! Through the running server's admin listener when it holds the store,
//! else on the store directly (the change applies at the next start).

use std::process::ExitCode;

use anyhow::Context;
use auditsink_storage::{format_id, parse_time_bound};
use serde_json::{json, Value};

use crate::query::{access, resolve, Access};
use crate::StoreLocation;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Each sink's state, cursor, lag and counters, one JSON object a line.
    List(Location),
    /// The events a sink's destination refused for good, with why (JSON lines).
    Parked(Named),
    /// Send a sink's parked events again.
    Retry(Named),
    /// Send again every event whose time is T or later.
    Rewind(RewindArgs),
}

#[derive(clap::Args)]
pub struct Location {
    #[command(flatten)]
    location: StoreLocation,
}

#[derive(clap::Args)]
pub struct Named {
    /// The sink's name.
    name: String,
    #[command(flatten)]
    location: StoreLocation,
}

#[derive(clap::Args)]
pub struct RewindArgs {
    /// The sink's name.
    name: String,
    /// RFC 3339 time, a date, or a duration back from now (`2h`, `7d`).
    #[arg(long)]
    since: String,
    #[command(flatten)]
    location: StoreLocation,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List(args) => list(&args.location),
        Command::Parked(args) => parked(&args),
        Command::Retry(args) => retry(&args),
        Command::Rewind(args) => rewind(&args),
    }
}

fn via_admin(addr: std::net::SocketAddr, post: bool, path: &str) -> anyhow::Result<Value> {
    let runtime = crate::admin_stream::runtime()?;
    let body = runtime
        .block_on(async {
            if post {
                crate::admin_stream::post(addr, path).await
            } else {
                crate::admin_stream::get(addr, path).await
            }
        })
        .context("the store is in use by a running server, and its admin listener did not answer as expected")?;
    serde_json::from_slice(&body).context("malformed answer from the admin listener")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_lines(values: &[Value]) {
    for value in values {
        println!("{value}");
    }
}

fn list(location: &StoreLocation) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(location)?;
    match access(&data_dir, &config)? {
        Access::Direct(store) => {
            for (name, state) in store.sink_states()? {
                let kind = config
                    .sinks
                    .iter()
                    .find(|s| s.name == name)
                    .map_or("unconfigured", |s| s.kind.as_str());
                let lag = store.sink_lag(state.cursor, 100_000)?;
                println!(
                    "{}",
                    json!({
                        "name": name, "type": kind, "state": "stopped",
                        "cursor": state.cursor, "lag_events": lag.events,
                        "lag_events_capped": lag.capped,
                        "delivered": state.delivered, "resent": state.resent,
                        "parked": store.sink_parked_count(&name)?,
                    })
                );
            }
        }
        Access::Admin(addr) => {
            let answer = via_admin(addr, false, "/api/sinks")?;
            print_lines(answer["sinks"].as_array().map(Vec::as_slice).unwrap_or(&[]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parked(args: &Named) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    match access(&data_dir, &config)? {
        Access::Direct(store) => {
            let parked = store.sink_parked(
                &args.name,
                auditsink_server::sinks::admin::MAX_PARKED_LISTED,
            )?;
            let rows: Vec<Value> = parked
                .iter()
                .map(auditsink_server::sinks::admin::parked_json)
                .collect();
            print_lines(&rows);
        }
        Access::Admin(addr) => {
            let answer = via_admin(
                addr,
                false,
                &format!("/api/sinks/parked?name={}", encode(&args.name)),
            )?;
            print_lines(answer.as_array().map(Vec::as_slice).unwrap_or(&[]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn retry(args: &Named) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    let answer = match access(&data_dir, &config)? {
        Access::Direct(store) => {
            json!({ "sink": args.name, "marked": store.sink_retry(&args.name)? })
        }
        Access::Admin(addr) => via_admin(
            addr,
            true,
            &format!("/api/sinks/retry?name={}", encode(&args.name)),
        )?,
    };
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}

fn rewind(args: &RewindArgs) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let since_ms =
        parse_time_bound(&args.since, now_ms).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let (config, data_dir) = resolve(&args.location)?;
    let answer = match access(&data_dir, &config)? {
        Access::Direct(store) => {
            auditsink_server::sinks::admin::rewind(&store, &args.name, since_ms)
                .map_err(|e| anyhow::anyhow!(e))?
        }
        Access::Admin(addr) => via_admin(
            addr,
            true,
            &format!(
                "/api/sinks/rewind?name={}&since={}",
                encode(&args.name),
                encode(&auditsink_storage::format_ms(since_ms))
            ),
        )?,
    };
    let cursor = answer["cursor"].as_u64().map(format_id);
    println!("{answer}");
    if let Some(cursor) = cursor {
        eprintln!("sink {:?} resends every event after {cursor}", args.name);
    }
    Ok(ExitCode::SUCCESS)
}
