//! `auditsink webhook`: what Konnect needs to deliver to this receiver, per
//! source: the endpoint URL, the `Authorization` value, the log format,
//! whether `skip_ssl_verification` is needed, and the Konnect API call that
//! sets them. `serve` prints this once, when it generates the token; this
//! command prints it again at any time (after a first `serve` that could not
//! bind, say), reading the configuration and the data directory only.
//!
//! The `Authorization` value is printed only when stdout is a terminal or
//! with `--show-token`; otherwise the API call reads it where it is kept (the
//! token file, the environment variable), so the output can be logged.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use auditsink_parser::Format;
use auditsink_server::config::{SourceConfig, DEFAULT_SOURCE_NAME, DEFAULT_SOURCE_PATH};
use auditsink_server::Config;

use crate::query::resolve;
use crate::StoreLocation;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: StoreLocation,
    /// Only this source (its `name`).
    #[arg(long)]
    source: Option<String>,
    /// The host name or address Konnect reaches this receiver at (default:
    /// this machine's host name).
    #[arg(long)]
    host: Option<String>,
    /// The Konnect region whose API the call goes to (its API host is
    /// https://REGION.api.konghq.com).
    #[arg(long, value_enum, default_value_t)]
    region: Region,
    /// Print the Authorization value even when stdout is not a terminal.
    #[arg(long)]
    show_token: bool,
}

/// Konnect's API regions (its geos, and `global` for org-wide entities).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Region {
    #[default]
    Us,
    Eu,
    Au,
    Me,
    In,
    Sg,
    Global,
}

impl Region {
    fn api(self) -> String {
        let name = match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Au => "au",
            Region::Me => "me",
            Region::In => "in",
            Region::Sg => "sg",
            Region::Global => "global",
        };
        format!("https://{name}.api.konghq.com")
    }
}

/// Where a source's `Authorization` value is, as far as this process can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// In the generated token file.
    TokenFile { path: PathBuf, value: String },
    /// Not generated yet: the first `serve` creates this file.
    NotGenerated(PathBuf),
    /// Written in the configuration file.
    Config(String),
    /// In this environment variable.
    Env { variable: String, value: String },
    /// Named by `authorization_env`, but not set in this environment.
    EnvUnset(String),
    /// Only its SHA-256 is configured: the value itself is not recoverable.
    OnlyHash,
}

impl Authorization {
    /// The value, when it is known.
    pub fn value(&self) -> Option<&str> {
        match self {
            Authorization::TokenFile { value, .. }
            | Authorization::Config(value)
            | Authorization::Env { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// What Konnect is told for one source.
#[derive(Debug)]
pub struct Webhook {
    pub source: String,
    pub endpoint: String,
    pub authorization: Authorization,
    pub log_format: &'static str,
    /// The receiver serves its generated self-signed certificate.
    pub self_signed: bool,
}

/// The webhook of every configured source (the default one without `[[source]]`).
pub fn webhooks(config: &Config, host: &str) -> Vec<Webhook> {
    let port = config.server.listen.port();
    let endpoint = |path: &str| match port {
        0 => format!("https://{host}:PORT{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let self_signed = config.server.tls_cert.is_none();
    if config.sources.is_empty() {
        return vec![Webhook {
            source: DEFAULT_SOURCE_NAME.to_owned(),
            endpoint: endpoint(DEFAULT_SOURCE_PATH),
            authorization: token_file(&config.data_dir),
            log_format: "cef",
            self_signed,
        }];
    }
    config
        .sources
        .iter()
        .map(|source| Webhook {
            source: source.name.clone(),
            endpoint: endpoint(&source.path),
            authorization: authorization(source),
            log_format: match source.format {
                Format::Json => "json",
                _ => "cef",
            },
            self_signed,
        })
        .collect()
}

fn token_file(data_dir: &Path) -> Authorization {
    // Absolute, so the printed call works from any directory.
    let path =
        std::path::absolute(data_dir.join("token")).unwrap_or_else(|_| data_dir.join("token"));
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Authorization::TokenFile {
            value: text.trim().to_owned(),
            path,
        },
        _ => Authorization::NotGenerated(path),
    }
}

/// A configured source's first accepted value, in the order the server
/// checks them (the first is the one to give Konnect).
pub fn authorization(source: &SourceConfig) -> Authorization {
    if let Some(value) = source.authorization.values().first() {
        return Authorization::Config(value.clone());
    }
    if let Some(variable) = source.authorization_env.values().first() {
        return match std::env::var(variable) {
            Ok(value) => Authorization::Env {
                variable: variable.clone(),
                value,
            },
            Err(_) => Authorization::EnvUnset(variable.clone()),
        };
    }
    Authorization::OnlyHash
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut config, data_dir) = resolve(&args.location)?;
    config.data_dir = data_dir;
    let host = args.host.clone().unwrap_or_else(host_name);
    let mut hooks = webhooks(&config, &host);
    if let Some(name) = &args.source {
        hooks.retain(|hook| &hook.source == name);
        anyhow::ensure!(!hooks.is_empty(), "no source named {name:?} is configured");
    }
    let show_token = args.show_token || std::io::stdout().is_terminal();
    let mut text = String::new();
    for hook in &hooks {
        text.push_str(&describe(hook, &config, show_token));
        text.push('\n');
        text.push_str(&konnect_call(hook, args.region, show_token));
        text.push('\n');
    }
    text.push_str(&notes(&config, args.host.is_none(), &host));
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// This machine's host name, or `HOST`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "HOST".into())
}

fn describe(hook: &Webhook, config: &Config, show_token: bool) -> String {
    let authorization = match (&hook.authorization, show_token) {
        (Authorization::NotGenerated(path), _) => format!(
            "not generated yet: the first `auditsink serve` writes it to {}",
            path.display()
        ),
        (Authorization::EnvUnset(variable), _) => {
            format!("in the environment variable {variable}, which is not set here")
        }
        (Authorization::OnlyHash, _) => {
            "only its SHA-256 is configured (authorization_sha256): give Konnect the value it was made from".to_owned()
        }
        (known, true) => known.value().unwrap_or_default().to_owned(),
        (Authorization::TokenFile { path, .. }, false) => {
            format!("in {} (--show-token prints it)", path.display())
        }
        (Authorization::Env { variable, .. }, false) => {
            format!("in the environment variable {variable} (--show-token prints it)")
        }
        (_, false) => "in the configuration file (--show-token prints it)".to_owned(),
    };
    let tls = if hook.self_signed {
        format!(
            "true: the receiver serves its generated self-signed certificate ({}/tls/cert.pem); \
             Konnect documents this for non-production use. Set [server] tls_cert and tls_key \
             to a certificate Konnect can verify, and this becomes false",
            config.data_dir.display()
        )
    } else {
        "false: the receiver serves [server] tls_cert".to_owned()
    };
    format!(
        "source {:?}\n  endpoint               {}\n  authorization          {authorization}\n  log_format             {}\n  skip_ssl_verification  {tls}\n",
        hook.source, hook.endpoint, hook.log_format
    )
}

/// The `curl` call that points Konnect's org audit-log webhook of `region`
/// at `hook`. Without `show_token` the value is read by the shell from where
/// it is kept, so the command can be copied as printed.
pub fn konnect_call(hook: &Webhook, region: Region, show_token: bool) -> String {
    const SLOT: &str = "AUDITSINK_AUTHORIZATION_SLOT";
    let (value, spliced) = match (&hook.authorization, show_token) {
        (known, true) if known.value().is_some() => {
            (known.value().unwrap_or_default().to_owned(), None)
        }
        (Authorization::TokenFile { path, .. }, _) | (Authorization::NotGenerated(path), _) => (
            SLOT.to_owned(),
            Some(format!(
                "$(cat {})",
                shell_quote(&path.display().to_string())
            )),
        ),
        (Authorization::Env { variable, .. }, _) | (Authorization::EnvUnset(variable), _) => {
            (SLOT.to_owned(), Some(format!("${variable}")))
        }
        _ => ("<the Authorization value>".to_owned(), None),
    };
    let body = serde_json::json!({
        "endpoint": hook.endpoint,
        "authorization": value,
        "log_format": hook.log_format,
        "enabled": true,
        "skip_ssl_verification": hook.self_signed,
    })
    .to_string()
    .replace('\'', r"'\''");
    let body = match spliced {
        // Leaves the single quotes for a double-quoted substitution.
        Some(shell) => body.replace(SLOT, &format!("'\"{shell}\"'")),
        None => body,
    };
    format!(
        "  curl -X PATCH {}/v2/audit-log-webhook \\\n    \
         -H \"Authorization: Bearer $KONNECT_TOKEN\" -H 'Content-Type: application/json' \\\n    \
         -d '{body}'\n",
        region.api()
    )
}

fn notes(config: &Config, guessed_host: bool, host: &str) -> String {
    let mut notes = vec![
        "KONNECT_TOKEN is a Konnect personal access token. Use the API host of your region \
         (--region us, eu, au, me, in, sg, or global); a Dev Portal destination takes the same \
         endpoint, authorization, log_format and skip_ssl_verification."
            .to_owned(),
    ];
    let listen: SocketAddr = config.server.listen;
    if listen.ip().is_loopback() {
        notes.push(format!(
            "[server] listen is {listen}: only this machine can connect, so Konnect cannot reach it."
        ));
    }
    if listen.port() == 0 {
        notes.push(
            "[server] listen has port 0 (any free port): replace PORT with the port the server logs as \"listening on\"."
                .to_owned(),
        );
    }
    if guessed_host {
        notes.push(format!(
            "{host} is this machine's host name: replace it (or pass --host) with the name or address Konnect can reach."
        ));
    }
    notes.iter().map(|note| format!("{note}\n")).collect()
}

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(authorization: Authorization) -> Webhook {
        Webhook {
            source: "konnect".into(),
            endpoint: "https://h:8443/audit-logs".into(),
            authorization,
            log_format: "cef",
            self_signed: true,
        }
    }

    #[test]
    fn the_call_reads_a_hidden_token_where_it_is_kept() {
        let file = Authorization::TokenFile {
            path: "data dir/token".into(),
            value: "Bearer secret".into(),
        };
        let hidden = konnect_call(&hook(file.clone()), Region::Eu, false);
        assert!(!hidden.contains("secret"), "{hidden}");
        assert!(hidden.contains("https://eu.api.konghq.com/v2/audit-log-webhook"));
        assert!(
            hidden.contains(r#""authorization":"'"$(cat 'data dir/token')"'","#),
            "{hidden}"
        );
        assert!(hidden.contains(r#""skip_ssl_verification":true"#));
        let shown = konnect_call(&hook(file), Region::Us, true);
        assert!(
            shown.contains(r#""authorization":"Bearer secret""#),
            "{shown}"
        );
        let env = Authorization::Env {
            variable: "TOKEN_VAR".into(),
            value: "it's".into(),
        };
        assert!(konnect_call(&hook(env.clone()), Region::Us, false).contains(r#""'"$TOKEN_VAR"'""#));
        // A quote in a shown value stays inside the single-quoted body.
        assert!(konnect_call(&hook(env), Region::Us, true).contains(r#""it'\''s""#));
    }
}
