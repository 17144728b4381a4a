//! Running on a NATS JetStream cluster (`[cluster]`, `serve --role`):
//! stateless receivers publish each delivery's events to a replicated
//! stream, with the store's dedupe identity as the message id, and answer
//! 200 only once the stream has acknowledged all of them; indexers consume
//! the stream into their local store.
//!
//! - [`config`]: the `[cluster]` table;
//! - [`stream`]: connecting, creating or checking the stream;
//! - [`wire`]: the messages' encoding;
//! - [`publish`]: the receiver's side;
//! - [`indexer`]: the indexer's side;
//! - [`status`]: what `/status` and `/metrics` report.
//!
//! Nothing here is used without `[cluster]`: the embedded store alone
//! stays the default.

pub mod config;
pub mod indexer;
pub mod publish;
pub mod status;
pub mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use async_nats::jetstream;
use prometheus_client::registry::Registry;

pub use config::ClusterConfig;
pub use publish::{Outbox, PublishFailure, Publisher};
pub use status::ClusterMetrics;

/// What a `serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Receive and store (with `[cluster]`: receive, publish, and index).
    #[default]
    All,
    /// Receive and publish to the stream; needs `[cluster]`.
    Receiver,
    /// Consume the stream into the local store; needs `[cluster]`.
    Indexer,
}

impl Role {
    /// The name `--role` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Receiver => "receiver",
            Role::Indexer => "indexer",
        }
    }

    /// Whether this role answers webhooks.
    pub fn receives(self) -> bool {
        self != Role::Indexer
    }

    /// Whether this role consumes the stream (with `[cluster]`).
    pub fn indexes(self) -> bool {
        self != Role::Receiver
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "all" => Ok(Role::All),
            "receiver" => Ok(Role::Receiver),
            "indexer" => Ok(Role::Indexer),
            other => Err(format!(
                "unknown role {other:?}: use all, receiver or indexer"
            )),
        }
    }
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `--role receiver` or `indexer` without `[cluster]`.
    #[error(
        "--role {0} needs a [cluster] table in the configuration (the NATS servers); \
         without one, run the default role `all`"
    )]
    NoCluster(&'static str),
    /// No NATS server could be reached.
    #[error("cannot connect to NATS at {urls} (`[cluster] nats_urls`): {message}")]
    Connect {
        /// The configured URLs.
        urls: String,
        /// Why.
        message: String,
    },
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {} (`[cluster] creds_file`): {message}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `token_env` names a variable that is not set.
    #[error("environment variable {0} (`[cluster] token_env`) is not set")]
    MissingToken(String),
    /// The stream could not be read or created.
    #[error("JetStream stream {stream}: {message}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// Why.
        message: String,
    },
    /// The stream exists with other settings.
    #[error(
        "the JetStream stream {stream} exists with other settings than [cluster] asks for: \
         {differences}. Change [cluster] to match, or change the stream (e.g. `nats stream edit {stream}`)"
    )]
    Mismatch {
        /// The stream's name.
        stream: String,
        /// Each difference.
        differences: String,
    },
}

/// A process's link to the cluster.
pub struct Cluster {
    /// The settings.
    pub config: Arc<ClusterConfig>,
    /// This process's role.
    pub role: Role,
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub context: jetstream::Context,
    /// Publishes deliveries (receivers).
    pub publisher: Option<Publisher>,
    /// Counters for `/status` and `/metrics`.
    pub metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("role", &self.role)
            .field("stream", &self.config.stream)
            .finish()
    }
}

impl Cluster {
    /// Connects, creates or checks the stream, and registers the metrics.
    pub async fn join(
        config: ClusterConfig,
        role: Role,
        registry: &mut Registry,
    ) -> Result<Cluster, ClusterError> {
        let config = Arc::new(config);
        let client = stream::connect(&config).await?;
        let context = stream::context(client.clone(), &config);
        stream::ensure(&context, &config).await?;
        let metrics = ClusterMetrics::new(registry);
        let publisher = role
            .receives()
            .then(|| Publisher::new(context.clone(), config.clone(), metrics.clone()));
        tracing::info!(
            role = role.as_str(), stream = %config.stream, replicas = config.replicas,
            servers = %config.nats_urls.join(","), "joined the NATS JetStream cluster"
        );
        Ok(Cluster {
            config,
            role,
            client,
            context,
            publisher,
            metrics,
        })
    }

    /// `/status`'s `cluster` object.
    pub fn status(&self) -> serde_json::Value {
        self.metrics
            .status(&self.config, self.role.as_str(), &self.client)
    }
}
