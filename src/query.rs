//! `auditsink query`: stored events as NDJSON. Reads the store directly when
//! no server holds it, else asks the running server's admin listener.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use auditsink_server::Config;
use auditsink_storage::{Store, StoreError};

use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: StoreLocation,
    /// Print at most N events (default: all).
    #[arg(long)]
    limit: Option<usize>,
}

/// Rows fetched per admin request when paging through a running server.
const PAGE: usize = 10_000;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.location.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let data_dir = args
        .location
        .data_dir
        .clone()
        .unwrap_or(config.data_dir.clone());
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    match Store::open(&data_dir.join("store")) {
        Ok(store) => {
            for event in store.events(None).take(limit) {
                let event = event?;
                if !write_line(&mut out, event.to_json().to_string().as_bytes())? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Err(StoreError::Locked { .. }) => {
            via_admin(running_admin_addr(&data_dir, &config), limit, &mut out)?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("opening the store in {}", data_dir.display()))
        }
    }
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}

/// The admin address the running server recorded, else the configured one.
fn running_admin_addr(data_dir: &std::path::Path, config: &Config) -> std::net::SocketAddr {
    std::fs::read_to_string(auditsink_server::admin_addr_file(data_dir))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(config.admin.listen)
}

/// Pages through `/api/events` of the running server.
fn via_admin(addr: std::net::SocketAddr, limit: usize, out: &mut impl Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut after: Option<String> = None;
    let mut remaining = limit;
    while remaining > 0 {
        let page = remaining.min(PAGE);
        let mut path = format!("/api/events?limit={page}");
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
            let value: serde_json::Value =
                serde_json::from_slice(line).context("admin returned a malformed row")?;
            after = value
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned);
            if !write_line(out, line)? {
                return Ok(());
            }
            rows += 1;
        }
        remaining -= rows;
        if rows < page {
            break;
        }
    }
    Ok(())
}

/// Writes one line; false when the reader went away (`| head`).
fn write_line(out: &mut impl Write, line: &[u8]) -> anyhow::Result<bool> {
    match out.write_all(line).and_then(|_| out.write_all(b"\n")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}
