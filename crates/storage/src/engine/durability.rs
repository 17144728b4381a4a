//! What sled 0.34's `flush` does not make durable, done after it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::StoreError;

/// On Linux sled writes its log with `sync_file_range`, which neither
/// commits the file's size and extents (the log grows as segments are
/// added) nor flushes the drive's write cache, and it writes values too
/// large for a log segment (more than ~128 KiB) to files under `blobs/`
/// without syncing them at all. A `kill -9` loses none of that (it is in
/// the page cache); a power cut could. So after every
/// flush: `fdatasync` the log, and `fsync` any blob file not synced yet and
/// the blob directory.
pub(crate) struct Durability {
    log: File,
    log_path: PathBuf,
    blob_dir: PathBuf,
    synced_blobs: Mutex<HashSet<OsString>>,
}

/// The error of an I/O step on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, source }
}

impl Durability {
    /// For the sled database in `dir` (opened already, so `db` exists).
    pub fn open(dir: &Path) -> Result<Durability, StoreError> {
        let log_path = dir.join("db");
        let log = File::options()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        // The directory entries of a store just created.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(Durability {
            log,
            log_path,
            blob_dir: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// What a sled flush that just succeeded left out, synced.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.log.sync_data().map_err(io(&self.log_path))?;
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&self.blob_dir)(e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::with_capacity(synced.len());
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(io(&self.blob_dir))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => new = true,
                    // Removed meanwhile by sled's blob collection.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.blob_dir))?;
        }
        *synced = present;
        Ok(())
    }
}
