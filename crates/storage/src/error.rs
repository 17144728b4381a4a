//! Store errors.

use std::path::PathBuf;

/// Anything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store open (sled allows one per directory).
    #[error("the store at {path} is in use by another process (a running `auditsink serve`?)")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// Filesystem error outside sled.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// sled reported an error (I/O, corruption).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Hex of the record's key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Writing or flushing a group commit failed: nothing of it was
    /// acknowledged, and what was written may not be durable.
    #[error("storage error: {0}")]
    Flush(String),
    /// The store was written in a layout this build does not read.
    #[error("the store at {path} {reason}")]
    Format {
        /// The store directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A maintenance operation found the store in a state it cannot work on.
    #[error("{0}")]
    Inconsistent(String),
    /// A write or flush failed: the store refuses writes and reads until it
    /// is reopened, which it does by itself once writes succeed again.
    #[error(
        "the store is closed since a write failed ({reason}); it reopens by itself \
         once writes succeed again (free disk space)"
    )]
    Recovering {
        /// The failure.
        reason: String,
    },
    /// The writer thread stopped (after a panic or a fatal error).
    #[error("the store's writer has stopped")]
    WriterGone,
}

impl StoreError {
    pub(crate) fn from_open(dir: &std::path::Path, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(11) =>
            {
                StoreError::Locked {
                    path: dir.to_path_buf(),
                }
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                path: dir.to_path_buf(),
            },
            other => StoreError::Sled(other),
        }
    }
}
