//! `auditsink simulate`: realistic, signed Konnect audit events as lines, for
//! testing a receiver (auditsink or another) and for the load benchmark.
//!
//! The events follow what Konnect sends (docs/KONNECT.md and the shared sample):
//! authentication, authorization and access events, org or Dev Portal, both
//! CEF prefix shapes, user agents with spaces, empty values, and JSON with
//! the types Kong's examples show (`rt` a string or a number, `cef_version`
//! a number or a string, `trace_id` a bare integer above 2^53, `success` the
//! string `"true"`, `granted` and `kong_initiated` booleans). Every random
//! choice is drawn from one ChaCha8 stream seeded by `--seed`, whatever the
//! output format, so one seed gives the same events as CEF, as JSON or
//! mixed: the renderings of event k normalize to the same fields.
//!
//! [`events`] draws the events, [`render`] writes and signs their lines;
//! this module is the command (keys, threads, output).

mod events;
mod render;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use auditsink_parser::signature::SigningKeyPair;
use time::OffsetDateTime;

use crate::keygen;
pub use events::uuid;
use events::{Generator, SimEvent};

#[derive(clap::Args)]
pub struct Args {
    /// Key directory as written by `auditsink keygen` (private.key and
    /// jwks.json). When it holds no key, one is generated there.
    #[arg(long)]
    jwks_dir: PathBuf,
    /// Number of events.
    #[arg(short = 'n', long = "count", default_value_t = 100)]
    count: u64,
    /// Line format: cef, json, or mixed (each event one or the other).
    #[arg(long, value_enum, default_value_t = OutputFormat::Cef)]
    format: OutputFormat,
    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Organization id of every event (default: derived from the seed).
    #[arg(long)]
    org: Option<String>,
    /// Dev Portal audit logs (product `Dev-Portal`, with `portal_id`)
    /// instead of org audit logs.
    #[arg(long)]
    portal: bool,
    /// Time of the first event, RFC 3339 (default 2025-11-25T19:46:40Z);
    /// each next event is 5 to 60 ms later.
    #[arg(long, value_parser = parse_rfc3339)]
    start: Option<OffsetDateTime>,
}

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// CEF with a syslog prefix (RFC 3164 or RFC 3339 time).
    Cef,
    /// One compact JSON object per line, keys sorted, `sig` last.
    Json,
    /// Each event CEF or JSON (a choice drawn from the seed).
    Mixed,
}

/// The seeded event stream for a live sender (`auditsink emulate
/// konnect`): the same events as `simulate`, each stamped with the time the
/// caller gives (Konnect's events carry the time they happened).
pub struct LiveEvents {
    generator: Generator,
}

impl LiveEvents {
    /// Events from `seed`; Dev Portal events (with `portal_id`) when `portal`.
    pub fn new(seed: u64, portal: Option<String>) -> LiveEvents {
        let portal_flag = portal.is_some();
        let mut generator = Generator::new(seed, 0, None, portal_flag);
        if let Some(id) = portal {
            generator.set_portal_id(id);
        }
        LiveEvents { generator }
    }

    /// The next event at `rt_ms` (ms since the epoch), signed with `pair`.
    pub fn next_line(
        &mut self,
        rt_ms: i64,
        pair: &SigningKeyPair,
        format: OutputFormat,
    ) -> anyhow::Result<String> {
        let mut event = self.generator.next_event();
        event.rt = rt_ms;
        event.render(pair, format)
    }
}

fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// 2025-11-25T19:46:40Z, the time of the shared sample.
const DEFAULT_START_MS: i64 = 1_764_100_000_000;

/// Events rendered and signed per round of worker threads.
const CHUNK: usize = 8192;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pair = load_or_create_key(&args.jwks_dir)?;
    let start_ms = args
        .start
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(DEFAULT_START_MS);
    let mut generator = Generator::new(args.seed, start_ms, args.org.clone(), args.portal);
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut remaining = args.count;
    while remaining > 0 {
        let take = remaining.min(CHUNK as u64) as usize;
        let events: Vec<SimEvent> = (0..take).map(|_| generator.next_event()).collect();
        remaining -= take as u64;
        let lines = render_all(&events, &pair, args.format, threads)?;
        for line in lines {
            match out
                .write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e).context("writing output"),
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.context("writing output").map(|_| ExitCode::SUCCESS),
    }
}

/// The key pair in `dir`, or a new one written there by `keygen` (said on
/// stderr).
fn load_or_create_key(dir: &Path) -> anyhow::Result<SigningKeyPair> {
    if let Some(pair) = keygen::load(dir)? {
        return Ok(pair);
    }
    let pair = keygen::create(dir)?;
    eprintln!(
        "auditsink simulate: no key in {}; generated one (kid {}): {} and {}",
        dir.display(),
        pair.kid(),
        keygen::private_path(dir).display(),
        keygen::jwks_path(dir).display()
    );
    Ok(pair)
}

/// Renders and signs `events` in order, on up to `threads` threads.
fn render_all(
    events: &[SimEvent],
    pair: &SigningKeyPair,
    format: OutputFormat,
    threads: usize,
) -> anyhow::Result<Vec<String>> {
    let per_thread = events.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = events
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|event| event.render(pair, format))
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut lines = Vec::with_capacity(events.len());
        for worker in workers {
            let part = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a rendering thread panicked"))??;
            lines.extend(part);
        }
        Ok(lines)
    })
}
