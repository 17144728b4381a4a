//! The signals of a poisoned store (a write or flush failed): the gate its
//! readers check at each step, and what wakes the supervisor that reopens
//! it (see [`crate::recover`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::StoreError;

/// What wakes the supervisor.
pub(crate) enum Wake {
    /// The open store was poisoned.
    Poisoned,
    /// The store is being closed.
    Stop,
}

/// Whether reads and writes may still use a store: cleared when it is
/// poisoned, so that readers holding its handles stop.
#[derive(Debug)]
pub(crate) struct Gate(AtomicBool);

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate(AtomicBool::new(true)))
    }

    pub fn close(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// `Ok` while open, else the error a reader ends with.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.0.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(StoreError::Recovering {
                reason: "a write failed while this read was in progress".into(),
            }),
        }
    }
}
