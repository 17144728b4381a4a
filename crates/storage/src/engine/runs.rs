//! Sorted runs: indexes with one (key, id) entry per record, each a set of
//! runs of its [`RunKind`], kept as immutable sorted runs of fixed-size
//! entries packed 256 to a sled value, merged as they pile up (a small
//! log-structured merge tree on top of sled).
//!
//! Why: sled 0.34 spends about 5 µs on every key it inserts, whatever its
//! size, but writes a 6 KiB value for about the cost of 7 small keys. An
//! index with a sled key per record caps a store near 40k records/s; as
//! runs, one delivery of 500 records adds 2 pages per index.
//!
//! ```text
//! `R` kind run:u64be page:u32be      -> up to 256 entries, sorted
//! `R` kind run:u64be 0xffffffff      -> directory: highest id, entry count, first entry of each page
//! `m` `runs` kind                     -> manifest: next run id, live run ids newest first
//! entry = key (16 bytes) id (u64be)
//! ```
//!
//! A delivery's new run is one atomic sled batch with the manifest. A merge
//! writes its run's pages ahead, in batches of their own, then swaps the
//! manifest (new run in, old runs out) in one small batch, then removes the
//! old runs' pages: so the store's syncer, which adds runs, never waits for
//! a large merge. Pages that no manifest names are listed in the trash
//! (`m` `trsh` kind: run ids) before they are written or unlinked, and
//! opening the store removes what a crash left of them. When runs merge
//! is [`policy`]'s to say (size-tiered). Changes to the list
//! take its mutation lock ([`Runs::mutation`]); merges run on one thread at
//! a time (the store's merger, or maintenance, which waits for it);
//! readers (the writer's look-ups among them) work on a snapshot
//! and start over on a newer one if a merge removed a page under them (a
//! merge installs the new list before it removes the old pages).
//!
//! Why one piece (about 1000 lines without its tests): the page layout, the
//! manifest, the trash and a merge's write-ahead, swap and discard keep one
//! crash-safety rule between them (nothing a manifest names is ever
//! removed; nothing unnamed outlives a reopening). When to merge is apart,
//! in [`policy`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

mod policy;

use crate::error::{corrupt, StoreError};
#[cfg(test)]
use policy::FANOUT;
use policy::{MergePlan, RunShape};

pub(crate) const RUN: u8 = b'R';
/// Metadata keys: the runs' manifests and trash lists here, and the
/// store's own (format, counters) beside them.
pub(crate) const META: u8 = b'm';
/// Entries per page: 6 KiB values, the size sled handles best (see the
/// module doc).
const PAGE_ENTRIES: usize = 256;
const ENTRY_BYTES: usize = 24;
const DIRECTORY: u32 = u32::MAX;
const FORMAT: u8 = 1;
/// Pages a merge writes or removes per sled batch (1.5 MiB written): small
/// enough that the syncer's batches are not held up behind one.
const PAGES_PER_BATCH: usize = 256;

/// The 16-byte key of an entry (a SHA-256 prefix: uniformly spread).
pub(crate) type Key = [u8; 16];

/// One index entry: this key belongs to the record with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Entry {
    pub key: Key,
    pub id: u64,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.id.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Entry {
        let mut key = [0; 16];
        key.copy_from_slice(&bytes[..16]);
        let mut id = [0; 8];
        id.copy_from_slice(&bytes[16..ENTRY_BYTES]);
        Entry {
            key,
            id: u64::from_be_bytes(id),
        }
    }
}

/// Which set of runs: its tag, the byte after [`RUN`] in every key of its
/// pages and directories and the last byte of its manifest and trash keys
/// (one tag per set of runs in a tree), and its name in reports. The
/// engine gives a kind no meaning; its user defines the kinds it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunKind {
    tag: u8,
    name: &'static str,
}

impl RunKind {
    pub const fn new(tag: u8, name: &'static str) -> RunKind {
        RunKind { tag, name }
    }

    fn tag(self) -> u8 {
        self.tag
    }

    fn manifest_key(self) -> [u8; 6] {
        let mut key = *b"mruns_";
        key[0] = META;
        key[5] = self.tag();
        key
    }

    fn trash_key(self) -> [u8; 6] {
        let mut key = *b"mtrsh_";
        key[0] = META;
        key[5] = self.tag();
        key
    }

    /// Short name used in reports.
    pub fn as_str(self) -> &'static str {
        self.name
    }
}

/// The first page (in key order) of a `kind` run and its directory, for
/// [`crate::testing`]'s damage: their keys and values, if there are runs.
#[allow(clippy::type_complexity)]
pub(crate) fn first_run_keys(
    tree: &sled::Tree,
    kind: RunKind,
) -> Result<
    (
        Option<(sled::IVec, sled::IVec)>,
        Option<(sled::IVec, sled::IVec)>,
    ),
    StoreError,
> {
    let (mut page, mut directory) = (None, None);
    for item in tree.scan_prefix([RUN, kind.tag()]) {
        let (key, value) = item?;
        let slot = match key.ends_with(&DIRECTORY.to_be_bytes()) {
            true => &mut directory,
            false => &mut page,
        };
        if slot.is_none() {
            *slot = Some((key, value));
        }
        if page.is_some() && directory.is_some() {
            break;
        }
    }
    Ok((page, directory))
}

/// Bytes an entry takes in a page: its key, then its id (u64 big-endian).
pub(crate) const ENTRY_LEN: usize = ENTRY_BYTES;

fn page_key(kind: RunKind, run: u64, page: u32) -> [u8; 14] {
    let mut key = [0; 14];
    key[..10].copy_from_slice(&run_prefix(kind, run));
    key[10..].copy_from_slice(&page.to_be_bytes());
    key
}

/// What every key of one run (pages and directory) starts with.
fn run_prefix(kind: RunKind, run: u64) -> [u8; 10] {
    let mut key = [0; 10];
    key[0] = RUN;
    key[1] = kind.tag();
    key[2..].copy_from_slice(&run.to_be_bytes());
    key
}

/// Run ids whose keys may be left in the tree though no manifest names
/// them: a merge's new run until the swap, old runs until their pages are
/// removed.
#[derive(Debug, Default)]
pub(crate) struct Trash(Vec<u64>);

impl Trash {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * self.0.len());
        out.push(FORMAT);
        for id in &self.0 {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Trash> {
        match bytes.split_first() {
            Some((&FORMAT, ids)) if ids.len() % 8 == 0 => Some(Trash(
                ids.chunks_exact(8)
                    .map(|id| u64::from_be_bytes(id.try_into().unwrap_or_default()))
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// One immutable run, as the directory describes it.
#[derive(Debug)]
pub(crate) struct Run {
    id: u64,
    /// The highest id in the run.
    max_id: u64,
    len: u64,
    /// First entry of each page.
    firsts: Vec<Entry>,
}

impl Run {
    /// The run of these `sorted` entries under this id.
    fn of(id: u64, sorted: &[Entry]) -> Run {
        Run {
            id,
            max_id: sorted.iter().map(|e| e.id).max().unwrap_or(0),
            len: sorted.len() as u64,
            firsts: sorted.chunks(PAGE_ENTRIES).map(|page| page[0]).collect(),
        }
    }

    fn encode_directory(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.firsts.len() * ENTRY_BYTES);
        out.push(FORMAT);
        out.extend_from_slice(&self.max_id.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        for first in &self.firsts {
            first.encode(&mut out);
        }
        out
    }

    fn decode_directory(id: u64, bytes: &[u8]) -> Option<Run> {
        let (&format, rest) = bytes.split_first()?;
        let max_id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let len = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        let rest = &rest[16..];
        let pages = len.div_ceil(PAGE_ENTRIES as u64) as usize;
        if format != FORMAT || rest.len() != pages * ENTRY_BYTES {
            return None;
        }
        Some(Run {
            id,
            max_id,
            len,
            firsts: rest.chunks_exact(ENTRY_BYTES).map(Entry::decode).collect(),
        })
    }

    /// Pages that may hold `key`: from the last page starting below it
    /// through the pages starting with it.
    fn pages_for(&self, key: &Key) -> std::ops::Range<usize> {
        let start = self
            .firsts
            .partition_point(|f| f.key < *key)
            .saturating_sub(1);
        let end = self.firsts.partition_point(|f| f.key <= *key);
        start..end.max(start + 1).min(self.firsts.len())
    }
}

/// The live runs of one index at one moment.
#[derive(Debug, Default)]
pub(crate) struct RunList {
    next_run_id: u64,
    /// Newest first (recent deliveries are where retries find their match).
    runs: Vec<Arc<Run>>,
}

impl RunList {
    fn encode_manifest(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 8 * self.runs.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.next_run_id.to_be_bytes());
        for run in &self.runs {
            out.extend_from_slice(&run.id.to_be_bytes());
        }
        out
    }

    /// Entries in all runs.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|r| r.len).sum()
    }
}

/// Why a read of the runs failed.
enum ReadError {
    /// A page is gone: the run was merged away after the snapshot was
    /// taken (or the store is damaged).
    Missing,
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl From<sled::Error> for ReadError {
    fn from(e: sled::Error) -> Self {
        ReadError::Store(e.into())
    }
}

fn read_page(
    tree: &sled::Tree,
    kind: RunKind,
    run: &Run,
    page: usize,
) -> Result<Vec<Entry>, ReadError> {
    let key = page_key(kind, run.id, page as u32);
    let value = tree.get(key)?.ok_or(ReadError::Missing)?;
    let expected = (run.len as usize - page * PAGE_ENTRIES).min(PAGE_ENTRIES);
    if value.len() != expected * ENTRY_BYTES {
        return Err(corrupt(&key, "index page of the wrong size").into());
    }
    Ok(value.chunks_exact(ENTRY_BYTES).map(Entry::decode).collect())
}

/// One index's runs.
pub(crate) struct Runs {
    kind: RunKind,
    list: RwLock<Arc<RunList>>,
    /// Held to change the list (it guards the trash too).
    mutation: Mutex<Trash>,
}

impl Runs {
    /// Reads the manifest and directories (none: no runs). What does not
    /// decode is left out and reported, not an error: the store must still
    /// open, to rebuild its indexes from the records.
    pub fn load(tree: &sled::Tree, kind: RunKind) -> Result<(Runs, Vec<String>), StoreError> {
        let key = kind.manifest_key();
        let mut list = RunList {
            next_run_id: 1,
            runs: Vec::new(),
        };
        let mut problems = Vec::new();
        if let Some(manifest) = tree.get(key)? {
            match manifest.split_first() {
                Some((&FORMAT, rest)) if rest.len() >= 8 && rest.len() % 8 == 0 => {
                    let mut ids = rest
                        .chunks_exact(8)
                        .map(|id| u64::from_be_bytes(id.try_into().unwrap_or_default()));
                    list.next_run_id = ids.next().unwrap_or(1);
                    for id in ids {
                        let dkey = page_key(kind, id, DIRECTORY);
                        match tree.get(dkey)?.map(|d| Run::decode_directory(id, &d)) {
                            Some(Some(run)) => list.runs.push(Arc::new(run)),
                            Some(None) => problems.push(format!(
                                "{} index: run directory {id} does not decode",
                                kind.as_str()
                            )),
                            None => problems.push(format!(
                                "{} index: run directory {id} is missing",
                                kind.as_str()
                            )),
                        }
                    }
                }
                _ => problems.push(format!(
                    "{} index: the run manifest does not decode",
                    kind.as_str()
                )),
            }
        }
        // New runs must not reuse the id of a run left out (or left over).
        let highest = tree
            .scan_prefix([RUN, kind.tag()])
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| k.get(2..10).and_then(|b| b.try_into().ok()))
            .map_or(0, u64::from_be_bytes);
        list.next_run_id = list.next_run_id.max(highest + 1);
        let trash = match tree.get(kind.trash_key())? {
            None => Trash::default(),
            Some(bytes) => Trash::decode(&bytes).unwrap_or_else(|| {
                problems.push(format!(
                    "{} index: the run trash does not decode",
                    kind.as_str()
                ));
                Trash::default()
            }),
        };
        let runs = Runs {
            kind,
            list: RwLock::new(Arc::new(list)),
            mutation: Mutex::new(trash),
        };
        runs.empty_trash(tree)?;
        Ok((runs, problems))
    }

    /// Removes what a crash left of runs no manifest names.
    fn empty_trash(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        let mut trash = self.mutation();
        if trash.0.is_empty() {
            return Ok(());
        }
        let live = self.snapshot();
        for &id in &trash.0 {
            if !live.runs.iter().any(|r| r.id == id) {
                let removed = remove_keys(tree, &run_prefix(self.kind, id))?;
                tracing::info!(
                    index = self.kind.as_str(),
                    run = id,
                    keys = removed,
                    "removed the keys of a run left by an interrupted merge"
                );
            }
        }
        trash.0.clear();
        tree.insert(self.kind.trash_key(), trash.encode())?;
        Ok(())
    }

    /// The lock that changes to the list take (and the trash it guards).
    /// The caller of [`Runs::stage`] holds it until it has installed the
    /// list.
    pub fn mutation(&self) -> MutexGuard<'_, Trash> {
        self.mutation.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn kind(&self) -> RunKind {
        self.kind
    }

    /// The current runs.
    pub fn snapshot(&self) -> Arc<RunList> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `list` current (after the batch that wrote it was applied).
    pub fn install(&self, list: Arc<RunList>) {
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// Writes `entries` as a new run into `batch`, with the manifest;
    /// returns the list to install once the batch is applied (the
    /// [`Runs::mutation`] lock held throughout).
    pub fn stage(
        &self,
        base: &RunList,
        mut entries: Vec<Entry>,
        batch: &mut sled::Batch,
    ) -> Arc<RunList> {
        entries.sort_unstable();
        let mut list = RunList {
            next_run_id: base.next_run_id,
            runs: base.runs.clone(),
        };
        if !entries.is_empty() {
            let run = Run::of(list.next_run_id, &entries);
            list.next_run_id += 1;
            self.write_pages(&run, &entries, 0, batch);
            batch.insert(
                &page_key(self.kind, run.id, DIRECTORY),
                run.encode_directory(),
            );
            list.runs.insert(0, Arc::new(run));
        }
        batch.insert(&self.kind.manifest_key(), list.encode_manifest());
        Arc::new(list)
    }

    /// Writes `run`'s pages from page `first` on, holding `sorted` (its
    /// entries from there), into `batch`.
    fn write_pages(&self, run: &Run, sorted: &[Entry], first: usize, batch: &mut sled::Batch) {
        for (page, entries) in sorted.chunks(PAGE_ENTRIES).enumerate() {
            let mut value = Vec::with_capacity(entries.len() * ENTRY_BYTES);
            for entry in entries {
                entry.encode(&mut value);
            }
            batch.insert(&page_key(self.kind, run.id, (first + page) as u32), value);
        }
    }

    /// Retries `f` on a newer snapshot while pages go missing under it.
    fn read<T>(
        &self,
        tree: &sled::Tree,
        f: impl Fn(&sled::Tree, &RunList) -> Result<T, ReadError>,
    ) -> Result<T, StoreError> {
        let mut list = self.snapshot();
        loop {
            match f(tree, &list) {
                Ok(value) => return Ok(value),
                Err(ReadError::Store(e)) => return Err(e),
                Err(ReadError::Missing) => {
                    let newer = self.snapshot();
                    if Arc::ptr_eq(&newer, &list) {
                        return Err(StoreError::Corrupt {
                            key: format!("{} index", self.kind.as_str()),
                            reason: "a page of a live run is missing".into(),
                        });
                    }
                    list = newer;
                }
            }
        }
    }

    /// Calls `visit` with every entry for `key` with an id of at least
    /// `min_id`, newest run first, until it returns false.
    fn visit(
        &self,
        tree: &sled::Tree,
        list: &RunList,
        key: &Key,
        min_id: u64,
        visit: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), ReadError> {
        for run in &list.runs {
            for page in run.pages_for(key) {
                for entry in read_page(tree, self.kind, run, page)? {
                    if entry.key == *key && entry.id >= min_id && !visit(entry.id) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The id of some entry for `key` (with id ≥ `min_id`), if any (read
    /// again on a newer snapshot if a merge removes a page meanwhile).
    pub fn first(
        &self,
        tree: &sled::Tree,
        key: &Key,
        min_id: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.read(tree, |tree, list| {
            let mut found = None;
            self.visit(tree, list, key, min_id, &mut |id| {
                found = Some(id);
                false
            })?;
            Ok(found)
        })
    }

    /// The ids of every entry for `key` (with id ≥ `min_id`), sorted.
    pub fn all(&self, tree: &sled::Tree, key: &Key, min_id: u64) -> Result<Vec<u64>, StoreError> {
        self.read(tree, |tree, list| {
            let mut ids = Vec::new();
            self.visit(tree, list, key, min_id, &mut |id| {
                ids.push(id);
                true
            })?;
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        })
    }

    /// Whether this exact entry is present.
    pub fn contains(&self, tree: &sled::Tree, entry: Entry) -> Result<bool, StoreError> {
        self.read(tree, |tree, list| {
            let mut found = false;
            self.visit(tree, list, &entry.key, entry.id, &mut |id| {
                found = id == entry.id;
                !found
            })?;
            Ok(found)
        })
    }

    /// Every entry of a snapshot in key order (then id order), merged
    /// across runs. Fails (`Missing` as corruption) if a run is merged away
    /// meanwhile; callers merge (one merge at a time), or hold the store's
    /// maintenance lock (which keeps merges out), or retry.
    pub fn merged<'a>(&self, tree: &'a sled::Tree, list: &'a RunList) -> Merged<'a> {
        let mut merged = Merged {
            tree,
            kind: self.kind,
            cursors: list.runs.iter().map(Cursor::new).collect(),
            heap: BinaryHeap::new(),
            error: None,
            failed: false,
        };
        for i in 0..merged.cursors.len() {
            if let Some(e) = merged.advance(i) {
                merged.error.get_or_insert(e);
            }
        }
        merged
    }

    /// One step of upkeep, the one [`policy::next_step`] says: drops runs
    /// whose ids are all below `min_id` (removed by retention), or merges
    /// runs (dropping entries below `min_id`). One merge at a time: from the store's merger, or from
    /// maintenance, which keeps the merger out (see the module doc).
    /// Returns whether it changed anything.
    pub fn merge_step(&self, tree: &sled::Tree, min_id: u64) -> Result<bool, StoreError> {
        let list = self.snapshot();
        let shapes: Vec<RunShape> = list
            .runs
            .iter()
            .map(|r| RunShape {
                len: r.len,
                max_id: r.max_id,
            })
            .collect();
        let runs = |positions: Vec<usize>| -> Vec<Arc<Run>> {
            positions
                .into_iter()
                .map(|i| list.runs[i].clone())
                .collect()
        };
        match policy::next_step(&shapes, min_id) {
            None => Ok(false),
            Some(MergePlan::Drop(expired)) => {
                self.replace(tree, &runs(expired), &[])?;
                Ok(true)
            }
            Some(MergePlan::Merge(inputs)) => {
                self.merge(tree, runs(inputs), min_id)?;
                Ok(true)
            }
        }
    }

    /// Merges `inputs` into one run, without their entries below `min_id`.
    fn merge(
        &self,
        tree: &sled::Tree,
        inputs: Vec<Arc<Run>>,
        min_id: u64,
    ) -> Result<(), StoreError> {
        let input_list = RunList {
            next_run_id: 0,
            runs: inputs,
        };
        let total: u64 = input_list.runs.iter().map(|r| r.len).sum();
        let mut entries = Vec::with_capacity(total as usize);
        for entry in self.merged(tree, &input_list) {
            let entry = entry?;
            if entry.id >= min_id {
                entries.push(entry);
            }
        }
        entries.dedup();
        self.replace(tree, &input_list.runs, &entries)
    }

    /// Replaces the runs `old` by one run of `sorted` entries (none if
    /// empty): the new run's pages first, in batches of their own, under an
    /// id in the trash; then one batch swaps the manifest (the new run takes
    /// the place of the newest of `old`) and moves `old` to the trash; then
    /// their pages go, in batches, and the trash is emptied. The mutation
    /// lock is held for the trash's updates and the swap, not for the pages.
    fn replace(
        &self,
        tree: &sled::Tree,
        old: &[Arc<Run>],
        sorted: &[Entry],
    ) -> Result<(), StoreError> {
        let merged = if sorted.is_empty() {
            None
        } else {
            Some(Arc::new(self.write_ahead(tree, sorted)?))
        };
        if let Err(e) = self.swap(tree, old, merged.clone()) {
            if let Some(run) = merged {
                self.discard(tree, run.id);
            }
            return Err(e);
        }
        for run in old {
            let mut keys = (0..run.firsts.len() as u32)
                .chain([DIRECTORY])
                .map(|page| page_key(self.kind, run.id, page))
                .peekable();
            while keys.peek().is_some() {
                let mut batch = sled::Batch::default();
                for key in keys.by_ref().take(PAGES_PER_BATCH) {
                    batch.remove(&key);
                }
                tree.apply_batch(batch)?;
            }
        }
        self.update_trash(tree, |ids| {
            ids.retain(|id| !old.iter().any(|r| r.id == *id))
        })
    }

    /// Installs the list with `merged` (if any) in the place of the newest
    /// of `old` and without the rest of `old`, which go to the trash.
    fn swap(
        &self,
        tree: &sled::Tree,
        old: &[Arc<Run>],
        merged: Option<Arc<Run>>,
    ) -> Result<(), StoreError> {
        let mut trash = self.mutation();
        let current = self.snapshot();
        let mut list = RunList {
            next_run_id: current.next_run_id,
            runs: Vec::with_capacity(current.runs.len()),
        };
        let newest_old = old.iter().map(|r| r.id).max();
        for run in &current.runs {
            if old.iter().any(|o| o.id == run.id) {
                if Some(run.id) == newest_old {
                    list.runs.extend(merged.clone());
                }
            } else {
                list.runs.push(run.clone());
            }
        }
        let mut next_trash = Trash(trash.0.clone());
        next_trash
            .0
            .retain(|id| !merged.as_ref().is_some_and(|m| m.id == *id));
        next_trash.0.extend(old.iter().map(|r| r.id));
        let mut batch = sled::Batch::default();
        if let Some(run) = &merged {
            batch.insert(
                &page_key(self.kind, run.id, DIRECTORY),
                run.encode_directory(),
            );
        }
        batch.insert(&self.kind.manifest_key(), list.encode_manifest());
        batch.insert(&self.kind.trash_key(), next_trash.encode());
        tree.apply_batch(batch)?;
        *trash = next_trash;
        self.install(Arc::new(list));
        Ok(())
    }

    /// Writes a run of `sorted` entries that no manifest names yet (its id
    /// in the trash first), in batches of [`PAGES_PER_BATCH`] pages;
    /// returns it, its directory not written.
    fn write_ahead(&self, tree: &sled::Tree, sorted: &[Entry]) -> Result<Run, StoreError> {
        let run = {
            let mut trash = self.mutation();
            let current = self.snapshot();
            let run = Run::of(current.next_run_id, sorted);
            let mut next_trash = Trash(trash.0.clone());
            next_trash.0.push(run.id);
            tree.insert(self.kind.trash_key(), next_trash.encode())?;
            *trash = next_trash;
            self.install(Arc::new(RunList {
                next_run_id: run.id + 1,
                runs: current.runs.clone(),
            }));
            run
        };
        for (n, entries) in sorted.chunks(PAGE_ENTRIES * PAGES_PER_BATCH).enumerate() {
            let mut batch = sled::Batch::default();
            self.write_pages(&run, entries, n * PAGES_PER_BATCH, &mut batch);
            if let Err(e) = tree.apply_batch(batch) {
                self.discard(tree, run.id);
                return Err(e.into());
            }
        }
        Ok(run)
    }

    /// Removes a run written ahead that will not be swapped in (best
    /// effort: what is left stays in the trash, for the next open).
    fn discard(&self, tree: &sled::Tree, id: u64) {
        let discarded = remove_keys(tree, &run_prefix(self.kind, id))
            .and_then(|_| self.update_trash(tree, |ids| ids.retain(|t| *t != id)));
        if let Err(e) = discarded {
            tracing::warn!(
                error = %e,
                index = self.kind.as_str(),
                run = id,
                "removing an unused merged run failed; opening the store again removes it"
            );
        }
    }

    /// Changes the trash, on disk, then in memory.
    fn update_trash(
        &self,
        tree: &sled::Tree,
        change: impl FnOnce(&mut Vec<u64>),
    ) -> Result<(), StoreError> {
        let mut trash = self.mutation();
        let mut next_trash = Trash(trash.0.clone());
        change(&mut next_trash.0);
        tree.insert(self.kind.trash_key(), next_trash.encode())?;
        *trash = next_trash;
        Ok(())
    }

    /// Removes every run (for a rebuild); returns the entries they held.
    /// The empty manifest goes first: pages left by a crash midway belong
    /// to no run (and their ids are not reused, see [`Runs::load`]).
    pub fn clear(&self, tree: &sled::Tree) -> Result<u64, StoreError> {
        let mut trash = self.mutation();
        let list = RunList {
            next_run_id: self.snapshot().next_run_id,
            runs: Vec::new(),
        };
        tree.insert(self.kind.manifest_key(), list.encode_manifest())?;
        self.install(Arc::new(list));
        let removed = remove_keys(tree, &[RUN, self.kind.tag()])?;
        tree.insert(self.kind.trash_key(), Trash::default().encode())?;
        *trash = Trash::default();
        Ok(removed)
    }

    /// Calls `visit` with every entry with an id of at least `min_id`, run
    /// by run, in no particular order, until it returns false. Survives
    /// merges: on a page gone it goes on with the runs of the newer list it
    /// has not read (entries of a merged run may be visited twice).
    pub fn scan(
        &self,
        tree: &sled::Tree,
        min_id: u64,
        visit: &mut dyn FnMut(&Entry) -> bool,
    ) -> Result<(), StoreError> {
        let mut done = std::collections::HashSet::new();
        let mut list = self.snapshot();
        'list: loop {
            for run in &list.runs {
                if done.contains(&run.id) {
                    continue;
                }
                for page in 0..run.firsts.len() {
                    match read_page(tree, self.kind, run, page) {
                        Ok(entries) => {
                            for entry in entries.iter().filter(|e| e.id >= min_id) {
                                if !visit(entry) {
                                    return Ok(());
                                }
                            }
                        }
                        Err(ReadError::Store(e)) => return Err(e),
                        Err(ReadError::Missing) => {
                            let newer = self.snapshot();
                            if Arc::ptr_eq(&newer, &list) {
                                return Err(StoreError::Corrupt {
                                    key: format!("{} index run {}", self.kind.as_str(), run.id),
                                    reason: format!("page {page} is missing"),
                                });
                            }
                            list = newer;
                            continue 'list;
                        }
                    }
                }
                done.insert(run.id);
            }
            return Ok(());
        }
    }

    /// Structural problems of the runs: pages out of order, directories
    /// that do not match their pages. Call with the store's maintenance
    /// lock held (no merge meanwhile).
    pub fn verify(&self, tree: &sled::Tree) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let name = self.kind.as_str();
        for run in &self.snapshot().runs {
            let mut previous: Option<Entry> = None;
            for (page, first) in run.firsts.iter().enumerate() {
                let entries = match read_page(tree, self.kind, run, page) {
                    Ok(entries) => entries,
                    Err(ReadError::Store(StoreError::Corrupt { reason, .. })) => {
                        problems.push(format!("{name} index run {} page {page}: {reason}", run.id));
                        break;
                    }
                    Err(ReadError::Store(e)) => return Err(e),
                    Err(ReadError::Missing) => {
                        problems.push(format!(
                            "{name} index run {} page {page} is missing",
                            run.id
                        ));
                        break;
                    }
                };
                if entries.first() != Some(first) {
                    problems.push(format!(
                        "{name} index run {} page {page} does not start where its directory says",
                        run.id
                    ));
                }
                for entry in entries {
                    if previous.is_some_and(|p| p >= entry) || entry.id > run.max_id {
                        problems.push(format!(
                            "{name} index run {} page {page} is out of order",
                            run.id
                        ));
                        break;
                    }
                    previous = Some(entry);
                }
            }
        }
        Ok(problems)
    }
}

/// Removes every key that starts with `prefix`, in batches; returns how
/// many.
fn remove_keys(tree: &sled::Tree, prefix: &[u8]) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let keys: Vec<sled::IVec> = tree
            .scan_prefix(prefix)
            .keys()
            .take(10_000)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(removed);
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            removed += 1;
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
    }
}

/// A position in one run.
struct Cursor<'a> {
    run: &'a Run,
    page: usize,
    entries: std::vec::IntoIter<Entry>,
}

impl<'a> Cursor<'a> {
    fn new(run: &'a Arc<Run>) -> Cursor<'a> {
        Cursor {
            run,
            page: 0,
            entries: Vec::new().into_iter(),
        }
    }
}

/// See [`Runs::merged`].
pub(crate) struct Merged<'a> {
    tree: &'a sled::Tree,
    kind: RunKind,
    cursors: Vec<Cursor<'a>>,
    heap: BinaryHeap<Reverse<(Entry, usize)>>,
    /// A first page that could not be read, reported by the first `next`.
    error: Option<StoreError>,
    failed: bool,
}

impl Merged<'_> {
    /// Pushes cursor `i`'s next entry onto the heap.
    fn advance(&mut self, i: usize) -> Option<StoreError> {
        let cursor = &mut self.cursors[i];
        loop {
            if let Some(entry) = cursor.entries.next() {
                self.heap.push(Reverse((entry, i)));
                return None;
            }
            if cursor.page >= cursor.run.firsts.len() {
                return None;
            }
            match read_page(self.tree, self.kind, cursor.run, cursor.page) {
                Ok(entries) => {
                    cursor.page += 1;
                    cursor.entries = entries.into_iter();
                }
                Err(ReadError::Missing) => {
                    return Some(StoreError::Corrupt {
                        key: format!("{} index run {}", self.kind.as_str(), cursor.run.id),
                        reason: format!("page {} is missing", cursor.page),
                    })
                }
                Err(ReadError::Store(e)) => return Some(e),
            }
        }
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(e) = self.error.take() {
            self.failed = true;
            return Some(Err(e));
        }
        let Reverse((entry, i)) = self.heap.pop()?;
        if let Some(e) = self.advance(i) {
            self.failed = true;
            return Some(Err(e));
        }
        Some(Ok(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: RunKind = RunKind::new(b'x', "test");

    fn key(n: u64) -> Key {
        let hash = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            n.to_be_bytes(),
        ));
        hash[..16].try_into().unwrap()
    }

    fn stage(runs: &Runs, tree: &sled::Tree, entries: Vec<Entry>) {
        let mut batch = sled::Batch::default();
        let list = runs.stage(&runs.snapshot(), entries, &mut batch);
        tree.apply_batch(batch).unwrap();
        runs.install(list);
    }

    /// A tree in a directory of its own (kept while the guard lives).
    fn scratch_tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        (dir, tree)
    }

    #[test]
    fn entries_stay_findable_through_merges_and_reopen() {
        let (_dir, tree) = scratch_tree();
        let (runs, _) = Runs::load(&tree, KIND).unwrap();
        // 300 writes of 3 entries + 1 with a shared key: merges of merges.
        let mut id = 0;
        for write in 0..300u64 {
            let mut entries = Vec::new();
            for _ in 0..3 {
                id += 1;
                entries.push(Entry { key: key(id), id });
            }
            entries.push(Entry {
                key: key(1_000_000 + write % 7),
                id,
            });
            stage(&runs, &tree, entries);
            while runs.merge_step(&tree, 0).unwrap() {}
        }
        let list = runs.snapshot();
        assert!(list.runs.iter().any(|r| r.len == 1024), "{list:?}");
        assert!(list.runs.len() < 2 * FANOUT, "{}", list.runs.len());
        assert_eq!(list.len(), 1200);
        let merged: Vec<Entry> = runs.merged(&tree, &list).map(Result::unwrap).collect();
        assert!(merged.windows(2).all(|w| w[0] < w[1]));
        drop(list);

        let (reopened, problems) = Runs::load(&tree, KIND).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        for runs in [&runs, &reopened] {
            for id in 1..=900 {
                assert_eq!(runs.first(&tree, &key(id), 0).unwrap(), Some(id));
                assert!(runs.contains(&tree, Entry { key: key(id), id }).unwrap());
                assert!(!runs
                    .contains(
                        &tree,
                        Entry {
                            key: key(id),
                            id: id + 1
                        }
                    )
                    .unwrap());
            }
            assert_eq!(runs.first(&tree, &key(5_000), 0).unwrap(), None);
            let shared = runs.all(&tree, &key(1_000_003), 0).unwrap();
            let want: Vec<u64> = (0..300u64)
                .filter(|w| w % 7 == 3)
                .map(|w| 3 * w + 3)
                .collect();
            assert_eq!(shared, want);
            // Ids below the horizon are ignored.
            assert_eq!(
                runs.all(&tree, &key(1_000_003), 450).unwrap(),
                want[want.len() / 2..]
            );
        }

        // Every page key belongs to a live run: merged runs were removed.
        let live: Vec<u64> = runs.snapshot().runs.iter().map(|r| r.id).collect();
        for item in tree.scan_prefix([RUN]).keys() {
            let k = item.unwrap();
            let run = u64::from_be_bytes(k[2..10].try_into().unwrap());
            assert!(live.contains(&run), "page of dead run {run}");
        }
        assert_eq!(tree.get(KIND.trash_key()).unwrap().unwrap(), [FORMAT]);
    }

    /// What a crash leaves of a merge (a new run written ahead but never
    /// swapped in; old runs swapped out but their pages still there) is
    /// gone after reopening, and nothing live goes with it.
    #[test]
    fn reopening_removes_what_an_interrupted_merge_left() {
        let (_dir, tree) = scratch_tree();
        let (runs, _) = Runs::load(&tree, KIND).unwrap();
        for write in 0..3u64 {
            stage(
                &runs,
                &tree,
                (1..=4)
                    .map(|n| Entry {
                        key: key(write * 10 + n),
                        id: write * 10 + n,
                    })
                    .collect(),
            );
        }
        let live = runs.snapshot();
        // More pages than one batch writes.
        let many = PAGE_ENTRIES * PAGES_PER_BATCH + 7;
        let mut sorted: Vec<Entry> = (0..many as u64)
            .map(|n| Entry {
                key: key(n + 100),
                id: n + 100,
            })
            .collect();
        sorted.sort_unstable();
        let ahead = runs.write_ahead(&tree, &sorted).unwrap();
        let ahead_keys = || tree.scan_prefix(run_prefix(KIND, ahead.id)).count();
        assert_eq!(ahead_keys(), many.div_ceil(PAGE_ENTRIES));
        // A swapped-out run's leftovers, and a live run wrongly in the trash.
        let dead = ahead.id + 1;
        tree.insert(page_key(KIND, dead, 0), vec![0; ENTRY_BYTES])
            .unwrap();
        tree.insert(page_key(KIND, dead, DIRECTORY), vec![0; 3])
            .unwrap();
        let mut trash = Trash::decode(&tree.get(KIND.trash_key()).unwrap().unwrap()).unwrap();
        trash.0.extend([dead, live.runs[0].id]);
        tree.insert(KIND.trash_key(), trash.encode()).unwrap();
        drop(runs);

        let (reopened, problems) = Runs::load(&tree, KIND).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ahead_keys(), 0);
        assert_eq!(tree.scan_prefix(run_prefix(KIND, dead)).count(), 0);
        assert_eq!(tree.get(KIND.trash_key()).unwrap().unwrap(), [FORMAT]);
        let ids: Vec<u64> = reopened.snapshot().runs.iter().map(|r| r.id).collect();
        assert_eq!(ids, live.runs.iter().map(|r| r.id).collect::<Vec<_>>());
        for n in (1..=4).chain(11..=14).chain(21..=24) {
            assert_eq!(reopened.first(&tree, &key(n), 0).unwrap(), Some(n));
        }
        assert!(reopened.snapshot().next_run_id > dead);
    }

    #[test]
    fn runs_and_entries_below_the_horizon_are_dropped() {
        let (_dir, tree) = scratch_tree();
        let (runs, _) = Runs::load(&tree, KIND).unwrap();
        // Runs of ids {n, 100 + n}, then {1000 + n} for n in 1..=16.
        for n in 1..=FANOUT as u64 {
            let entries = [n, 100 + n].map(|id| Entry { key: key(id), id });
            stage(&runs, &tree, entries.to_vec());
        }
        for n in 1..=FANOUT as u64 {
            stage(
                &runs,
                &tree,
                vec![Entry {
                    key: key(1000 + n),
                    id: 1000 + n,
                }],
            );
        }
        // Nothing is all below 10; merging drops ids 1..=9 from the first 16.
        assert!(runs.merge_step(&tree, 10).unwrap());
        let list = runs.snapshot();
        assert_eq!(list.len(), 2 * 16 - 9 + 16, "{list:?}");
        assert_eq!(runs.first(&tree, &key(9), 0).unwrap(), None);
        assert_eq!(runs.first(&tree, &key(10), 0).unwrap(), Some(10));
        assert_eq!(runs.first(&tree, &key(101), 0).unwrap(), Some(101));
        // Then every run of ids below 1000 is dropped whole.
        while runs.merge_step(&tree, 1000).unwrap() {}
        let list = runs.snapshot();
        assert_eq!(list.len(), 16, "{list:?}");
        assert_eq!(runs.first(&tree, &key(101), 0).unwrap(), None);
        assert!(runs.verify(&tree).unwrap().is_empty());
        let mut seen = 0;
        runs.scan(&tree, 1005, &mut |e| {
            assert!(e.id >= 1005);
            seen += 1;
            true
        })
        .unwrap();
        assert_eq!(seen, 12);
    }

    #[test]
    fn a_reader_on_an_old_snapshot_starts_over() {
        let (_dir, tree) = scratch_tree();
        let (runs, _) = Runs::load(&tree, KIND).unwrap();
        for id in 1..=FANOUT as u64 {
            stage(&runs, &tree, vec![Entry { key: key(id), id }]);
        }
        let old = runs.snapshot();
        assert!(runs.merge_step(&tree, 0).unwrap());
        // The old snapshot's pages are gone: reading it says so (and `read`
        // starts over on the current runs), it does not answer wrongly.
        let stale = runs.visit(&tree, &old, &key(3), 0, &mut |_| true);
        assert!(matches!(stale, Err(ReadError::Missing)));
        assert_eq!(runs.first(&tree, &key(3), 0).unwrap(), Some(3));
        assert!(runs.merged(&tree, &old).any(|e| e.is_err()));
    }
}
