//! `auditsink parse`: lines in, one JSON object per non-blank line out
//! (EVENT_SCHEMA.md, "auditsink parse").

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use auditsink_parser::{parse_borrowed, Format, ParseOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Input file; stdin when absent or `-`.
    file: Option<PathBuf>,
    /// Grammar: auto (a line starting with `{` is JSON), cef or json.
    #[arg(long, default_value = "auto")]
    format: Format,
    /// Print lines, bytes, seconds, lines/s and MB/s to stderr.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input: Box<dyn Read> = match &args.file {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let options = ParseOptions {
        format: args.format,
        year_hint: time::OffsetDateTime::now_utc().year(),
    };
    let started = Instant::now();
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut buffer = Vec::with_capacity(4096);
    loop {
        buffer.clear();
        let read = input
            .read_until(b'\n', &mut buffer)
            .context("reading input")?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        let line = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        // The borrowed view renders byte for byte as the owned `Event`,
        // without copying every string into it first.
        let written = match parse_borrowed(line, &options) {
            Ok(event) => serde_json::to_writer(&mut out, &event).map_err(std::io::Error::from),
            Err(e) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "error": e.to_string(), "raw": String::from_utf8_lossy(line) }),
            )
            .map_err(std::io::Error::from),
        };
        match written.and_then(|_| out.write_all(b"\n")) {
            Ok(()) => {}
            // `auditsink parse big.log | head` is normal use, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("writing output"),
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other.context("writing output")?,
    }
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "lines={lines} bytes={bytes} seconds={seconds:.3} lines_per_s={:.0} mb_per_s={:.1}",
            lines as f64 / seconds,
            bytes as f64 / seconds / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
