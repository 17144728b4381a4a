//! Tree names and key layout.
//!
//! - `events`: id (u64 big-endian, so byte order is arrival order) -> record
//! - `dedupe`: identity -> event id. Identity is `s:` + the signature when the
//!   event has one (Konnect signs every event; a replay resends the same
//!   signature), else `h:` + SHA-256 of the raw line.
//! - `quarantine`: id -> record. Ids come from one sequence for both.

use auditsink_parser::Event;
use sha2::{Digest, Sha256};

use crate::StoreError;

#[derive(Clone)]
pub(crate) struct Trees {
    pub events: sled::Tree,
    pub dedupe: sled::Tree,
    pub quarantine: sled::Tree,
}

impl Trees {
    pub fn open(db: &sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
            events: db.open_tree("events")?,
            dedupe: db.open_tree("dedupe")?,
            quarantine: db.open_tree("quarantine")?,
        })
    }
}

/// The identity under which an event is deduplicated.
pub(crate) fn identity(event: &Event) -> Vec<u8> {
    match &event.sig {
        Some(sig) if !sig.is_empty() => [b"s:".as_slice(), sig.as_bytes()].concat(),
        _ => [
            b"h:".as_slice(),
            Sha256::digest(event.raw.as_bytes()).as_slice(),
        ]
        .concat(),
    }
}

/// Renders an id as the store shows it: 16 lowercase hex digits, so that
/// string order is id order.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses an id rendered by [`format_id`].
pub fn parse_id(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}
