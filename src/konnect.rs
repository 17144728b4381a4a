//! `auditsink konnect`: the Konnect side, from the receiver's end, through
//! Konnect's public audit-log API (docs/KONNECT.md): point the webhook here
//! (`connect`), compare both ends (`status`), request replay jobs
//! (`replay`, also for the gaps this receiver recorded) and fetch the
//! signing keys (`jwks`). `--portal ID` does the same for a Dev Portal's
//! audit logs (its webhook points at an audit-log destination).
//!
//! [`api`] talks to Konnect, [`receiver`] to this receiver; one module per
//! subcommand; [`gaps`] turns recorded failures into replay windows and
//! [`verdict`] compares the two ends.

mod api;
mod connect;
mod gaps;
mod jwks;
mod receiver;
mod replay;
mod status;
mod verdict;

use std::process::ExitCode;

pub use api::ApiArgs;

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
The personal access token comes from $KONNECT_TOKEN or --token-file; it is never
printed or logged. Create one in Konnect under Personal access tokens (an org admin's).";

#[derive(clap::Subcommand)]
enum Command {
    /// Point Konnect's audit-log webhook at this receiver and show it.
    Connect(connect::Args),
    /// Konnect's view of the webhook beside this receiver's, with verdicts.
    Status(status::Args),
    /// Ask Konnect to replay a time window (or every gap this receiver saw).
    Replay(replay::Args),
    /// Fetch Konnect's audit-log signing keys (JWKS).
    Jwks(jwks::Args),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let api = api::Api::new(&args.api)?;
    match args.command {
        Command::Connect(command) => connect::run(&api, command),
        Command::Status(command) => status::run(&api, command),
        Command::Replay(command) => replay::run(&api, command),
        Command::Jwks(command) => jwks::run(&api, command),
    }
}

/// Which audit logs: the org's, or a Dev Portal's.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    Org,
    Portal(String),
}

impl Scope {
    fn new(portal: Option<&str>) -> anyhow::Result<Scope> {
        match portal {
            None => Ok(Scope::Org),
            Some(id)
                if !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Scope::Portal(id.to_owned()))
            }
            Some(id) => anyhow::bail!("--portal {id:?} is not a portal id"),
        }
    }

    fn webhook_path(&self) -> String {
        match self {
            Scope::Org => "/v2/audit-log-webhook".into(),
            Scope::Portal(id) => format!("/v2/portals/{id}/audit-log-webhook"),
        }
    }

    fn replay_path(&self) -> String {
        match self {
            Scope::Org => "/v2/audit-log-replay-job".into(),
            Scope::Portal(id) => format!("/v2/portals/{id}/audit-log-replay-job"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Org => "org audit-log webhook".into(),
            Scope::Portal(id) => format!("Dev Portal {id} audit-log webhook"),
        }
    }
}

/// Prints `key value` rows aligned.
fn print_rows(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("  {key:<width$}  {value}");
    }
}

/// A JSON value as shown to a person (`-` for null).
fn shown(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "-".into(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
