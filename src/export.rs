//! `auditsink export`: the events of a time window (and any other `query`
//! filter) as NDJSON, for moving them to a SIEM or an archive. Same rows as
//! `auditsink query --format json`, without a limit, and a summary on stderr
//! with the last id, so the next export can resume with `--after`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::query::{access, resolve, select, write_line, Filter};
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: StoreLocation,
    #[command(flatten)]
    filter: Filter,
    /// Write to this file (created or truncated, synced at the end) instead
    /// of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, data_dir) = resolve(&args.location)?;
    let query = args.filter.to_query(None)?;
    let access = access(&data_dir, &config)?;
    let file = match &args.output {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => None,
    };
    let sink: Box<dyn Write> = match &file {
        Some(file) => Box::new(file.try_clone()?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let mut complete = true;
    let (rows, last_id) = select(&access, &query, &mut |row| {
        let more = write_line(&mut out, &row.json_line())?;
        complete &= more;
        Ok(more)
    })?;
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => complete = false,
        other => other.context("writing output")?,
    }
    drop(out);
    if let (Some(file), Some(path)) = (&file, &args.output) {
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    match (&last_id, complete) {
        (Some(id), true) => eprintln!(
            "auditsink export: {rows} events; last id {id} (the next export can resume with --after {id})"
        ),
        (Some(id), false) => eprintln!(
            "auditsink export: the output was closed; stopped at id {id}"
        ),
        (None, _) => eprintln!("auditsink export: no events matched"),
    }
    Ok(ExitCode::SUCCESS)
}
