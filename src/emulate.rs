//! `auditsink emulate konnect`: a local stand-in for Kong Konnect's
//! audit-log control plane and sender, for testing a receiver (auditsink or
//! another) without a Konnect organization.
//!
//! It serves the subset of Konnect's API that `auditsink konnect` uses
//! (docs/KONNECT.md, "Konnect's audit-log API") with Konnect's personal access
//! token rules, signs its events with a key of its own (served at
//! `/v2/audit-log-webhook/jwks.json`), and while a webhook is enabled
//! delivers simulated events (the `simulate` generator, stamped with the
//! current time) the way Konnect does (the `send` delivery and retry code).
//! Every event and its fate goes to a ledger.
//!
//! [`state`] holds the configuration and what was generated, [`api`] the
//! HTTP side, [`sender`] the live deliveries, [`delivery`] one batch with
//! Konnect's retries, [`jobs`] the replay jobs, [`ledger`] the ledger.

mod api;
mod delivery;
mod generated;
mod jobs;
mod ledger;
mod sender;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auditsink_parser::signature::SigningKeyPair;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Stand in for Kong Konnect: its audit-log API (webhook, status, JWKS,
    /// replay jobs, Dev Portal destinations) and its deliveries.
    Konnect(Args),
}

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Address of the API (use it as `auditsink konnect --api-url`).
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// Simulated events per second, per enabled webhook.
    #[arg(long, default_value_t = 10.0, value_name = "EVENTS_PER_S")]
    rate: f64,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The one personal access token accepted (default: any non-empty
    /// bearer token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AUDITSINK_EMULATE_PAT",
        hide_env_values = true
    )]
    pat: Option<String>,
    /// Serve the API over HTTPS with a certificate generated in --tls-dir.
    #[arg(long)]
    tls: bool,
    /// Where --tls keeps its certificate (DIR/tls/cert.pem and key.pem,
    /// generated on first use, for `konnect --api-cacert`).
    #[arg(long, default_value = "konnect-emulator-tls", value_name = "DIR")]
    tls_dir: PathBuf,
    /// The ledger: one JSON line per event and fate (acknowledged, dropped,
    /// replayed), created or truncated.
    #[arg(long, default_value = "konnect-ledger.ndjson", value_name = "FILE")]
    ledger: PathBuf,
    /// Trust this PEM CA too when a webhook checks certificates (Konnect
    /// trusts the public web roots only).
    #[arg(long, value_name = "PEM")]
    cacert: Option<PathBuf>,
    /// Accept http:// webhook endpoints (Konnect requires https://).
    #[arg(long)]
    allow_http: bool,
    /// Milliseconds between two batches of a webhook.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    batch_interval_ms: u64,
    /// Milliseconds that stand for one second in Konnect's retry rules
    /// (1 s minimum, 30 s maximum between attempts); smaller in tests.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    retry_unit_ms: u64,
    /// Milliseconds a replay job stays accepted, then pending, before it runs.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    job_delay_ms: u64,
    /// Seconds one delivery attempt may take before it counts as a
    /// connection error.
    #[arg(long, default_value_t = 30.0, value_name = "S")]
    timeout: f64,
    /// Most events kept for replay jobs, per webhook (the oldest go first;
    /// Konnect keeps 7 days). About 500 bytes each.
    #[arg(long, default_value_t = 500_000)]
    keep: usize,
}

const AFTER_HELP: &str = "\
Point `auditsink konnect --api-url http://ADDR` (or any Konnect API client) at it.
Deliveries follow Konnect: newline-separated batches, gzip labelled
`Content-Encoding: application/gzip`, `Content-Type: application/text` (org) or
`text/plain` (Dev Portal), the configured Authorization; the certificate is checked
unless skip_ssl_verification; a connection error, 500 and 429 are retried (1, 2, 4,
8 s, or Retry-After within 1..30 s), at most 4 retries, then the batch is dropped.
`last_response_code` 0 means no HTTP answer (connection error or timeout).";

/// The emulator's settings, as its parts use them.
pub struct Settings {
    pub rate: f64,
    pub seed: u64,
    pub pat: Option<String>,
    pub cacert: Option<PathBuf>,
    pub allow_http: bool,
    pub batch_interval: Duration,
    pub retry_unit: Duration,
    pub job_delay: Duration,
    pub timeout: Duration,
    pub keep: usize,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Konnect(args) = command;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        args.timeout.is_finite() && args.timeout > 0.0,
        "--timeout must be positive"
    );
    anyhow::ensure!(
        args.batch_interval_ms > 0,
        "--batch-interval-ms must be positive"
    );
    if let Some(pat) = &args.pat {
        anyhow::ensure!(!pat.trim().is_empty(), "--pat must not be empty");
    }
    let settings = Settings {
        rate: args.rate,
        seed: args.seed,
        pat: args.pat.clone(),
        cacert: args.cacert.clone(),
        allow_http: args.allow_http,
        batch_interval: Duration::from_millis(args.batch_interval_ms),
        retry_unit: Duration::from_millis(args.retry_unit_ms.max(1)),
        job_delay: Duration::from_millis(args.job_delay_ms),
        timeout: Duration::from_secs_f64(args.timeout),
        keep: args.keep.max(1),
    };
    let ledger = ledger::Ledger::create(&args.ledger)?;
    let key = SigningKeyPair::generate();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let tls = if args.tls {
            Some(api::tls_acceptor(&args.tls_dir)?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let emulator = Arc::new(state::Emulator::new(settings, key, ledger));
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "auditsink emulate konnect: listening on {scheme}://{addr} (signing key {}, ledger {})",
            emulator.key.kid(),
            args.ledger.display()
        );
        if tls.is_some() {
            eprintln!(
                "auditsink emulate konnect: certificate {}",
                args.tls_dir.join("tls/cert.pem").display()
            );
        }
        tokio::spawn(sender::run(emulator.clone()));
        tokio::select! {
            served = api::serve(listener, tls, emulator.clone()) => served?,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate() => {}
        }
        emulator.ledger.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGTERM (never where there is none).
async fn terminate() {
    #[cfg(unix)]
    if let Ok(mut signal) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        signal.recv().await;
        return;
    }
    std::future::pending::<()>().await
}
