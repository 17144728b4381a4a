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
    fn debug_does_not_leak() {
        let auth = Authorizer::new(["Bearer secret-token"]);
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
