//! Whether a store directory is held: sled locks its `db` file (`flock`)
//! while a database is open on it, but reports a lock held elsewhere only as
//! text (an `io::Error` of kind `Other`). After a failed open the lock is
//! tried here, and told by its error kind.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use fs2::FileExt;

/// The file sled locks, in the store directory.
const SLED_FILE: &str = "db";

/// Whether an open database (of this process or another) holds the lock of
/// the store in `dir`. The lock is taken and let go at once if free
/// (`flock` locks belong to one open file, so this does not touch sled's).
pub(crate) fn is_held(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(SLED_FILE)) else {
        return false;
    };
    match file.try_lock_exclusive() {
        Ok(()) => {
            let _ = FileExt::unlock(&file);
            false
        }
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    }
}
