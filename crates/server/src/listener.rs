//! Accept loops and the life of one connection: connection limit (closing
//! the connection idle the longest to make room), TLS handshake timeout,
//! HTTP/1.1 and h2, a timeout for the first request head and an idle timeout
//! between requests, and a graceful stop (finish in-flight requests) when
//! the shutdown watch flips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
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

/// When a connection last had a request, how many it has now, and whether
/// the accept loop asked it to make room.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    active: AtomicUsize,
    /// Whether it has had a request yet (before: the head timeout applies).
    served: AtomicBool,
    evicting: AtomicBool,
    evict: Notify,
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
            served: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    fn request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.touch();
        RequestGuard(self.clone())
    }

    /// Resolves once the connection has had no request in progress for
    /// `idle` (`first_head` before its first request).
    async fn idle(&self, first_head: Duration, idle: Duration) {
        loop {
            let limit = if self.served.load(Ordering::Acquire) {
                idle
            } else {
                first_head
            };
            let deadline = self.last() + limit;
            if self.is_idle() && Instant::now() >= deadline {
                return;
            }
            // Look again within the shorter limit: the first request may
            // switch to it.
            let now = Instant::now();
            let wake = deadline.min(now + first_head.min(idle));
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(100)).into()).await;
        }
    }

    /// Resolves when the accept loop asks this connection to make room and
    /// it has no request in progress.
    async fn evicted(&self) {
        loop {
            self.evict.notified().await;
            if self.is_idle() {
                return;
            }
            // A request began meanwhile: keep serving; the loop picks another.
            self.evicting.store(false, Ordering::Release);
        }
    }
}

/// The open connections of one listener, within its limit: at the limit,
/// the one idle the longest is closed to make room, so idle connections
/// (which cost a client nothing to hold) cannot keep a delivery waiting.
/// Connections with a request in progress are never closed for room; one
/// that is only lingering after an early answer counts as idle (the answer
/// is out, and the lingering is a courtesy that must not hold a slot).
struct Connections {
    permits: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// A registered connection; leaves the registry when dropped.
struct Slot {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock() {
            open.remove(&self.id);
        }
    }
}

/// How long the accept loop waits for room after asking an idle connection
/// to close, or for a busy one to finish, before looking again.
const ROOM_WAIT: Duration = Duration::from_millis(100);

impl Connections {
    fn new(limit: usize) -> Arc<Connections> {
        Arc::new(Connections {
            permits: Arc::new(Semaphore::new(limit)),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection: a free one, or one made by closing the
    /// connection idle the longest; waits while every connection is busy.
    async fn slot(self: &Arc<Self>) -> Slot {
        let permit = loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                break permit;
            }
            self.evict_longest_idle();
            if let Ok(Ok(permit)) =
                tokio::time::timeout(ROOM_WAIT, self.permits.clone().acquire_owned()).await
            {
                break permit;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::new();
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, activity.clone());
        }
        Slot {
            connections: self.clone(),
            id,
            activity,
            _permit: permit,
        }
    }

    /// Asks the connection idle the longest (not already asked) to close.
    fn evict_longest_idle(&self) {
        let Ok(open) = self.open.lock() else { return };
        let victim = open
            .values()
            .filter(|a| a.is_idle() && !a.evicting.load(Ordering::Acquire))
            .min_by_key(|a| a.last());
        if let Some(victim) = victim {
            victim.evicting.store(true, Ordering::Release);
            victim.evict.notify_one();
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

/// How long an idle connection asked to close gets to do so gracefully
/// (an h2 GOAWAY) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends, its head or idle timeout passes, it
/// is asked to make room while idle, or `stop` flips. A timeout or a stop
/// closes it gracefully (in-flight requests finish); making room drops it.
async fn serve_connection<IO, B>(
    io: IO,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Handler<B>,
    activity: Arc<Activity>,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Default + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The first request head is due within the head timeout from here.
    activity.touch();
    let service_activity = activity.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let guard = service_activity.request();
        let handler = handler.clone();
        let head = request.method() == Method::HEAD;
        async move {
            let mut response = handler(request).await;
            if head {
                // hyper leaves out a HEAD answer's body over HTTP/1.1 only.
                response = response.map(|_| B::default());
            }
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
    // Set when an idle timeout closed it: the time to drop it if still open.
    let mut hard_stop: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.evicted() => {
                tracing::debug!("idle connection closed to make room for a new one");
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle(settings.header_read_timeout, settings.idle_timeout), if !closing => {
                closing = true;
                hard_stop = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                connection.as_mut().graceful_shutdown();
            }
            _ = sleep_until_some(hard_stop) => {
                if activity.is_idle() {
                    return;
                }
                hard_stop = None;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
    let connections = Connections::new(settings.max_connections);
    let tracker = TaskTracker::new();
    let mut stopped = stop.clone();
    state.set_listening(true);
    loop {
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
        let slot = tokio::select! {
            _ = stopped.changed() => break,
            slot = connections.slot() => slot,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let state = state.clone();
        let builder = builder.clone();
        let settings = settings.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let activity = slot.activity.clone();
            let _open = state.connection_opened();
            let handshake = tokio::time::timeout(settings.handshake_timeout, tls.accept(tcp));
            let stream = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = activity.evicted() => {
                    tracing::debug!(%peer, "connection in its TLS handshake closed to make room");
                    return;
                }
            };
            let handler_state = state.clone();
            let handler: Handler<Full<Bytes>> = Arc::new(move |request| {
                let state = handler_state.clone();
                Box::pin(async move { crate::ingest::handle(state, peer, request).await })
            });
            serve_connection(stream, builder, handler, activity, &settings, stop).await;
            drop(slot);
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
    let connections = Connections::new(ADMIN_CONNECTIONS);
    let tracker = TaskTracker::new();
    let mut stopped = stop.clone();
    loop {
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
        let slot = tokio::select! {
            _ = stopped.changed() => break,
            slot = connections.slot() => slot,
        };
        let state = state.clone();
        let handler: Handler<_> = Arc::new(move |request| {
            let state = state.clone();
            Box::pin(async move { crate::admin::handle(state, started, request).await })
        });
        let builder = builder.clone();
        let settings = settings.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let activity = slot.activity.clone();
            serve_connection(tcp, builder, handler, activity, &settings, stop).await;
            drop(slot);
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
