//! A latency histogram with bounded memory and relative precision: values
//! below 32 ns are exact, above that each power of two is split into 32
//! buckets (a quantile is off by at most 1/32, about 3 %), up to `u64::MAX`.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Bucket 0..SUB are 0..SUB ns; then SUB buckets per power of two up to 2^63.
const BUCKETS: usize = SUB * (64 - SUB_BITS as usize + 1);

/// Counts of nanosecond values, and their exact maximum.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    let top_bit = 63 - value.leading_zeros();
    let shift = top_bit - SUB_BITS;
    // The SUB_BITS bits below the top bit pick the sub-bucket.
    let sub = (value >> shift) as usize & (SUB - 1);
    (shift as usize + 1) * SUB + sub
}

/// The largest value bucket `index` holds.
fn highest_in(index: usize) -> u64 {
    let (exponent, sub) = (index / SUB, (index % SUB) as u64);
    if exponent == 0 {
        return sub;
    }
    let shift = exponent as u32 - 1;
    let lowest = (SUB as u64 + sub) << shift;
    lowest + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, nanos: u64) {
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The exact largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0 to 1): the top of the bucket holding
    /// it, never more than the maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest_in(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = bucket_of(value);
            assert!(index < BUCKETS, "{value}");
            assert!(index >= previous, "{value}");
            assert!(highest_in(index) >= value, "{value}");
            if index > 0 {
                assert!(highest_in(index - 1) < value, "{value}");
            }
            previous = index;
        }
    }

    #[test]
    fn quantiles_within_the_bucket_precision() {
        let mut histogram = Histogram::default();
        for value in 1..=10_000u64 {
            histogram.record(value);
        }
        let p50 = histogram.quantile(0.5) as f64;
        let p99 = histogram.quantile(0.99) as f64;
        assert!(
            (5000.0..=5000.0 * (1.0 + 1.0 / 32.0)).contains(&p50),
            "{p50}"
        );
        assert!(
            (9900.0..=9900.0 * (1.0 + 1.0 / 32.0)).contains(&p99),
            "{p99}"
        );
        assert_eq!(histogram.max(), 10_000);
        assert_eq!(histogram.quantile(1.0), 10_000);

        let mut other = Histogram::default();
        other.record(1_000_000);
        histogram.merge(&other);
        assert_eq!(histogram.total(), 10_001);
        assert_eq!(histogram.max(), 1_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
