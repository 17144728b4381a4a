//! `auditsink serve`: run the receiver until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditsink_server::cluster::Role;
use auditsink_server::{Config, Server, StartError, Startup};

use crate::logging::{self, LogFormat};
use crate::webhook;

#[derive(clap::Args)]
pub struct Args {
    /// Configuration file. Without it: HTTPS on 0.0.0.0:8443 with a generated
    /// self-signed certificate, one source at /audit-logs with a generated
    /// token, data in ./auditsink-data.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log style.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// What this process does: `all` receives and stores (with `[cluster]`,
    /// receives, publishes and indexes); `receiver` publishes deliveries to
    /// the NATS JetStream stream; `indexer` consumes the stream into its
    /// store and serves the admin API. The last two need `[cluster]`.
    #[arg(long, value_enum, default_value_t = RoleArg::All)]
    role: RoleArg,
}

/// `--role`
#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    All,
    Receiver,
    Indexer,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::All => Role::All,
            RoleArg::Receiver => Role::Receiver,
            RoleArg::Indexer => Role::Indexer,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format);
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    crate::memory::map_large_buffers();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    crate::memory::spawn_trimmer();
    runtime.block_on(async {
        // Before anything listens: a signal that comes while the server
        // starts must stop it cleanly, not kill it with work in flight.
        let shutdown = shutdown_signal();
        let role = Role::from(args.role);
        let (server, startup) = Server::start_as(config.clone(), role)
            .await
            .map_err(|e| start_error(e, &config))?;
        let admin = server.admin_addr()?;
        if role.receives() {
            let addr = server.local_addr()?;
            announce(&config, &startup, addr);
            tracing::info!("listening on https://{addr}");
        } else {
            tracing::info!(stream = ?config.cluster.as_ref().map(|c| &c.stream), "indexer: no webhook listener");
        }
        tracing::info!(
            "admin on http://{admin} (web console at /; /healthz, /status, /api/events)"
        );
        server.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A startup failure, with the configuration key to look at where the
/// library's message does not name one.
fn start_error(error: StartError, config: &Config) -> anyhow::Error {
    let data_dir = config.data_dir.display();
    let context = match &error {
        StartError::Tls(_) if config.server.tls_cert.is_some() => {
            "loading the certificate and key of `[server] tls_cert` and `tls_key`".to_owned()
        }
        StartError::Tls(_) => format!(
            "loading the generated certificate in {data_dir}/tls (delete that directory to generate a new one)"
        ),
        StartError::SelfSigned(_) => {
            format!("generating a self-signed certificate in {data_dir}/tls (`data_dir`)")
        }
        StartError::Store(_) => format!("opening the store in {data_dir}/store (`data_dir`)"),
        StartError::Token(_) => format!("the generated token in {data_dir}/token (`data_dir`)"),
        _ => return error.into(),
    };
    anyhow::Error::new(error).context(context)
}

/// Listens for SIGINT and SIGTERM from now on (the handlers are installed
/// here, not when the returned future is first polled) and resolves when
/// either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("SIGINT received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                },
                (Ok(mut interrupt), Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                    interrupt.recv().await;
                }
                (Err(e), _) => {
                    tracing::warn!(error = %e, "cannot listen for signals; waiting for Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Tells the operator, once, what first run created and how to point Konnect
/// here (`auditsink webhook` prints the same again).
fn announce(config: &Config, startup: &Startup, addr: std::net::SocketAddr) {
    if let Some(cert) = &startup.generated_cert {
        tracing::info!(path = %cert.display(), "generated a self-signed certificate");
    }
    if startup.self_signed {
        tracing::info!(fingerprint = %startup.cert_fingerprint, "serving a self-signed certificate (SHA-256)");
    }
    let Some(path) = &startup.default_source_path else {
        return;
    };
    let token_file = config.data_dir.join("token");
    if startup.new_token.is_none() {
        tracing::info!(path = %path, token_file = %token_file.display(), "default source (token in the token file; `auditsink webhook` shows the Konnect call)");
        return;
    }
    let mut bound = config.clone();
    bound.server.listen = addr;
    let host = webhook::host_name();
    let hooks = webhook::webhooks(&bound, &host);
    let Some(hook) = hooks.first() else { return };
    let token = hook.authorization.value().unwrap_or_default();
    // Printed to stdout, not logged: tokens never go to the logs.
    println!(
        "\nauditsink generated the Authorization value of its webhook (saved to {file}, mode 0600;\n\
         `auditsink webhook` prints it and this call again):\n\n    {token}\n\n\
         Point Konnect's org audit logs here (use your region's API host: us, eu, au, me, in, sg or\n\
         global; replace {host} with an address Konnect can reach; KONNECT_TOKEN is a Konnect\n\
         personal access token):\n\n{call}",
        file = token_file.display(),
        call = webhook::konnect_call(hook, webhook::Region::Us, true),
    );
}
