//! `auditsink bench parse`: how fast auditsink reads *your* corpus, and how
//! that compares with another parser.
//!
//! The input is read into memory once ([`input`]) and its lines classified
//! once, untimed ([`counts`]: clean, lenient by warning kind, failed by
//! reason). Then worker threads parse it, without rendering or output,
//! repeatedly ([`timed`]), timing chunks of lines and sampling single lines
//! for the latency histogram ([`latency`]). [`report`] prints the result as
//! text or one JSON object, and [`compare`] puts other parsers' results of
//! the same shape beside it.

mod compare;
mod counts;
mod cpu;
mod input;
mod latency;
mod progress;
mod report;
mod timed;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use auditsink_parser::{Format, ParseOptions};

/// `auditsink bench ...`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Time parsing (no rendering, no output) of lines held in memory.
    Parse(ParseArgs),
}

#[derive(clap::Args)]
pub struct ParseArgs {
    /// Input files, read into memory once before timing; stdin when none
    /// is given or `-`.
    files: Vec<PathBuf>,
    /// Grammar: auto (a line starting with `{` is JSON), cef or json.
    #[arg(long, default_value = "auto")]
    format: Format,
    /// Worker threads; they share the input's lines chunk by chunk.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Parse for this many seconds (default 3), whole chunks of 256 lines.
    #[arg(long, value_name = "S", value_parser = parse_seconds, conflicts_with = "repeat")]
    duration: Option<Duration>,
    /// Parse the whole input K times instead of for a duration.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    repeat: Option<u64>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Another parser's result in the same JSON shape (one object, or
    /// several one after the other): added as rows of a comparison table.
    #[arg(long, value_name = "FILE")]
    compare_json: Vec<PathBuf>,
    /// Time parsing and rendering to the documented JSON (what `auditsink
    /// parse` does, without writing it anywhere).
    #[arg(long)]
    render: bool,
}

/// Default run length when neither `--duration` nor `--repeat` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(3);

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.001..=86_400.0).contains(&seconds) {
        return Err("expected 0.001 to 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Parse(args) => parse(args),
    }
}

fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    // Read the other results first: a typo should not cost a whole run.
    let others = args
        .compare_json
        .iter()
        .map(|path| compare::read(path))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let input = input::Input::read(&args.files)?;
    let lines = input.lines();
    if lines.is_empty() {
        anyhow::bail!("the input has no lines to parse (blank lines are not lines)");
    }
    let options = ParseOptions {
        format: args.format,
        year_hint: time::OffsetDateTime::now_utc().year(),
    };
    let counts = counts::count(&lines, &options);
    let stop = match (args.repeat, args.duration) {
        (Some(passes), _) => timed::Stop::Passes(passes),
        (None, duration) => timed::Stop::After(duration.unwrap_or(DEFAULT_DURATION)),
    };
    let progress = std::io::stderr().is_terminal();
    let run = timed::run(&timed::Job {
        lines: &lines,
        options: &options,
        threads: usize::from(args.threads),
        stop,
        render: args.render,
        progress,
    })
    .context("timing the parse")?;
    let mut report = report::Report::new(&input, &lines, &args, &counts, &run);
    report.compared = compare::ratios(&report, &others);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
        if !others.is_empty() {
            print!("\n{}", compare::table(&report, &others));
        }
    }
    Ok(ExitCode::SUCCESS)
}
