//! Configuration: the TOML file (`config/auditsink.toml` documents every key)
//! and the embedded default used when no file is given.
//!
//! Why one piece (about 590 lines): the sections of one file, with their
//! defaults and the checks across sections; most of it is the typed
//! shape of the TOML, kept beside `config/auditsink.toml`'s order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use auditsink_parser::Format;
use serde::Deserialize;

/// Path of the one source of the embedded default configuration.
pub const DEFAULT_SOURCE_PATH: &str = "/audit-logs";
/// Name of the one source of the embedded default configuration.
pub const DEFAULT_SOURCE_NAME: &str = "konnect";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the store, the generated certificate and token live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Days to keep events and quarantined lines, counted from when they were
    /// received (a background task removes older ones with their index
    /// entries). Absent: keep everything forever.
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// The store's page cache in MiB (sled's cache_capacity).
    #[serde(default = "default_store_cache_mb")]
    pub store_cache_mb: u64,
    /// The HTTPS listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The plain-HTTP admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Size, count and time limits on what clients control.
    #[serde(default)]
    pub limits: Limits,
    /// Webhook endpoints. Empty means the embedded default source.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// A NATS JetStream cluster to publish to and index from (`serve
    /// --role`); absent: the embedded store alone.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Destinations events are forwarded to.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<crate::sinks::SinkConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain. With `tls_key`; absent: a self-signed
    /// certificate generated in `data_dir/tls/`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (plain HTTP; keep it on loopback).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Seconds without a delivery after which a source is `inactive`.
    #[serde(default = "default_inactive_after")]
    pub inactive_after_secs: u64,
    /// The exact `Authorization` header value(s) every admin request must
    /// carry (`Basic ...` lets a browser log in). Required when `listen` is
    /// not a loopback address.
    #[serde(default)]
    pub authorization: OneOrMany,
    /// Environment variable(s) holding accepted values instead.
    #[serde(default)]
    pub authorization_env: OneOrMany,
    /// SHA-256 (hex) of accepted values.
    #[serde(default)]
    pub authorization_sha256: OneOrMany,
}

impl AdminConfig {
    /// Whether any `authorization*` key is set.
    pub fn has_authorization(&self) -> bool {
        [
            &self.authorization,
            &self.authorization_env,
            &self.authorization_sha256,
        ]
        .iter()
        .any(|a| !a.values().is_empty())
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body as sent (compressed), in bytes: 413 beyond.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Largest body after decompression, in bytes: 413 beyond.
    #[serde(default = "default_max_decompressed")]
    pub max_decompressed_bytes: u64,
    /// Most lines in one request: 413 beyond.
    #[serde(default = "default_max_lines")]
    pub max_lines_per_request: usize,
    /// Most simultaneous connections; further ones wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a client has to send a request head: the first one from the
    /// end of the TLS handshake, later ones from the start of their bytes.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole body.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open without a request.
    #[serde(default = "default_keep_alive_idle")]
    pub keep_alive_idle_secs: u64,
    /// After an answer sent before the body was read (401, 404, 405, 413,
    /// 415, 429): the most body bytes read and discarded so the client can
    /// finish sending and read the answer (nginx's lingering close); 0
    /// turns lingering off.
    #[serde(default = "default_lingering_max_bytes")]
    pub lingering_max_bytes: u64,
    /// Seconds the discarding may last in all (nginx's `lingering_time`).
    #[serde(default = "default_lingering_time")]
    pub lingering_time_secs: u64,
    /// Seconds it waits for the next bytes (nginx's `lingering_timeout`).
    #[serde(default = "default_lingering_timeout")]
    pub lingering_timeout_secs: u64,
    /// Requests handled at once; beyond, 429 with `Retry-After`.
    #[serde(default = "default_max_inflight_requests")]
    pub max_inflight_requests: usize,
    /// Body bytes (as sent) of the requests handled at once; beyond, 429.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// Memory the requests handled at once may take together, in bytes:
    /// what each really holds (its body, the decompressed text, the parsed
    /// events and prepared records, the batch while it is written). A
    /// request that would pass it waits for nothing: 429 with
    /// `Retry-After`, or 413 if it alone needs more than all of it. The
    /// default, 512 MiB, keeps the process under 1 GiB with the default
    /// store cache.
    #[serde(default = "default_max_inflight_memory")]
    pub max_inflight_memory: u64,
}

/// One `[[source]]`: a webhook endpoint with its own path and token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name in `/status`, logs and the `source` of stored events.
    pub name: String,
    /// URL path Konnect posts to, e.g. `/audit-logs/us`.
    pub path: String,
    /// The exact `Authorization` header value(s) Konnect sends (any scheme);
    /// a list accepts any of them (token rotation).
    #[serde(default)]
    pub authorization: OneOrMany,
    /// Environment variable(s) holding accepted values instead.
    #[serde(default)]
    pub authorization_env: OneOrMany,
    /// SHA-256 (hex) of accepted values, so the file need not hold a token.
    #[serde(default)]
    pub authorization_sha256: OneOrMany,
    /// `auto`, `cef` or `json`.
    #[serde(default, deserialize_with = "deserialize_format")]
    pub format: Format,
    /// Konnect's public keys: a JWKS file path, or an `https://` URL fetched
    /// at start and refreshed (last good copy kept in `data_dir/jwks/`).
    pub jwks: Option<String>,
    /// What to do with signatures. Default: `tag` with `jwks`, else `off`.
    pub signatures: Option<SignaturePolicy>,
    /// Seconds between refreshes of a `jwks` URL.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Extra PEM CA to trust when fetching a `jwks` URL (besides the public
    /// web roots), for a key server with a private certificate.
    pub jwks_ca: Option<PathBuf>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// Not set.
    #[default]
    None,
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn values(&self) -> &[String] {
        match self {
            OneOrMany::None => &[],
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values,
        }
    }
}

/// `signatures = "off" | "tag" | "enforce"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// Do not verify: events carry `"signature": "unverified"`.
    Off,
    /// Verify and record the outcome in each event's `signature`.
    Tag,
    /// Verify; quarantine invalid and missing signatures with the reason
    /// (still answering 200, so Konnect does not retry a forgery forever).
    Enforce,
}

impl SourceConfig {
    /// The effective policy.
    pub fn signature_policy(&self) -> SignaturePolicy {
        match (self.signatures, &self.jwks) {
            (Some(policy), _) => policy,
            (None, Some(_)) => SignaturePolicy::Tag,
            (None, None) => SignaturePolicy::Off,
        }
    }
}

fn default_jwks_refresh() -> u64 {
    3600
}

fn deserialize_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./auditsink-data")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_inactive_after() -> u64 {
    3600
}
fn default_max_body() -> u64 {
    16 * 1024 * 1024
}
fn default_max_decompressed() -> u64 {
    128 * 1024 * 1024
}
fn default_max_lines() -> usize {
    100_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    30
}
fn default_body_timeout() -> u64 {
    60
}
fn default_keep_alive_idle() -> u64 {
    60
}
fn default_lingering_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_lingering_time() -> u64 {
    30
}
fn default_lingering_timeout() -> u64 {
    5
}
fn default_max_inflight_requests() -> usize {
    256
}
fn default_max_inflight_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_max_inflight_memory() -> u64 {
    512 * 1024 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            inactive_after_secs: default_inactive_after(),
            authorization: OneOrMany::None,
            authorization_env: OneOrMany::None,
            authorization_sha256: OneOrMany::None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_decompressed_bytes: default_max_decompressed(),
            max_lines_per_request: default_max_lines(),
            max_connections: default_max_connections(),
            tls_handshake_timeout_secs: default_handshake_timeout(),
            header_read_timeout_secs: default_header_timeout(),
            body_read_timeout_secs: default_body_timeout(),
            keep_alive_idle_secs: default_keep_alive_idle(),
            lingering_max_bytes: default_lingering_max_bytes(),
            lingering_time_secs: default_lingering_time(),
            lingering_timeout_secs: default_lingering_timeout(),
            max_inflight_requests: default_max_inflight_requests(),
            max_inflight_bytes: default_max_inflight_bytes(),
            max_inflight_memory: default_max_inflight_memory(),
        }
    }
}

impl Default for Config {
    /// The embedded default: everything default, no sources (so the
    /// generated-token default source is used).
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            limits: Limits::default(),
            sources: Vec::new(),
            sinks: Vec::new(),
            retention_days: None,
            store_cache_mb: default_store_cache_mb(),
            cluster: None,
        }
    }
}

fn default_store_cache_mb() -> u64 {
    256
}

/// A configuration problem, reported to the operator at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// TOML parser's message (with line and column).
        message: String,
    },
    /// The file parses but says something impossible.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Config {
    /// Reads and validates a configuration file. Relative paths in it are
    /// taken relative to the current directory, like the embedded default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.retention_days == Some(0) {
            return invalid(
                "retention_days must be at least 1 (leave it out to keep events forever)".into(),
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(ConfigError::Invalid)?;
        }
        if !(16..=1 << 20).contains(&self.store_cache_mb) {
            return invalid("store_cache_mb must be between 16 and 1048576".into());
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid(
                "[server] tls_cert and tls_key go together: set both or neither".into(),
            );
        }
        if !self.admin.listen.ip().is_loopback() && !self.admin.has_authorization() {
            return invalid(format!(
                "[admin] listen = \"{}\" is not a loopback address: set [admin] authorization \
                 (or authorization_env / authorization_sha256), or keep the admin listener on \
                 127.0.0.1 and reach it over an SSH tunnel",
                self.admin.listen
            ));
        }
        if [
            &self.admin.authorization,
            &self.admin.authorization_env,
            &self.admin.authorization_sha256,
        ]
        .iter()
        .any(|a| a.values().iter().any(String::is_empty))
        {
            return invalid("[admin]: an empty authorization value".into());
        }
        if let Some(bad) = self
            .admin
            .authorization_sha256
            .values()
            .iter()
            .find(|h| !is_sha256_hex(h))
        {
            return invalid(format!(
                "[admin]: authorization_sha256 {bad:?} is not 64 hex digits"
            ));
        }
        let mut sink_names = std::collections::HashSet::new();
        for sink in &self.sinks {
            if let Some(problem) = sink.problem() {
                return invalid(problem);
            }
            if !sink_names.insert(sink.name.as_str()) {
                return invalid(format!("two sinks are named {:?}", sink.name));
            }
        }
        let mut paths = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for source in &self.sources {
            if !source.path.starts_with('/') {
                return invalid(format!(
                    "source {:?}: path must start with '/'",
                    source.name
                ));
            }
            if !paths.insert(source.path.as_str()) {
                return invalid(format!("two sources use the path {:?}", source.path));
            }
            if source.name.is_empty() || !names.insert(source.name.as_str()) {
                return invalid(format!(
                    "source names must be unique and non-empty: {:?}",
                    source.name
                ));
            }
            if source.signature_policy() != SignaturePolicy::Off && source.jwks.is_none() {
                return invalid(format!(
                    "source {:?}: signatures = tag or enforce needs jwks (a file or an https:// URL)",
                    source.name
                ));
            }
            if let Some(jwks) = &source.jwks {
                if jwks.contains("://") && !jwks.starts_with("https://") {
                    return invalid(format!(
                        "source {:?}: a jwks URL must be https://",
                        source.name
                    ));
                }
            }
            if source.jwks_refresh_secs == 0 {
                return invalid(format!(
                    "source {:?}: jwks_refresh_secs must be > 0",
                    source.name
                ));
            }
            let accepted = [
                &source.authorization,
                &source.authorization_env,
                &source.authorization_sha256,
            ];
            if accepted.iter().all(|a| a.values().is_empty()) {
                return invalid(format!(
                    "source {:?}: set authorization, authorization_env or authorization_sha256",
                    source.name
                ));
            }
            if accepted
                .iter()
                .any(|a| a.values().iter().any(String::is_empty))
            {
                return invalid(format!(
                    "source {:?}: an empty authorization value",
                    source.name
                ));
            }
            if let Some(bad) = source
                .authorization_sha256
                .values()
                .iter()
                .find(|h| !is_sha256_hex(h))
            {
                return invalid(format!(
                    "source {:?}: authorization_sha256 {bad:?} is not 64 hex digits",
                    source.name
                ));
            }
        }
        let limits = &self.limits;
        let positive = [
            ("max_body_bytes", limits.max_body_bytes),
            ("max_decompressed_bytes", limits.max_decompressed_bytes),
            ("max_connections", limits.max_connections as u64),
            ("max_lines_per_request", limits.max_lines_per_request as u64),
            ("max_inflight_requests", limits.max_inflight_requests as u64),
            ("max_inflight_bytes", limits.max_inflight_bytes),
            ("max_inflight_memory", limits.max_inflight_memory),
            (
                "tls_handshake_timeout_secs",
                limits.tls_handshake_timeout_secs,
            ),
            ("header_read_timeout_secs", limits.header_read_timeout_secs),
            ("body_read_timeout_secs", limits.body_read_timeout_secs),
            ("keep_alive_idle_secs", limits.keep_alive_idle_secs),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(format!("[limits] {name} must be greater than 0"));
        }
        if limits.max_inflight_bytes < limits.max_body_bytes {
            return invalid("[limits] max_inflight_bytes must be at least max_body_bytes".into());
        }
        if limits.max_inflight_memory
            < limits
                .max_body_bytes
                .saturating_add(limits.max_decompressed_bytes)
        {
            return invalid(
                "[limits] max_inflight_memory must be at least max_body_bytes + max_decompressed_bytes"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_with_defaults_shown() {
        let config = Config::from_toml(include_str!("../../../config/auditsink.toml")).unwrap();
        let defaults = Config::default();
        assert_eq!(config.data_dir, defaults.data_dir);
        assert_eq!(config.retention_days, defaults.retention_days);
        assert_eq!(config.store_cache_mb, defaults.store_cache_mb);
        assert_eq!(config.server.listen, defaults.server.listen);
        assert_eq!(config.admin.listen, defaults.admin.listen);
        assert_eq!(config.limits.max_body_bytes, defaults.limits.max_body_bytes);
        assert_eq!(
            config.limits.max_decompressed_bytes,
            defaults.limits.max_decompressed_bytes
        );
        assert_eq!(
            config.limits.body_read_timeout_secs,
            defaults.limits.body_read_timeout_secs
        );
        assert_eq!(
            (
                config.limits.lingering_max_bytes,
                config.limits.lingering_time_secs,
                config.limits.lingering_timeout_secs
            ),
            (
                defaults.limits.lingering_max_bytes,
                defaults.limits.lingering_time_secs,
                defaults.limits.lingering_timeout_secs
            )
        );
        assert_eq!(
            config.limits.max_inflight_memory,
            defaults.limits.max_inflight_memory
        );
        // As shipped, it runs the default source (the examples are comments).
        assert!(config.sources.is_empty());
        assert!(config.sinks.is_empty());
    }

    /// The commented-out `[[source]]` examples of the example file are
    /// valid once uncommented.
    #[test]
    fn documented_source_examples_parse() {
        let text = include_str!("../../../config/auditsink.toml");
        let start = text.find("\n# [[source]]").unwrap();
        let end = text.find("\n# Forwarding to a SIEM").unwrap_or(text.len());
        let mut uncommented = text[..start].to_owned();
        for line in text[start..end].lines() {
            let setting = line.strip_prefix("# ").filter(|rest| {
                rest.starts_with("[[source]]")
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            });
            uncommented.push_str(setting.unwrap_or(line));
            uncommented.push('\n');
        }
        let config = Config::from_toml(&uncommented).unwrap();
        assert_eq!(config.sources.len(), 2);
        assert_eq!(config.sources[0].name, "konnect-us");
        assert_eq!(config.sources[0].authorization.values().len(), 2);
        assert_eq!(
            config.sources[0].signature_policy(),
            SignaturePolicy::Enforce
        );
        assert_eq!(config.sources[1].format, Format::Json);
    }

    /// The commented-out `[[sink]]` examples are valid once uncommented.
    #[test]
    fn documented_sink_examples_parse() {
        let text = include_str!("../../../config/auditsink.toml");
        let start = text.find("\n# [[sink]]").unwrap();
        let mut uncommented = text[..start].to_owned();
        for line in text[start..].lines() {
            let setting = line.strip_prefix("# ").filter(|rest| {
                rest.starts_with("[[sink]]")
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            });
            uncommented.push_str(setting.unwrap_or(line));
            uncommented.push('\n');
        }
        let config = Config::from_toml(&uncommented).unwrap();
        let kinds: Vec<_> = config.sinks.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["syslog", "splunk_hec", "elasticsearch"]);
        assert_eq!(config.sinks[0].batch_max_events, 500);
        assert!(config.sinks[1].indexer_ack);
        assert_eq!(
            config.sinks[2].index.as_deref(),
            Some("konnect-audit-%Y.%m.%d")
        );
        assert!(Config::from_toml(
            "[[sink]]\nname = \"x\"\ntype = \"splunk_hec\"\nurl = \"https://h\"\n"
        )
        .is_err());
    }

    #[test]
    fn authorization_forms() {
        let config = Config::from_toml(
            "[[source]]\nname = \"a\"\npath = \"/a\"\nauthorization = [\"Bearer new\", \"Bearer old\"]\n\
             authorization_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
        )
        .unwrap();
        assert_eq!(
            config.sources[0].authorization.values(),
            ["Bearer new", "Bearer old"]
        );
        assert_eq!(config.sources[0].authorization_sha256.values().len(), 1);
        assert!(config.sources[0].authorization_env.values().is_empty());
    }

    #[test]
    fn admin_off_loopback_needs_authorization() {
        let config = Config::from_toml(
            "[admin]\nlisten = \"0.0.0.0:9090\"\nauthorization = \"Basic YWRtaW46cw==\"\n",
        )
        .unwrap();
        assert!(config.admin.has_authorization());
        let config = Config::from_toml("[admin]\nlisten = \"[::1]:9090\"\n").unwrap();
        assert!(!config.admin.has_authorization());
        assert!(Config::from_toml(
            "[admin]\nlisten = \"10.0.0.5:9090\"\nauthorization_env = \"ADMIN_AUTH\"\n"
        )
        .is_ok());
    }

    #[test]
    fn rejects_what_cannot_work() {
        let source = |extra: &str| format!("[[source]]\nname = \"a\"\npath = \"/a\"\n{extra}");
        for (text, needle) in [
            (
                source(""),
                "set authorization, authorization_env or authorization_sha256",
            ),
            (source("authorization = []"), "set authorization"),
            (
                source("authorization = [\"a\", \"\"]"),
                "empty authorization",
            ),
            (
                source("authorization_sha256 = \"abc\""),
                "not 64 hex digits",
            ),
            (
                format!(
                    "{}\n{}",
                    source("authorization = \"x\""),
                    source("authorization = \"y\"")
                ),
                "path",
            ),
            ("[server]\ntls_cert = \"c.pem\"".into(), "go together"),
            (
                source("authorization = \"x\"\nformat = \"xml\""),
                "unknown format",
            ),
            (
                source("authorization = \"x\"\nsignatures = \"enforce\""),
                "needs jwks",
            ),
            (
                source("authorization = \"x\"\njwks = \"http://k/jwks.json\""),
                "must be https",
            ),
            (
                source("authorization = \"x\"\nsignatures = \"maybe\""),
                "unknown variant",
            ),
            (
                source("authorization = \"x\"\njwks = \"k.json\"\njwks_refresh_secs = 0"),
                "> 0",
            ),
            ("[server]\nlisten = \"nonsense\"".into(), "listen"),
            ("unknown_key = 1".into(), "unknown field"),
            (
                "retention_days = 0".into(),
                "retention_days must be at least 1",
            ),
            ("retention_days = -3".into(), "retention_days"),
            (
                "store_cache_mb = 1".into(),
                "store_cache_mb must be between",
            ),
            (
                source("authorization = \"x\"").replace("\"/a\"", "\"a\""),
                "start with '/'",
            ),
            (
                "[admin]\nlisten = \"0.0.0.0:9090\"".into(),
                "not a loopback address: set [admin] authorization",
            ),
            (
                "[admin]\nlisten = \"[::]:9090\"\nauthorization = \"\"".into(),
                "an empty authorization value",
            ),
            (
                "[admin]\nauthorization = [\"Basic x\", \"\"]".into(),
                "[admin]: an empty authorization value",
            ),
            (
                "[admin]\nauthorization_sha256 = \"abc\"".into(),
                "[admin]: authorization_sha256 \"abc\" is not 64 hex digits",
            ),
        ] {
            let error = Config::from_toml(&text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }
}
