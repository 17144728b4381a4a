//! The storage engine under the event store: nothing here knows what an
//! audit event is. Keys are bytes, entries are (16-byte key, id) pairs,
//! records are opaque.

pub(crate) mod dir_lock;
pub(crate) mod filter;
pub(crate) mod log;
pub(crate) mod poison;
pub(crate) mod runs;
pub(crate) mod varint;
