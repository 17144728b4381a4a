//! Accept loops and the life of one connection: connection limit, TLS
//! handshake timeout, HTTP/1.1 and h2, an idle timeout between requests, and a
//! graceful stop (finish in-flight requests) when the shutdown watch flips.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::state::AppState;

/// How long in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections the admin listener serves at once.
const ADMIN_CONNECTIONS: usize = 64;

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct Settings {
    max_connections: usize,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl From<&Limits> for Settings {
    fn from(l: &Limits) -> Self {
        Settings {
            max_connections: l.max_connections,
            handshake_timeout: Duration::from_secs(l.tls_handshake_timeout_secs),
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(l.keep_alive_idle_secs),
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
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(64);
    builder
}

/// When a connection last had a request, and how many it has now.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    active: AtomicUsize,
}

/// Marks a request in progress on its connection until dropped.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    /// Resolves once the connection has had no request in progress for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            let deadline = last + limit;
            if self.active.load(Ordering::Acquire) == 0 && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(
                deadline
                    .max(Instant::now() + Duration::from_millis(100))
                    .into(),
            )
            .await;
        }
    }
}

/// A request handler: the ingest or the admin one.
type Handler<B> = Arc<
    dyn Fn(
            Request<Incoming>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<B>> + Send>>
        + Send
        + Sync,
>;

/// Serves one connection until it ends, its idle timeout passes, or `stop`
/// flips; the last two close it gracefully (in-flight requests finish).
async fn serve_connection<IO, B>(
    io: IO,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Handler<B>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::new();
    let service_activity = activity.clone();
    let service = service_fn(move |request| {
        let guard = service_activity.request();
        let handler = handler.clone();
        async move {
            let response = handler(request).await;
            drop(guard);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = *stop.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle(idle_timeout), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves the webhook listener over TLS until `stop` turns true, then waits
/// (up to [`DRAIN_TIMEOUT`]) for connections to finish.
pub async fn serve_https(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<AppState>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let tracker = TaskTracker::new();
    let mut stopped = stop.clone();
    state.set_listening(true);
    loop {
        let permit = tokio::select! {
            _ = stopped.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped.changed() => break,
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
        let settings = settings.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _open = state.connection_opened();
            let stream =
                match tokio::time::timeout(settings.handshake_timeout, tls.accept(tcp)).await {
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
            let handler_state = state.clone();
            let handler: Handler<Full<Bytes>> = Arc::new(move |request| {
                let state = handler_state.clone();
                Box::pin(async move { crate::ingest::handle(state, peer, request).await })
            });
            serve_connection(stream, builder, handler, settings.idle_timeout, stop).await;
        });
    }
    state.set_listening(false);
    drop(listener);
    drain(tracker).await;
}

/// Serves the admin listener (plain HTTP) until `stop` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let builder = Arc::new(http_builder(&settings));
    let permits = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let tracker = TaskTracker::new();
    let mut stopped = stop.clone();
    loop {
        let permit = tokio::select! {
            _ = stopped.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let handler: Handler<_> = Arc::new(move |request| {
            let state = state.clone();
            Box::pin(async move { crate::admin::handle(state, started, request).await })
        });
        let builder = builder.clone();
        let idle = settings.idle_timeout;
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            serve_connection(tcp, builder, handler, idle, stop).await;
        });
    }
    drop(listener);
    drain(tracker).await;
}

async fn drain(tracker: TaskTracker) {
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}
