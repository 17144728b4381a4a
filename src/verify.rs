//! `auditsink verify`: check Konnect signatures offline, on lines from a file
//! or stdin, or on the events already in the store (while the server runs
//! too, through its admin listener).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditsink_parser::signature::KeySet;
use auditsink_parser::{LineFormat, SignatureStatus};
use auditsink_storage::{format_id, Query};

use crate::query::{access, resolve, row_text, select, Row};
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    /// JWKS document with the public keys (Konnect's
    /// /v2/audit-log-webhook/jwks.json, or one written by `auditsink keygen`).
    #[arg(long)]
    jwks: PathBuf,
    /// Lines to verify; stdin when absent or `-`.
    #[arg(conflicts_with = "store")]
    file: Option<PathBuf>,
    /// Re-verify the events in the store (their raw lines are kept for
    /// this); through the admin listener when a server holds it.
    #[arg(long)]
    store: bool,
    #[command(flatten)]
    location: StoreLocation,
}

/// Counts per outcome.
#[derive(Default)]
struct Tally {
    valid: u64,
    invalid: u64,
    missing: u64,
}

impl Tally {
    fn add(&mut self, status: SignatureStatus) {
        match status {
            SignatureStatus::Valid => self.valid += 1,
            SignatureStatus::Invalid | SignatureStatus::Unverified => self.invalid += 1,
            SignatureStatus::Missing => self.missing += 1,
        }
    }

    /// Summary on stderr; exit 1 if anything was invalid.
    fn finish(self) -> ExitCode {
        eprintln!(
            "lines={} valid={} invalid={} missing={}",
            self.valid + self.invalid + self.missing,
            self.valid,
            self.invalid,
            self.missing
        );
        if self.invalid > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let jwks = std::fs::read(&args.jwks)
        .with_context(|| format!("cannot read {}", args.jwks.display()))?;
    let keys = KeySet::from_jwks(&jwks)
        .with_context(|| format!("{} is not a usable JWKS", args.jwks.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let tally = if args.store {
        verify_store(&keys, &args.location, &mut out)?
    } else {
        verify_lines(&keys, args.file.as_ref(), &mut out)?
    };
    out.flush().ok();
    Ok(tally.finish())
}

/// Prints `LINE STATUS` per non-blank input line (1-based line numbers).
fn verify_lines(
    keys: &KeySet,
    file: Option<&PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<Tally> {
    let input: Box<dyn Read> = match file {
        Some(path) if path.as_os_str() != "-" => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
        _ => Box::new(std::io::stdin().lock()),
    };
    let mut tally = Tally::default();
    for (index, line) in BufReader::new(input).split(b'\n').enumerate() {
        let line = line.context("reading input")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let status = keys.verify_line(line, line_format(line));
        tally.add(status);
        writeln!(out, "{} {}", index + 1, status.as_str())?;
    }
    Ok(tally)
}

/// Prints `ID STATUS` per stored event, in id order: read directly, or
/// through the admin listener of the server that holds the store.
fn verify_store(
    keys: &KeySet,
    location: &StoreLocation,
    out: &mut impl Write,
) -> anyhow::Result<Tally> {
    let (config, data_dir) = resolve(location)?;
    let access = access(&data_dir, &config)?;
    let mut tally = Tally::default();
    select(&access, &Query::default(), &mut |row| {
        let (id, status) = match &row {
            Row::Event(event) => (
                format_id(event.id),
                keys.verify_line(event.event.raw.as_bytes(), event.event.format),
            ),
            Row::Json(_) => {
                let value = row.value()?;
                let format: LineFormat = serde_json::from_value(value["format"].clone())
                    .context("an admin row without a line format")?;
                let status = keys.verify_line(row_text(&value, "raw")?.as_bytes(), format);
                (row_text(&value, "id")?.to_owned(), status)
            }
        };
        tally.add(status);
        writeln!(out, "{id} {}", status.as_str())?;
        Ok(true)
    })?;
    Ok(tally)
}

/// A line starting with `{` is JSON, anything else CEF (as `parse --format auto`).
fn line_format(line: &[u8]) -> LineFormat {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => LineFormat::Json,
        _ => LineFormat::Cef,
    }
}
