//! The event store on the engine: event records and chunks, dedupe
//! identity, index postings, queries, quarantine, the gaps record, the
//! forwarding sinks' cursors and parked events, and maintenance
//! (verification, rebuild, retention, reprocessing, `check`).

pub(crate) mod check;
pub(crate) mod chunk;
pub(crate) mod codec;
pub(crate) mod core;
pub(crate) mod forward;
pub(crate) mod gaps;
pub(crate) mod index;
pub(crate) mod keys;
pub(crate) mod maintain;
pub(crate) mod posting_cache;
pub(crate) mod prepared;
pub(crate) mod query;
pub(crate) mod record;
pub(crate) mod sinks;
pub(crate) mod staging;
pub(crate) mod state;
pub(crate) mod timefmt;
pub(crate) mod view;
