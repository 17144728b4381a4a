//! Sets of [`Key`]s (identities), hashed by their own bytes.

use std::collections::HashSet;

use crate::engine::runs::Key;

/// A set of keys. They are SHA-256 prefixes, already uniform: their first
/// 8 bytes are the hash.
pub(crate) type KeySet = HashSet<Key, KeyHash>;

/// Builds [`KeyHasher`]s.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Folds the bytes it is given 8 at a time (a [`Key`] hashes as its length,
/// then its 16 bytes).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(8) {
            let mut w = [0; 8];
            w[..word.len()].copy_from_slice(word);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(w);
        }
    }
}
