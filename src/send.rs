//! `auditsink send`: deliver lines to a webhook receiver the way Konnect
//! does (docs/KONNECT.md, "Delivery"): `POST` newline-separated batches, gzip with
//! `Content-Encoding: application/gzip`, `Content-Type: application/text`,
//! the configured `Authorization` value; retry on a connection error, 429
//! and 500 only, waiting 1 s to 30 s, at most 4 retries; any other answer is
//! final. Unlike Konnect, it stops at once on what no retry can fix (an
//! untrusted certificate, a TLS or HTTP mismatch, an unknown host name),
//! saying what to change. Prints what happened: events sent and
//! acknowledged, failed batches, status codes, events/s and request latency
//! percentiles; after Ctrl-C, the same for the run so far.

pub(crate) mod batch;
pub(crate) mod client;
mod deliver;
mod progress;
mod report;
pub(crate) mod retry;

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

pub use batch::Lines;
pub use progress::Total;

use batch::BodyEncoding;
use client::{Endpoint, Trust};
use deliver::Options;
use progress::Progress;

#[derive(clap::Args)]
#[command(after_help = RETRY_AND_EXIT)]
pub struct Args {
    /// Lines to send (CEF or JSON, one event per line); stdin when absent or `-`.
    file: Option<PathBuf>,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// Read and gzip every batch before the clock starts, so that the
    /// sender's compression does not compete with the receiver for CPU
    /// (load tests; holds the whole input in memory).
    #[arg(long)]
    preload: bool,
}

/// What `send --help` and `replay --help` say after the options.
pub const RETRY_AND_EXIT: &str = "\
Delivery follows Konnect: each request POSTs a batch of lines joined by newlines,
by default gzipped and labelled `Content-Encoding: application/gzip`, with
`Content-Type: application/text`. A connection error (or no answer within --timeout),
429 and 500 are retried, waiting 1, 2, 4 then 8 s (or the receiver's Retry-After,
1 to 30 s), at most 4 retries; any other status is final: the batch has failed.
What no retry can fix stops the run at once, with what to change: a certificate
this sender does not trust (--cacert, --insecure), a TLS or HTTP mismatch (http://
against an HTTPS receiver, or the reverse), a host name that does not resolve.
The summary goes to stdout; progress and failures to stderr (a bar on a terminal,
with percent and time left when the input is a file; a line every 5 s otherwise).
Ctrl-C stops the run and prints the summary so far.

Exit status: 0 when every batch sent was acknowledged (2xx), 1 when a batch
failed, 2 on an error such as an unreadable input or a bad option, 130 after
Ctrl-C.";

/// How to deliver: shared by `send` and `replay`.
#[derive(clap::Args)]
pub struct DeliveryArgs {
    /// Webhook URL, e.g. https://localhost:8443/audit-logs.
    #[arg(long)]
    url: String,
    /// The exact `Authorization` header value (any scheme: 'Bearer x').
    #[arg(long, env = "AUDITSINK_SEND_AUTH", hide_env_values = true)]
    auth: Option<String>,
    /// Events (lines) per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Requests in flight at once, each on its own keep-alive connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// At most this many events per second (default: as fast as the
    /// receiver acknowledges).
    #[arg(long, value_name = "EVENTS_PER_S")]
    rate: Option<f64>,
    /// Start no new batch after this many seconds (batches in flight finish,
    /// retries included); the rest of the input is counted as not sent.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Accept any server certificate. For self-signed test receivers only
    /// (Konnect's `skip_ssl_verification`).
    #[arg(long, conflicts_with = "cacert")]
    insecure: bool,
    /// Trust the certificates in this PEM file (a private CA, or a
    /// self-signed certificate such as auditsink's data_dir/tls/cert.pem)
    /// instead of the public web roots.
    #[arg(long, value_name = "PEM")]
    cacert: Option<PathBuf>,
    /// Body encoding and its `Content-Encoding` label: application/gzip (as
    /// Konnect labels it), gzip, x-gzip, or identity (no compression).
    #[arg(long, default_value = "application/gzip", value_parser = BodyEncoding::parse)]
    encoding: BodyEncoding,
    /// `Content-Type` of the requests (Konnect: application/text for org
    /// logs, text/plain for Dev Portal logs).
    #[arg(long, default_value = "application/text")]
    content_type: String,
    /// Write every acknowledged line to this file (created or truncated),
    /// to check a receiver's store against it.
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Seconds one request may take (connect, send, answer) before it counts
    /// as a connection error.
    #[arg(long, default_value_t = 30.0, value_name = "S")]
    timeout: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Milliseconds that stand for one second in the retry rules (tests).
    #[arg(long, default_value_t = 1000, hide = true)]
    retry_unit_ms: u64,
}

impl DeliveryArgs {
    /// The engine's options.
    pub fn options(&self, preload: bool) -> anyhow::Result<Options> {
        let trust = match (&self.cacert, self.insecure) {
            (Some(path), _) => Trust::CaFile(path.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::WebRoots,
        };
        let endpoint = Endpoint::new(
            &self.url,
            &trust,
            self.auth.as_deref(),
            &self.content_type,
            self.encoding.header(),
        )?;
        let progress = if self.quiet {
            Progress::Off
        } else if std::io::stderr().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines
        };
        anyhow::ensure!(self.timeout > 0.0, "--timeout must be positive");
        let duration = match self.duration {
            Some(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
            Some(_) => anyhow::bail!("--duration must be a number of seconds"),
            None => None,
        };
        Ok(Options {
            endpoint,
            batch: self.batch,
            concurrency: self.concurrency,
            rate: self.rate,
            duration,
            encoding: self.encoding,
            ledger: self.ledger.clone(),
            preload,
            timeout: Duration::from_secs_f64(self.timeout),
            retry_unit: Duration::from_millis(self.retry_unit_ms.max(1)),
            progress,
            total: None,
        })
    }

    /// Delivers `lines` (of this size, when known), prints the summary on
    /// stdout; exit 1 if a batch failed, 130 on Ctrl-C.
    pub fn deliver(
        &self,
        lines: Lines,
        preload: bool,
        total: Option<Total>,
    ) -> anyhow::Result<ExitCode> {
        let mut options = self.options(preload)?;
        options.total = total;
        let target = options.endpoint.authority().to_owned();
        let summary = deliver::run(options, lines)?;
        if self.json {
            println!("{}", summary.to_json());
        } else {
            print!("{}", summary.to_text());
        }
        if let Some(permanent) = &summary.permanent {
            eprintln!("auditsink: the run stopped there: {}", permanent.hint);
        }
        if summary.interrupted {
            eprintln!("auditsink: interrupted (Ctrl-C); the summary above is the run so far");
            return Ok(ExitCode::from(130));
        }
        if summary.stats.failed_batches > 0 {
            eprintln!(
                "auditsink: {} of {} events were not acknowledged by {target}",
                summary.stats.failed_events, summary.stats.events_sent
            );
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut input_bytes = None;
    let input: Box<dyn Read + Send> = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            input_bytes = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            Box::new(file)
        }
        _ => Box::new(std::io::stdin()),
    };
    args.delivery.deliver(
        read_lines(input),
        args.preload,
        input_bytes.map(Total::Bytes),
    )
}

/// The non-blank lines of `input`, without `\n` or `\r\n`.
fn read_lines(input: Box<dyn Read + Send>) -> Lines {
    Box::new(
        BufReader::with_capacity(1 << 20, input)
            .split(b'\n')
            .filter_map(|line| match line {
                Ok(mut line) => {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    (!line.iter().all(u8::is_ascii_whitespace)).then_some(Ok(line))
                }
                Err(e) => Some(Err(anyhow::Error::new(e).context("reading input"))),
            }),
    )
}
