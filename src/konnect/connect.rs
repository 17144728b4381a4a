//! `auditsink konnect connect`: points Konnect's audit-log webhook at a
//! source of this receiver with the source's own `Authorization` value,
//! enables it, then reads the configuration back and prints it. It refuses
//! to replace a webhook that points elsewhere unless `--force`.
//! `skip_ssl_verification` is set only when the receiver serves its
//! generated self-signed certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use hyper::Method;
use serde_json::{json, Value};

use super::api::{success, Api};
use super::receiver::Receiver;
use super::{print_rows, shown, Scope};
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    /// The URL Konnect delivers to: this receiver's address as Konnect
    /// reaches it, with the source's path (https://logs.example.com:8443/audit-logs).
    #[arg(long, value_name = "URL")]
    endpoint: String,
    /// The source (its `name`) whose authorization Konnect sends (default:
    /// the only one).
    #[arg(long)]
    source: Option<String>,
    /// Line format Konnect sends.
    #[arg(long, value_enum, default_value_t = LogFormat::Cef)]
    format: LogFormat,
    /// Replace a webhook that points at another endpoint.
    #[arg(long)]
    force: bool,
    /// A Dev Portal's audit logs instead of the org's (an audit-log
    /// destination is created or updated for the endpoint).
    #[arg(long, value_name = "PORTAL_ID")]
    portal: Option<String>,
    /// Send this file's content as the Authorization value instead of the
    /// source's (for a source that keeps only a SHA-256).
    #[arg(long, value_name = "FILE")]
    authorization_file: Option<PathBuf>,
    #[command(flatten)]
    location: StoreLocation,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Cef,
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Cef => "cef",
            LogFormat::Json => "json",
        }
    }
}

/// What Konnect's UI says when certificate checks are turned off.
pub const SKIP_SSL_WARNING: &str = "Konnect will not verify the receiver's certificate \
(skip_ssl_verification); Kong recommends it for testing only, not for production";

pub fn run(api: &Api, args: Args) -> anyhow::Result<ExitCode> {
    let scope = Scope::new(args.portal.as_deref())?;
    let receiver = Receiver::open(&args.location, args.source.as_deref())?;
    let endpoint = check_endpoint(&args.endpoint, &receiver.path, args.force)?;
    let authorization = receiver.authorization(args.authorization_file.as_deref())?;
    let settings = json!({
        "endpoint": endpoint,
        "authorization": authorization,
        "log_format": args.format.name(),
        "skip_ssl_verification": receiver.self_signed,
    });
    let config = match &scope {
        Scope::Org => connect_org(api, &endpoint, settings, args.force)?,
        Scope::Portal(_) => connect_portal(api, &scope, &endpoint, settings, args.force)?,
    };
    println!(
        "Konnect ({}) {} now delivers to source {:?} of this receiver:",
        api.base(),
        scope.describe(),
        receiver.source
    );
    print_rows(&[
        ("endpoint", shown(config.get("endpoint"))),
        ("log_format", shown(config.get("log_format"))),
        ("enabled", shown(config.get("enabled"))),
        (
            "skip_ssl_verification",
            shown(config.get("skip_ssl_verification")),
        ),
        ("updated_at", shown(config.get("updated_at"))),
    ]);
    if receiver.self_signed {
        eprintln!(
            "warning: this receiver serves its generated self-signed certificate, so \
             skip_ssl_verification is on: {SKIP_SSL_WARNING}. Configure [server] tls_cert and \
             tls_key with a certificate Konnect trusts and run connect again."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The endpoint, checked: an https:// URL whose path is the source's.
fn check_endpoint(endpoint: &str, source_path: &str, force: bool) -> anyhow::Result<String> {
    let uri: hyper::Uri = endpoint
        .parse()
        .with_context(|| format!("--endpoint {endpoint:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        bail!("--endpoint {endpoint:?}: Konnect delivers to https:// URLs only");
    }
    if uri.path() != source_path && !force {
        bail!(
            "--endpoint {endpoint:?} has the path {:?}, but the source is at {source_path:?} \
             (Konnect would get 404s); fix the URL, or --force",
            uri.path()
        );
    }
    Ok(endpoint.to_owned())
}

/// The endpoint a configuration points at, if any.
fn configured_endpoint(config: &Value) -> Option<&str> {
    config
        .get("endpoint")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
}

fn refuse_replacing(current: &str, endpoint: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "Konnect's webhook already delivers to {current}, not to {endpoint}; pass --force to \
         replace it (that receiver would get nothing more)"
    )
}

/// The current configuration at `path`; `Null` when Konnect has none (404).
fn current_config(api: &Api, path: &str) -> anyhow::Result<Value> {
    let reply = api.call(Method::GET, path, None)?;
    if reply.status == 404 {
        return Ok(Value::Null);
    }
    success(&format!("GET {path}"), reply)
}

fn connect_org(
    api: &Api,
    endpoint: &str,
    mut settings: Value,
    force: bool,
) -> anyhow::Result<Value> {
    let path = Scope::Org.webhook_path();
    let current = current_config(api, &path)?;
    if let Some(current) = configured_endpoint(&current) {
        if current != endpoint && !force {
            return Err(refuse_replacing(current, endpoint));
        }
    }
    settings["enabled"] = Value::Bool(true);
    api.expect(Method::PATCH, &path, Some(&settings))?;
    api.expect(Method::GET, &path, None)
}

/// A Dev Portal: the audit-log destination for `endpoint` (updated, or
/// created), then the portal's webhook pointed at it and enabled. The
/// configuration shown is the destination's with the webhook's `enabled`.
fn connect_portal(
    api: &Api,
    scope: &Scope,
    endpoint: &str,
    settings: Value,
    force: bool,
) -> anyhow::Result<Value> {
    let path = scope.webhook_path();
    let current = current_config(api, &path)?;
    let current_destination = current
        .get("audit_log_destination_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(id) = &current_destination {
        let destination = api.expect(
            Method::GET,
            &format!("/v2/audit-log-destinations/{id}"),
            None,
        )?;
        if let Some(current) = configured_endpoint(&destination) {
            if current != endpoint && !force {
                return Err(refuse_replacing(current, endpoint));
            }
        }
    }
    let listed = api.expect(Method::GET, "/v2/audit-log-destinations", None)?;
    let existing = listed
        .get("data")
        .and_then(Value::as_array)
        .and_then(|all| {
            all.iter()
                .find(|d| configured_endpoint(d) == Some(endpoint))
                .and_then(|d| d.get("id").and_then(Value::as_str))
                .map(str::to_owned)
        });
    let destination = match existing {
        Some(id) => api.expect(
            Method::PATCH,
            &format!("/v2/audit-log-destinations/{id}"),
            Some(&settings),
        )?,
        None => {
            let mut create = settings;
            create["name"] = Value::String("auditsink".into());
            api.expect(Method::POST, "/v2/audit-log-destinations", Some(&create))?
        }
    };
    let id = destination
        .get("id")
        .and_then(Value::as_str)
        .context("Konnect's destination has no id")?
        .to_owned();
    api.expect(
        Method::PATCH,
        &path,
        Some(&json!({ "audit_log_destination_id": id, "enabled": true })),
    )?;
    let webhook = api.expect(Method::GET, &path, None)?;
    let mut shown = api.expect(
        Method::GET,
        &format!("/v2/audit-log-destinations/{id}"),
        None,
    )?;
    shown["enabled"] = webhook.get("enabled").cloned().unwrap_or(Value::Null);
    if let Some(updated) = webhook.get("updated_at") {
        shown["updated_at"] = updated.clone();
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_must_be_https_at_the_source_path() {
        assert!(check_endpoint("https://h:8443/audit-logs", "/audit-logs", false).is_ok());
        assert!(check_endpoint("http://h:8443/audit-logs", "/audit-logs", false).is_err());
        assert!(check_endpoint("https://h:8443/other", "/audit-logs", false).is_err());
        assert!(check_endpoint("https://h:8443/other", "/audit-logs", true).is_ok());
        assert!(check_endpoint("not a url", "/audit-logs", true).is_err());
    }
}
