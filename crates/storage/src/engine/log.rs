//! The segment log: chunks of records appended to segment files of our
//! own, with sled holding only a small pointer per chunk.
//!
//! Why: sled 0.34 copies a leaf on every insert, so a value costs it about
//! 6 ns per byte (a leaf of 6 KiB chunks is rewritten 16 times as it fills);
//! records are nearly all of a store's bytes. Appending them to a
//! plain file costs what the kernel's copy costs.
//!
//! ```text
//! <store>/events/<segment:016x>.log   chunk bodies back to back
//! pointer (the sled value kept for the chunk) =
//!     version:u8=2 segment:u64be offset:u64be len:u32be crc32:u32be
//! ```
//!
//! Order of writes, so that sled never points at bytes that are not on
//! disk: a group's chunks are appended and the segment `fdatasync`ed before
//! the sled batch holding their pointers is applied. A crash before that
//! leaves unreferenced bytes at a segment's end, never a dangling pointer.
//! Each open starts a new segment at its first append (no torn tail to
//! find; a read-only open creates nothing); segments no pointer refers to
//! any more are deleted after retention.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::StoreError;

/// Version byte of a pointer into the log.
const POINTER_VERSION: u8 = 2;
const POINTER_LEN: usize = 1 + 8 + 8 + 4 + 4;
/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Segment files kept open for reading.
const OPEN_READERS: usize = 64;
/// The log's folder in the store's directory (`events`: its name in the
/// stores on disk, where the event store's chunks are).
pub(crate) const LOG_DIR: &str = "events";

/// Where a chunk body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

impl Pointer {
    pub fn encode(&self) -> [u8; POINTER_LEN] {
        let mut out = [0; POINTER_LEN];
        out[0] = POINTER_VERSION;
        out[1..9].copy_from_slice(&self.segment.to_be_bytes());
        out[9..17].copy_from_slice(&self.offset.to_be_bytes());
        out[17..21].copy_from_slice(&self.len.to_be_bytes());
        out[21..25].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// A pointer value, or `None` if `value` is not one.
    pub fn decode(value: &[u8]) -> Option<Pointer> {
        if value.len() != POINTER_LEN || value[0] != POINTER_VERSION {
            return None;
        }
        Some(Pointer {
            segment: u64::from_be_bytes(value[1..9].try_into().ok()?),
            offset: u64::from_be_bytes(value[9..17].try_into().ok()?),
            len: u32::from_be_bytes(value[17..21].try_into().ok()?),
            crc: u32::from_be_bytes(value[21..25].try_into().ok()?),
        })
    }
}

struct Active {
    segment: u64,
    /// Created at the first append.
    file: Option<Arc<File>>,
    /// Earlier segments left with bytes not yet synced (a full segment, or
    /// one abandoned after a failed write): the next sync covers them.
    unsynced: Vec<(u64, Arc<File>)>,
    /// Why a sync failed: bytes appended before it may be lost, and Linux
    /// reports a write-back error to one fsync only, so every later sync
    /// and append fails too (until a restart reads what is on disk).
    failed: Option<String>,
    len: u64,
    /// Appended since the last sync.
    dirty: bool,
    /// A segment file was created since the last sync (the directory
    /// entry must be synced too).
    created: bool,
}

/// The segment files of one store.
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    active: Mutex<Active>,
    /// One sync at a time: a second caller must not return before the
    /// bytes the first one is syncing are durable.
    sync_lock: Mutex<()>,
    readers: Mutex<HashMap<u64, Arc<File>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.log"))
}

/// The file of `segment` of the log of the store in `store_dir`.
pub(crate) fn segment_file(store_dir: &Path, segment: u64) -> PathBuf {
    segment_path(&store_dir.join(LOG_DIR), segment)
}

/// Segment numbers present in `dir`.
fn segments(dir: &Path) -> Result<BTreeSet<u64>, StoreError> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".log")
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        {
            out.insert(n);
        }
    }
    Ok(out)
}

fn create_segment(dir: &Path, segment: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, segment);
    File::options()
        .create_new(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(io(&path))
}

fn sync_failed(dir: &Path, why: &str) -> StoreError {
    StoreError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(format!("an earlier sync of the event log failed: {why}")),
    }
}

impl Active {
    /// Moves on to a new segment; the current one is synced by the next
    /// sync if it holds unsynced bytes.
    fn retire(&mut self) {
        if let Some(file) = self.file.take() {
            if self.dirty || self.created {
                self.unsynced.push((self.segment, file));
            }
        }
        self.segment += 1;
        self.len = 0;
    }
}

impl SegmentLog {
    /// Opens the log of the store in `store_dir`, starting a new segment.
    pub fn open(store_dir: &Path) -> Result<SegmentLog, StoreError> {
        let dir = store_dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let segment = segments(&dir)?.last().map_or(1, |n| n + 1);
        Ok(SegmentLog {
            dir,
            segment_bytes: SEGMENT_BYTES,
            sync_lock: Mutex::new(()),
            active: Mutex::new(Active {
                segment,
                file: None,
                unsynced: Vec::new(),
                failed: None,
                len: 0,
                dirty: false,
                created: false,
            }),
            readers: Mutex::new(HashMap::new()),
        })
    }

    fn active(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends chunk bodies (not yet durable: see [`SegmentLog::sync`]).
    pub fn append(&self, bodies: &[Vec<u8>]) -> Result<Vec<Pointer>, StoreError> {
        let mut active = self.active();
        if let Some(why) = &active.failed {
            return Err(sync_failed(&self.dir, why));
        }
        let mut pointers = Vec::with_capacity(bodies.len());
        for body in bodies {
            if active.len > 0 && active.len + body.len() as u64 > self.segment_bytes {
                // The full segment is synced with the next sync, before
                // anything points into it (syncing here would take the
                // write-back error that sync must see).
                active.retire();
            }
            if active.file.is_none() {
                active.file = Some(Arc::new(create_segment(&self.dir, active.segment)?));
                active.created = true;
            }
            let len = u32::try_from(body.len()).map_err(|_| StoreError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("chunk larger than 4 GiB"),
            })?;
            pointers.push(Pointer {
                segment: active.segment,
                offset: active.len,
                len,
                crc: crc32fast::hash(body),
            });
            self.write(&mut active, body)?;
        }
        Ok(pointers)
    }

    /// The segment the next append goes to: no chunk in it or above is
    /// pointed at unless an append is in progress (callers hold the
    /// store's write lock from `Core::lock`, with no group in flight, to
    /// know none is).
    pub fn active_segment(&self) -> u64 {
        self.active().segment
    }

    fn write(&self, active: &mut Active, bytes: &[u8]) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, active.segment);
        let Some(file) = active.file.clone() else {
            return Err(io(&path)(std::io::Error::other("no segment file")));
        };
        if let Err(e) = (&*file).write_all(bytes) {
            // Bytes may have been written in part: cut them off, so that
            // the next pointer matches the file; if even that fails, the
            // next append starts a new segment (this one, with the bytes of
            // groups in flight, is still synced by the next sync).
            if file.set_len(active.len).is_err() {
                active.retire();
            }
            return Err(io(&path)(e));
        }
        active.len += bytes.len() as u64;
        active.dirty = true;
        Ok(())
    }

    /// Makes everything appended so far durable. The files are synced
    /// outside the lock: appends go on meanwhile (and are left for the next
    /// sync). A failure means bytes appended before it may be lost: the
    /// caller must not trust a later sync either.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _one = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (mut files, created) = {
            let mut active = self.active();
            if let Some(why) = &active.failed {
                return Err(sync_failed(&self.dir, why));
            }
            let mut files = std::mem::take(&mut active.unsynced);
            if let (Some(file), true) = (&active.file, active.dirty || active.created) {
                files.push((active.segment, file.clone()));
            }
            active.dirty = false;
            let created = std::mem::take(&mut active.created);
            (files, created)
        };
        let synced = files
            .drain(..)
            .try_for_each(|(segment, file)| {
                file.sync_data()
                    .map_err(io(&segment_path(&self.dir, segment)))
            })
            .and_then(|()| match created {
                true => File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&self.dir)),
                false => Ok(()),
            });
        if let Err(e) = &synced {
            self.active().failed = Some(e.to_string());
        }
        synced
    }

    /// Reads a chunk body and checks it against the pointer's checksum.
    /// A body that is not there as written is `Err(Ok(why))` (corrupt); a
    /// read that failed is `Err(Err(error))` (I/O: the body may be fine).
    pub fn read(&self, pointer: &Pointer) -> Result<Vec<u8>, Result<String, StoreError>> {
        let file = self.reader(pointer.segment)?;
        let mut body = vec![0; pointer.len as usize];
        let at = format!(
            "event log segment {:016x} at {}",
            pointer.segment, pointer.offset
        );
        file.read_exact_at(&mut body, pointer.offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(format!("{at}: past the end of the file")),
                _ => Err(io(&segment_path(&self.dir, pointer.segment))(e)),
            })?;
        if crc32fast::hash(&body) != pointer.crc {
            return Err(Ok(format!("{at}: checksum mismatch")));
        }
        Ok(body)
    }

    fn reader(&self, segment: u64) -> Result<Arc<File>, Result<String, StoreError>> {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = readers.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.dir, segment);
        let file = Arc::new(File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(format!("event log {}: missing", path.display())),
            _ => Err(io(&path)(e)),
        })?);
        if readers.len() >= OPEN_READERS {
            readers.clear();
        }
        readers.insert(segment, file.clone());
        Ok(file)
    }

    /// Deletes the segments below `bound` that are not in `live`. Returns
    /// how many.
    pub fn delete_unreferenced(&self, bound: u64, live: &BTreeSet<u64>) -> Result<u64, StoreError> {
        let bound = bound.min(self.active().segment);
        let mut deleted = 0;
        for segment in segments(&self.dir)? {
            if segment >= bound || live.contains(&segment) {
                continue;
            }
            self.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&segment);
            let path = segment_path(&self.dir, segment);
            std::fs::remove_file(&path).map_err(io(&path))?;
            deleted += 1;
        }
        if deleted > 0 {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(deleted)
    }

    /// Bytes of all segment files.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for segment in segments(&self.dir)? {
            let path = segment_path(&self.dir, segment);
            total += std::fs::metadata(&path).map_err(io(&path))?.len();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let pointers = log.append(&bodies).unwrap();
        log.sync().unwrap();
        for (p, body) in pointers.iter().zip(&bodies) {
            assert_eq!(Pointer::decode(&p.encode()), Some(*p));
            assert_eq!(&log.read(p).unwrap(), body);
        }
        assert_eq!(pointers[1].offset, 1000);
        drop(log);
        // Reopened: a new segment at the first append; the old one still reads.
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(segments(&dir.path().join("events")).unwrap().len(), 1);
        let more = log.append(&[b"next".to_vec()]).unwrap();
        assert_eq!(more[0].segment, pointers[0].segment + 1);
        assert_eq!(log.read(&more[0]).unwrap(), b"next");
        assert_eq!(&log.read(&pointers[4]).unwrap(), &bodies[4]);
        // A damaged byte is caught by the checksum.
        let path = segment_path(&dir.path().join("events"), pointers[0].segment);
        let mut raw = std::fs::read(&path).unwrap();
        raw[10] ^= 1;
        std::fs::write(&path, raw).unwrap();
        log.readers.lock().unwrap().clear();
        assert!(log
            .read(&pointers[0])
            .unwrap_err()
            .unwrap()
            .contains("checksum"));
        // Unreferenced old segments go; the active one stays.
        assert_eq!(
            log.delete_unreferenced(u64::MAX, &BTreeSet::new()).unwrap(),
            1
        );
        assert!(log.read(&pointers[0]).is_err());
        assert_eq!(log.read(&more[0]).unwrap(), b"next");
        assert_eq!(Pointer::decode(b"\x01rest"), None);
    }

    #[test]
    fn a_full_segment_is_left_for_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path()).unwrap();
        log.segment_bytes = 100;
        let first = log.append(&[vec![1; 80]]).unwrap();
        // Past the segment's size: a new one, the full one not synced by
        // the append (a failure there would be reported to the wrong call)
        // but by the next sync.
        let second = log.append(&[vec![2; 80]]).unwrap();
        assert_eq!(second[0].segment, first[0].segment + 1);
        assert_eq!(log.active().unsynced.len(), 1);
        log.sync().unwrap();
        assert!(log.active().unsynced.is_empty());
        assert!(!log.active().dirty);
        assert_eq!(log.read(&first[0]).unwrap(), vec![1; 80]);
        assert_eq!(log.read(&second[0]).unwrap(), vec![2; 80]);
    }
}
