//! The memory the requests in flight may take, all together
//! (`[limits] max_inflight_memory`).
//!
//! A delivery's cost is not its body as sent: a 1 MB gzip body can inflate
//! to the decompressed limit, and a batch's parsed events and prepared
//! records take more than its text. Each request holds a [`Reservation`]
//! that follows what it really holds at each stage (the body, then the
//! decompressed text as it grows, then the parsed events and the prepared
//! batch, then the batch while the store writes it) and is given back when
//! the request ends. A stage that cannot grow its reservation stops the
//! request: 429 (Konnect retries it), or 413 when the request alone needs
//! more than the whole budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

/// The shared budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    gauge: Gauge,
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// Other requests hold the rest of the budget now: retry later (429).
    Busy,
    /// More than the whole budget: this request can never be served (413).
    Never {
        /// The budget, in bytes.
        limit: u64,
    },
}

impl MemoryBudget {
    /// A budget of `limit` bytes, reported (bytes reserved) on `gauge`.
    pub fn new(limit: u64, gauge: Gauge) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
            gauge,
        })
    }

    /// Reserves `bytes`, or says why not.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, OverBudget> {
        let mut reservation = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        reservation.resize(bytes)?;
        Ok(reservation)
    }

    fn take(&self, bytes: u64) -> Result<(), OverBudget> {
        if bytes > self.limit {
            return Err(OverBudget::Never { limit: self.limit });
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map_err(|_| OverBudget::Busy)?;
        self.gauge.inc_by(bytes as i64);
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.dec_by(bytes as i64);
    }
}

/// A request's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Makes the reservation exactly `bytes`: shrinking always works;
    /// growing fails, leaving it as it was, when the budget cannot give
    /// the difference.
    pub fn resize(&mut self, bytes: u64) -> Result<(), OverBudget> {
        if bytes > self.budget.limit {
            return Err(OverBudget::Never {
                limit: self.budget.limit,
            });
        }
        if bytes > self.bytes {
            self.budget.take(bytes - self.bytes)?;
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Moves what this holds to a new reservation, leaving this one empty.
    pub fn take(&mut self) -> Reservation {
        Reservation {
            budget: self.budget.clone(),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_give_it_back() {
        let gauge = Gauge::default();
        let budget = MemoryBudget::new(100, gauge.clone());
        let mut a = budget.reserve(60).unwrap();
        assert_eq!(budget.reserve(50).unwrap_err(), OverBudget::Busy);
        assert_eq!(
            budget.reserve(101).unwrap_err(),
            OverBudget::Never { limit: 100 }
        );
        let mut b = budget.reserve(40).unwrap();
        let b = b.take();
        assert_eq!(a.resize(61), Err(OverBudget::Busy));
        assert_eq!(a.bytes, 60, "a failed growth keeps what was held");
        a.resize(10).unwrap();
        assert_eq!((budget.used.load(Ordering::Acquire), gauge.get()), (50, 50));
        a.resize(60).unwrap();
        drop(b);
        drop(a);
        assert_eq!((budget.used.load(Ordering::Acquire), gauge.get()), (0, 0));
        assert_eq!(budget.reserve(100).unwrap().bytes, 100);
    }
}
