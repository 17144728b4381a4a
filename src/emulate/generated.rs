//! The events the emulated Konnect generates, as its channels and ledger
//! keep them.

use std::sync::Arc;

/// One generated event, kept for replay jobs.
#[derive(Debug, Clone)]
pub struct Generated {
    pub seq: u64,
    pub rt_ms: i64,
    pub line: Arc<str>,
}
