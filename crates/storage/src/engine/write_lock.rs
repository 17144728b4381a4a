//! The write lock: one writer stages at a time, maintenance waits for the
//! groups in flight, and neither starves the other.
//!
//! The single writer (see [`crate::engine::pipeline`]) makes "is this
//! identity already stored?" and "store it" a single step. Groups it staged
//! stay *in flight* until the syncer applied them (the merger's work counts
//! too): maintenance takes the lock only once none is, so that what it
//! reads of sled, the runs and the log is all there is. Maintenance that
//! waits holds the writer back (else it would wait forever under load);
//! a writer that waits goes first, one group, so that maintenance working
//! in steps (retention) lets writes through between its steps.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A write state `S` behind the write lock, with the lock's bookkeeping.
pub(crate) struct WriteLock<S> {
    locked: Mutex<Locked<S>>,
    /// Signalled as groups in flight are applied and as maintenance takes
    /// the lock.
    drained: Condvar,
    /// The writer has a group to stage: said before it takes the lock,
    /// because maintenance that takes it again at once, step after step,
    /// would otherwise always win it.
    writer_wants: AtomicBool,
}

struct Locked<S> {
    state: S,
    /// Groups the writer staged that the syncer has not applied yet, plus
    /// the merger while it merges: maintenance waits for none.
    in_flight: u64,
    /// Maintenance waiting for the groups in flight: the writer stages no
    /// more meanwhile (so that it does not wait forever under load).
    waiting: u64,
    /// Groups the writer began to stage: maintenance that finds the writer
    /// waiting lets one more begin (see [`WriteLock::lock`]).
    writer_turns: u64,
}

/// The write lock held on `O` (the store that owns the lock): what staging,
/// commit and apply take as proof. Derefs to the write state.
pub(crate) struct WriteGuard<'a, O, S> {
    owner: &'a O,
    lock: &'a WriteLock<S>,
    locked: MutexGuard<'a, Locked<S>>,
}

impl<'a, O, S> WriteGuard<'a, O, S> {
    /// The store it locks.
    pub fn owner(&self) -> &'a O {
        self.owner
    }

    /// Counts a group (or the merger's work) in flight until the token is
    /// dropped, and releases the lock.
    pub fn into_in_flight(mut self) -> InFlightToken<'a, S> {
        self.locked.in_flight += 1;
        let lock = self.lock;
        // Released before the token exists: its drop takes the lock.
        drop(self);
        InFlightToken(lock)
    }

    /// Whether maintenance waits for the lock (the merger gives way).
    pub fn maintenance_waiting(&self) -> bool {
        self.locked.waiting > 0
    }
}

impl<O, S> Deref for WriteGuard<'_, O, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.locked.state
    }
}

impl<O, S> DerefMut for WriteGuard<'_, O, S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.locked.state
    }
}

/// A staged group (or the merger's work) counted in flight until the token
/// is dropped: once the group is applied (the merge done), or whatever
/// happens to it (a failed send, a thread that panicked), so maintenance
/// never waits forever. Never dropped with the write lock held.
pub(crate) struct InFlightToken<'a, S>(&'a WriteLock<S>);

impl<S> Drop for InFlightToken<'_, S> {
    fn drop(&mut self) {
        self.0.mutex_now().in_flight -= 1;
        self.0.drained.notify_all();
    }
}

impl<S> WriteLock<S> {
    /// The lock over the write state found on open.
    pub fn new(state: S) -> WriteLock<S> {
        WriteLock {
            locked: Mutex::new(Locked {
                state,
                in_flight: 0,
                waiting: 0,
                writer_turns: 0,
            }),
            drained: Condvar::new(),
            writer_wants: AtomicBool::new(false),
        }
    }

    fn mutex_now(&self) -> MutexGuard<'_, Locked<S>> {
        self.locked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, locked: MutexGuard<'a, Locked<S>>) -> MutexGuard<'a, Locked<S>> {
        self.drained.wait(locked).unwrap_or_else(|p| p.into_inner())
    }

    fn guard<'a, O>(
        &'a self,
        owner: &'a O,
        locked: MutexGuard<'a, Locked<S>>,
    ) -> WriteGuard<'a, O, S> {
        WriteGuard {
            owner,
            lock: self,
            locked,
        }
    }

    /// The lock for maintenance: once no group is in flight between the
    /// writer and the syncer and the merger is idle, so that what it reads
    /// is all there is and nothing else changes the runs.
    ///
    /// A writer waiting to stage goes first, one group: maintenance that
    /// works in steps, each under the lock (retention, reprocessing), lets
    /// writes through between its steps instead of holding them up to its
    /// end.
    pub fn lock<'a, O>(&'a self, owner: &'a O) -> WriteGuard<'a, O, S> {
        let mut locked = self.mutex_now();
        let turn = locked.writer_turns;
        while self.writer_wants.load(Ordering::Acquire) && locked.writer_turns == turn {
            locked = self.wait(locked);
        }
        locked.waiting += 1;
        while locked.in_flight > 0 {
            locked = self.wait(locked);
        }
        locked.waiting -= 1;
        self.drained.notify_all();
        self.guard(owner, locked)
    }

    /// The lock as it is (the syncer's: groups may be in flight).
    pub fn lock_now<'a, O>(&'a self, owner: &'a O) -> WriteGuard<'a, O, S> {
        self.guard(owner, self.mutex_now())
    }

    /// The lock for the merger: after any maintenance waiting for it.
    pub fn lock_for_merger<'a, O>(&'a self, owner: &'a O) -> WriteGuard<'a, O, S> {
        let mut locked = self.mutex_now();
        while locked.waiting > 0 {
            locked = self.wait(locked);
        }
        self.guard(owner, locked)
    }

    /// The lock for the writer's next group: after any maintenance waiting
    /// for it, before any that comes later (see [`WriteLock::lock`]).
    pub fn lock_for_writer<'a, O>(&'a self, owner: &'a O) -> WriteGuard<'a, O, S> {
        self.writer_wants.store(true, Ordering::Release);
        let mut guard = self.lock_for_merger(owner);
        self.writer_wants.store(false, Ordering::Release);
        guard.locked.writer_turns += 1;
        self.drained.notify_all();
        guard
    }
}
