//! `auditsink konnect status`: Konnect's view of the webhook (its
//! configuration and `/status`) beside this receiver's view of the source
//! (the same fields from its admin `/status`), then a verdict line per
//! difference. Exit status 1 when a verdict is a problem.

use std::process::ExitCode;

use auditsink_storage::parse_time_bound;
use hyper::Method;
use serde_json::Value;

use super::api::Api;
use super::receiver::Receiver;
use super::verdict::{verdicts, KonnectSide, ReceiverSide};
use super::{shown, Scope};
use crate::query::now_ms;
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    /// The source (its `name`) Konnect delivers to (default: the only one).
    #[arg(long)]
    source: Option<String>,
    /// A Dev Portal's audit-log webhook instead of the org's.
    #[arg(long, value_name = "PORTAL_ID")]
    portal: Option<String>,
    #[command(flatten)]
    location: StoreLocation,
}

fn time_ms(value: Option<&Value>) -> Option<i64> {
    let text = value?.as_str()?;
    parse_time_bound(text, now_ms()).ok()
}

fn code(value: Option<&Value>) -> Option<u16> {
    value?.as_u64().and_then(|c| u16::try_from(c).ok())
}

/// Konnect's configuration (for a portal: its destination's, with the
/// webhook's `enabled`) and status.
fn konnect_view(api: &Api, scope: &Scope) -> anyhow::Result<(Value, Value)> {
    let path = scope.webhook_path();
    let mut config = api.expect(Method::GET, &path, None)?;
    if let Scope::Portal(_) = scope {
        let destination = config
            .get("audit_log_destination_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let enabled = config.get("enabled").cloned().unwrap_or(Value::Null);
        config = match destination {
            Some(id) => api.expect(
                Method::GET,
                &format!("/v2/audit-log-destinations/{id}"),
                None,
            )?,
            None => Value::Object(Default::default()),
        };
        config["enabled"] = enabled;
    }
    let status = api.expect(Method::GET, &format!("{path}/status"), None)?;
    Ok((config, status))
}

pub fn run(api: &Api, args: Args) -> anyhow::Result<ExitCode> {
    let scope = Scope::new(args.portal.as_deref())?;
    let receiver = Receiver::open(&args.location, args.source.as_deref())?;
    let (config, status) = konnect_view(api, &scope)?;
    let mine = match receiver.admin() {
        Some(addr) => Some(receiver.status(addr)?),
        None => None,
    };
    let konnect = KonnectSide {
        endpoint: config
            .get("endpoint")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
        enabled: config.get("enabled").and_then(Value::as_bool) == Some(true),
        skip_ssl_verification: config.get("skip_ssl_verification").and_then(Value::as_bool)
            == Some(true),
        log_format: config
            .get("log_format")
            .and_then(Value::as_str)
            .map(str::to_owned),
        last_attempt_ms: time_ms(status.get("last_attempt_at")),
        last_response_code: code(status.get("last_response_code")),
    };
    let side = ReceiverSide {
        source: receiver.source.clone(),
        path: receiver.path.clone(),
        self_signed: receiver.self_signed,
        format: mine
            .as_ref()
            .and_then(|m| m.get("format").and_then(Value::as_str))
            .unwrap_or("auto")
            .to_owned(),
        running: mine.is_some(),
        last_attempt_ms: mine
            .as_ref()
            .and_then(|m| time_ms(m.get("last_attempt_at"))),
        last_response_code: mine
            .as_ref()
            .and_then(|m| code(m.get("last_response_code"))),
    };
    let theirs = |key: &str| shown(status.get(key));
    let ours = |key: &str| match &mine {
        Some(m) => shown(m.get(key)),
        None => "(not running)".into(),
    };
    let rows = [
        (
            "endpoint",
            shown(config.get("endpoint")),
            receiver.path.clone(),
        ),
        (
            "log_format",
            shown(config.get("log_format")),
            ours("format"),
        ),
        ("enabled", shown(config.get("enabled")), "-".into()),
        (
            "skip_ssl_verification",
            shown(config.get("skip_ssl_verification")),
            format!("self-signed certificate: {}", receiver.self_signed),
        ),
        (
            "webhook_status",
            theirs("webhook_status"),
            ours("webhook_status"),
        ),
        (
            "last_attempt_at",
            theirs("last_attempt_at"),
            ours("last_attempt_at"),
        ),
        (
            "last_response_code",
            theirs("last_response_code"),
            ours("last_response_code"),
        ),
    ];
    let receiver_title = format!("auditsink (source {})", receiver.source);
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let konnect_width = rows.iter().map(|r| r.1.len()).chain([7]).max().unwrap_or(0);
    println!("{}: {}", scope.describe(), api.base());
    println!(
        "  {:<width$}  {:<konnect_width$}  {receiver_title}",
        "", "Konnect"
    );
    for (key, theirs, ours) in &rows {
        println!("  {key:<width$}  {theirs:<konnect_width$}  {ours}");
    }
    let all = verdicts(&konnect, &side);
    for verdict in &all {
        let mark = if verdict.problem { "problem" } else { "ok" };
        println!("verdict: {mark}: {}", verdict.text);
    }
    Ok(if all.iter().any(|v| v.problem) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
