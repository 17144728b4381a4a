//! `auditsink`: the command line. Thin wiring over the library crates; one
//! module per subcommand.
// One call into glibc (`memory::trim`) is the only unsafe code.
#![deny(unsafe_code)]

mod admin_stream;
mod check;
mod emulate;
mod export;
mod keygen;
mod konnect;
mod logging;
mod memory;
mod parse;
mod quarantine;
mod query;
mod replay;
mod send;
mod serve;
mod simulate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted receiver for security audit-log webhooks (Kong Konnect, CEF, JSON).
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver (HTTPS webhook listener + admin listener).
    Serve(serve::Args),
    /// Parse lines (CEF or JSON) and print normalized events as NDJSON.
    Parse(parse::Args),
    /// Print stored events (filtered by time, principal, trace, org, name).
    Query(query::Args),
    /// Write the events of a time window as NDJSON (for a SIEM or an archive).
    Export(export::Args),
    /// List or reprocess the lines that could not be read as events.
    #[command(subcommand)]
    Quarantine(quarantine::Command),
    /// Verify the store (server stopped); --repair rebuilds its indexes.
    Check(check::Args),
    /// Verify Konnect ED25519 signatures of lines, or of stored events.
    Verify(verify::Args),
    /// Write an ED25519 key pair and its JWKS.
    Keygen(keygen::Args),
    /// Generate realistic signed Konnect events (CEF or JSON lines).
    Simulate(simulate::Args),
    /// Deliver lines to a webhook receiver the way Konnect does.
    Send(send::Args),
    /// Resend the stored events of a time window to another receiver.
    Replay(replay::Args),
    /// Configure and check Konnect's audit-log webhook; request replays.
    Konnect(konnect::Args),
    /// Stand in for a webhook sender (Kong Konnect) to test a receiver.
    #[command(subcommand)]
    Emulate(emulate::Command),
}

/// Where the store is: a config file's `data_dir`, or a directory given directly.
#[derive(clap::Args, Debug, Clone)]
struct StoreLocation {
    /// Configuration file (its data_dir and admin address are used).
    #[arg(long, short, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// Data directory (default: ./auditsink-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Parse(args) => parse::run(args),
        Command::Query(args) => query::run(args),
        Command::Export(args) => export::run(args),
        Command::Quarantine(command) => quarantine::run(command),
        Command::Check(args) => check::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Send(args) => send::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Konnect(args) => konnect::run(args),
        Command::Emulate(command) => emulate::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("auditsink: {e:#}");
            ExitCode::from(2)
        }
    }
}
