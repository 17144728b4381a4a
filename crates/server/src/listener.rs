//! Accept loops: connection limit, TLS handshake timeout, HTTP/1.1 and h2,
//! and a graceful stop when the shutdown watch flips.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::state::AppState;

/// How long in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct Settings {
    max_connections: usize,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
}

impl From<&Limits> for Settings {
    fn from(l: &Limits) -> Self {
        Settings {
            max_connections: l.max_connections,
            handshake_timeout: Duration::from_secs(l.tls_handshake_timeout_secs),
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
        }
    }
}

fn http_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(64);
    builder
}

/// Serves the webhook listener over TLS until `stop` turns true.
pub async fn serve_https(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<AppState>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = settings.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let state = state.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        crate::ingest::handle(state, peer, request).await,
                    )
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drain(graceful).await;
}

/// Serves the admin listener (plain HTTP/1.1) until `stop` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let builder = Arc::new(http_builder(&settings));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, _peer): (_, SocketAddr) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::admin::handle(state, started, request).await,
                )
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    drop(listener);
    drain(graceful).await;
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}
