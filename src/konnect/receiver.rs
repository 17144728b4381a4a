//! This receiver's side, for the `konnect` commands: the configured source
//! (its path, its authorization value, whether the server serves its
//! generated self-signed certificate) and, from the running server's admin
//! listener, its per-source status and its record of gaps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use auditsink_server::config::{DEFAULT_SOURCE_NAME, DEFAULT_SOURCE_PATH};
use auditsink_server::Config;
use serde_json::Value;

use crate::query::{resolve, running_admin_addr};
use crate::StoreLocation;

/// A configured source, as Konnect should be pointed at it.
pub struct Receiver {
    pub config: Config,
    pub data_dir: PathBuf,
    pub source: String,
    pub path: String,
    /// Whether the server serves its generated self-signed certificate.
    pub self_signed: bool,
}

impl Receiver {
    /// The receiver of `location`, and its source `name` (the only one
    /// when not named).
    pub fn open(location: &StoreLocation, name: Option<&str>) -> anyhow::Result<Receiver> {
        let (config, data_dir) = resolve(location)?;
        let (source, path) = if config.sources.is_empty() {
            if let Some(name) = name.filter(|n| *n != DEFAULT_SOURCE_NAME) {
                bail!("no source {name:?}: the default configuration has one source, {DEFAULT_SOURCE_NAME:?}");
            }
            (
                DEFAULT_SOURCE_NAME.to_owned(),
                DEFAULT_SOURCE_PATH.to_owned(),
            )
        } else {
            let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
            let found = match name {
                Some(name) => config.sources.iter().find(|s| s.name == name),
                None if config.sources.len() == 1 => config.sources.first(),
                None => bail!(
                    "the configuration has several sources ({}): name one with --source",
                    names.join(", ")
                ),
            };
            let Some(found) = found else {
                bail!(
                    "no source {:?} in the configuration (sources: {})",
                    name.unwrap_or_default(),
                    names.join(", ")
                )
            };
            (found.name.clone(), found.path.clone())
        };
        let self_signed = config.server.tls_cert.is_none() || config.server.tls_key.is_none();
        Ok(Receiver {
            config,
            data_dir,
            source,
            path,
            self_signed,
        })
    }

    /// The `Authorization` value the source accepts (the first one), as
    /// Konnect must send it: from `file` when given, else the config's
    /// `authorization` or `authorization_env`, else the generated token.
    pub fn authorization(&self, file: Option<&Path>) -> anyhow::Result<String> {
        let value = if let Some(file) = file {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
        } else if let Some(source) = self.config.sources.iter().find(|s| s.name == self.source) {
            if let Some(value) = source.authorization.values().first() {
                value.clone()
            } else if let Some(variable) = source.authorization_env.values().first() {
                std::env::var(variable).with_context(|| {
                    format!(
                        "source {:?} takes its authorization from ${variable}, which is not set",
                        self.source
                    )
                })?
            } else {
                bail!(
                    "source {:?} keeps only the SHA-256 of its authorization: pass the value \
                     with --authorization-file FILE",
                    self.source
                )
            }
        } else {
            let path = self.data_dir.join("token");
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the generated token {} (run `auditsink serve` once to create it)",
                    path.display()
                )
            })?
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            bail!(
                "the authorization value of source {:?} is empty",
                self.source
            );
        }
        Ok(value)
    }

    /// The running server's admin address, if it runs.
    pub fn admin(&self) -> Option<SocketAddr> {
        let addr = running_admin_addr(&self.data_dir, &self.config);
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .ok()
            .map(|_| addr)
    }

    /// The running server's admin address, or an error saying to start it.
    pub fn require_admin(&self) -> anyhow::Result<SocketAddr> {
        self.admin().with_context(|| {
            format!(
                "the receiver of {} is not running: start `auditsink serve` first",
                self.data_dir.display()
            )
        })
    }

    /// GETs an admin path as JSON.
    pub fn admin_json(&self, addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
        let runtime = crate::admin_stream::runtime()?;
        let body = runtime.block_on(crate::admin_stream::get(addr, path))?;
        serde_json::from_slice(&body).with_context(|| format!("admin {path}: not JSON"))
    }

    /// This source's entry in the running server's `/status`.
    pub fn status(&self, addr: SocketAddr) -> anyhow::Result<Value> {
        let status = self.admin_json(addr, "/status")?;
        status
            .get("sources")
            .and_then(Value::as_array)
            .and_then(|sources| {
                sources
                    .iter()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(&self.source))
            })
            .cloned()
            .with_context(|| format!("the running server has no source {:?}", self.source))
    }
}
