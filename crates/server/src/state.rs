//! What every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auditsink_parser::Format;
use auditsink_storage::Store;

use crate::auth::Authorizer;
use crate::config::{Limits, SignaturePolicy};
use crate::keys::SourceKeys;
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
}

impl From<&Limits> for RuntimeLimits {
    fn from(l: &Limits) -> Self {
        RuntimeLimits {
            max_body_bytes: l.max_body_bytes,
            max_decompressed_bytes: l.max_decompressed_bytes,
            max_lines_per_request: l.max_lines_per_request,
            body_read_timeout: Duration::from_secs(l.body_read_timeout_secs),
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
        AppState {
            store,
            sources,
            by_path,
            limits,
            inactive_after,
        }
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
