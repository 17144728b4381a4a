//! The `Authorization` check: the whole header value, compared in constant
//! time. Only SHA-256 digests of the accepted values are kept in memory, so
//! the comparison takes the same time whatever the length of either value.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The accepted `Authorization` values of one source.
#[derive(Clone)]
pub struct Authorizer {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens or their digests.
        write!(f, "Authorizer({} value(s))", self.digests.len())
    }
}

impl Authorizer {
    /// Accepts exactly these header values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Authorizer {
        Authorizer {
            digests: values.into_iter().map(digest).collect(),
        }
    }

    /// Also accepts the values whose SHA-256 is one of these (hex, any
    /// case); `None` if one is not 64 hex digits.
    pub fn with_sha256<'a>(
        mut self,
        hex_digests: impl IntoIterator<Item = &'a str>,
    ) -> Option<Authorizer> {
        for hex in hex_digests {
            let mut digest = [0u8; 32];
            if hex.len() != 64 {
                return None;
            }
            for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
                *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
            }
            self.digests.push(digest);
        }
        Some(self)
    }

    /// Whether `header` (the raw header value, if any) is accepted. Every
    /// accepted value is compared, so timing does not tell which one matched.
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let presented = digest_bytes(header);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |any, accepted| {
                any | accepted.ct_eq(&presented)
            })
            .into()
    }
}

/// What the `Authorization` header(s) of a request say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No header.
    None,
    /// Exactly one header, with this value.
    One(&'a [u8]),
    /// More than one: refused whatever they hold, since which one a proxy
    /// or a log shows and which one is checked could differ.
    Several,
}

impl<'a> Presented<'a> {
    /// Reads the values of every `Authorization` header of a request.
    pub fn from_values(mut values: impl Iterator<Item = &'a [u8]>) -> Presented<'a> {
        match (values.next(), values.next()) {
            (None, _) => Presented::None,
            (Some(value), None) => Presented::One(value),
            (Some(_), Some(_)) => Presented::Several,
        }
    }
}

fn digest(value: &str) -> [u8; 32] {
    digest_bytes(value.as_bytes())
}

fn digest_bytes(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_whole_value() {
        let auth = Authorizer::new(["Bearer abc", "Splunk def"]);
        assert!(auth.allows(Some(b"Bearer abc")));
        assert!(auth.allows(Some(b"Splunk def")));
        assert!(!auth.allows(Some(b"Bearer ab")));
        assert!(!auth.allows(Some(b"Bearer abcd")));
        assert!(!auth.allows(Some(b"abc")));
        assert!(!auth.allows(Some(b"bearer abc")));
        assert!(!auth.allows(Some(b"")));
        assert!(!auth.allows(None));
    }

    #[test]
    fn sha256_digests_accept_the_value_they_hash() {
        // sha256("Bearer abc")
        let hex = "f4a1a2b5b8a2e2c7b3c8f7d1d3c5b4a6e8f0a1b2c3d4e5f60718293a4b5c6d7e";
        let real = Sha256::digest(b"Bearer abc")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>();
        let auth = Authorizer::new([]).with_sha256([real.as_str()]).unwrap();
        assert!(auth.allows(Some(b"Bearer abc")));
        assert!(!auth.allows(Some(b"Bearer abd")));
        let other = Authorizer::new(["x"]).with_sha256([hex]).unwrap();
        assert!(!other.allows(Some(b"Bearer abc")));
        assert!(Authorizer::new([]).with_sha256(["zz"]).is_none());
        assert!(Authorizer::new([])
            .with_sha256([&"g".repeat(64)[..]])
            .is_none());
    }

    #[test]
    fn only_a_single_header_is_presented() {
        let none: [&[u8]; 0] = [];
        assert_eq!(Presented::from_values(none.into_iter()), Presented::None);
        assert_eq!(
            Presented::from_values([&b"Bearer a"[..]].into_iter()),
            Presented::One(b"Bearer a")
        );
        assert_eq!(
            Presented::from_values([&b"Bearer a"[..], b"Bearer a"].into_iter()),
            Presented::Several
        );
    }

    #[test]
    fn debug_does_not_leak() {
        let auth = Authorizer::new(["Bearer secret-token"]);
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
