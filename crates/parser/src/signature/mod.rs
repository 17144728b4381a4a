//! Kong Konnect ED25519 line signatures.
//!
//! Every Konnect audit-log line carries `sig`, an ED25519 signature
//! (base64url, unpadded) over the exact bytes of the line with the signature
//! field removed (`docs/KONNECT.md`, "Signatures"):
//!
//! - CEF: remove ` sig=<value>` (the space before it, `sig=` and the value);
//! - JSON: remove `,"sig":"<value>"` (the comma before it, the key and the
//!   string value).
//!
//! No re-serialisation happens anywhere: [`signed_payload`] cuts the field out
//! of the bytes as received. Pass lines without their terminator (as
//! [`crate::lines`] yields them): bytes after the signature field, a stray
//! `\r` included, are part of the signed payload.
//!
//! Public keys come from a JWKS document ([`KeySet::from_jwks`]). Events do not
//! name their key, so [`KeySet`] tries each key, starting with the one that
//! verified last (keys rotate rarely, so that is almost always the right one).
//!
//! `SigningKeyPair` (cargo feature `sign`) is the other side, for tests,
//! `auditsink keygen` and simulators: it signs lines exactly the way the
//! verifier expects them. The default build has no signing code and no
//! random number generator (batch verification's weights come from a
//! transcript of the batch, not from an RNG).
//!
//! ```
//! use auditsink_parser::signature::{signed_payload, KeySet, SigningKeyPair};
//! use auditsink_parser::{LineFormat, SignatureStatus};
//!
//! let pair = SigningKeyPair::generate();
//! let keys = KeySet::from_jwks(SigningKeyPair::jwks(&[&pair]).as_bytes()).unwrap();
//! let unsigned = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1 granted=true";
//! let line = pair.sign_cef_line(unsigned);
//! assert_eq!(keys.verify_line(line.as_bytes(), LineFormat::Cef), SignatureStatus::Valid);
//! let signed = signed_payload(line.as_bytes(), LineFormat::Cef).unwrap();
//! assert_eq!(&*signed.payload, unsigned.as_bytes());
//! ```
//!
//! # Decisions
//!
//! - **`verify_strict`, not `verify`.** Both accept every signature an honest
//!   RFC 8032 signer produces (`S < ℓ` is required by both in ed25519-dalek 2).
//!   `verify_strict` additionally rejects small-order `R` and small-order public
//!   keys, which is what libsodium (PyNaCl) does; OpenSSL (the Python
//!   `cryptography` package) accepts them. Those cases only arise from crafted
//!   signatures or weak keys, never from Konnect's signer, and rejecting them
//!   keeps a weak key from verifying forged lines and keeps signatures
//!   non-malleable, which matters because the store deduplicates by `sig`.
//! - **Strict base64url.** The signature must be base64url with zero trailing
//!   bits (padding is optional), so one signature has one text, apart from the
//!   optional `=` padding: use [`decode_signature`] to compare signatures.
//! - **Payload as `Cow`.** ed25519-dalek hashes one contiguous message
//!   (`verify_strict` and `verify_batch` take `&[u8]`), so a split
//!   before/after representation would only move the copy into every caller.
//!   A CEF line whose signature is last (Konnect's lines) borrows; otherwise
//!   one line-sized copy is made, negligible next to SHA-512 and the curve
//!   arithmetic.
//! - **Batch verification** ([`KeySet::verify_lines`]) gives the same answer
//!   as [`KeySet::verify_line`] on each line but for one documented
//!   exception (on `verify_lines`): if the batch equation fails,
//!   the lines are batched again in chunks (when there are more than a
//!   chunk's worth), and the lines of a chunk that fails, or of a smaller
//!   batch, are verified alone. Signatures a batch could judge differently
//!   (non-canonical `S` or `R` encoding, small-order `R`: byte comparisons,
//!   as libsodium does) are verified alone up front, and only keys in the
//!   prime-order subgroup are batched. What remains is a signature crafted
//!   *with the private key* to have a mixed-order `R`, which a cofactorless
//!   batch may accept (for some batch weights, which ed25519-dalek derives
//!   from the batch's contents; a request of more than a chunk whose batch
//!   failed gives it a second batch, its chunk) where `verify_strict`
//!   rejects it; ruling that out would cost a scalar multiplication per
//!   signature, more than batching saves, and whoever holds the key can sign
//!   anything anyway. Nobody without the private key can make such a
//!   signature. Batching cuts the cost per line to a third (about 10 µs
//!   instead of 31 µs in release builds on the sample corpus).
//! - **Key ids.** `SigningKeyPair::kid` is the lowercase hex of the first 20
//!   bytes of the public key (40 characters, the shape of Konnect's kids).
//!   Konnect's own derivation is not documented and the parser crate has no
//!   SHA dependency; the public key is already uniformly distributed, so its
//!   prefix identifies it as well as a hash would. The same derivation names a
//!   JWKS key that has no `kid`.

//!
//! # Layout
//!
//! - `encoding`: the base64url alphabet of signatures and keys, key ids;
//! - `payload`: where a line's signature is and which bytes it covers;
//! - `jwks`: reading Konnect's JWKS document into a [`KeySet`];
//! - `verify`: the [`KeySet`] and one line's verification;
//! - `batch`: many lines in one batch equation ([`KeySet::verify_lines`]);
//! - `sign` (cargo feature `sign`): signing lines, for tools and tests.

mod batch;
mod encoding;
mod jwks;
mod payload;
#[cfg(feature = "sign")]
mod sign;
mod verify;

#[cfg(test)]
mod tests;

pub use jwks::JwksError;
pub use payload::{decode_signature, signed_payload, SignedPayload};
#[cfg(feature = "sign")]
pub use sign::{SecretKeyError, SignError, SigningKeyPair};
pub use verify::KeySet;

// For the tests' `use super::*`.
#[cfg(all(test, feature = "sign"))]
use encoding::derive_kid;
#[cfg(test)]
use encoding::B64URL;
