//! `auditsink quarantine`: the lines that could not be read as events.
//!
//! - `list`: the quarantined entries as NDJSON (`id`, `received_at`,
//!   `source`, `reason`, `raw`; `raw_bytes` when the bytes are not UTF-8).
//! - `reprocess`: reads every quarantined line again with the current
//!   parser and each source's configuration (format; keys and policy when it
//!   checks signatures); what is now an event moves into the events (with its
//!   original receive time and source), the rest stays.
//!
//! Both read the store directly when no server holds it, else go through the
//! running server's admin listener.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auditsink_parser::signature::KeySet;
use auditsink_parser::{Format, ParseOptions};
use auditsink_server::config::SignaturePolicy;
use auditsink_server::Config;
use auditsink_storage::{format_id, parse_id, Reparse};

use crate::query::{access, resolve, write_line, Access};
use crate::StoreLocation;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print quarantined entries as NDJSON, in arrival order.
    List(ListArgs),
    /// Read quarantined lines again; move what now parses into the events.
    Reprocess(ReprocessArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    location: StoreLocation,
    /// Print at most N entries (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Only entries with an id greater than this.
    #[arg(long)]
    after: Option<String>,
}

#[derive(clap::Args)]
pub struct ReprocessArgs {
    #[command(flatten)]
    location: StoreLocation,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List(args) => list(args),
        Command::Reprocess(args) => reprocess(args),
    }
}

/// Entries fetched per admin request when paging through a running server.
const PAGE: usize = 100_000;

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    let mut after = match &args.after {
        Some(text) => {
            Some(parse_id(text).ok_or_else(|| anyhow::anyhow!("--after: {text:?} is not an id"))?)
        }
        None => None,
    };
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    match access(&data_dir, &config)? {
        Access::Direct(store) => {
            for entry in store.quarantine(after).take(limit) {
                let entry = entry.context("reading the store")?;
                if !write_line(&mut out, entry.to_json().to_string().as_bytes())? {
                    break;
                }
            }
        }
        Access::Admin(addr) => {
            let runtime = crate::admin_stream::runtime()?;
            let mut remaining = limit;
            let mut open = true;
            while remaining > 0 && open {
                let page = remaining.min(PAGE);
                let mut path = format!("/api/quarantine?limit={page}");
                if let Some(id) = after {
                    path.push_str(&format!("&after={}", format_id(id)));
                }
                let mut got = 0;
                runtime.block_on(crate::admin_stream::lines(addr, &path, |line| {
                    let value: serde_json::Value = serde_json::from_slice(line)
                        .context("the admin listener returned a malformed row")?;
                    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
                        anyhow::bail!("the running server could not read its store: {error}");
                    }
                    after = value["id"].as_str().and_then(parse_id);
                    got += 1;
                    open = write_line(&mut out, line)?;
                    Ok(open)
                }))?;
                remaining -= got;
                if got < page {
                    break;
                }
            }
        }
    }
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}

fn reprocess(args: ReprocessArgs) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    let summary = match access(&data_dir, &config)? {
        Access::Direct(store) => {
            let sources = reparse_settings(&config, &data_dir)?;
            let year = time::OffsetDateTime::now_utc().year();
            let fallback = Reparse {
                options: ParseOptions {
                    format: Format::Auto,
                    year_hint: year,
                },
                keys: None,
                enforce: false,
            };
            let summary = store.reprocess_quarantine(&|source| {
                sources
                    .get(source)
                    .cloned()
                    .unwrap_or_else(|| fallback.clone())
            })?;
            serde_json::to_value(summary)?
        }
        Access::Admin(addr) => {
            let runtime = crate::admin_stream::runtime()?;
            let body = runtime
                .block_on(crate::admin_stream::post(addr, "/api/quarantine/reprocess"))
                .context("the store is in use by a running server, and its admin listener did not answer")?;
            serde_json::from_slice(&body).context("malformed answer")?
        }
    };
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// How each configured source's lines are read: its format, and its keys
/// and policy when it checks signatures (keys loaded as `serve` loads them;
/// if they cannot be loaded, nothing is reprocessed rather than moving
/// unverified lines of a source that enforces signatures).
fn reparse_settings(
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<HashMap<String, Reparse>> {
    let year = time::OffsetDateTime::now_utc().year();
    let runtime = crate::admin_stream::runtime()?;
    let mut out = HashMap::new();
    for source in &config.sources {
        let policy = source.signature_policy();
        let keys: Option<Arc<KeySet>> = match (&source.jwks, policy) {
            (Some(setting), SignaturePolicy::Tag | SignaturePolicy::Enforce) => {
                let jwks = auditsink_server::keys::JwksSource::from_setting(
                    setting,
                    source.jwks_ca.clone(),
                    data_dir,
                    &source.name,
                    Duration::from_secs(source.jwks_refresh_secs),
                );
                let loaded = runtime
                    .block_on(jwks.load())
                    .with_context(|| format!("loading the keys of source {:?}", source.name))?;
                Some(loaded.get())
            }
            _ => None,
        };
        out.insert(
            source.name.clone(),
            Reparse {
                options: ParseOptions {
                    format: source.format,
                    year_hint: year,
                },
                enforce: keys.is_some() && policy == SignaturePolicy::Enforce,
                keys,
            },
        );
    }
    Ok(out)
}
