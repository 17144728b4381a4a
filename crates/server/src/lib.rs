//! # auditsink-server
//!
//! The receiving end: a TLS-terminating hyper listener that routes each
//! `POST` to a configured source, checks its `Authorization` header in
//! constant time, reads and decompresses the body within limits, parses the
//! lines, and appends the batch to the store before answering; plus a plain
//! HTTP admin listener for health, status and store reads.
//!
//! [`Server::start`] does everything that can fail at startup (configuration,
//! first-run token and certificate, store, binding); [`Server::run`] serves
//! until the shutdown future completes, then drains in-flight requests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
pub mod auth;
mod budget;
pub mod cluster;
pub mod config;
mod console;
pub mod decode;
pub mod fetch;
pub mod first_run;
mod gaps;
mod ingest;
pub mod keys;
mod linger;
mod listener;
mod metrics;
mod percent;
mod prepare;
mod request_body;
mod response;
pub mod sinks;
mod state;
pub mod status;
pub mod tls;
pub mod tls_client;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auditsink_storage::Store;

pub use config::Config;
use config::{DEFAULT_SOURCE_NAME, DEFAULT_SOURCE_PATH};
use state::{AppState, RuntimeLimits, Source};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A token could not be read or generated.
    #[error("token: {0}")]
    Token(std::io::Error),
    /// A source names an environment variable that is not set.
    #[error(
        "source {source_name:?}: environment variable {variable} (its `authorization_env`) is not set; \
         set it, or give the source `authorization` or `authorization_sha256` instead"
    )]
    MissingEnv {
        /// The source.
        source_name: String,
        /// The variable.
        variable: String,
    },
    /// The self-signed certificate could not be created.
    #[error("self-signed certificate: {0}")]
    SelfSigned(#[from] first_run::SelfSignedError),
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A source's signature keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] auditsink_storage::StoreError),
    /// The NATS JetStream cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// A forwarding sink could not be set up.
    #[error(transparent)]
    Sink(#[from] sinks::SinkSetupError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} (`{key}`): {cause}{}", bind_hint(cause))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The configuration key that sets it, e.g. `[admin] listen`.
        key: &'static str,
        /// Why (in the message, so not also a `source` that reports repeat).
        cause: std::io::Error,
    },
}

/// What to do about a bind failure, for the common causes.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there (a second auditsink?): stop it, or change that setting"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; a port below 1024 needs CAP_NET_BIND_SERVICE: grant it, or change that setting"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface of this machine has that address: change that setting"
        }
        _ => "",
    }
}

/// What startup did that the operator should hear about once.
#[derive(Debug, Default)]
pub struct Startup {
    /// The generated token of the default source, when created by this start.
    pub new_token: Option<String>,
    /// Path of the default source (when the embedded default is in use).
    pub default_source_path: Option<String>,
    /// The generated certificate, when created by this start.
    pub generated_cert: Option<PathBuf>,
    /// SHA-256 fingerprint of the serving certificate.
    pub cert_fingerprint: String,
    /// Whether the certificate is one auditsink generated (self-signed).
    pub self_signed: bool,
}

/// A server that has bound its listeners and is ready to run.
pub struct Server {
    data_dir: PathBuf,
    /// The webhook listener; none for an indexer.
    https: Option<tokio::net::TcpListener>,
    admin: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    certs: Arc<tls::CertStore>,
    state: Arc<AppState>,
    settings: listener::Settings,
    key_refreshers: Vec<(String, keys::JwksSource, Arc<keys::SourceKeys>)>,
}

impl Server {
    /// Resolves the configuration (generating the default token and
    /// certificate on first run), opens the store and binds both listeners.
    pub async fn start(config: Config) -> Result<(Server, Startup), StartError> {
        Server::start_as(config, cluster::Role::All).await
    }

    /// [`Server::start`] in a role: with `[cluster]`, also joins the NATS
    /// JetStream cluster (a receiver publishes its deliveries there, an
    /// indexer consumes them into its store and binds no webhook listener).
    pub async fn start_as(
        config: Config,
        role: cluster::Role,
    ) -> Result<(Server, Startup), StartError> {
        if config.cluster.is_none() && role != cluster::Role::All {
            return Err(cluster::ClusterError::NoCluster(role.as_str()).into());
        }
        if config.cluster.is_some() && config.sources.is_empty() && role.receives() {
            tracing::warn!(
                "[cluster] without [[source]] tables: this receiver's generated token is its own, \
                 so receivers behind one load balancer would refuse each other's deliveries; \
                 give every receiver the same [[source]] tables"
            );
        }
        let mut startup = Startup::default();
        let (sources, key_refreshers) = resolve_sources(&config, &mut startup).await?;
        let (cert, key) = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                let (cert, key, generated) = first_run::ensure_self_signed(&config.data_dir)?;
                startup.self_signed = true;
                startup.generated_cert = generated.then(|| cert.clone());
                (cert, key)
            }
        };
        let certs = tls::CertStore::load(&cert, &key)?;
        startup.cert_fingerprint = certs.fingerprint();
        let store = Store::open_with(
            &config.data_dir.join("store"),
            auditsink_storage::StoreOptions {
                retention_days: config.retention_days,
                cache_capacity_bytes: config.store_cache_mb * 1024 * 1024,
                ..Default::default()
            },
        )?;
        // A cluster's receiver keeps no events: sinks run where they are indexed.
        let forwarded = if role.indexes() {
            &config.sinks[..]
        } else {
            &[]
        };
        let sinks = Arc::new(sinks::SinkSet::new(forwarded, &store)?);
        let bind = |addr: SocketAddr, key: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|cause| StartError::Bind { addr, key, cause })
        };
        let https = match role.receives() {
            true => Some(bind(config.server.listen, "[server] listen").await?),
            false => None,
        };
        let admin = bind(config.admin.listen, "[admin] listen").await?;
        let mut state = AppState::new(
            store,
            sources,
            RuntimeLimits::from(&config.limits),
            Duration::from_secs(config.admin.inactive_after_secs),
        )
        .with_admin_guard(console::AdminGuard::new(admin_authorizer(&config.admin)?))
        .with_sinks(sinks);
        let joined = match &config.cluster {
            Some(settings) => Some(Arc::new(
                cluster::Cluster::join(settings.clone(), role, state.metrics.registry_mut())
                    .await?,
            )),
            None => None,
        };
        let state = Arc::new(state.with_cluster(joined));
        if let Some(addr) = https.as_ref().and_then(|l| l.local_addr().ok()) {
            state.set_webhook_addr(addr);
        }
        let server = Server {
            data_dir: config.data_dir.clone(),
            https,
            admin,
            tls: tokio_rustls::TlsAcceptor::from(certs.server_config()?),
            certs,
            state,
            settings: listener::Settings::from(&config.limits),
            key_refreshers,
        };
        Ok((server, startup))
    }

    /// The bound HTTPS address (an error for an indexer, which has none).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.https {
            Some(https) => https.local_addr(),
            None => Err(std::io::Error::other("an indexer has no webhook listener")),
        }
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets
    /// in-flight requests finish (up to 30 s), and flushes the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), auditsink_storage::StoreError> {
        let admin_file = admin_addr_file(&self.data_dir);
        if let Ok(addr) = self.admin.local_addr() {
            if let Err(e) = std::fs::write(&admin_file, format!("{addr}\n")) {
                tracing::warn!(error = %e, path = %admin_file.display(), "cannot record the admin address");
            }
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for (source, jwks, keys) in self.key_refreshers {
            tokio::spawn(jwks.refresh_until(source, keys, stopped.clone()));
        }
        tokio::spawn(reload_certificates(self.certs.clone(), stopped.clone()));
        let run_record = tokio::spawn(gaps::keep_run(self.state.clone(), stopped.clone()));
        let https = self.https.map(|https| {
            tokio::spawn(listener::serve_https(
                https,
                self.tls,
                self.state.clone(),
                self.settings.clone(),
                stopped.clone(),
            ))
        });
        let sink_runners = self.state.sinks.spawn(stopped.clone());
        let mut cluster_tasks = Vec::new();
        if let Some(cluster) = &self.state.cluster {
            let indexes = cluster.role.indexes();
            cluster_tasks.push(tokio::spawn(cluster.metrics.clone().watch(
                cluster.context.clone(),
                cluster.client.clone(),
                cluster.config.clone(),
                indexes,
                stopped.clone(),
            )));
            if indexes {
                cluster_tasks.push(tokio::spawn(cluster::indexer::run(
                    cluster.context.clone(),
                    cluster.config.clone(),
                    self.state.store.clone(),
                    cluster.metrics.clone(),
                    stopped.clone(),
                )));
            }
        }
        let admin = tokio::spawn(listener::serve_admin(
            self.admin,
            self.state.clone(),
            self.settings,
            stopped,
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        let _ = stop.send(true);
        if let Some(https) = https {
            let _ = https.await;
        }
        let _ = admin.await;
        for task in cluster_tasks {
            let _ = task.await;
        }
        if let Some(cluster) = &self.state.cluster {
            // What was acknowledged to the indexer's consumer must reach
            // the server before the process goes.
            let _ = cluster.client.flush().await;
        }
        let _ = run_record.await;
        for runner in sink_runners {
            let _ = runner.await;
        }
        self.state.store.flush()?;
        let _ = std::fs::remove_file(&admin_file);
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// How often the certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(5);

/// Reloads the certificate and key on SIGHUP, or when either file changes.
/// A broken pair is logged and the one in service stays.
async fn reload_certificates(
    certs: Arc<tls::CertStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signal = async {
            match hangup.as_mut() {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<Option<()>>();
        let only_if_changed = tokio::select! {
            _ = stop.changed() => return,
            _ = signal => false,
            _ = tokio::time::sleep(CERT_POLL) => true,
        };
        match certs.reload(only_if_changed) {
            Ok(true) => {
                tracing::info!(fingerprint = %certs.fingerprint(), "TLS certificate reloaded")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the one in service")
            }
        }
    }
}

/// Where a running server records its bound admin address, so that CLI
/// commands can reach it (the store is locked while it runs) even when the
/// configured port is 0.
pub fn admin_addr_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin.addr")
}

/// The `[admin] authorization*` values, or `None` when none is set.
fn admin_authorizer(admin: &config::AdminConfig) -> Result<Option<auth::Authorizer>, StartError> {
    if !admin.has_authorization() {
        return Ok(None);
    }
    authorizer(
        &admin.authorization,
        &admin.authorization_env,
        &admin.authorization_sha256,
    )
    .map(Some)
    .map_err(|e| e.of("[admin]"))
}

/// Why accepted `Authorization` values could not be resolved.
enum AuthorizationError {
    MissingEnv(String),
    BadSha256,
}

impl AuthorizationError {
    /// The startup error, for the source (or `[admin]`) that configured them.
    fn of(self, owner: &str) -> StartError {
        match self {
            AuthorizationError::MissingEnv(variable) => StartError::MissingEnv {
                source_name: owner.to_owned(),
                variable,
            },
            AuthorizationError::BadSha256 => {
                config::ConfigError::Invalid(format!("{owner:?}: bad authorization_sha256")).into()
            }
        }
    }
}

/// The accepted values: as written, from environment variables, as digests.
fn authorizer(
    values: &config::OneOrMany,
    env: &config::OneOrMany,
    sha256: &config::OneOrMany,
) -> Result<auth::Authorizer, AuthorizationError> {
    let mut tokens: Vec<String> = values.values().to_vec();
    for variable in env.values() {
        tokens.push(
            std::env::var(variable)
                .map_err(|_| AuthorizationError::MissingEnv(variable.clone()))?,
        );
    }
    auth::Authorizer::new(tokens.iter().map(String::as_str))
        .with_sha256(sha256.values().iter().map(String::as_str))
        .ok_or(AuthorizationError::BadSha256)
}

type KeyRefresher = (String, keys::JwksSource, Arc<keys::SourceKeys>);

async fn resolve_sources(
    config: &Config,
    startup: &mut Startup,
) -> Result<(Vec<Source>, Vec<KeyRefresher>), StartError> {
    if config.sources.is_empty() {
        let (token, new) =
            first_run::load_or_generate_token(&config.data_dir).map_err(StartError::Token)?;
        startup.new_token = new.map(|t| t.0);
        startup.default_source_path = Some(DEFAULT_SOURCE_PATH.to_owned());
        let source = Source {
            name: DEFAULT_SOURCE_NAME.to_owned(),
            path: DEFAULT_SOURCE_PATH.to_owned(),
            authorizer: auth::Authorizer::new([token.as_str()]),
            format: auditsink_parser::Format::Auto,
            signatures: None,
            status: Default::default(),
        };
        return Ok((vec![source], Vec::new()));
    }
    let mut sources = Vec::new();
    let mut refreshers = Vec::new();
    for source in &config.sources {
        let authorizer = authorizer(
            &source.authorization,
            &source.authorization_env,
            &source.authorization_sha256,
        )
        .map_err(|e| e.of(&source.name))?;
        let policy = source.signature_policy();
        let signatures = match (&source.jwks, policy) {
            (Some(setting), config::SignaturePolicy::Tag | config::SignaturePolicy::Enforce) => {
                let jwks = keys::JwksSource::from_setting(
                    setting,
                    source.jwks_ca.clone(),
                    &config.data_dir,
                    &source.name,
                    Duration::from_secs(source.jwks_refresh_secs),
                );
                let loaded = Arc::new(jwks.load().await?);
                tracing::info!(source = %source.name, keys = loaded.get().len(), policy = ?policy, "signature keys loaded");
                refreshers.push((source.name.clone(), jwks, loaded.clone()));
                Some(state::SignatureCheck {
                    policy,
                    keys: loaded,
                })
            }
            _ => None,
        };
        sources.push(Source {
            name: source.name.clone(),
            path: source.path.clone(),
            authorizer,
            format: source.format,
            signatures,
            status: Default::default(),
        });
    }
    Ok((sources, refreshers))
}
