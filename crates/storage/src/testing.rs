//! Damage for tests: what a crash, a bug or a failing disk could leave in
//! a closed store, done through the store's own key layout so that tests
//! (`tests/maintenance.rs`) damage it without knowing its bytes. Not part
//! of the store's API: nothing outside tests should call it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::log::{segment_file, Pointer, LOG_DIR};
use crate::engine::runs::{first_run_keys, ENTRY_LEN};
use crate::error::StoreError;
use crate::events::chunk::{split, ChunkBuilder};
use crate::events::codec::encode_posting;
use crate::events::keys::{
    key_id, posting_key, posting_prefix, IndexKind, DEDUPE_RUNS, EVENT, META_FORMAT,
    QUARANTINE_DEDUPE,
};

/// A closed store's directory opened directly (not as a [`crate::Store`]),
/// to damage; flushed when dropped. Each method panics if the store does
/// not hold what it damages (a test's mistake).
pub struct Damage {
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
}

impl Drop for Damage {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            panic!("flushing the damaged store: {e}");
        }
    }
}

impl Damage {
    /// Opens the closed store in `dir` (waiting briefly for a store just
    /// closed: sled's I/O threads may hold its lock a moment).
    pub fn open(dir: &Path) -> Damage {
        let mut attempts = 0;
        let db = loop {
            match sled::open(dir) {
                Ok(db) => break db,
                Err(e) if attempts < 40 => {
                    attempts += 1;
                    eprintln!("damage: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let tree = db.open_tree("store").expect("the store's tree");
        Damage {
            dir: dir.to_path_buf(),
            db,
            tree,
        }
    }

    fn ok<T>(result: Result<T, sled::Error>) -> T {
        result.unwrap_or_else(|e| panic!("damaging the store: {}", StoreError::from(e)))
    }

    /// The posting keys of `kind` (of `term` only, if given), in key order.
    fn postings(&self, kind: IndexKind, term: Option<&str>) -> Vec<sled::IVec> {
        let prefix = match term {
            Some(term) => posting_prefix(kind, term.as_bytes()),
            None => posting_prefix(kind, b"")[..2].to_vec(),
        };
        self.tree.scan_prefix(prefix).keys().map(Self::ok).collect()
    }

    /// Removes the first posting (in key order) of index `kind`, of `term`
    /// if given: the events it lists go missing from the index.
    pub fn remove_posting(&self, kind: IndexKind, term: Option<&str>) {
        let first = self.postings(kind, term).into_iter().next();
        Self::ok(self.tree.remove(first.expect("a posting to remove")));
    }

    /// Adds a posting of `term` in index `kind` for event `id` (which does
    /// not exist: a dangling index entry).
    pub fn add_posting(&self, kind: IndexKind, term: &str, id: u64) {
        let key = posting_key(kind, term.as_bytes(), id);
        Self::ok(self.tree.insert(key, encode_posting(id, &[(id, 0)])));
    }

    /// Adds a malformed key (a posting key of `term`, one byte too long)
    /// just before the second posting of `term` in index `kind`, with the
    /// first posting's value: where no lookup of the term lands.
    pub fn add_malformed_posting_key(&self, kind: IndexKind, term: &str) {
        let postings = self.postings(kind, Some(term));
        let (first, second) = (&postings[0], &postings[1]);
        let second_id = u64::from_be_bytes(second[second.len() - 8..].try_into().unwrap());
        let mut malformed = posting_key(kind, term.as_bytes(), second_id - 1);
        malformed.push(0);
        let value = Self::ok(self.tree.get(first)).expect("the first posting");
        Self::ok(self.tree.insert(malformed, value));
    }

    /// How many postings index `kind` holds for `term` (one per write
    /// that stored events with it).
    pub fn posting_count(&self, kind: IndexKind, term: &str) -> usize {
        self.postings(kind, Some(term)).len()
    }

    /// Changes the second entry of the first page of the dedupe runs with
    /// `change` (given the entry's key and its id).
    fn change_dedupe_entry(&self, change: impl FnOnce(&mut [u8], &mut [u8])) {
        let (page, _) = Self::ok_store(first_run_keys(&self.tree, DEDUPE_RUNS));
        let (key, value) = page.expect("a dedupe run page");
        let mut page = value.to_vec();
        let (entry_key, id) = page[ENTRY_LEN..2 * ENTRY_LEN].split_at_mut(16);
        change(entry_key, id);
        Self::ok(self.tree.insert(key, page));
    }

    fn ok_store<T>(result: Result<T, StoreError>) -> T {
        result.unwrap_or_else(|e| panic!("damaging the store: {e}"))
    }

    /// Points a dedupe entry (the second of the first run page) at event
    /// `id` instead of its own.
    pub fn point_dedupe_entry_at(&self, id: u64) {
        self.change_dedupe_entry(|_, entry_id| entry_id.copy_from_slice(&id.to_be_bytes()));
    }

    /// Changes the identity of a dedupe entry (the second of the first run
    /// page): its event's identity is no longer recorded (another one is).
    pub fn change_dedupe_identity(&self) {
        self.change_dedupe_entry(|key, _| key[15] ^= 1);
    }

    /// Cuts the first page of the dedupe runs short by one entry.
    pub fn truncate_dedupe_page(&self) {
        let (page, _) = Self::ok_store(first_run_keys(&self.tree, DEDUPE_RUNS));
        let (key, value) = page.expect("a dedupe run page");
        Self::ok(self.tree.insert(key, &value[..value.len() - ENTRY_LEN]));
    }

    /// Replaces the directory of the first dedupe run with garbage.
    pub fn garble_dedupe_run_directory(&self) {
        let (_, directory) = Self::ok_store(first_run_keys(&self.tree, DEDUPE_RUNS));
        let (key, _) = directory.expect("a dedupe run directory");
        Self::ok(self.tree.insert(key, b"garbage".to_vec()));
    }

    /// Cuts the pointer to the newest event chunk in half: the chunk no
    /// longer decodes.
    pub fn truncate_newest_chunk_pointer(&self) {
        let newest = self.tree.scan_prefix([EVENT]).next_back();
        let (key, value) = Self::ok(newest.expect("an event chunk"));
        Self::ok(self.tree.insert(key, &value[..value.len() / 2]));
    }

    /// Removes the first quarantine dedupe entry (in key order): a
    /// quarantined line's identity is no longer recorded.
    pub fn remove_quarantine_dedupe_entry(&self) {
        let first = self.tree.scan_prefix([QUARANTINE_DEDUPE]).keys().next();
        Self::ok(
            self.tree
                .remove(Self::ok(first.expect("a quarantine entry"))),
        );
    }

    /// Records `version` as the store's format version.
    pub fn set_format_version(&self, version: u32) {
        Self::ok(self.tree.insert(META_FORMAT, &version.to_be_bytes()));
    }

    /// Flips a byte inside the first chunk of the oldest event log segment
    /// (its checksum no longer matches).
    pub fn damage_first_log_chunk(&self) {
        let segments = std::fs::read_dir(self.dir.join(LOG_DIR)).expect("the event log");
        let segment = segments
            .map(|e| e.expect("a log segment").path())
            .min()
            .expect("a log segment");
        let mut bytes = std::fs::read(&segment).expect("reading the segment");
        bytes[20] ^= 0xff;
        std::fs::write(&segment, bytes).expect("writing the segment");
    }

    /// The `index`th event chunk (in id order): its key, where its body
    /// is, and the body's segment file read whole.
    fn log_chunk(&self, index: usize) -> (sled::IVec, Pointer, PathBuf, Vec<u8>) {
        let (key, value) = self
            .tree
            .scan_prefix([EVENT])
            .map(Self::ok)
            .filter(|(key, _)| key_id(key).is_some())
            .nth(index)
            .expect("the event chunk");
        let pointer = Pointer::decode(&value).expect("an event log pointer");
        let path = segment_file(&self.dir, pointer.segment);
        let segment = std::fs::read(&path).expect("reading the segment");
        (key, pointer, path, segment)
    }

    /// Flips a byte in the middle of the body of the `index`th event chunk
    /// (in id order): its checksum no longer matches, so none of its events
    /// read. The chunk's first id.
    pub fn damage_log_chunk(&self, index: usize) -> u64 {
        let (key, pointer, path, mut segment) = self.log_chunk(index);
        segment[pointer.offset as usize + pointer.len as usize / 2] ^= 0xff;
        std::fs::write(&path, segment).expect("writing the segment");
        key_id(&key).expect("a chunk key")
    }

    /// Undoes [`Damage::damage_log_chunk`] of the `index`th event chunk
    /// (the same byte flipped back), as a segment file restored from a
    /// backup would: the chunk reads again. The chunk's first id.
    pub fn repair_log_chunk(&self, index: usize) -> u64 {
        self.damage_log_chunk(index)
    }

    /// Changes the records of the first event chunk in place, as `change`
    /// says for each record's position in the chunk, keeping the chunk's
    /// checksum right: the chunk reads, and only the changed records may
    /// not decode. Records may shrink, not grow. The ids of the chunk's
    /// records.
    pub fn change_chunk_records(&self, change: impl Fn(usize, &mut Vec<u8>)) -> Vec<u64> {
        let (key, pointer, path, mut segment) = self.log_chunk(0);
        let at = pointer.offset as usize;
        let body = &segment[at..at + pointer.len as usize];
        let records = Self::ok_store(split(&key, body));
        let mut chunk = ChunkBuilder::new(key_id(&key).expect("a chunk key"));
        for (i, (id, range)) in records.iter().enumerate() {
            let mut record = body[range.clone()].to_vec();
            change(i, &mut record);
            chunk.push(*id, &record);
        }
        let (_, rebuilt) = chunk.finish();
        assert!(rebuilt.len() <= body.len(), "a changed record grew");
        segment[at..at + rebuilt.len()].copy_from_slice(&rebuilt);
        std::fs::write(&path, segment).expect("writing the segment");
        let pointer = Pointer {
            len: rebuilt.len() as u32,
            crc: crc32fast::hash(&rebuilt),
            ..pointer
        };
        Self::ok(self.tree.insert(key, &pointer.encode()));
        records.into_iter().map(|(id, _)| id).collect()
    }
}
