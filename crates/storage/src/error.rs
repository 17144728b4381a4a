//! Store errors.

use std::path::PathBuf;
use std::sync::Arc;

/// Anything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store open (one per directory).
    #[error("the store at {path} is in use by another process (a running `auditsink serve`?)")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// Filesystem error outside the database.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database under the store reported an error (I/O, corruption).
    #[error("storage error: {0}")]
    Database(#[source] DatabaseError),
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Hex of the record's key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// One stored event record does not decode, though the chunk holding
    /// it reads: the damage is this record's alone (a forwarding sink parks
    /// it and goes on; `auditsink check` reports it).
    #[error("the stored record of event {id:016x} is damaged: {reason}")]
    DamagedEvent {
        /// The event's id.
        id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored chunk of event records does not read (its checksum, its
    /// pointer or its layout is wrong): every event from `first` to `last`
    /// in it is lost to readers. A forwarding sink parks the range and
    /// goes on; `auditsink check` reports it.
    #[error("the stored chunk of events {first:016x} to {last:016x} is damaged: {reason}")]
    DamagedChunk {
        /// The first id the chunk may hold (after the reader's start).
        first: u64,
        /// The last id it may hold.
        last: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing or flushing a group commit failed: nothing of it was
    /// acknowledged, and what was written may not be durable.
    #[error("storage error: {0}")]
    Flush(WriteFailure),
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
        /// The failure, or where its recovery stands.
        reason: String,
    },
    /// The writer thread stopped (after a panic or a fatal error).
    #[error("the store's writer has stopped")]
    WriterGone,
}

/// An error of the database under the store (sled), kept opaque so that
/// the store's public types do not depend on the database's.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatabaseError(sled::Error);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Database(DatabaseError(e))
    }
}

/// The step of a group commit that failed (see [`WriteFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteStep {
    /// Staging the group: ids, dedupe look-ups, appending to the event log.
    Stage,
    /// Syncing the event log (`fdatasync`).
    SyncLog,
    /// Applying the group's atomic batch to the database.
    Apply,
    /// Flushing the database (`fsync`) before the answers.
    Flush,
}

impl std::fmt::Display for WriteStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteStep::Stage => "a write",
            WriteStep::SyncLog => "syncing the event log",
            WriteStep::Apply => "applying a write",
            WriteStep::Flush => "a flush",
        })
    }
}

/// Why a group commit failed: the step and its error, shared by every
/// caller of the group (and, once it poisoned the store, by every later
/// write).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step} failed ({cause})")]
pub struct WriteFailure {
    step: WriteStep,
    cause: Arc<StoreError>,
}

impl WriteFailure {
    pub(crate) fn new(step: WriteStep, cause: StoreError) -> WriteFailure {
        WriteFailure {
            step,
            cause: Arc::new(cause),
        }
    }

    /// The step that failed.
    pub fn step(&self) -> WriteStep {
        self.step
    }

    /// The error it failed with.
    pub fn cause(&self) -> &StoreError {
        &self.cause
    }
}

/// The error of a stored record (under `key`) that does not decode.
pub(crate) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        reason: reason.to_string(),
    }
}
