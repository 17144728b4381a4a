//! How signatures and keys are written: base64url, and the default key id
//! (see the module comment of [`super`], "Key ids").

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use ed25519_dalek::VerifyingKey;

/// base64url; encodes without padding, decodes with or without it, and
/// rejects non-zero trailing bits (so one byte string has one encoding).
pub(super) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Default key id: hex of the first 20 bytes of the public key.
pub(super) fn derive_kid(key: &VerifyingKey) -> String {
    key.as_bytes()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
