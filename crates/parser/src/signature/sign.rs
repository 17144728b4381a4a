//! Signing lines the way Konnect does, for tools (`auditsink keygen`,
//! `simulate`, the Konnect emulator) and tests. Behind the cargo feature
//! `sign`, so that the verifier's default build carries no signing code and
//! no random number generator.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde_json::{json, Value};

use super::encoding::{derive_kid, B64URL};

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
