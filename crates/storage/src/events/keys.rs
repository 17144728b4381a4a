//! Key layout. Everything lives in one sled tree, `store`, so that one
//! `apply_batch` (atomic, also across a crash) covers an event, its dedupe
//! entry, its index postings and the counters:
//!
//! | key | value |
//! |---|---|
//! | `e` first id | chunk of event records ([`crate::events::chunk`], [`crate::events::codec`]) |
//! | `q` id | quarantined line record |
//! | `Q` key | quarantine dedupe entry: the id of the newest `q` record with this identity |
//! | `R` kind ... | dedupe (kind `d`) and `trace_id` (kind `t`) entries, in sorted runs ([`crate::engine::runs`]) |
//! | `i` kind len term first_id | posting: the (id, time) pairs of one write with this term |
//! | `m` name | metadata: format version, next id, counts, retention horizon, run manifests and trash |
//!
//! Ids are u64 big-endian, so byte order is arrival order. Events and
//! quarantined lines share one sequence. The identity of an event is `s:` +
//! the 64 signature bytes when its `sig` decodes (padded or unpadded
//! base64url give the same identity) and was not found invalid, else `h:` +
//! the raw line; its dedupe key is the first 16 bytes of the SHA-256 of the
//! identity (128 bits make a collision negligible). A quarantined line's
//! identity is `q:` + its source + its raw bytes: the same line resent by
//! the same source is counted as a duplicate, not kept again.

use auditsink_parser::SignatureStatus;
use sha2::{Digest, Sha256};

pub(crate) use crate::engine::runs::META;
use crate::engine::runs::{Key, RunKind};
use crate::events::view::EventView;

pub(crate) const EVENT: u8 = b'e';
pub(crate) const QUARANTINE: u8 = b'q';
pub(crate) const QUARANTINE_DEDUPE: u8 = b'Q';
pub(crate) const INDEX: u8 = b'i';

/// The dedupe entries' runs: an event's dedupe key → its id.
pub(crate) const DEDUPE_RUNS: RunKind = RunKind::new(b'd', "dedupe");
/// The `trace_id` entries' runs: SHA-256 of the `trace_id` term → ids.
pub(crate) const TRACE_RUNS: RunKind = RunKind::new(b't', "trace_id");

pub(crate) const META_FORMAT: &[u8] = b"mformat";
pub(crate) const META_NEXT_ID: &[u8] = b"mnext_id";
pub(crate) const META_COUNTS: &[u8] = b"mcounts";
pub(crate) const META_REBUILDING: &[u8] = b"mrebuilding";
/// Every event id below it was removed by retention.
pub(crate) const META_HORIZON: &[u8] = b"mhorizon";

/// Version of the key layout and record encoding this build writes, the
/// only one it reads (no format before it was released).
pub(crate) const FORMAT_VERSION: u32 = 6;

/// An id-keyed record key: `prefix` + id big-endian.
pub(crate) fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The id of an id-keyed record key.
pub(crate) fn key_id(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    (key.len() == 9).then(|| u64::from_be_bytes(bytes))
}

/// The dedupe key of an event. A signature known to be invalid is no
/// identity: otherwise a forged line carrying a copied signature, arriving
/// first, would make the genuine event a "duplicate".
///
/// Everything in the key comes from the line's own bytes, never from when
/// or how it was parsed (the normalized `timestamp` of a line without `rt`
/// may come from an RFC 3164 prefix read with the current year: a retry
/// across New Year would get another key).
pub(crate) fn dedupe_key(event: &impl EventView) -> Key {
    let mut hash = Sha256::new();
    match event
        .sig()
        .filter(|_| event.signature() != SignatureStatus::Invalid)
        .and_then(|sig| auditsink_parser::signature::decode_signature(sig.as_bytes()))
    {
        Some(sig) => {
            hash.update(b"s:");
            hash.update(sig);
        }
        None => {
            hash.update(b"h:");
            hash.update(event.raw().as_bytes());
        }
    }
    truncated(hash)
}

/// The dedupe key of a quarantined line of `source`.
pub(crate) fn quarantine_key(source: &str, raw: &[u8]) -> Key {
    let mut hash = Sha256::new();
    hash.update(b"q:");
    hash.update((source.len() as u64).to_be_bytes());
    hash.update(source.as_bytes());
    hash.update(raw);
    truncated(hash)
}

/// The sled key of a quarantine dedupe entry.
pub(crate) fn quarantine_dedupe_entry(key: &Key) -> [u8; 17] {
    let mut out = [QUARANTINE_DEDUPE; 17];
    out[1..].copy_from_slice(key);
    out
}

/// The `trace_id` index key of a term.
pub(crate) fn trace_term_key(term: &[u8]) -> Key {
    let mut encoded = Vec::with_capacity(term.len() + 1);
    encode_term(term, &mut encoded);
    truncated(Sha256::new().chain_update(&encoded))
}

fn truncated(hash: Sha256) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    key
}

/// What an index is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKind {
    /// Event time, in one-minute buckets.
    Time,
    /// `fields.principal_id`.
    Principal,
    /// `fields.trace_id`.
    Trace,
    /// `fields.org_id`.
    Org,
    /// The event `name`.
    Name,
}

impl IndexKind {
    /// Every index, in key order.
    pub const ALL: [IndexKind; 5] = [
        IndexKind::Time,
        IndexKind::Principal,
        IndexKind::Trace,
        IndexKind::Org,
        IndexKind::Name,
    ];

    pub(crate) fn tag(self) -> u8 {
        match self {
            IndexKind::Time => b't',
            IndexKind::Principal => b'p',
            IndexKind::Trace => b'r',
            IndexKind::Org => b'o',
            IndexKind::Name => b'n',
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<IndexKind> {
        IndexKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// Short name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Time => "time",
            IndexKind::Principal => "principal_id",
            IndexKind::Trace => "trace_id",
            IndexKind::Org => "org_id",
            IndexKind::Name => "name",
        }
    }
}

/// Terms longer than this are indexed by their SHA-256 instead.
const MAX_TERM: usize = 128;
/// Length byte marking a hashed term.
const HASHED: u8 = 0xff;

/// The bytes identifying a term in a posting key: `len` + the term, or
/// [`HASHED`] + SHA-256 for long terms (exact up to hash collisions).
pub(crate) fn encode_term(term: &[u8], out: &mut Vec<u8>) {
    if term.len() <= MAX_TERM {
        out.push(term.len() as u8);
        out.extend_from_slice(term);
    } else {
        out.push(HASHED);
        out.extend_from_slice(&Sha256::digest(term));
    }
}

/// `i` kind term: the prefix of every posting of this term.
pub(crate) fn posting_prefix(kind: IndexKind, term: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + term.len().min(MAX_TERM) + 8);
    key.push(INDEX);
    key.push(kind.tag());
    encode_term(term, &mut key);
    key
}

/// The full posting key.
pub(crate) fn posting_key(kind: IndexKind, term: &[u8], first_id: u64) -> Vec<u8> {
    let mut key = posting_prefix(kind, term);
    key.extend_from_slice(&first_id.to_be_bytes());
    key
}

/// Splits a posting key into its kind, encoded term and first id.
pub(crate) fn split_posting_key(key: &[u8]) -> Option<(IndexKind, &[u8], u64)> {
    if key.len() < 2 + 1 + 8 || key[0] != INDEX {
        return None;
    }
    let kind = IndexKind::from_tag(key[1])?;
    let term = &key[2..key.len() - 8];
    let expected = match term[0] {
        HASHED => 1 + 32,
        len => 1 + usize::from(len),
    };
    if term.len() != expected {
        return None;
    }
    let id = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    Some((kind, term, id))
}

/// Minute bucket of a time, as an order-preserving 8-byte term.
pub(crate) fn time_term(ms: i64) -> [u8; 8] {
    sortable(ms.div_euclid(60_000))
}

/// An i64 as 8 bytes whose byte order is numeric order.
pub(crate) fn sortable(n: i64) -> [u8; 8] {
    ((n as u64) ^ (1 << 63)).to_be_bytes()
}

/// Renders an id as the store shows it: 16 lowercase hex digits, so that
/// string order is id order.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses an id rendered by [`format_id`].
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The first key after every key starting with `prefix` (for range ends).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Hex of a key, for reports and logs.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_key_depends_on_the_line_not_on_the_year_it_is_read_in() {
        use auditsink_parser::{parse_line, Format, ParseOptions};
        let parse = |line: &str, year| {
            let options = ParseOptions {
                format: Format::Cef,
                year_hint: year,
            };
            parse_line(line.as_bytes(), &options).unwrap()
        };
        // No rt: the timestamp comes from the RFC 3164 prefix and the year.
        let line = "<134>Dec 31 23:59:58 host CEF:0|Kong|Konnect|1|a|b|1|src=10.0.0.1";
        let (this_year, next_year) = (parse(line, 2026), parse(line, 2027));
        assert_ne!(this_year.timestamp, next_year.timestamp);
        assert_eq!(dedupe_key(&this_year), dedupe_key(&next_year));
        // Feb 29 has a timestamp only in leap years.
        let leap = "<134>Feb 29 10:00:00 host CEF:0|Kong|Konnect|1|a|b|1|src=10.0.0.1";
        assert_eq!(
            dedupe_key(&parse(leap, 2028)),
            dedupe_key(&parse(leap, 2027))
        );
        // Another line, another key.
        let other = "<134>Feb 29 10:00:01 host CEF:0|Kong|Konnect|1|a|b|1|src=10.0.0.1";
        assert_ne!(
            dedupe_key(&parse(leap, 2028)),
            dedupe_key(&parse(other, 2028))
        );
    }

    #[test]
    fn posting_keys_round_trip_and_keep_order() {
        for term in [&b""[..], b"p1", &[b'x'; 200]] {
            let key = posting_key(IndexKind::Principal, term, 42);
            let (kind, encoded, id) = split_posting_key(&key).unwrap();
            assert_eq!((kind, id), (IndexKind::Principal, 42));
            assert!(key.starts_with(&posting_prefix(IndexKind::Principal, term)));
            assert_eq!(encoded.len() + 10, key.len());
        }
        assert!(time_term(-1) < time_term(0));
        assert!(time_term(59_999) == time_term(0));
        assert!(time_term(60_000) > time_term(59_999));
        assert!(time_term(i64::MIN) < time_term(i64::MAX));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }
}
