//! The storage engine under the event store: nothing here knows what an
//! audit event is. Keys are bytes, entries are (16-byte key, id) pairs,
//! records are opaque.

pub(crate) mod database;
pub(crate) mod dir_lock;
pub(crate) mod durability;
pub(crate) mod filter;
pub(crate) mod key_set;
pub(crate) mod log;
pub(crate) mod pipeline;
pub(crate) mod poison;
pub(crate) mod runs;
pub(crate) mod varint;
pub(crate) mod write_lock;
