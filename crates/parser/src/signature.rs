//! Kong Konnect ED25519 line signatures.
//!
//! Every Konnect audit-log line carries `sig`, an ED25519 signature
//! (base64url, unpadded) over the exact bytes of the line with the signature
//! field removed (`KONNECT.md`, "Signatures"):
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
//! [`SigningKeyPair`] is the other side, for tests, `auditsink keygen` and
//! simulators: it signs lines exactly the way the verifier expects them.
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
//!   as [`KeySet::verify_line`] on each line: if the batch equation fails,
//!   the lines are batched again in chunks (when there are more than a
//!   chunk's worth), and the lines of a chunk that fails, or of a smaller
//!   batch, are verified alone. Signatures a batch could judge differently
//!   (non-canonical `S` or `R` encoding, small-order `R`: byte comparisons,
//!   as libsodium does) are verified alone up front, and only keys in the
//!   prime-order subgroup are batched. What remains is a signature crafted
//!   *with the private key* to have a mixed-order `R`, which a cofactorless
//!   batch may accept (for some random weights; a request of more than a
//!   chunk whose batch failed gives it a second batch, its chunk) where `verify_strict`
//!   rejects it; ruling that out would cost a scalar multiplication per
//!   signature, more than batching saves, and whoever holds the key can sign
//!   anything anyway. Nobody without the private key can make such a
//!   signature. Batching cuts the cost per line to a third (about 10 µs
//!   instead of 31 µs in release builds on the sample corpus).
//! - **Key ids.** [`SigningKeyPair::kid`] is the lowercase hex of the first 20
//!   bytes of the public key (40 characters, the shape of Konnect's kids).
//!   Konnect's own derivation is not documented and the parser crate has no
//!   SHA dependency; the public key is already uniformly distributed, so its
//!   prefix identifies it as well as a hash would. The same derivation names a
//!   JWKS key that has no `kid`.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{json, Value};

use crate::{LineFormat, SignatureStatus};

/// base64url; encodes without padding, decodes with or without it, and
/// rejects non-zero trailing bits (so one byte string has one encoding).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest text a 64-byte signature can have (88 with padding).
const MAX_SIG_TEXT: usize = 88;

/// Lines per batch when a request's batch failed (see
/// [`KeySet::verify_lines`]): batches gain little past about 60 lines
/// (BENCHMARKS.md), and a forged line then costs 64 lines verified alone.
const RETRY_CHUNK: usize = 64;

/// The bytes a line's signature covers, and the signature text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload<'a> {
    /// The line with the signature field removed: borrowed when the field
    /// ends the line, an owned copy otherwise.
    pub payload: Cow<'a, [u8]>,
    /// The signature text as written (base64url expected; not validated).
    pub sig: &'a [u8],
}

/// Finds the signature field of `raw` and returns the signed payload and the
/// signature text, or `None` when the line has no signature field.
///
/// CEF: the last extension key `sig` (` sig=` after the seventh unescaped `|`
/// following `CEF:`). Its value runs to the next extension key (` key=`) or
/// the end of the line; trailing whitespace is not part of the signature, and
/// the payload is the line minus exactly ` sig=<signature>`. As an extension
/// of the documented rule, a `sig` that is the first extension key
/// (`|sig=<value> next=…`) is also found; its payload is the line minus
/// `sig=<value>` and the one space after it.
///
/// JSON: the last top-level key `"sig"` whose value is a string (keys of
/// nested objects and text inside string values do not count; an escaped key
/// such as `"\u0073ig"` is not recognised). The payload is the line minus
/// `,"sig":"<value>"` (from the comma before the key to the value's closing
/// quote, whitespace in between included). As an extension of the documented
/// rule, when `sig` is the first key the payload is the line minus
/// `"sig":"<value>",` (through the comma after it), or minus `"sig":"<value>"`
/// when it is the only key.
///
/// Never panics; the line need not be a well-formed event.
pub fn signed_payload(raw: &[u8], format: LineFormat) -> Option<SignedPayload<'_>> {
    let found = match format {
        LineFormat::Cef => find_cef_sig(raw)?,
        LineFormat::Json => find_json_sig(raw)?,
    };
    let payload = if found.remove.end >= raw.len() {
        Cow::Borrowed(&raw[..found.remove.start])
    } else {
        let mut owned = Vec::with_capacity(raw.len() - found.remove.len());
        owned.extend_from_slice(&raw[..found.remove.start]);
        owned.extend_from_slice(&raw[found.remove.end..]);
        Cow::Owned(owned)
    };
    Some(SignedPayload {
        payload,
        sig: &raw[found.sig],
    })
}

/// Decodes signature text (base64url, padding optional, no stray trailing
/// bits) into the 64 signature bytes; `None` if it is anything else.
///
/// Two texts that decode to the same bytes differ only by `=` padding:
/// deduplicating on the decoded bytes closes that gap.
pub fn decode_signature(sig: &[u8]) -> Option<[u8; 64]> {
    if sig.len() > MAX_SIG_TEXT {
        return None;
    }
    let mut buf = [0u8; 66];
    let n = B64URL.decode_slice(sig, &mut buf).ok()?;
    if n != 64 {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(&buf[..64]);
    Some(out)
}

/// Byte ranges of a found signature field.
struct Found {
    /// Bytes to cut out of the line to get the payload.
    remove: std::ops::Range<usize>,
    /// The signature text.
    sig: std::ops::Range<usize>,
}

fn is_cef_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

/// Start of the CEF extension: just after the seventh unescaped `|` that
/// follows `CEF:`.
fn cef_extension_start(raw: &[u8]) -> Option<usize> {
    let start = raw.windows(4).position(|w| w == b"CEF:")?;
    let mut pipes = 0;
    let mut i = start;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 1,
            b'|' => {
                pipes += 1;
                if pipes == 7 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the space that starts the next extension key (` key=`) at or
/// after `from`, or the end of the line.
fn cef_value_end(raw: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < raw.len() {
        if raw[j] == b' ' {
            let mut k = j + 1;
            while k < raw.len() && is_cef_key_byte(raw[k]) {
                k += 1;
            }
            if k > j + 1 && raw.get(k) == Some(&b'=') {
                return j;
            }
        }
        j += 1;
    }
    raw.len()
}

/// Length of `value` without trailing ASCII whitespace.
fn trimmed_len(value: &[u8]) -> usize {
    value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1)
}

fn find_cef_sig(raw: &[u8]) -> Option<Found> {
    let ext = cef_extension_start(raw)?;
    let extension = &raw[ext..];
    if let Some(rel) = extension.windows(5).rposition(|w| w == b" sig=") {
        let key = ext + rel;
        let value = key + 5;
        let end = value + trimmed_len(&raw[value..cef_value_end(raw, value)]);
        return Some(Found {
            remove: key..end,
            sig: value..end,
        });
    }
    if extension.starts_with(b"sig=") {
        let value = ext + 4;
        let end = value + trimmed_len(&raw[value..cef_value_end(raw, value)]);
        let remove_end = if raw.get(end) == Some(&b' ') {
            end + 1
        } else {
            end
        };
        return Some(Found {
            remove: ext..remove_end,
            sig: value..end,
        });
    }
    None
}

fn skip_json_ws(raw: &[u8], mut i: usize) -> usize {
    while i < raw.len() && matches!(raw[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Given `raw[open] == b'"'`, the index just past the closing quote, or
/// `None` if the string is not terminated.
fn json_string_end(raw: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn find_json_sig(raw: &[u8]) -> Option<Found> {
    let first = skip_json_ws(raw, 0);
    if raw.get(first) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    let mut depth = 0usize;
    // At depth 1: whether the next string is a key, and the comma before it
    // (`None` for the first key).
    let mut expect_key = false;
    let mut comma: Option<usize> = None;
    let mut i = first;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                let Some(end) = json_string_end(raw, i) else {
                    break;
                };
                let mut next = end;
                if depth == 1 && expect_key && &raw[i + 1..end - 1] == b"sig" {
                    if let Some((f, after)) = json_sig_member(raw, i, end, comma) {
                        found = Some(f);
                        next = after;
                    }
                }
                expect_key = false;
                i = next;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
                comma = None;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                expect_key = false;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => {
                expect_key = true;
                comma = Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The member whose key `"sig"` spans `key..key_end`: if its value is a
/// string, the ranges to remove and of the signature, and the index just
/// past the value.
fn json_sig_member(
    raw: &[u8],
    key: usize,
    key_end: usize,
    comma: Option<usize>,
) -> Option<(Found, usize)> {
    let colon = skip_json_ws(raw, key_end);
    if raw.get(colon) != Some(&b':') {
        return None;
    }
    let open = skip_json_ws(raw, colon + 1);
    if raw.get(open) != Some(&b'"') {
        return None;
    }
    let close = json_string_end(raw, open)?;
    let sig = open + 1..close - 1;
    let remove = match comma {
        Some(c) => c..close,
        None => {
            let after = skip_json_ws(raw, close);
            match raw.get(after) {
                Some(b',') => key..after + 1,
                Some(b'}') => key..close,
                _ => return None,
            }
        }
    };
    Some((Found { remove, sig }, close))
}

/// Why a JWKS document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not JSON.
    #[error("JWKS is not valid JSON: {0}")]
    NotJson(String),
    /// The document is not an object with a `keys` array.
    #[error("JWKS has no \"keys\" array")]
    NoKeysArray,
    /// The `keys` array is empty.
    #[error("JWKS \"keys\" array is empty")]
    Empty,
    /// An element of `keys` is not an object.
    #[error("JWKS key #{index} is not a JSON object")]
    KeyNotObject {
        /// Position in the `keys` array.
        index: usize,
    },
    /// A required member is missing or not a string.
    #[error("JWKS key {key}: missing or non-string \"{field}\"")]
    MissingField {
        /// The key's `kid`, or `#<index>` when it has none.
        key: String,
        /// The member (`kty`, `crv` or `x`).
        field: &'static str,
    },
    /// An Ed25519 key whose `x` is not a usable public key.
    #[error("JWKS key {key}: bad \"x\": {reason}")]
    BadKey {
        /// The key's `kid`, or `#<index>` when it has none.
        key: String,
        /// What is wrong: base64url, length, not a curve point, weak key.
        reason: String,
    },
    /// No key is an Ed25519 signing key (`kty` OKP, `crv` Ed25519).
    #[error("JWKS has no Ed25519 signing key ({skipped} key(s) of other types skipped)")]
    NoUsableKeys {
        /// How many keys were skipped as not Ed25519 signing keys.
        skipped: usize,
    },
}

/// A key in a [`KeySet`].
#[derive(Clone)]
struct Entry {
    kid: String,
    key: VerifyingKey,
    /// In the prime-order subgroup and not weak: safe to batch-verify.
    batchable: bool,
}

/// Ed25519 public keys with their key ids: what Konnect signatures are
/// verified against.
///
/// Remembers which key verified last and tries it first (shared across
/// threads; a stale hint only costs an extra verification).
pub struct KeySet {
    keys: Vec<Entry>,
    last_good: AtomicUsize,
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

/// Default key id: hex of the first 20 bytes of the public key.
fn derive_kid(key: &VerifyingKey) -> String {
    key.as_bytes()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `key` is safe to use in batch verification: not of small order and
/// without a torsion component.
fn is_batchable(key: &VerifyingKey) -> bool {
    !key.is_weak() && key.to_edwards().is_torsion_free()
}

/// The group order ℓ, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The `y` coordinates of the eight small-order points (0, 1, p−1, and the
/// two of order 8), little-endian with the sign bit clear (libsodium's list).
/// An encoding is of a small-order point iff it matches one ignoring the sign
/// bit, or is a non-canonical `y` (≥ p) of one (`p`, `p+1`, caught by the
/// canonical check).
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
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
fn less_than(bytes: &[u8; 32], bound: &[u8; 32], mask_sign: bool) -> bool {
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
const P: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// Whether a signature can go into a batch without the batch judging it
/// differently from `verify_strict`: `S < ℓ` (else the whole batch errors),
/// `R`'s `y` canonical (< p), and `R` not of small order. Byte comparisons
/// only, so screening costs nothing next to the verification; a signature
/// that fails it is verified alone.
fn batch_safe(sig: &Signature) -> bool {
    let r = sig.r_bytes();
    less_than(sig.s_bytes(), &ELL, false)
        && less_than(r, &P, true)
        && !SMALL_ORDER_Y
            .iter()
            .any(|y| r[..31] == y[..31] && r[31] & 0x7f == y[31])
}

/// A JWKS member as a string, if present and a string.
fn str_member<'v>(key: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v str> {
    key.get(name).and_then(Value::as_str)
}

impl KeySet {
    /// Reads a JWKS document (`{"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…}]}`).
    ///
    /// Keys that are not Ed25519 signing keys are skipped: `kty` other than
    /// `OKP`, `crv` other than `Ed25519` (X25519, …), `use` other than `sig`,
    /// `alg` other than `EdDSA` or `Ed25519`. Everything else is an error:
    /// not JSON, no `keys` array, an empty one, no usable key at all, a key
    /// without `kty` (or `crv`, `x` for OKP keys), and an `x` that is not
    /// base64url, not 32 bytes, not a curve point, or a weak (small-order or
    /// mixed-order) key — named by its `kid`. A key without `kid` gets the
    /// derived one ([`SigningKeyPair::kid`]'s rule).
    pub fn from_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        let mut entries = Vec::new();
        let mut skipped = 0;
        for (index, jwk) in keys.iter().enumerate() {
            let jwk = jwk.as_object().ok_or(JwksError::KeyNotObject { index })?;
            let kid = str_member(jwk, "kid");
            let label = || kid.map_or_else(|| format!("#{index}"), |k| format!("{k:?}"));
            let missing = |field| JwksError::MissingField {
                key: label(),
                field,
            };
            let kty = str_member(jwk, "kty").ok_or_else(|| missing("kty"))?;
            if kty != "OKP" {
                skipped += 1;
                continue;
            }
            let crv = str_member(jwk, "crv").ok_or_else(|| missing("crv"))?;
            let usable_use = str_member(jwk, "use").map_or(true, |u| u == "sig");
            let usable_alg =
                str_member(jwk, "alg").map_or(true, |a| a == "EdDSA" || a == "Ed25519");
            if crv != "Ed25519" || !usable_use || !usable_alg {
                skipped += 1;
                continue;
            }
            let x = str_member(jwk, "x").ok_or_else(|| missing("x"))?;
            let bad = |reason: String| JwksError::BadKey {
                key: label(),
                reason,
            };
            let raw = B64URL
                .decode(x)
                .map_err(|e| bad(format!("not base64url ({e})")))?;
            let raw: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("{} bytes, an Ed25519 public key has 32", raw.len())))?;
            let key = VerifyingKey::from_bytes(&raw)
                .map_err(|_| bad("not a point on the curve".into()))?;
            if !is_batchable(&key) {
                return Err(bad("weak key (small-order or mixed-order point)".into()));
            }
            let kid = kid.map_or_else(|| derive_kid(&key), str::to_owned);
            entries.push(Entry {
                kid,
                key,
                batchable: true,
            });
        }
        if entries.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped });
        }
        Ok(KeySet {
            keys: entries,
            last_good: AtomicUsize::new(0),
        })
    }

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

    /// Verifies many lines; the result is what [`verify_line`](Self::verify_line)
    /// gives on each, in order.
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

    /// Index of the key to try first. Only called when the set is not empty.
    fn hint(&self) -> usize {
        self.last_good
            .load(Ordering::Relaxed)
            .min(self.keys.len() - 1)
    }

    /// Tries the last good key, then the others in order.
    fn verify_any(&self, payload: &[u8], sig: &Signature) -> SignatureStatus {
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

/// Why a secret key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    /// The text is not base64url.
    #[error("secret key is not base64url: {0}")]
    NotBase64(String),
    /// The decoded secret is not 32 bytes.
    #[error("secret key is {0} bytes, an Ed25519 secret key has 32")]
    Length(usize),
}

/// Why a line could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The line is not one JSON object.
    #[error("not a JSON object line: {0}")]
    NotJsonObject(String),
}

/// An Ed25519 signing key with its key id: signs lines the way Konnect does.
/// For tests, `auditsink keygen` and simulators. `Debug` shows the kid only.
#[derive(Clone)]
pub struct SigningKeyPair {
    key: SigningKey,
    kid: String,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// A new random key pair from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rngs::OsRng)
    }

    /// A new key pair from `rng` (seed one for reproducible tests).
    pub fn generate_with<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> Self {
        Self::from_signing_key(SigningKey::generate(rng))
    }

    /// The key pair of a 32-byte secret key (RFC 8032 seed).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(secret))
    }

    /// The key pair of a secret key written by
    /// [`secret_base64url`](Self::secret_base64url) (padding optional,
    /// surrounding whitespace such as a file's final newline ignored).
    pub fn from_secret_base64url(text: &str) -> Result<Self, SecretKeyError> {
        let raw = B64URL
            .decode(text.trim())
            .map_err(|e| SecretKeyError::NotBase64(e.to_string()))?;
        let secret: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| SecretKeyError::Length(raw.len()))?;
        Ok(Self::from_secret_bytes(&secret))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let kid = derive_kid(&key.verifying_key());
        SigningKeyPair { key, kid }
    }

    /// The key id: lowercase hex of the first 20 bytes of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The 32-byte secret key, base64url without padding. Keep it secret.
    pub fn secret_base64url(&self) -> String {
        B64URL.encode(self.key.to_bytes())
    }

    /// The public key as a JWK: `{"alg":"EdDSA","crv":"Ed25519","kid":…,"kty":"OKP","x":…}`.
    pub fn public_jwk(&self) -> Value {
        json!({
            "alg": "EdDSA",
            "crv": "Ed25519",
            "kid": self.kid,
            "kty": "OKP",
            "x": B64URL.encode(self.key.verifying_key().as_bytes()),
        })
    }

    /// A JWKS document with the public keys of `keys`, pretty-printed like
    /// Konnect's (two-space indent, no trailing newline).
    pub fn jwks(keys: &[&SigningKeyPair]) -> String {
        let doc = json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
        format!("{doc:#}")
    }

    fn sign_b64(&self, payload: &[u8]) -> String {
        B64URL.encode(self.key.sign(payload).to_bytes())
    }

    /// Signs a CEF line: returns it with ` sig=<base64url>` appended, the
    /// signature covering exactly `line_without_sig`. The line must have a
    /// complete CEF header (seven `|` after `CEF:`) and no line terminator;
    /// otherwise the signature is appended but no verifier will find it.
    pub fn sign_cef_line(&self, line_without_sig: &str) -> String {
        format!(
            "{line_without_sig} sig={}",
            self.sign_b64(line_without_sig.as_bytes())
        )
    }

    /// Signs a JSON object line: returns it with `,"sig":"<base64url>"`
    /// inserted before the final `}` (`"sig":"…"` for an empty object), the
    /// signature covering exactly `line_without_sig`. Errors if the line is
    /// not one JSON object.
    pub fn sign_json_line(&self, line_without_sig: &str) -> Result<String, SignError> {
        let value: Value = serde_json::from_str(line_without_sig)
            .map_err(|e| SignError::NotJsonObject(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(SignError::NotJsonObject(
                "top-level value is not an object".into(),
            ));
        };
        let close = line_without_sig
            .rfind('}')
            .ok_or_else(|| SignError::NotJsonObject("no closing brace".into()))?;
        let sig = self.sign_b64(line_without_sig.as_bytes());
        let member = if map.is_empty() {
            format!("\"sig\":\"{sig}\"")
        } else {
            format!(",\"sig\":\"{sig}\"")
        };
        let mut out = String::with_capacity(line_without_sig.len() + member.len());
        out.push_str(&line_without_sig[..close]);
        out.push_str(&member);
        out.push_str(&line_without_sig[close..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::path::PathBuf;

    use SignatureStatus::{Invalid, Missing, Unverified, Valid};

    const CEF_UNSIGNED: &str = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.1 granted=true";
    const JSON_UNSIGNED: &str =
        r#"{"act":"GET","name":"Ingress","query":"{\"a\":\"b\\\"\"}","status":200}"#;

    fn corpus_dir() -> Option<PathBuf> {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        [
            manifest.join("../../../shared/corpus"),
            PathBuf::from("/work/shared/corpus"),
        ]
        .into_iter()
        .find(|d| d.join("konnect-sample-jwks.json").is_file())
    }

    struct Corpus {
        keys: KeySet,
        cef: Vec<Vec<u8>>,
        json: Vec<Vec<u8>>,
    }

    fn read_lines(path: PathBuf) -> Vec<Vec<u8>> {
        split_lines(&std::fs::read(path).unwrap())
    }

    fn split_lines(body: &[u8]) -> Vec<Vec<u8>> {
        body.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn corpus() -> Option<Corpus> {
        let Some(dir) = corpus_dir() else {
            println!("skipping: shared corpus not found");
            return None;
        };
        let keys = KeySet::from_jwks(&std::fs::read(dir.join("konnect-sample-jwks.json")).unwrap())
            .unwrap();
        Some(Corpus {
            keys,
            cef: read_lines(dir.join("konnect-sample.cef")),
            json: read_lines(dir.join("konnect-sample.jsonl")),
        })
    }

    fn payload(line: &str, format: LineFormat) -> Option<(String, String)> {
        let s = signed_payload(line.as_bytes(), format)?;
        Some((
            String::from_utf8(s.payload.into_owned()).unwrap(),
            String::from_utf8(s.sig.to_vec()).unwrap(),
        ))
    }

    fn keyset(pairs: &[&SigningKeyPair]) -> KeySet {
        KeySet::from_jwks(SigningKeyPair::jwks(pairs).as_bytes()).unwrap()
    }

    fn seeded(seed: u64) -> SigningKeyPair {
        SigningKeyPair::generate_with(&mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    #[test]
    fn corpus_verifies_in_both_formats() {
        let Some(c) = corpus() else { return };
        assert_eq!(c.keys.kids(), ["90cbe85c55b7f3e143f44d92abbc11b9dd597dec"]);
        assert_eq!(c.cef.len(), 60);
        assert_eq!(c.json.len(), 60);
        for line in &c.cef {
            assert_eq!(
                c.keys.verify_line(line, LineFormat::Cef),
                Valid,
                "{}",
                String::from_utf8_lossy(line)
            );
            // Konnect's CEF signature ends the line: the payload is borrowed.
            assert!(matches!(
                signed_payload(line, LineFormat::Cef).unwrap().payload,
                Cow::Borrowed(_)
            ));
        }
        for line in &c.json {
            assert_eq!(
                c.keys.verify_line(line, LineFormat::Json),
                Valid,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let batch: Vec<(&[u8], LineFormat)> = c
            .cef
            .iter()
            .map(|l| (l.as_slice(), LineFormat::Cef))
            .chain(c.json.iter().map(|l| (l.as_slice(), LineFormat::Json)))
            .collect();
        assert!(c.keys.verify_lines(&batch).iter().all(|&s| s == Valid));
    }

    #[test]
    fn corpus_cef_payload_is_line_minus_sig_field() {
        let Some(c) = corpus() else { return };
        let line = std::str::from_utf8(&c.cef[0]).unwrap();
        let (payload, sig) = payload(line, LineFormat::Cef).unwrap();
        assert_eq!(format!("{payload} sig={sig}"), line);
        assert!(payload.ends_with("kong_initiated=false"));
        let line = std::str::from_utf8(&c.json[0]).unwrap();
        let (payload, sig) = self::payload(line, LineFormat::Json).unwrap();
        let object = payload.strip_suffix('}').unwrap();
        assert_eq!(format!("{object},\"sig\":\"{sig}\"}}"), line);
    }

    /// Flips every byte of two lines (a CEF one with a syslog prefix, a JSON
    /// one with escapes), one at a time (`^0x01` everywhere, `^0x20` and
    /// `^0x80` at every fifth byte, to keep debug builds fast): never
    /// `Valid`; `Invalid` for every flip inside the signature value and of
    /// every letter or digit outside the `sig` key and the `CEF:` marker
    /// (header fields, keys, values). Only flips of structure (quotes, pipes,
    /// the key) may make the signature field disappear (`Missing`).
    #[test]
    fn single_byte_flips_never_verify() {
        let Some(c) = corpus() else { return };
        let cef = c.cef.iter().find(|l| !l[0].is_ascii_digit()).unwrap();
        let json = c.json.iter().find(|l| l.contains(&b'\\')).unwrap();
        let picks = [(cef, LineFormat::Cef), (json, LineFormat::Json)];
        for (line, format) in picks {
            let sig = signed_payload(line, format).unwrap().sig;
            let sig_start = sig.as_ptr() as usize - line.as_ptr() as usize;
            let in_sig = sig_start..sig_start + sig.len();
            let key_len = if format == LineFormat::Cef {
                b" sig=".len()
            } else {
                br#""sig":""#.len()
            };
            let key = sig_start - key_len..sig_start;
            let marker = line
                .windows(4)
                .position(|w| w == b"CEF:")
                .map_or(0..0, |p| p..p + 4);
            let (mut invalid, mut missing) = (0, 0);
            for pos in 0..line.len() {
                let masks: &[u8] = if pos % 5 == 0 {
                    &[0x01, 0x20, 0x80]
                } else {
                    &[0x01]
                };
                for &mask in masks {
                    let mut bad = line.clone();
                    bad[pos] ^= mask;
                    let status = c.keys.verify_line(&bad, format);
                    let what = || {
                        format!(
                            "flip {mask:#x} at {pos} of {}",
                            String::from_utf8_lossy(line)
                        )
                    };
                    assert_ne!(status, Valid, "{}", what());
                    let alnum = line[pos].is_ascii_alphanumeric();
                    if in_sig.contains(&pos)
                        || (alnum && !key.contains(&pos) && !marker.contains(&pos))
                    {
                        assert_eq!(status, Invalid, "{}", what());
                    }
                    match status {
                        Invalid => invalid += 1,
                        Missing => missing += 1,
                        other => panic!("{other:?}: {}", what()),
                    }
                }
            }
            assert!(
                invalid > 5 * missing,
                "{invalid} invalid, {missing} missing"
            );
        }
    }

    #[test]
    fn batch_equals_single_on_a_mixed_batch() {
        let Some(c) = corpus() else { return };
        let other = seeded(7);
        let mut lines: Vec<(Vec<u8>, LineFormat)> = Vec::new();
        for i in 0..10 {
            lines.push((c.cef[i].clone(), LineFormat::Cef));
            lines.push((c.json[i].clone(), LineFormat::Json));
        }
        let mut tampered = c.cef[11].clone();
        let at = tampered.windows(7).position(|w| w == b"org_id=").unwrap() + 7;
        tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
        lines.insert(5, (tampered, LineFormat::Cef));
        let mut tampered = c.json[11].clone();
        let len = tampered.len();
        tampered[len - 10] = if tampered[len - 10] == b'A' {
            b'B'
        } else {
            b'A'
        };
        lines.insert(9, (tampered, LineFormat::Json));
        lines.push((CEF_UNSIGNED.as_bytes().to_vec(), LineFormat::Cef));
        lines.push((
            other.sign_cef_line(CEF_UNSIGNED).into_bytes(),
            LineFormat::Cef,
        ));
        lines.push((
            format!("{CEF_UNSIGNED} sig=not-base64!").into_bytes(),
            LineFormat::Cef,
        ));
        lines.push((
            format!("{CEF_UNSIGNED} sig=QUJD").into_bytes(),
            LineFormat::Cef,
        ));
        let refs: Vec<(&[u8], LineFormat)> =
            lines.iter().map(|(l, f)| (l.as_slice(), *f)).collect();

        let single: Vec<_> = refs
            .iter()
            .map(|&(l, f)| c.keys.verify_line(l, f))
            .collect();
        assert_eq!(c.keys.verify_lines(&refs), single);
        assert_eq!(single.iter().filter(|&&s| s == Valid).count(), 20);
        assert_eq!(single.iter().filter(|&&s| s == Invalid).count(), 5);
        assert_eq!(single.iter().filter(|&&s| s == Missing).count(), 1);

        // The same with the other key known too: its line becomes valid.
        let both = KeySet::from_keys(vec![
            ("konnect".into(), c.keys.keys[0].key),
            (other.kid().into(), other.verifying_key()),
        ]);
        let single: Vec<_> = refs.iter().map(|&(l, f)| both.verify_line(l, f)).collect();
        assert_eq!(single.iter().filter(|&&s| s == Valid).count(), 21);
        for hint in [0, 1] {
            both.last_good.store(hint, Ordering::Relaxed);
            assert_eq!(both.verify_lines(&refs), single);
        }
        assert!(both.verify_lines(&[]).is_empty());
    }

    #[test]
    fn a_failed_batch_is_retried_in_chunks_with_the_same_outcome() {
        let (a, b) = (seeded(11), seeded(12));
        let line = |n: usize| format!("{CEF_UNSIGNED} n={n}");
        // 300 lines: signed by a, one forged in the third chunk, one
        // unsigned, then 100 signed by b (a key rotation mid-request).
        let mut lines: Vec<Vec<u8>> = (0..200)
            .map(|n| a.sign_cef_line(&line(n)).into_bytes())
            .chain((200..300).map(|n| b.sign_cef_line(&line(n)).into_bytes()))
            .collect();
        let forged = a.sign_cef_line(&line(150)).replace("n=150", "n=151");
        lines[150] = forged.into_bytes();
        lines[20] = line(20).into_bytes();
        let refs: Vec<(&[u8], LineFormat)> = lines
            .iter()
            .map(|l| (l.as_slice(), LineFormat::Cef))
            .collect();
        for keys in [keyset(&[&a]), keyset(&[&a, &b]), keyset(&[&b, &a])] {
            for hint in 0..keys.keys.len() {
                keys.last_good.store(hint, Ordering::Relaxed);
                let single: Vec<_> = refs.iter().map(|&(l, f)| keys.verify_line(l, f)).collect();
                keys.last_good.store(hint, Ordering::Relaxed);
                assert_eq!(keys.verify_lines(&refs), single, "hint {hint}");
                assert_eq!(single[150], Invalid);
                assert_eq!(single[20], Missing);
                let valid = single.iter().filter(|&&s| s == Valid).count();
                assert_eq!(valid, if keys.keys.len() == 2 { 298 } else { 198 });
            }
        }
    }

    #[test]
    fn batch_equals_single_on_crafted_signatures() {
        let pair = seeded(1);
        let keys = keyset(&[&pair]);
        let good = pair.sign_cef_line(CEF_UNSIGNED);
        let sig = decode_signature(
            signed_payload(good.as_bytes(), LineFormat::Cef)
                .unwrap()
                .sig,
        )
        .unwrap();
        let mut crafted = Vec::new();
        // Small-order R (the identity) with S = 0; S + ℓ (non-canonical S).
        let mut identity = [0u8; 64];
        identity[0] = 1;
        crafted.push(identity);
        let mut big_s = sig;
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(big_s[32 + i]) + u16::from(ELL[i]) + carry;
            big_s[32 + i] = v as u8;
            carry = v >> 8;
        }
        crafted.push(big_s);
        // y = p + k (k < 19) is a non-canonical encoding of y = k; find one
        // that is a point of large order.
        let noncanonical = (2u8..19)
            .map(|k| {
                let mut y = [0xffu8; 32];
                y[0] = 0xed + k;
                y[31] = 0x7f;
                y
            })
            .find(|y| VerifyingKey::from_bytes(y).is_ok_and(|p| !p.is_weak()))
            .unwrap();
        let mut noncanonical_r = sig;
        noncanonical_r[..32].copy_from_slice(&noncanonical);
        crafted.push(noncanonical_r);
        // R of order 8, S = 0.
        let mut order8 = [0u8; 64];
        order8[..32].copy_from_slice(&SMALL_ORDER_Y[3]);
        crafted.push(order8);
        let mut lines: Vec<String> = crafted
            .iter()
            .map(|s| format!("{CEF_UNSIGNED} sig={}", B64URL.encode(s)))
            .collect();
        lines.push(good.clone());
        lines.push(pair.sign_cef_line("CEF:0|a|b|c|d|e|f|x=1"));
        let refs: Vec<(&[u8], LineFormat)> = lines
            .iter()
            .map(|l| (l.as_bytes(), LineFormat::Cef))
            .collect();
        let single: Vec<_> = refs.iter().map(|&(l, f)| keys.verify_line(l, f)).collect();
        assert_eq!(single, [Invalid, Invalid, Invalid, Invalid, Valid, Valid]);
        assert_eq!(keys.verify_lines(&refs), single);
        assert!(!batch_safe(&Signature::from_bytes(&crafted[0])));
        assert!(!batch_safe(&Signature::from_bytes(&crafted[1])));
        assert!(!batch_safe(&Signature::from_bytes(&crafted[2])));
        assert!(!batch_safe(&Signature::from_bytes(&crafted[3])));
        assert!(batch_safe(&Signature::from_bytes(&sig)));
    }

    /// The small-order table is exactly the eight points of order dividing 8.
    #[test]
    fn small_order_table() {
        let order8 = VerifyingKey::from_bytes(&SMALL_ORDER_Y[3])
            .unwrap()
            .to_edwards();
        let mut point = order8;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            let encoding = point.compress().to_bytes();
            seen.insert(encoding);
            let sig = Signature::from_bytes(&[encoding, [0u8; 32]].concat().try_into().unwrap());
            assert!(!batch_safe(&sig), "{encoding:02x?}");
            let mut flipped = encoding;
            flipped[31] ^= 0x80;
            assert!(!batch_safe(&Signature::from_bytes(
                &[flipped, [0u8; 32]].concat().try_into().unwrap()
            )));
            point += order8;
        }
        assert_eq!(seen.len(), 8, "not a generator of the 8-torsion");
        for y in SMALL_ORDER_Y {
            assert!(VerifyingKey::from_bytes(&y).unwrap().is_weak());
        }
        // Non-canonical y: p, p+1, … p+18.
        for k in 0..19u8 {
            let mut y = P;
            y[0] += k;
            assert!(!less_than(&y, &P, true));
        }
        assert!(less_than(&SMALL_ORDER_Y[2], &P, true));
        // ℓ itself is not a canonical S; ℓ − 1 is.
        assert!(!less_than(&ELL, &ELL, false));
        let mut below = ELL;
        below[0] -= 1;
        assert!(less_than(&below, &ELL, false));
    }

    #[test]
    fn line_without_sig_is_missing() {
        let keys = keyset(&[&seeded(1)]);
        let cases: &[(&str, LineFormat)] = &[
            (CEF_UNSIGNED, LineFormat::Cef),
            (JSON_UNSIGNED, LineFormat::Json),
            ("", LineFormat::Cef),
            ("", LineFormat::Json),
            // `sig` inside the CEF header, escaped pipes included.
            (
                r"CEF:0|Kong\| sig=abc|Konnect|1.0|x|y|1|rt=1",
                LineFormat::Cef,
            ),
            (r"CEF:0|Kong\|x|Konnect|1.0|x|y sig=abc|1", LineFormat::Cef),
            // Not a key: `xsig=`, `sigx=`, and not CEF at all.
            ("CEF:0|a|b|c|d|e|f|xsig=abc sigx=def", LineFormat::Cef),
            ("a=b sig=abc", LineFormat::Cef),
            // JSON: nested, inside strings, non-string values, not an object.
            (r#"{"a":{"sig":"abc"},"b":["sig"]}"#, LineFormat::Json),
            (r#"{"a":"x\",\"sig\":\"abc\"","b":1}"#, LineFormat::Json),
            (r#"{"a":"x\\\",\"sig\":\"abc\"","b":1}"#, LineFormat::Json),
            (r#"{"a":1,"sig":null}"#, LineFormat::Json),
            (r#"{"a":1,"sig":123}"#, LineFormat::Json),
            (r#"["sig","abc"]"#, LineFormat::Json),
            (r#"{"a":1}{"b":2,"sig":"abc"}"#, LineFormat::Json),
            (r#"{"a":1,"Sig":"abc"}"#, LineFormat::Json),
        ];
        for &(line, format) in cases {
            assert_eq!(signed_payload(line.as_bytes(), format), None, "{line}");
            assert_eq!(keys.verify_line(line.as_bytes(), format), Missing, "{line}");
        }
    }

    #[test]
    fn cef_field_rules() {
        let p = |l: &str| payload(l, LineFormat::Cef);
        let s = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        // Last one wins; a following key stays; trailing whitespace is not
        // part of the signature but stays in the payload.
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2 sig=BBB"),
            s("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2", "BBB")
        );
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2"),
            s("CEF:0|a|b|c|d|e|f|x=1 y=2", "AAA")
        );
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA \r"),
            s("CEF:0|a|b|c|d|e|f|x=1 \r", "AAA")
        );
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA  y=2"),
            s("CEF:0|a|b|c|d|e|f|x=1  y=2", "AAA")
        );
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig=A b c"),
            s("CEF:0|a|b|c|d|e|f|x=1", "A b c")
        );
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|x=1 sig="),
            s("CEF:0|a|b|c|d|e|f|x=1", "")
        );
        // Escaped pipes in the header; a pipe in the extension is just a byte.
        assert_eq!(
            p(r"<13>Apr 14 h CEF:0|a\|b|c|d|e|f|g|x=a|b sig=Q"),
            s(r"<13>Apr 14 h CEF:0|a\|b|c|d|e|f|g|x=a|b", "Q")
        );
        assert_eq!(
            p(r"CEF:0|a\\|b|c|d|e|f|x=1 sig=Q"),
            s(r"CEF:0|a\\|b|c|d|e|f|x=1", "Q")
        );
        // Extension: `sig` first.
        assert_eq!(
            p("CEF:0|a|b|c|d|e|f|sig=Q x=1"),
            s("CEF:0|a|b|c|d|e|f|x=1", "Q")
        );
        assert_eq!(p("CEF:0|a|b|c|d|e|f|sig=Q"), s("CEF:0|a|b|c|d|e|f|", "Q"));
        assert_eq!(p("CEF:0|a|b|c|d|e|f| sig=Q"), s("CEF:0|a|b|c|d|e|f|", "Q"));
    }

    #[test]
    fn json_field_rules() {
        let p = |l: &str| payload(l, LineFormat::Json);
        let s = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        assert_eq!(p(r#"{"a":1,"sig":"Q"}"#), s(r#"{"a":1}"#, "Q"));
        assert_eq!(p(r#"{"a":1,"sig":"Q","b":2}"#), s(r#"{"a":1,"b":2}"#, "Q"));
        assert_eq!(
            p(r#"  {"a":1 , "sig" : "Q" }  "#),
            s(r#"  {"a":1  }  "#, "Q")
        );
        // Last top-level one; nested ones ignored.
        assert_eq!(
            p(r#"{"sig":"P","a":{"sig":"N"},"sig":"Q","b":[{"sig":"M"}]}"#),
            s(r#"{"sig":"P","a":{"sig":"N"},"b":[{"sig":"M"}]}"#, "Q")
        );
        // First key (extension) and only key.
        assert_eq!(p(r#"{"sig":"Q","a":1}"#), s(r#"{"a":1}"#, "Q"));
        assert_eq!(p(r#"{ "sig":"Q" , "a":1}"#), s(r#"{  "a":1}"#, "Q"));
        assert_eq!(p(r#"{"sig":"Q"}"#), s(r#"{}"#, "Q"));
        // Backslashes: `x\\` ends the string, so the next `"sig"` is a key.
        assert_eq!(p(r#"{"a":"x\\","sig":"Q"}"#), s(r#"{"a":"x\\"}"#, "Q"));
        assert_eq!(p(r#"{"a":"x\\\"","sig":"Q"}"#), s(r#"{"a":"x\\\""}"#, "Q"));
        // The value is taken raw; an escape in it makes it undecodable later.
        assert_eq!(p(r#"{"a":1,"sig":"Q\"R"}"#), s(r#"{"a":1}"#, r#"Q\"R"#));
        // Truncated after the signature: still found.
        assert_eq!(p(r#"{"a":1,"sig":"Q","b":"#), s(r#"{"a":1,"b":"#, "Q"));
    }

    #[test]
    fn signature_encoding() {
        let pair = seeded(3);
        let keys = keyset(&[&pair]);
        let line = pair.sign_cef_line(CEF_UNSIGNED);
        let sig = signed_payload(line.as_bytes(), LineFormat::Cef)
            .unwrap()
            .sig
            .to_vec();
        assert_eq!(sig.len(), 86);
        let bytes = decode_signature(&sig).unwrap();
        let padded = format!(
            "{CEF_UNSIGNED} sig={}==",
            String::from_utf8(sig.clone()).unwrap()
        );
        assert_eq!(keys.verify_line(padded.as_bytes(), LineFormat::Cef), Valid);
        let standard = base64::engine::general_purpose::STANDARD.encode(bytes);
        let standard = format!("{CEF_UNSIGNED} sig={standard}");
        let expected = if standard.contains(['+', '/']) {
            Invalid
        } else {
            Valid
        };
        assert_eq!(
            keys.verify_line(standard.as_bytes(), LineFormat::Cef),
            expected
        );
        // Non-zero trailing bits decode to the same bytes in lax decoders: rejected.
        let mut lax = sig.clone();
        let last = lax.len() - 1;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let v = alphabet.iter().position(|&c| c == lax[last]).unwrap();
        lax[last] = alphabet[v ^ 1];
        assert_eq!(decode_signature(&lax), None);
        // Wrong lengths.
        assert_eq!(decode_signature(&sig[..85]), None);
        assert_eq!(decode_signature(B64URL.encode([0u8; 63]).as_bytes()), None);
        assert_eq!(decode_signature(B64URL.encode([0u8; 65]).as_bytes()), None);
        assert_eq!(decode_signature(&[b'A'; 200]), None);
        for bad in [&b"QUJD"[..], b"", b"!!!"] {
            let line = [CEF_UNSIGNED.as_bytes(), b" sig=", bad].concat();
            assert_eq!(keys.verify_line(&line, LineFormat::Cef), Invalid);
        }
    }

    #[test]
    fn key_rotation() {
        let (old, new) = (seeded(10), seeded(11));
        let keys = keyset(&[&old, &new]);
        assert_eq!(keys.len(), 2);
        assert!(!keys.is_empty());
        assert_eq!(keys.kids(), [old.kid(), new.kid()]);
        let by_old = old.sign_json_line(JSON_UNSIGNED).unwrap();
        let by_new = new.sign_json_line(JSON_UNSIGNED).unwrap();
        for _ in 0..2 {
            assert_eq!(keys.verify_line(by_new.as_bytes(), LineFormat::Json), Valid);
            assert_eq!(keys.last_good.load(Ordering::Relaxed), 1);
            assert_eq!(keys.verify_line(by_old.as_bytes(), LineFormat::Json), Valid);
            assert_eq!(keys.last_good.load(Ordering::Relaxed), 0);
        }
        // A batch of new-key lines after the hint points at the old key.
        let lines: Vec<String> = (0..5)
            .map(|i| new.sign_cef_line(&format!("{CEF_UNSIGNED} n={i}")))
            .collect();
        let refs: Vec<(&[u8], LineFormat)> = lines
            .iter()
            .map(|l| (l.as_bytes(), LineFormat::Cef))
            .collect();
        assert_eq!(keys.verify_lines(&refs), vec![Valid; 5]);
        assert_eq!(keys.last_good.load(Ordering::Relaxed), 1);
        assert_eq!(keys.verify_lines(&refs), vec![Valid; 5]);
        // Neither key: invalid; only the old key configured: the new line is invalid.
        let stranger = seeded(12).sign_cef_line(CEF_UNSIGNED);
        assert_eq!(
            keys.verify_line(stranger.as_bytes(), LineFormat::Cef),
            Invalid
        );
        let only_old = keyset(&[&old]);
        assert_eq!(
            only_old.verify_line(by_new.as_bytes(), LineFormat::Json),
            Invalid
        );
        // A clone keeps keys and hint; Debug lists kids.
        let clone = keys.clone();
        assert_eq!(clone.kids(), keys.kids());
        assert!(format!("{clone:?}").contains(new.kid()));
    }

    #[test]
    fn key_set_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeySet>();
        assert_send_sync::<SigningKeyPair>();
        let pair = seeded(4);
        let keys = std::sync::Arc::new(keyset(&[&seeded(3), &pair]));
        let line = pair.sign_cef_line(CEF_UNSIGNED);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let keys = keys.clone();
                let line = &line;
                scope.spawn(move || {
                    assert_eq!(keys.verify_line(line.as_bytes(), LineFormat::Cef), Valid)
                });
            }
        });
    }

    #[test]
    fn empty_key_set_is_unverified() {
        let keys = KeySet::from_keys(Vec::new());
        assert!(keys.is_empty());
        let signed = seeded(1).sign_cef_line(CEF_UNSIGNED);
        assert_eq!(
            keys.verify_line(signed.as_bytes(), LineFormat::Cef),
            Unverified
        );
        assert_eq!(
            keys.verify_line(CEF_UNSIGNED.as_bytes(), LineFormat::Cef),
            Missing
        );
        let refs = [
            (signed.as_bytes(), LineFormat::Cef),
            (CEF_UNSIGNED.as_bytes(), LineFormat::Cef),
        ];
        assert_eq!(keys.verify_lines(&refs), [Unverified, Missing]);
    }

    #[test]
    fn malformed_jwks() {
        let err = |doc: &str| KeySet::from_jwks(doc.as_bytes()).unwrap_err();
        let okp = |kid: &str, x: &str| {
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"{kid}","x":"{x}"}}]}}"#
            )
        };
        assert!(matches!(err("not json"), JwksError::NotJson(_)));
        assert!(matches!(err(""), JwksError::NotJson(_)));
        assert_eq!(err("{}"), JwksError::NoKeysArray);
        assert_eq!(err("[]"), JwksError::NoKeysArray);
        assert_eq!(err(r#"{"keys":{}}"#), JwksError::NoKeysArray);
        assert_eq!(err(r#"{"keys":[]}"#), JwksError::Empty);
        assert_eq!(err(r#"{"keys":[1]}"#), JwksError::KeyNotObject { index: 0 });
        assert_eq!(
            err(r#"{"keys":[{"x":"abc"}]}"#),
            JwksError::MissingField {
                key: "#0".into(),
                field: "kty"
            }
        );
        assert_eq!(
            err(r#"{"keys":[{"kty":"OKP","kid":"k1"}]}"#),
            JwksError::MissingField {
                key: "\"k1\"".into(),
                field: "crv"
            }
        );
        assert_eq!(
            err(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1"}]}"#),
            JwksError::MissingField {
                key: "\"k1\"".into(),
                field: "x"
            }
        );
        let rsa = r#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},{"kty":"OKP","crv":"X25519","x":"AAAA"},{"kty":"OKP","crv":"Ed25519","use":"enc","x":"AAAA"}]}"#;
        assert_eq!(err(rsa), JwksError::NoUsableKeys { skipped: 3 });

        let bad = |doc: String| match KeySet::from_jwks(doc.as_bytes()).unwrap_err() {
            JwksError::BadKey { key, reason } => {
                let message = JwksError::BadKey {
                    key: key.clone(),
                    reason: reason.clone(),
                }
                .to_string();
                assert!(message.contains("\"bad-one\""), "{message}");
                reason
            }
            other => panic!("{other:?}"),
        };
        assert!(bad(okp("bad-one", "not base64!")).contains("base64url"));
        assert!(bad(okp("bad-one", &B64URL.encode([1u8; 31]))).contains("31 bytes"));
        assert!(bad(okp("bad-one", &B64URL.encode([1u8; 33]))).contains("33 bytes"));
        // A y coordinate with no x on the curve.
        let not_on_curve = (2u8..)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        assert!(bad(okp("bad-one", &B64URL.encode(not_on_curve))).contains("not a point"));
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(bad(okp("bad-one", &B64URL.encode(identity))).contains("weak"));
        // A prime-order key plus a small-order point: mixed order.
        let pair = seeded(5);
        let mut order_four = [0u8; 32]; // y = 0: (±sqrt(-1), 0), of order 4
        order_four[31] = 0x80;
        let torsion = VerifyingKey::from_bytes(&order_four).unwrap();
        assert!(torsion.is_weak());
        let mixed = (pair.verifying_key().to_edwards() + torsion.to_edwards())
            .compress()
            .to_bytes();
        assert!(!VerifyingKey::from_bytes(&mixed).unwrap().is_weak());
        assert!(bad(okp("bad-one", &B64URL.encode(mixed))).contains("weak"));

        // The error names the key by index when it has no kid.
        let doc = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
            B64URL.encode([1u8; 31])
        );
        assert!(KeySet::from_jwks(doc.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("#0"));

        // Skipped keys next to a good one; a missing kid is derived.
        let x = B64URL.encode(pair.verifying_key().as_bytes());
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","n":"AQAB","e":"AQAB"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#
        );
        let keys = KeySet::from_jwks(doc.as_bytes()).unwrap();
        assert_eq!(keys.kids(), [pair.kid()]);
        // Padded x is accepted too.
        let keys = KeySet::from_jwks(okp("p", &format!("{x}=")).as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn generated_pair_signs_lines_that_verify() {
        let pair = SigningKeyPair::generate();
        let keys = keyset(&[&pair]);
        let cef = pair.sign_cef_line(CEF_UNSIGNED);
        assert!(cef.starts_with(&format!("{CEF_UNSIGNED} sig=")));
        assert_eq!(keys.verify_line(cef.as_bytes(), LineFormat::Cef), Valid);
        assert_eq!(payload(&cef, LineFormat::Cef).unwrap().0, CEF_UNSIGNED);

        let json = pair.sign_json_line(JSON_UNSIGNED).unwrap();
        assert_eq!(keys.verify_line(json.as_bytes(), LineFormat::Json), Valid);
        assert_eq!(payload(&json, LineFormat::Json).unwrap().0, JSON_UNSIGNED);
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["status"], 200);
        assert!(parsed["sig"].is_string());

        for line in ["{}", " { } ", r#"{"a":{"b":"}"}}  "#, "{\"a\":[1,2]}\r"] {
            let signed = pair.sign_json_line(line).unwrap();
            serde_json::from_str::<Value>(&signed).unwrap();
            assert_eq!(payload(&signed, LineFormat::Json).unwrap().0, line);
            assert_eq!(keys.verify_line(signed.as_bytes(), LineFormat::Json), Valid);
        }
        for line in [
            "CEF:0|a|b|c|d|e|f|",
            r"<13>h CEF:0|a\|b|c|d|e|f|g|x=1\\",
            "CEF:0|a|b|c|d|e|f|x=1 sig=old",
        ] {
            let signed = pair.sign_cef_line(line);
            assert_eq!(payload(&signed, LineFormat::Cef).unwrap().0, line);
            assert_eq!(keys.verify_line(signed.as_bytes(), LineFormat::Cef), Valid);
        }
        for not_object in ["[1]", "not json", "{\"a\":1", "", "\"{}\""] {
            assert!(
                matches!(
                    pair.sign_json_line(not_object),
                    Err(SignError::NotJsonObject(_))
                ),
                "{not_object}"
            );
        }
    }

    #[test]
    fn key_pair_serialisation() {
        let pair = seeded(42);
        let pk = pair.verifying_key();
        assert_eq!(pair.kid().len(), 40);
        assert_eq!(pair.kid(), derive_kid(&pk));
        assert!(pair.kid().starts_with(&format!(
            "{:02x}{:02x}",
            pk.as_bytes()[0],
            pk.as_bytes()[1]
        )));

        let secret = pair.secret_base64url();
        assert_eq!(secret.len(), 43);
        let again = SigningKeyPair::from_secret_base64url(&secret).unwrap();
        assert_eq!(again.verifying_key(), pk);
        assert_eq!(again.kid(), pair.kid());
        let raw: [u8; 32] = B64URL.decode(&secret).unwrap().try_into().unwrap();
        assert_eq!(SigningKeyPair::from_secret_bytes(&raw).verifying_key(), pk);
        assert!(matches!(
            SigningKeyPair::from_secret_base64url("!!"),
            Err(SecretKeyError::NotBase64(_))
        ));
        assert_eq!(
            SigningKeyPair::from_secret_base64url("QUJD").unwrap_err(),
            SecretKeyError::Length(3)
        );
        assert!(!format!("{pair:?}").contains(&secret));

        let jwk = pair.public_jwk();
        let names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "x"]);
        assert_eq!(jwk["x"].as_str().unwrap(), B64URL.encode(pk.as_bytes()));

        let doc = SigningKeyPair::jwks(&[&pair]);
        let expected = format!(
            "{{\n  \"keys\": [\n    {{\n      \"alg\": \"EdDSA\",\n      \"crv\": \"Ed25519\",\n      \"kid\": \"{}\",\n      \"kty\": \"OKP\",\n      \"x\": \"{}\"\n    }}\n  ]\n}}",
            pair.kid(),
            B64URL.encode(pk.as_bytes())
        );
        assert_eq!(doc, expected);
        assert_eq!(
            KeySet::from_jwks(SigningKeyPair::jwks(&[]).as_bytes()).unwrap_err(),
            JwksError::Empty
        );
    }

    #[test]
    fn jwks_document_shape_matches_the_sample() {
        let Some(dir) = corpus_dir() else {
            println!("skipping: shared corpus not found");
            return;
        };
        let sample = std::fs::read_to_string(dir.join("konnect-sample-jwks.json")).unwrap();
        let keys = KeySet::from_jwks(sample.as_bytes()).unwrap();
        // Re-render the sample key with our writer's layout.
        let x = B64URL.encode(keys.keys[0].key.as_bytes());
        let pair = seeded(9);
        let ours = SigningKeyPair::jwks(&[&pair])
            .replace(pair.kid(), keys.kids()[0])
            .replace(&B64URL.encode(pair.verifying_key().as_bytes()), &x);
        assert_eq!(ours, sample);
    }

    /// Every prefix of sample lines, and random bytes, in both formats.
    #[test]
    fn never_panics() {
        let pair = seeded(2);
        let keys = keyset(&[&pair]);
        let mut lines: Vec<Vec<u8>> = vec![
            pair.sign_cef_line(CEF_UNSIGNED).into_bytes(),
            pair.sign_json_line(JSON_UNSIGNED).unwrap().into_bytes(),
            br#"{"a":"\"#.to_vec(),
            b"CEF:0|\\".to_vec(),
            br#"{"sig":"#.to_vec(),
            br#"{"sig""#.to_vec(),
        ];
        if let Some(c) = corpus() {
            lines.extend(c.cef.into_iter().take(3));
            lines.extend(c.json.into_iter().take(3));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for _ in 0..300 {
            let len = rng.gen_range(0..120);
            let alphabet = b"{}[]\",:\\ |=sigCEF:0AQ_-\r\n";
            lines.push(
                (0..len)
                    .map(|_| {
                        if rng.gen_bool(0.8) {
                            alphabet[rng.gen_range(0..alphabet.len())]
                        } else {
                            rng.gen()
                        }
                    })
                    .collect(),
            );
        }
        for line in &lines {
            for end in 0..=line.len() {
                let prefix = &line[..end];
                for format in [LineFormat::Cef, LineFormat::Json] {
                    if let Some(s) = signed_payload(prefix, format) {
                        assert!(s.payload.len() + s.sig.len() <= prefix.len());
                    }
                    let _ = keys.verify_line(prefix, format);
                }
            }
            let prefixes: Vec<(&[u8], LineFormat)> = (0..=line.len())
                .flat_map(|e| {
                    [
                        (&line[..e], LineFormat::Cef),
                        (&line[..e], LineFormat::Json),
                    ]
                })
                .collect();
            let single: Vec<_> = prefixes
                .iter()
                .map(|&(l, f)| keys.verify_line(l, f))
                .collect();
            assert_eq!(keys.verify_lines(&prefixes), single);
        }
    }
}
