//! `auditsink konnect replay`: asks Konnect to replay a time window (one
//! job at a time, at most 7 days back), follows the job to `completed` or
//! `failed`, then says what the receiver got meanwhile: events, new ones
//! and duplicates (the source's counters before and after; live
//! deliveries during the job count too), and how many stored events the
//! window now holds. `--gaps` does this for every window the receiver
//! recorded a failure or a downtime in, one after another.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use auditsink_storage::{format_ms, parse_time_bound};
use hyper::Method;
use serde_json::{json, Value};

use super::api::{detail, success, Api};
use super::gaps::{windows, Window};
use super::receiver::Receiver;
use super::Scope;
use crate::query::now_ms;
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    /// Start of the window: RFC 3339, a UTC date, an age (90s, 15m, 24h,
    /// 7d) or ms since the epoch; at most 7 days ago.
    #[arg(
        long,
        value_name = "TIME",
        required_unless_present = "gaps",
        conflicts_with = "gaps"
    )]
    since: Option<String>,
    /// End of the window (same forms). Default: now.
    #[arg(long, value_name = "TIME", conflicts_with = "gaps")]
    until: Option<String>,
    /// Replay every window in which this receiver answered anything but
    /// 200, or was not running (its record, kept in the store).
    #[arg(long)]
    gaps: bool,
    /// With --gaps: how far before a failure a window starts (a batch
    /// holds events from before it was sent), in seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    margin: u64,
    /// The source (its `name`) whose counters are reported, and with
    /// --gaps whose failures count (default: the only one).
    #[arg(long)]
    source: Option<String>,
    /// A Dev Portal's audit logs instead of the org's.
    #[arg(long, value_name = "PORTAL_ID")]
    portal: Option<String>,
    /// Give up waiting for a job after this many seconds.
    #[arg(long, default_value_t = 3600, value_name = "S")]
    wait: u64,
    /// Milliseconds between two looks at the job.
    #[arg(long, default_value_t = 2000, hide = true)]
    poll_ms: u64,
    #[command(flatten)]
    location: StoreLocation,
}

/// Konnect replays at most this far back.
const HORIZON_MS: i64 = 7 * 86_400_000;

pub fn run(api: &Api, args: Args) -> anyhow::Result<ExitCode> {
    let scope = Scope::new(args.portal.as_deref())?;
    let receiver = Receiver::open(&args.location, args.source.as_deref())?;
    let admin = receiver.require_admin()?;
    let now = now_ms();
    let jobs = if args.gaps {
        let record = receiver.admin_json(admin, "/api/gaps?since=7d")?;
        // A minute inside the horizon, so that the window is still in it
        // when Konnect checks.
        let oldest = now - HORIZON_MS + 60_000;
        let found = windows(
            &record,
            args.source.as_deref(),
            args.margin as i64 * 1000,
            oldest,
            now,
        );
        if found.is_empty() {
            println!("no gaps: source {:?} answered every request it got with 200, and the receiver was not down, in the last 7 days", receiver.source);
            return Ok(ExitCode::SUCCESS);
        }
        println!("{} window(s) to replay:", found.len());
        for w in &found {
            println!("  {} .. {}", format_ms(w.start_ms), format_ms(w.end_ms));
        }
        found
    } else {
        let since = args.since.as_deref().unwrap_or_default();
        let start_ms = parse_time_bound(since, now).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        let end_ms = match &args.until {
            Some(text) => {
                parse_time_bound(text, now).map_err(|e| anyhow::anyhow!("--until: {e}"))?
            }
            None => now,
        };
        if start_ms < now - HORIZON_MS {
            bail!(
                "--since {} is more than 7 days ago: Konnect keeps audit logs 7 days and \
                 replays nothing older",
                format_ms(start_ms)
            );
        }
        if end_ms <= start_ms {
            bail!("--until must be after --since");
        }
        vec![Window { start_ms, end_ms }]
    };
    let mut failed = 0;
    for window in jobs {
        if !replay_window(api, &scope, &receiver, admin, window, &args)? {
            failed += 1;
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn counter(status: &Value, key: &str) -> u64 {
    status.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// One job; true when it completed.
fn replay_window(
    api: &Api,
    scope: &Scope,
    receiver: &Receiver,
    admin: std::net::SocketAddr,
    window: Window,
    args: &Args,
) -> anyhow::Result<bool> {
    let before = receiver.status(admin)?;
    let path = scope.replay_path();
    let body = json!({
        "start_at": format_ms(window.start_ms),
        "end_at": format_ms(window.end_ms),
    });
    let reply = api.call(Method::PUT, &path, Some(&body))?;
    match reply.status {
        200..=299 => {}
        409 => bail!(
            "Konnect is still running another replay job (409: {}); wait for it and try again",
            detail(&reply.body)
        ),
        _ => {
            success(&format!("PUT {path}"), reply)?;
        }
    }
    eprintln!(
        "replay job for {} .. {}: accepted",
        format_ms(window.start_ms),
        format_ms(window.end_ms)
    );
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut last = "accepted".to_owned();
    let status = loop {
        std::thread::sleep(Duration::from_millis(args.poll_ms.max(10)));
        let job = api.expect(Method::GET, &path, None)?;
        let status = job
            .get("status")
            .and_then(Value::as_str)
            .context("Konnect's replay job has no status")?
            .to_owned();
        if status != last {
            eprintln!("replay job: {status}");
            last.clone_from(&status);
        }
        if status == "completed" || status == "failed" {
            break status;
        }
        if Instant::now() > deadline {
            bail!(
                "the replay job is still {status} after {} s (--wait); it goes on in Konnect",
                args.wait
            );
        }
    };
    let after = receiver.status(admin)?;
    let stored = counter(&after, "events_stored").saturating_sub(counter(&before, "events_stored"));
    let duplicates = counter(&after, "duplicates").saturating_sub(counter(&before, "duplicates"));
    let since = format_ms(window.start_ms);
    let until = format_ms(window.end_ms);
    let held = receiver.admin_json(
        admin,
        &format!("/api/events/count?since={since}&until={until}"),
    )?;
    println!(
        "replay {since} .. {until}: {status}; source {:?} got {} events meanwhile: {stored} new, \
         {duplicates} duplicates; the window now holds {} stored events",
        receiver.source,
        stored + duplicates,
        counter(&held, "count"),
    );
    Ok(status == "completed")
}
