//! `auditsink`: the command line. Thin wiring over the library crates; one
//! module per subcommand.
// One call into glibc (`memory::trim`) is the only unsafe code.
#![deny(unsafe_code)]

mod admin_stream;
mod bench;
mod check;
mod emulate;
mod export;
mod generate;
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
mod sink;
mod verify;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Forwarding sinks: list, parked events, retry, rewind.
    #[command(subcommand)]
    Sink(sink::Command),
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
    /// Print what Konnect needs to deliver here: endpoint, Authorization value,
    /// skip_ssl_verification, and the Konnect API call that sets them.
    Webhook(webhook::Args),
    /// Measure parsing speed on your own lines (see `bench parse --help`).
    #[command(subcommand)]
    Bench(bench::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(generate::CompletionsArgs),
    /// Print the man page (or write every page into a directory with --dir).
    Man(generate::ManArgs),
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
        Command::Sink(command) => sink::run(command),
        Command::Check(args) => check::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Send(args) => send::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Webhook(args) => webhook::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Completions(args) => generate::completions(args, Cli::command()),
        Command::Man(args) => generate::man(args, Cli::command()),
        Command::Konnect(args) => konnect::run(args),
        Command::Emulate(command) => emulate::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("auditsink: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes joined by ": ", each cause once: a library error
/// whose message already includes its source (`{path}: {source}`) would
/// otherwise print that source a second time.
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        /// Says its source in its message, and has it as its source.
        #[derive(Debug)]
        struct Repeats {
            source: std::io::Error,
        }
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read x.toml: {}", self.source)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let error = anyhow::Error::new(Repeats { source: io }).context("loading the configuration");
        assert_eq!(
            error_chain(&error),
            "loading the configuration: cannot read x.toml: Address already in use"
        );
    }
}
