//! `auditsink check`: verifies the store (stopped server only): every event
//! decodes and has its dedupe entry and index entries, no dedupe or index
//! entry points at a missing or different event, the counters agree. With
//! `--repair`, rebuilds the dedupe entries and indexes from the events (the
//! events are the truth; nothing is deleted) and checks again.
//!
//! Exit status: 0 when the store is consistent (after the repair, with
//! `--repair`), 1 when problems remain, 2 when the store cannot be read.

use std::process::ExitCode;

use anyhow::Context;
use auditsink_storage::{CheckReport, Store, StoreError, StoreOptions};

use crate::query::{existing_store, resolve};
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: StoreLocation,
    /// Rebuild the dedupe entries and indexes from the events when problems
    /// are found.
    #[arg(long)]
    repair: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (_, data_dir) = resolve(&args.location)?;
    let dir = existing_store(&data_dir)?;
    // Verify-on-open off: report what is on disk rather than repair it silently.
    let options = StoreOptions {
        verify_on_open: 0,
        ..StoreOptions::default()
    };
    let store = match Store::open_with(&dir, options) {
        Ok(store) => store,
        Err(e @ StoreError::Locked { .. }) => {
            return Err(e).context("check needs the store to itself: stop `auditsink serve` first")
        }
        Err(e) => return Err(e).with_context(|| format!("opening the store in {}", dir.display())),
    };
    let mut report = store.check().context("checking the store")?;
    let mut repaired = None;
    if args.repair && !report.is_ok() {
        repaired = Some(store.rebuild_indexes().context("rebuilding the indexes")?);
        report = store
            .check()
            .context("checking the store after the repair")?;
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["store"] = dir.display().to_string().into();
        value["ok"] = report.is_ok().into();
        if let Some(rebuilt) = &repaired {
            value["repair"] = serde_json::to_value(rebuilt)?;
        }
        println!("{value}");
    } else {
        print_report(
            &dir,
            &report,
            repaired.as_ref(),
            store.open_report().rebuilt,
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(
    dir: &std::path::Path,
    report: &CheckReport,
    repaired: Option<&auditsink_storage::RebuildSummary>,
    resumed_rebuild: bool,
) {
    println!("store: {}", dir.display());
    println!("events: {}", report.events);
    println!("quarantined: {}", report.quarantine);
    println!("dedupe entries: {}", report.dedupe_entries);
    let indexes: Vec<String> = report
        .index_entries
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!(
        "index entries: {} (in {} postings)",
        indexes.join(", "),
        report.postings
    );
    if resumed_rebuild {
        println!("an interrupted index rebuild was finished on open");
    }
    if let Some(rebuilt) = repaired {
        println!(
            "repair: dedupe entries and indexes rebuilt from {} events ({} entries replaced, {} undecodable events, {} events sharing an identity)",
            rebuilt.events, rebuilt.removed_entries, rebuilt.corrupt_events, rebuilt.duplicate_events
        );
    }
    if report.is_ok() {
        println!("OK: no problems found");
    } else {
        println!("{} problem(s):", report.problem_count);
        for problem in &report.problems {
            println!("  - {problem}");
        }
        if report.problem_count as usize > report.problems.len() {
            println!(
                "  ... and {} more",
                report.problem_count as usize - report.problems.len()
            );
        }
        if repaired.is_none() {
            println!("run `auditsink check --repair` to rebuild the dedupe entries and indexes from the events");
        }
    }
}
