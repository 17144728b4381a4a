//! `auditsink serve`: run the receiver until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditsink_server::{Config, Server, Startup};

use crate::logging::{self, LogFormat};

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
        let (server, startup) = Server::start(config.clone()).await?;
        let addr = server.local_addr()?;
        let admin = server.admin_addr()?;
        announce(&config, &startup, addr);
        tracing::info!("listening on https://{addr}");
        tracing::info!("admin on http://{admin} (/healthz, /status, /api/events)");
        server.run(shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Tells the operator, once, what first run created and how to point Konnect here.
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
    let Some(token) = &startup.new_token else {
        tracing::info!(path = %path, token_file = %token_file.display(), "default source (token in the token file)");
        return;
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "HOST".into());
    let endpoint = format!("https://{host}:{}{path}", addr.port());
    let body = serde_json::json!({
        "endpoint": endpoint,
        "authorization": token,
        "log_format": "cef",
        "enabled": true,
        "skip_ssl_verification": startup.self_signed,
    });
    // Printed to stdout, not logged: this is the one time the token is shown.
    println!(
        "\nauditsink generated the Authorization value of its webhook (saved to {file}, mode 0600;\n\
         shown only this once):\n\n    {token}\n\n\
         Point Konnect's org audit logs here (use your region: us, eu, au; replace {host} with\n\
         an address Konnect can reach; KONNECT_TOKEN is a Konnect personal access token):\n\n\
         curl -X PATCH https://us.api.konghq.com/v2/audit-log-webhook \\\n  \
         -H \"Authorization: Bearer $KONNECT_TOKEN\" -H 'Content-Type: application/json' \\\n  \
         -d '{body}'\n",
        file = token_file.display(),
    );
}
