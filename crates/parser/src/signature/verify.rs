//! The [`KeySet`] and one line's verification: `verify_strict` against the
//! key that verified last, then the others.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::{Signature, VerifyingKey};

use super::payload::{decode_signature, signed_payload};
use crate::{LineFormat, SignatureStatus};

/// A key in a [`KeySet`].
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) kid: String,
    pub(super) key: VerifyingKey,
    /// In the prime-order subgroup and not weak: safe to batch-verify.
    pub(super) batchable: bool,
}

/// Ed25519 public keys with their key ids: what Konnect signatures are
/// verified against.
///
/// Remembers which key verified last and tries it first (shared across
/// threads; a stale hint only costs an extra verification).
pub struct KeySet {
    pub(super) keys: Vec<Entry>,
    pub(super) last_good: AtomicUsize,
}

impl Clone for KeySet {
    fn clone(&self) -> Self {
        KeySet {
            keys: self.keys.clone(),
            last_good: AtomicUsize::new(self.last_good.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

/// Whether `key` is safe to use in batch verification: not of small order and
/// without a torsion component.
pub(super) fn is_batchable(key: &VerifyingKey) -> bool {
    !key.is_weak() && key.to_edwards().is_torsion_free()
}

impl KeySet {
    /// A key set from keys already decoded, in order. No checks: a
    /// small-order key is kept but never verifies anything (verification is
    /// strict), a mixed-order key is kept but never batched. An empty set
    /// verifies nothing ([`SignatureStatus::Unverified`]).
    pub fn from_keys(keys: Vec<(String, VerifyingKey)>) -> KeySet {
        let keys = keys
            .into_iter()
            .map(|(kid, key)| Entry {
                kid,
                batchable: is_batchable(&key),
                key,
            })
            .collect();
        KeySet::from_entries(keys)
    }

    /// A key set of `keys`, trying the first one first.
    pub(super) fn from_entries(keys: Vec<Entry>) -> KeySet {
        KeySet {
            keys,
            last_good: AtomicUsize::new(0),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, in document order.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|e| e.kid.as_str()).collect()
    }

    /// Verifies one line (without its terminator).
    ///
    /// [`Missing`](SignatureStatus::Missing) when the line has no signature
    /// field ([`signed_payload`]); [`Unverified`](SignatureStatus::Unverified)
    /// when it has one but the set has no key;
    /// [`Invalid`](SignatureStatus::Invalid) when the signature is not
    /// base64url of 64 bytes or verifies against no key;
    /// [`Valid`](SignatureStatus::Valid) otherwise. Never panics.
    pub fn verify_line(&self, raw: &[u8], format: LineFormat) -> SignatureStatus {
        let Some(signed) = signed_payload(raw, format) else {
            return SignatureStatus::Missing;
        };
        if self.keys.is_empty() {
            return SignatureStatus::Unverified;
        }
        match decode_signature(signed.sig) {
            Some(bytes) => self.verify_any(&signed.payload, &Signature::from_bytes(&bytes)),
            None => SignatureStatus::Invalid,
        }
    }

    /// Index of the key to try first. Only called when the set is not empty.
    pub(super) fn hint(&self) -> usize {
        self.last_good
            .load(Ordering::Relaxed)
            .min(self.keys.len() - 1)
    }

    /// Tries the last good key, then the others in order.
    pub(super) fn verify_any(&self, payload: &[u8], sig: &Signature) -> SignatureStatus {
        if self.keys.is_empty() {
            return SignatureStatus::Unverified;
        }
        let hint = self.hint();
        let order = std::iter::once(hint).chain((0..self.keys.len()).filter(|&i| i != hint));
        for i in order {
            if self.keys[i].key.verify_strict(payload, sig).is_ok() {
                if i != hint {
                    self.last_good.store(i, Ordering::Relaxed);
                }
                return SignatureStatus::Valid;
            }
        }
        SignatureStatus::Invalid
    }
}
