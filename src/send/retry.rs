//! Konnect's retry rules (docs/KONNECT.md, "Delivery"): a connection error, 500
//! and 429 are retried, waiting 1 s minimum and 30 s maximum, at most 4
//! times; any other answer is final.

use std::time::Duration;

/// At most 4 retries of a batch (5 attempts).
pub const MAX_RETRIES: u32 = 4;

/// Whether an answer with this status is retried (500 and 429 only).
pub fn retried_status(status: u16) -> bool {
    status == 500 || status == 429
}

/// The wait before retry number `retry` (0 for the first retry): the
/// receiver's `Retry-After` (seconds) clamped to 1..=30 units, else 1, 2, 4,
/// 8 units, never more than 30. A unit is 1 s except in tests.
pub fn retry_delay(retry: u32, retry_after_secs: Option<u64>, unit: Duration) -> Duration {
    let units = match retry_after_secs {
        Some(secs) => secs.clamp(1, 30),
        None => (1u64 << retry.min(5)).min(30),
    };
    unit * units as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_konnect_rules() {
        let s = Duration::from_secs(1);
        let waits: Vec<_> = (0..MAX_RETRIES).map(|r| retry_delay(r, None, s)).collect();
        assert_eq!(waits, [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(retry_delay(9, None, s), Duration::from_secs(30));
        assert_eq!(retry_delay(0, Some(0), s), Duration::from_secs(1));
        assert_eq!(retry_delay(0, Some(7), s), Duration::from_secs(7));
        assert_eq!(retry_delay(0, Some(3600), s), Duration::from_secs(30));
        for r in 0..10 {
            for after in [None, Some(0), Some(5), Some(99)] {
                let d = retry_delay(r, after, s);
                assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(30));
            }
        }
    }

    #[test]
    fn only_500_and_429_are_retried() {
        for status in [200, 201, 400, 401, 404, 408, 413, 415, 501, 502, 503, 504] {
            assert!(!retried_status(status), "{status}");
        }
        assert!(retried_status(500) && retried_status(429));
    }
}
