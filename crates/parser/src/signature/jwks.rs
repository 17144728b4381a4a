//! Konnect's JWKS document read into a [`KeySet`]: Ed25519 signing keys
//! kept, other key types skipped, anything malformed or weak an error.

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::encoding::{derive_kid, B64URL};
use super::verify::{is_batchable, Entry, KeySet};

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

/// A JWKS member as a string, if present and a string.
fn str_member<'v>(key: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v str> {
    key.get(name).and_then(Value::as_str)
}

/// The [`KeySet`] entry of the `index`th JWKS key, or `None` when it is not
/// an Ed25519 signing key (skipped); the rules are [`KeySet::from_jwks`]'s.
fn jwk_entry(index: usize, jwk: &Value) -> Result<Option<Entry>, JwksError> {
    let jwk = jwk.as_object().ok_or(JwksError::KeyNotObject { index })?;
    let kid = str_member(jwk, "kid");
    let label = || kid.map_or_else(|| format!("#{index}"), |k| format!("{k:?}"));
    let missing = |field| JwksError::MissingField {
        key: label(),
        field,
    };
    let kty = str_member(jwk, "kty").ok_or_else(|| missing("kty"))?;
    if kty != "OKP" {
        return Ok(None);
    }
    let crv = str_member(jwk, "crv").ok_or_else(|| missing("crv"))?;
    let usable_use = str_member(jwk, "use").map_or(true, |u| u == "sig");
    let usable_alg = str_member(jwk, "alg").map_or(true, |a| a == "EdDSA" || a == "Ed25519");
    if crv != "Ed25519" || !usable_use || !usable_alg {
        return Ok(None);
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
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not a point on the curve".into()))?;
    if !is_batchable(&key) {
        return Err(bad("weak key (small-order or mixed-order point)".into()));
    }
    let kid = kid.map_or_else(|| derive_kid(&key), str::to_owned);
    Ok(Some(Entry {
        kid,
        key,
        batchable: true,
    }))
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
    /// derived one (`SigningKeyPair::kid`'s rule).
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
            match jwk_entry(index, jwk)? {
                Some(entry) => entries.push(entry),
                None => skipped += 1,
            }
        }
        if entries.is_empty() {
            return Err(JwksError::NoUsableKeys { skipped });
        }
        Ok(KeySet::from_entries(entries))
    }
}
