//! Index terms and postings.
//!
//! Each index maps a term to postings. A posting is written once, by the
//! batch that stored its events, and holds the (id, event time) pairs of
//! that batch's events with the term: a delivery of 500 events from one
//! organisation adds one `org_id` posting, not 500 entries. Readers treat
//! postings as a set of (term, id, time) entries; how they are grouped is
//! an implementation detail (a rebuild groups differently).
//!
//! Indexed as postings: the event time (one-minute buckets),
//! `fields.principal_id`, `fields.org_id` (strings as they are; numbers and
//! booleans as their JSON text; empty strings, null, arrays and objects are
//! not indexed) and `name`. `fields.trace_id` (the same way) is nearly
//! unique per event, so a posting per term would be a sled key per event:
//! it is kept in sorted runs instead ([`crate::engine::runs`]).

use std::collections::BTreeMap;

use std::borrow::Cow;

use crate::engine::runs::Key;
use crate::events::codec::encode_posting;
use crate::events::keys::{posting_key, time_term, trace_term_key, IndexKind};
use crate::events::view::EventView;

/// The `trace_id` index key of an event, if it has a `trace_id` term:
/// SHA-256 of the encoded term.
pub(crate) fn trace_key(event: &impl EventView) -> Option<Key> {
    let term = attribute_term(IndexKind::Trace, event)?;
    Some(trace_term_key(term.as_bytes()))
}

/// The term an attribute index holds for this event, if any.
pub(crate) fn attribute_term(kind: IndexKind, event: &impl EventView) -> Option<Cow<'_, str>> {
    let field = |name: &str| event.field(name)?.term();
    match kind {
        IndexKind::Time => None,
        IndexKind::Principal => field("principal_id"),
        IndexKind::Trace => field("trace_id"),
        IndexKind::Org => field("org_id"),
        IndexKind::Name => event.name().filter(|n| !n.is_empty()).map(Cow::Borrowed),
    }
}

/// The indexes kept as postings (`trace_id` is in runs).
pub(crate) const POSTING_KINDS: [IndexKind; 4] = [
    IndexKind::Time,
    IndexKind::Principal,
    IndexKind::Org,
    IndexKind::Name,
];

/// Every posting (kind, term) of an event, time first.
pub(crate) fn terms(event: &impl EventView, time: i64) -> Vec<(IndexKind, Vec<u8>)> {
    let mut out = Vec::with_capacity(4);
    for_each_term(event, time, |kind, term| out.push((kind, term.to_vec())));
    out
}

/// Calls `f` with every posting (kind, term) of an event, time first.
pub(crate) fn for_each_term(
    event: &impl EventView,
    time: i64,
    mut f: impl FnMut(IndexKind, &[u8]),
) {
    f(IndexKind::Time, &time_term(time));
    for kind in &POSTING_KINDS[1..] {
        if let Some(term) = attribute_term(*kind, event) {
            f(*kind, term.as_bytes());
        }
    }
}

/// (id, event time) pairs of a posting.
pub(crate) type Entries = Vec<(u64, i64)>;

/// Collects the entries of one write and turns them into posting records.
#[derive(Default)]
pub(crate) struct PostingBuilder {
    groups: BTreeMap<(IndexKind, Vec<u8>), Entries>,
}

impl PostingBuilder {
    /// Adds an event's terms; ids must be added in increasing order.
    pub fn add(&mut self, id: u64, time: i64, terms: Vec<(IndexKind, Vec<u8>)>) {
        for key in terms {
            self.groups.entry(key).or_default().push((id, time));
        }
    }

    /// Adds the entries of one term; ids must be above those added before.
    pub fn add_entries(
        &mut self,
        kind: IndexKind,
        term: Vec<u8>,
        entries: impl Iterator<Item = (u64, i64)>,
    ) {
        let mut entries = entries.peekable();
        if entries.peek().is_some() {
            self.groups.entry((kind, term)).or_default().extend(entries);
        }
    }

    /// The (key, value) records.
    pub fn finish(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        self.groups.into_iter().map(|((kind, term), entries)| {
            let first = entries[0].0;
            (
                posting_key(kind, &term, first),
                encode_posting(first, &entries),
            )
        })
    }
}
