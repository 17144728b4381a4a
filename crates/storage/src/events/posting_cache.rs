//! Postings read from sled, each once, for the passes that look events'
//! postings up one event at a time (verification on open, `check`'s
//! details, retention's removals).

use std::collections::{HashMap, HashSet};
use std::ops::Bound;

use crate::error::{corrupt, StoreError};
use crate::events::codec::{decode_posting, encode_posting};
use crate::events::index::Entries;
use crate::events::keys::{posting_prefix, split_posting_key, IndexKind};

/// The posting of `kind`/`term` that would hold `id`: the one with the
/// greatest first id not above it (postings of a term never overlap).
fn find_posting(
    tree: &sled::Tree,
    kind: IndexKind,
    term: &[u8],
    id: u64,
) -> Result<Option<(sled::IVec, Entries)>, StoreError> {
    let prefix = posting_prefix(kind, term);
    let mut upper = prefix.clone();
    upper.extend_from_slice(&id.to_be_bytes());
    let Some(item) = tree.range(prefix..=upper).next_back() else {
        return Ok(None);
    };
    let (key, value) = item?;
    let (_, _, first) = split_posting_key(&key).ok_or_else(|| corrupt(&key, "posting key"))?;
    let mut entries = Vec::new();
    decode_posting(first, &value, &mut entries).map_err(|e| corrupt(&key, e.0))?;
    Ok(Some((key, entries)))
}

/// Postings read from sled, each once: the events of a retention step, or
/// the newest events verified on open, share most of their terms, and
/// decoding a posting per event and term made retention slower than
/// ingest by far.
#[derive(Default)]
pub(crate) struct PostingCache {
    read: HashMap<sled::IVec, Posting>,
    /// The posting each term was last found in.
    last: HashMap<(IndexKind, Vec<u8>), sled::IVec>,
    /// Entries of the postings in `read`.
    entries: usize,
}

impl PostingCache {
    /// Forgets what it read once that holds more than `max` entries (for a
    /// pass over the whole store; nothing to write back).
    pub(crate) fn bound(&mut self, max: usize) {
        if self.entries > max {
            *self = PostingCache::default();
        }
    }

    /// The posting of `kind`/`term` that would hold `id` (the one
    /// [`find_posting`] finds), if it has an entry for it.
    fn holding(
        &mut self,
        tree: &sled::Tree,
        kind: IndexKind,
        term: Vec<u8>,
        id: u64,
    ) -> Result<Option<&mut Posting>, StoreError> {
        let term = (kind, term);
        let cached = self
            .last
            .get(&term)
            .filter(|key| self.read.get(*key).is_some_and(|p| p.covers(id)))
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let Some((key, entries)) = find_posting(tree, kind, &term.1, id)? else {
                    return Ok(None);
                };
                if !self.read.contains_key(&key) {
                    let posting = Posting {
                        first: split_posting_key(&key).map_or(0, |(_, _, f)| f),
                        next: next_posting_first(tree, &key)?,
                        times: entries.iter().copied().collect(),
                        entries,
                        removed: HashSet::new(),
                    };
                    self.entries += posting.entries.len();
                    self.read.insert(key.clone(), posting);
                }
                self.last.insert(term, key.clone());
                key
            }
        };
        Ok(self
            .read
            .get_mut(&key)
            .filter(|p| p.times.contains_key(&id)))
    }

    /// Whether the posting that would hold `id` has its entry at `time`.
    pub(crate) fn has_entry(
        &mut self,
        tree: &sled::Tree,
        kind: IndexKind,
        term: Vec<u8>,
        (id, time): (u64, i64),
    ) -> Result<bool, StoreError> {
        Ok(self
            .holding(tree, kind, term, id)?
            .is_some_and(|p| p.times.get(&id) == Some(&time)))
    }

    /// Marks the entry of `id` in the posting of `kind`/`term` that holds
    /// it for removal (see [`PostingCache::write_removals`]).
    pub(crate) fn remove(
        &mut self,
        tree: &sled::Tree,
        kind: IndexKind,
        term: Vec<u8>,
        id: u64,
    ) -> Result<(), StoreError> {
        if let Some(posting) = self.holding(tree, kind, term, id)? {
            posting.removed.insert(id);
        }
        Ok(())
    }

    /// Writes the postings that lost entries into `batch`.
    pub(crate) fn write_removals(self, batch: &mut sled::Batch) {
        for (key, mut posting) in self.read {
            if posting.removed.is_empty() {
                continue;
            }
            posting
                .entries
                .retain(|(e, _)| !posting.removed.contains(e));
            if posting.entries.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode_posting(posting.first, &posting.entries));
            }
        }
    }
}

/// The first id of the posting of the same term after the one under
/// `key`, if there is one: the id its key starts with (a malformed key,
/// shorter or longer, gives a bound no higher, so that ids from it on are
/// left to [`find_posting`], which reports the key).
fn next_posting_first(tree: &sled::Tree, key: &sled::IVec) -> Result<Option<u64>, StoreError> {
    let prefix = &key[..key.len() - 8];
    let after = (Bound::Excluded(&key[..]), Bound::Unbounded);
    let Some(item) = tree.range::<&[u8], _>(after).next() else {
        return Ok(None);
    };
    let (next, _) = item?;
    let Some(rest) = next.strip_prefix(prefix) else {
        return Ok(None);
    };
    let mut first = [0u8; 8];
    let n = rest.len().min(8);
    first[..n].copy_from_slice(&rest[..n]);
    Ok(Some(u64::from_be_bytes(first)))
}

/// A posting read by [`PostingCache`].
struct Posting {
    first: u64,
    /// The first id of the term's next posting: ids from it on are not
    /// this posting's to hold.
    next: Option<u64>,
    entries: Entries,
    /// The entries, by id.
    times: HashMap<u64, i64>,
    /// Ids whose entries are to be removed.
    removed: HashSet<u64>,
}

impl Posting {
    /// Whether [`find_posting`] would find this posting for `id`.
    fn covers(&self, id: u64) -> bool {
        self.first <= id && self.next.map_or(true, |next| id < next)
    }
}
