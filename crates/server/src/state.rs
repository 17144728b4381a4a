//! What every request handler shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use auditsink_parser::Format;
use auditsink_storage::Store;

use crate::auth::Authorizer;
use crate::budget::{MemoryBudget, OverBudget, Reservation};
use crate::config::{Limits, SignaturePolicy};
use crate::keys::SourceKeys;
use crate::linger::Lingering;
use crate::metrics::Metrics;
use crate::status::SourceStatus;

/// A configured webhook endpoint, resolved (tokens loaded).
#[derive(Debug)]
pub struct Source {
    /// Name in `/status`, logs and stored events.
    pub name: String,
    /// URL path.
    pub path: String,
    /// Accepted `Authorization` values.
    pub authorizer: Authorizer,
    /// Grammar of its lines.
    pub format: Format,
    /// Signature checking, when the source has keys and a policy other than off.
    pub signatures: Option<SignatureCheck>,
    /// What it has seen.
    pub status: SourceStatus,
}

/// How a source checks signatures.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    /// `tag` or `enforce`.
    pub policy: SignaturePolicy,
    /// The current keys (refreshed in place for a URL).
    pub keys: Arc<SourceKeys>,
}

/// Limits in the form handlers use.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    pub max_body_bytes: u64,
    pub max_decompressed_bytes: u64,
    pub max_lines_per_request: usize,
    pub body_read_timeout: Duration,
    pub lingering: Lingering,
    pub max_inflight_requests: usize,
    pub max_inflight_bytes: u64,
    pub max_inflight_memory: u64,
}

impl From<&Limits> for RuntimeLimits {
    fn from(l: &Limits) -> Self {
        RuntimeLimits {
            max_body_bytes: l.max_body_bytes,
            max_decompressed_bytes: l.max_decompressed_bytes,
            max_lines_per_request: l.max_lines_per_request,
            body_read_timeout: Duration::from_secs(l.body_read_timeout_secs),
            lingering: Lingering::from(l),
            max_inflight_requests: l.max_inflight_requests,
            max_inflight_bytes: l.max_inflight_bytes,
            max_inflight_memory: l.max_inflight_memory,
        }
    }
}

/// Shared state of a running server.
pub struct AppState {
    pub store: Store,
    pub sources: Vec<Arc<Source>>,
    by_path: HashMap<String, Arc<Source>>,
    pub limits: RuntimeLimits,
    pub inactive_after: Duration,
    pub metrics: Metrics,
    inflight_requests: Arc<Semaphore>,
    inflight_bytes: Arc<Semaphore>,
    /// What requests in flight hold, against `max_inflight_memory`.
    pub memory: Arc<MemoryBudget>,
    listening: AtomicBool,
    /// Who may use the admin listener, and the console's form token.
    pub admin_guard: crate::console::AdminGuard,
    webhook_addr: OnceLock<SocketAddr>,
    /// The NATS JetStream cluster, with `[cluster]`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The forwarding sinks.
    pub sinks: Arc<crate::sinks::SinkSet>,
}

/// Work admitted past backpressure; releases its share when dropped.
pub struct Admitted<'a> {
    _request: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    bytes: u64,
    metrics: &'a Metrics,
    /// Its memory, the body's size for a start (see [`crate::budget`]).
    pub memory: Reservation,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Requests or body bytes in flight are at their limit (429).
    Busy,
    /// The memory budget (429, or 413 when the body alone passes it).
    Memory(OverBudget),
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.metrics.inflight_requests.dec();
        self.metrics.inflight_bytes.dec_by(self.bytes as i64);
    }
}

/// Counts an open connection until dropped.
pub struct OpenConnection<'a>(&'a Metrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

impl AppState {
    pub fn new(
        store: Store,
        sources: Vec<Source>,
        limits: RuntimeLimits,
        inactive_after: Duration,
    ) -> AppState {
        let sources: Vec<Arc<Source>> = sources.into_iter().map(Arc::new).collect();
        let by_path = sources
            .iter()
            .map(|s| (s.path.clone(), s.clone()))
            .collect();
        // Semaphores count bytes in KiB so that any u64 limit fits their u32 permits.
        let inflight_bytes = Arc::new(Semaphore::new(kib(limits.max_inflight_bytes) as usize));
        let metrics = Metrics::default();
        let memory = MemoryBudget::new(limits.max_inflight_memory, metrics.inflight_memory.clone());
        AppState {
            store,
            sources,
            by_path,
            inflight_requests: Arc::new(Semaphore::new(limits.max_inflight_requests)),
            inflight_bytes,
            limits,
            inactive_after,
            metrics,
            memory,
            listening: AtomicBool::new(false),
            admin_guard: crate::console::AdminGuard::default(),
            webhook_addr: OnceLock::new(),
            cluster: None,
            sinks: Arc::default(),
        }
    }

    /// Sets the cluster deliveries are published to.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> AppState {
        self.cluster = cluster;
        self
    }

    /// Sets who may use the admin listener.
    pub fn with_admin_guard(mut self, guard: crate::console::AdminGuard) -> AppState {
        self.admin_guard = guard;
        self
    }

    /// Sets the forwarding sinks.
    pub fn with_sinks(mut self, sinks: Arc<crate::sinks::SinkSet>) -> AppState {
        self.sinks = sinks;
        self
    }

    /// Admits a request whose body is at most `body_bytes`, or says why
    /// not: the requests, body bytes or memory in flight are at their limit.
    pub fn admit(&self, body_bytes: u64) -> Result<Admitted<'_>, Refused> {
        let request = self
            .inflight_requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        let bytes = self
            .inflight_bytes
            .clone()
            .try_acquire_many_owned(kib(body_bytes))
            .map_err(|_| Refused::Busy)?;
        let memory = self.memory.reserve(body_bytes).map_err(Refused::Memory)?;
        self.metrics.inflight_requests.inc();
        self.metrics.inflight_bytes.inc_by(body_bytes as i64);
        Ok(Admitted {
            _request: request,
            _bytes: bytes,
            bytes: body_bytes,
            metrics: &self.metrics,
            memory,
        })
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.metrics.connections_open.inc();
        OpenConnection(&self.metrics)
    }

    /// Records whether the webhook listener is accepting.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Records the address the webhook (HTTPS) listener is bound to.
    pub fn set_webhook_addr(&self, addr: SocketAddr) {
        let _ = self.webhook_addr.set(addr);
    }

    /// The address the webhook (HTTPS) listener is bound to, once it runs.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr.get().copied()
    }

    /// Whether the webhook listener is accepting.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The source configured at `path`, if any.
    pub fn source_for(&self, path: &str) -> Option<&Arc<Source>> {
        self.by_path.get(path)
    }
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bytes to whole KiB, rounded up, saturating at u32 (a semaphore's permits).
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}
