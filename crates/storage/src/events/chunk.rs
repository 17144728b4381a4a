//! Event chunks: the event records of one write, packed some kilobytes at a
//! time into one body instead of one key per event. The body is appended to
//! the event log ([`crate::engine::log`]) and sled holds a pointer to it under the
//! chunk's key.
//!
//! ```text
//! key   = `e` first_id:u64be          (no id in the chunk is below it)
//! body  = version:u8=1 varint(n) (varint(id - first_id) varint(len) record)*
//! value = a pointer into the log
//! ```
//!
//! Ids inside a chunk increase, and every id of a chunk is below the key of
//! the next chunk, so the chunk holding an id is the one with the greatest
//! key not above it. Retention rewrites a chunk it empties only in part
//! under the same key.
//!
//! Why not bigger: a query for one event reads its whole chunk.

use std::ops::{Bound, Range};
use std::sync::Arc;

use crate::engine::log::{Pointer, SegmentLog};
use crate::engine::varint;
use crate::error::{corrupt, StoreError};
use crate::events::keys::{id_key, key_id, EVENT};

/// A chunk is closed once its records reach this many bytes.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;
const CHUNK_VERSION: u8 = 1;

/// One chunk being filled.
pub(crate) struct ChunkBuilder {
    first: u64,
    n: u64,
    body: Vec<u8>,
}

impl ChunkBuilder {
    pub fn new(first: u64) -> ChunkBuilder {
        ChunkBuilder {
            first,
            n: 0,
            body: Vec::with_capacity(CHUNK_BYTES + 1024),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn is_full(&self) -> bool {
        self.body.len() >= CHUNK_BYTES
    }

    /// Adds a record; ids must increase and not be below the first id.
    pub fn push(&mut self, id: u64, record: &[u8]) {
        debug_assert!(id >= self.first);
        varint::put(&mut self.body, id - self.first);
        varint::put(&mut self.body, record.len() as u64);
        self.body.extend_from_slice(record);
        self.n += 1;
    }

    /// The (key, body) of the chunk.
    pub fn finish(self) -> ([u8; 9], Vec<u8>) {
        let mut value = Vec::with_capacity(self.body.len() + 11);
        value.push(CHUNK_VERSION);
        varint::put(&mut value, self.n);
        value.extend_from_slice(&self.body);
        (id_key(EVENT, self.first), value)
    }
}

/// The (id, byte range) of every record of a chunk, in id order.
pub(crate) fn split(key: &[u8], value: &[u8]) -> Result<Vec<(u64, Range<usize>)>, StoreError> {
    let first = key_id(key).ok_or_else(|| corrupt(key, "event chunk key"))?;
    let bad = |what: &str| corrupt(key, format!("event chunk: {what}"));
    if value.first() != Some(&CHUNK_VERSION) {
        return Err(bad("unknown version"));
    }
    let mut pos = 1;
    let n = varint::get(value, &mut pos).ok_or_else(|| bad("truncated"))?;
    let mut out = Vec::with_capacity(n.min(4096) as usize);
    let mut previous = None;
    for _ in 0..n {
        let delta = varint::get(value, &mut pos).ok_or_else(|| bad("truncated"))?;
        let len = varint::get(value, &mut pos).ok_or_else(|| bad("truncated"))?;
        let id = first.checked_add(delta).ok_or_else(|| bad("id overflow"))?;
        if previous.is_some_and(|p| id <= p) {
            return Err(bad("ids out of order"));
        }
        previous = Some(id);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= value.len())
            .ok_or_else(|| bad("truncated"))?;
        out.push((id, pos..end));
        pos = end;
    }
    if pos != value.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// An event record inside the chunk it was read from.
#[derive(Clone)]
pub(crate) struct Record {
    chunk: sled::IVec,
    range: Range<usize>,
}

impl std::ops::Deref for Record {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.chunk[self.range.clone()]
    }
}

/// One decoded chunk.
pub(crate) struct Chunk {
    pub value: sled::IVec,
    pub records: Vec<(u64, Range<usize>)>,
}

impl Chunk {
    /// The chunk under `key`, whose sled value is `value` (a pointer into
    /// the log).
    pub fn read(log: &SegmentLog, key: sled::IVec, value: sled::IVec) -> Result<Chunk, StoreError> {
        let pointer =
            Pointer::decode(&value).ok_or_else(|| corrupt(&key, "event chunk pointer"))?;
        let value = sled::IVec::from(log.read(&pointer).map_err(|e| match e {
            Ok(why) => corrupt(&key, why),
            Err(io) => io,
        })?);
        let records = split(&key, &value)?;
        Ok(Chunk { value, records })
    }

    pub fn record(&self, i: usize) -> (u64, Record) {
        let (id, range) = self.records[i].clone();
        (
            id,
            Record {
                chunk: self.value.clone(),
                range,
            },
        )
    }

    /// Index of `id` among the records.
    pub fn find(&self, id: u64) -> Option<usize> {
        self.records.binary_search_by_key(&id, |(i, _)| *i).ok()
    }
}

/// The chunk that would hold `id` (the one with the greatest key not above
/// it), if any.
pub(crate) fn chunk_for(
    tree: &sled::Tree,
    log: &SegmentLog,
    id: u64,
) -> Result<Option<Chunk>, StoreError> {
    let upper = id_key(EVENT, id);
    let Some(item) = tree
        .range::<&[u8], _>((Bound::Included(&[EVENT][..]), Bound::Included(&upper[..])))
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = item?;
    read_current(tree, log, key, value)
}

/// Reads the chunk under `key` whose value was `value`. If that fails
/// because retention removed or rewrote the chunk meanwhile (its segment
/// may be deleted by now), reads what is under `key` now (`None`: removed).
fn read_current(
    tree: &sled::Tree,
    log: &SegmentLog,
    key: sled::IVec,
    value: sled::IVec,
) -> Result<Option<Chunk>, StoreError> {
    match Chunk::read(log, key.clone(), value.clone()) {
        Ok(chunk) => Ok(Some(chunk)),
        Err(e) => match tree.get(&key)? {
            None => Ok(None),
            Some(now) if now != value => Chunk::read(log, key, now).map(Some),
            Some(_) => Err(e),
        },
    }
}

/// One event record by id.
pub(crate) fn get(
    tree: &sled::Tree,
    log: &SegmentLog,
    id: u64,
) -> Result<Option<Record>, StoreError> {
    Ok(chunk_for(tree, log, id)?.and_then(|c| c.find(id).map(|i| c.record(i).1)))
}

/// Event records in id order (or reverse), with an id greater than `after`.
pub(crate) struct Records {
    tree: sled::Tree,
    log: Arc<SegmentLog>,
    chunks: sled::Iter,
    current: Option<Chunk>,
    /// Next record of `current` (forward: index; reverse: one past it).
    pos: usize,
    after: Option<u64>,
    reverse: bool,
    failed: bool,
    /// The key of the chunk whose contents did not read, if that is why
    /// the iteration stopped.
    damaged: Option<sled::IVec>,
}

impl Records {
    /// Forward from after `after` (from the start when `None`).
    pub fn after(tree: &sled::Tree, log: &Arc<SegmentLog>, after: Option<u64>) -> Records {
        let end: &[u8] = &[EVENT + 1];
        let chunks = match after {
            None => tree.range::<&[u8], _>(&[EVENT][..]..end),
            Some(u64::MAX) => tree.range::<&[u8], _>(end..end),
            Some(id) => {
                // Start at the chunk that would hold `id + 1`.
                let start = tree
                    .range::<&[u8], _>((
                        Bound::Included(&[EVENT][..]),
                        Bound::Included(&id_key(EVENT, id + 1)[..]),
                    ))
                    .keys()
                    .next_back()
                    .and_then(Result::ok)
                    .map_or_else(|| vec![EVENT], |k| k.to_vec());
                tree.range::<&[u8], _>(&start[..]..end)
            }
        };
        Records {
            tree: tree.clone(),
            log: log.clone(),
            chunks,
            current: None,
            pos: 0,
            after,
            reverse: false,
            failed: false,
            damaged: None,
        }
    }

    /// Every record, newest first.
    pub fn newest_first(tree: &sled::Tree, log: &Arc<SegmentLog>) -> Records {
        let end: &[u8] = &[EVENT + 1];
        Records {
            tree: tree.clone(),
            log: log.clone(),
            chunks: tree.range::<&[u8], _>(&[EVENT][..]..end),
            current: None,
            pos: 0,
            after: None,
            reverse: true,
            failed: false,
            damaged: None,
        }
    }

    fn next_chunk(&mut self) -> Option<Result<(), StoreError>> {
        let item = if self.reverse {
            self.chunks.next_back()
        } else {
            self.chunks.next()
        }?;
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let chunk = read_current(&self.tree, &self.log, key.clone(), value);
        if let Err(StoreError::Corrupt { .. }) = chunk {
            self.damaged = Some(key);
        }
        match chunk {
            Ok(chunk) => {
                self.pos = match &chunk {
                    Some(chunk) if self.reverse => chunk.records.len(),
                    _ => 0,
                };
                // `None`: removed meanwhile; the caller goes on to the next.
                self.current = chunk;
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl Records {
    /// After a chunk whose contents did not read ended a forward
    /// iteration: goes on with the next chunk, and tells which ids the
    /// damaged one may have held (the first after the start, and the last
    /// before the next chunk, `None` when it was the last chunk).
    pub fn skip_damaged_chunk(&mut self) -> Option<(u64, Option<u64>)> {
        if self.reverse || !self.failed {
            return None;
        }
        let key = self.damaged.take()?;
        let first = key_id(&key)?;
        let first = match self.after {
            Some(after) => first.max(after.saturating_add(1)),
            None => first,
        };
        let end: &[u8] = &[EVENT + 1];
        let next = match self
            .tree
            .range::<&[u8], _>((Bound::Excluded(&key[..]), Bound::Excluded(end)))
            .keys()
            .next()
        {
            Some(Ok(next)) => key_id(&next).map(|next| next.saturating_sub(1)),
            _ => None,
        };
        self.failed = false;
        self.current = None;
        Some((first, next))
    }
}

impl Iterator for Records {
    type Item = Result<(u64, Record), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(chunk) = &self.current {
                let index = if self.reverse {
                    self.pos.checked_sub(1)
                } else {
                    Some(self.pos).filter(|&p| p < chunk.records.len())
                };
                if let Some(i) = index {
                    self.pos = if self.reverse { i } else { i + 1 };
                    let (id, record) = chunk.record(i);
                    if self.after.is_some_and(|a| id <= a) {
                        continue;
                    }
                    return Some(Ok((id, record)));
                }
                self.current = None;
            }
            match self.next_chunk()? {
                Ok(()) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let mut b = ChunkBuilder::new(7);
        b.push(7, b"first");
        b.push(9, b"");
        b.push(300, &[1u8; 200]);
        let (key, value) = b.finish();
        let records = split(&key, &value).unwrap();
        let ids: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(ids, [7, 9, 300]);
        assert_eq!(&value[records[0].1.clone()], b"first");
        assert_eq!(value[records[2].1.clone()].len(), 200);
        assert!(split(&key, &value[..value.len() - 1]).is_err());
        let mut bad = value.clone();
        bad[0] = 9;
        assert!(split(&key, &bad).is_err());
    }

    #[test]
    fn a_chunk_removed_or_rewritten_under_a_reader_is_read_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let tree = db.open_tree("t").unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        let body = |first: u64, text: &[u8]| {
            let mut b = ChunkBuilder::new(first);
            b.push(first, text);
            b.finish()
        };
        let (key, old) = body(5, b"old");
        let old_pointer = log.append(&[old]).unwrap()[0];
        log.sync().unwrap();
        // What a reader saw: a pointer into a segment deleted since.
        let stale = sled::IVec::from(&old_pointer.encode()[..]);
        let gone = Pointer {
            segment: old_pointer.segment + 100,
            ..old_pointer
        };
        let stale_gone = sled::IVec::from(&gone.encode()[..]);
        let key = sled::IVec::from(&key[..]);

        // Rewritten meanwhile: the current value is read.
        let (_, new) = body(5, b"new");
        let new_pointer = log.append(&[new]).unwrap()[0];
        tree.insert(&key, &new_pointer.encode()).unwrap();
        let chunk = read_current(&tree, &log, key.clone(), stale_gone.clone())
            .unwrap()
            .unwrap();
        assert_eq!(&*chunk.record(0).1, b"new");
        // Removed meanwhile: nothing.
        tree.remove(&key).unwrap();
        assert!(read_current(&tree, &log, key.clone(), stale_gone.clone())
            .unwrap()
            .is_none());
        // Still the same value and unreadable: that is damage, reported.
        tree.insert(&key, stale_gone.clone()).unwrap();
        assert!(read_current(&tree, &log, key.clone(), stale_gone).is_err());
        // Readable: read as it was.
        let chunk = read_current(&tree, &log, key, stale).unwrap().unwrap();
        assert_eq!(&*chunk.record(0).1, b"old");
    }
}
