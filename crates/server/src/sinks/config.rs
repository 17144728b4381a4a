//! `[[sink]]`: one destination events are forwarded to (see
//! `config/auditsink.toml` for every key).

use std::path::PathBuf;

use serde::Deserialize;

/// The kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// RFC 5424 syslog over TCP or TLS.
    Syslog,
    /// Splunk's HTTP Event Collector.
    SplunkHec,
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch,
}

impl SinkType {
    /// The name in the configuration and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Syslog => "syslog",
            SinkType::SplunkHec => "splunk_hec",
            SinkType::Elasticsearch => "elasticsearch",
        }
    }
}

/// Where a new sink's cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// With the oldest stored event.
    #[default]
    Beginning,
    /// After the newest stored event.
    Now,
}

/// How syslog frames reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// RFC 5425: TLS, octet-counted frames.
    #[default]
    Tls,
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
}

/// What a syslog message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// The line exactly as received (a CEF line stays signed).
    #[default]
    Raw,
    /// The normalized event as JSON.
    Json,
}

/// One `[[sink]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Name in `/status`, the CLI and the store (its cursor is kept under it).
    pub name: String,
    /// `syslog`, `splunk_hec` or `elasticsearch`.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// Sources whose events it forwards (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Where a new sink's cursor starts.
    #[serde(default)]
    pub start: Start,
    /// Most events in one batch.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Most bytes (as sent) in one batch; a single larger event goes alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Extra PEM CA to trust (besides the public web roots).
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (testing only).
    #[serde(default)]
    pub insecure: bool,
    /// Events received more than this many days ago need not wait for
    /// this sink: retention may remove them undelivered.
    pub max_lag_days: Option<u64>,
    /// Longest wait between two attempts while the destination fails.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Seconds one send (connect, write, answer) may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// syslog: `host:port` of the collector.
    pub address: Option<String>,
    /// syslog: `tls` (RFC 5425) or `tcp` (RFC 6587 octet counting).
    #[serde(default)]
    pub transport: Transport,
    /// syslog: `raw` (the line as received) or `json` (the normalized event).
    #[serde(default)]
    pub payload: Payload,
    /// syslog and splunk_hec: the host name sent (default: this machine's).
    #[serde(alias = "hostname")]
    pub host: Option<String>,
    /// splunk_hec, elasticsearch: the base URL.
    pub url: Option<String>,
    /// splunk_hec: the HEC token.
    pub token: Option<String>,
    /// splunk_hec: environment variable holding the token.
    pub token_env: Option<String>,
    /// splunk_hec: index; elasticsearch: index, `%Y`, `%m`, `%d` from the
    /// event time allowed.
    pub index: Option<String>,
    /// splunk_hec: sourcetype (default by line format).
    pub sourcetype: Option<String>,
    /// splunk_hec: wait for indexer acknowledgement.
    #[serde(default)]
    pub indexer_ack: bool,
    /// elasticsearch: environment variable holding an API key, as the
    /// create API key API's `encoded` field (base64 of `id:api_key`).
    pub api_key_env: Option<String>,
    /// elasticsearch: user for Basic authentication.
    pub username: Option<String>,
    /// elasticsearch: environment variable holding the password.
    pub password_env: Option<String>,
}

fn default_batch_max_events() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    4 << 20
}
fn default_retry_max_secs() -> u64 {
    60
}
fn default_timeout_secs() -> u64 {
    30
}

impl SinkConfig {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        let name = &self.name;
        let missing = |key: &str| {
            Some(format!(
                "sink {name:?}: {} needs `{key}`",
                self.kind.as_str()
            ))
        };
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control()) {
            return Some(format!(
                "sink {name:?}: name must be 1 to 200 printable characters"
            ));
        }
        if !(1..=100_000).contains(&self.batch_max_events) {
            return Some(format!(
                "sink {name:?}: batch_max_events must be 1 to 100000"
            ));
        }
        if !(1024..=(256 << 20)).contains(&self.batch_max_bytes) {
            return Some(format!(
                "sink {name:?}: batch_max_bytes must be 1024 to 268435456"
            ));
        }
        if !(1..=3600).contains(&self.retry_max_secs) || !(1..=3600).contains(&self.timeout_secs) {
            return Some(format!(
                "sink {name:?}: retry_max_secs and timeout_secs must be 1 to 3600"
            ));
        }
        if self.max_lag_days == Some(0) {
            return Some(format!("sink {name:?}: max_lag_days must be at least 1"));
        }
        match self.kind {
            SinkType::Syslog => {
                if self.address.is_none() {
                    return missing("address");
                }
            }
            SinkType::SplunkHec => {
                if self.url.is_none() {
                    return missing("url");
                }
                if self.token.is_none() == self.token_env.is_none() {
                    return Some(format!("sink {name:?}: set one of `token` or `token_env`"));
                }
            }
            SinkType::Elasticsearch => {
                if self.url.is_none() {
                    return missing("url");
                }
                if self.index.is_none() {
                    return missing("index");
                }
                if self.username.is_some() != self.password_env.is_some() {
                    return Some(format!(
                        "sink {name:?}: `username` and `password_env` go together"
                    ));
                }
                if self.username.is_some() && self.api_key_env.is_some() {
                    return Some(format!(
                        "sink {name:?}: set `api_key_env` or `username` + `password_env`, not both"
                    ));
                }
            }
        }
        None
    }
}
