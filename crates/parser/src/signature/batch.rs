//! Many lines in one batch equation ([`KeySet::verify_lines`]): which
//! signatures a batch may judge (byte screening), the batch against the last
//! good key, and the retry in chunks and alone when it fails.

use std::borrow::Cow;

use ed25519_dalek::Signature;

use super::payload::{decode_signature, signed_payload};
use super::verify::KeySet;
use crate::{LineFormat, SignatureStatus};

/// Lines per batch when a request's batch failed (see
/// [`KeySet::verify_lines`]): batches gain little past about 60 lines
/// (BENCHMARKS.md), and a forged line then costs 64 lines verified alone.
const RETRY_CHUNK: usize = 64;

/// The group order ℓ, little-endian.
pub(super) const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The `y` coordinates of the eight small-order points (0, 1, p−1, and the
/// two of order 8), little-endian with the sign bit clear (libsodium's list).
/// An encoding is of a small-order point iff it matches one ignoring the sign
/// bit, or is a non-canonical `y` (≥ p) of one (`p`, `p+1`, caught by the
/// canonical check).
pub(super) const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// Whether the little-endian `bytes` (top bit ignored when `mask_sign`) are
/// less than `bound`.
pub(super) fn less_than(bytes: &[u8; 32], bound: &[u8; 32], mask_sign: bool) -> bool {
    (0..32)
        .rev()
        .map(|i| {
            (
                if mask_sign && i == 31 {
                    bytes[i] & 0x7f
                } else {
                    bytes[i]
                },
                bound[i],
            )
        })
        .find(|(a, b)| a != b)
        .is_some_and(|(a, b)| a < b)
}

/// The field prime p = 2²⁵⁵ − 19, little-endian.
pub(super) const P: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// Whether a signature can go into a batch without the batch judging it
/// differently from `verify_strict`: `S < ℓ` (else the whole batch errors),
/// `R`'s `y` canonical (< p), and `R` not of small order. Byte comparisons
/// only, so screening costs nothing next to the verification; a signature
/// that fails it is verified alone.
pub(super) fn batch_safe(sig: &Signature) -> bool {
    let r = sig.r_bytes();
    less_than(sig.s_bytes(), &ELL, false)
        && less_than(r, &P, true)
        && !SMALL_ORDER_Y
            .iter()
            .any(|y| r[..31] == y[..31] && r[31] & 0x7f == y[31])
}

impl KeySet {
    /// Verifies many lines; the result is what [`verify_line`](Self::verify_line)
    /// gives on each, in order, with one exception: a signature made *with
    /// the private key* of a key in the set but with a mixed-order `R` (`rB`
    /// plus a point of order 2, 4 or 8; no RFC 8032 signer makes one) is
    /// `Invalid` from `verify_line` (`verify_strict`) and may be `Valid`
    /// here. The cofactorless batch equation holds for it when its weight in
    /// the batch is a multiple of that order; the weights are derived from
    /// the batch's contents, so the outcome depends on the lines batched with
    /// it (and, when a request's batch of more than `RETRY_CHUNK` lines
    /// fails, on its chunk as well). Nobody without the private key can make
    /// such a signature (see the module's decisions).
    ///
    /// Every line with a decodable, well-formed signature goes into one
    /// `ed25519_dalek::verify_batch` call against the key that verified last
    /// (signatures with a non-canonical or small-order component are verified
    /// alone). If the batch fails (a bad line, or lines signed by another
    /// key) and is larger than `RETRY_CHUNK` (64) lines, it is verified again
    /// in chunks of that many, each against the key that verified last by
    /// then; the lines of a chunk that fails (or of a smaller batch) are
    /// verified alone, trying every key. So a forged line costs its chunk,
    /// not the whole request, and after a key rotation the first chunk's
    /// lines find the new key for the rest. Never panics.
    pub fn verify_lines(&self, lines: &[(&[u8], LineFormat)]) -> Vec<SignatureStatus> {
        let mut out = vec![SignatureStatus::Invalid; lines.len()];
        let mut candidates: Vec<(usize, Cow<'_, [u8]>, Signature)> = Vec::new();
        for (i, &(raw, format)) in lines.iter().enumerate() {
            match signed_payload(raw, format) {
                None => out[i] = SignatureStatus::Missing,
                Some(_) if self.keys.is_empty() => out[i] = SignatureStatus::Unverified,
                Some(signed) => {
                    if let Some(bytes) = decode_signature(signed.sig) {
                        candidates.push((i, signed.payload, Signature::from_bytes(&bytes)));
                    }
                }
            }
        }
        if candidates.is_empty() {
            return out;
        }
        let (batch, alone): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|(_, _, sig)| batch_safe(sig));
        if !self.verify_batch(&batch, &mut out) {
            // A batch no larger than a chunk would only be tried again.
            let chunk_size = if batch.len() > RETRY_CHUNK {
                RETRY_CHUNK
            } else {
                1
            };
            for chunk in batch.chunks(chunk_size) {
                if !self.verify_batch(chunk, &mut out) {
                    for (i, payload, sig) in chunk {
                        out[*i] = self.verify_any(payload, sig);
                    }
                }
            }
        }
        for (i, payload, sig) in &alone {
            out[*i] = self.verify_any(payload, sig);
        }
        out
    }

    /// Marks `batch` valid if it verifies in one `verify_batch` call
    /// against the key that verified last; false if it does not, or if it
    /// cannot be batched (fewer than 2 lines, or a key that must be used
    /// alone).
    fn verify_batch(
        &self,
        batch: &[(usize, Cow<'_, [u8]>, Signature)],
        out: &mut [SignatureStatus],
    ) -> bool {
        let entry = &self.keys[self.hint()];
        if batch.len() < 2 || !entry.batchable {
            return false;
        }
        let messages: Vec<&[u8]> = batch.iter().map(|(_, payload, _)| &**payload).collect();
        let signatures: Vec<Signature> = batch.iter().map(|&(_, _, sig)| sig).collect();
        let keys = vec![entry.key; batch.len()];
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
            return false;
        }
        for (i, _, _) in batch {
            out[*i] = SignatureStatus::Valid;
        }
        true
    }
}
