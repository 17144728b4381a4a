//! Recovery from a failed write without a restart.
//!
//! A failed fsync or flush poisons the open store (see
//! [`crate::engine::database::Database::flush`]): what sled and the page cache hold may
//! no longer be what is on disk, so nothing more is written through it and
//! nothing more is read from it. What a restart does is the answer (as
//! PostgreSQL answers a failed fsync with crash recovery): the supervisor
//! thread here closes the poisoned store, waits until a probe write and
//! fsync in its directory succeed again (a bounded backoff), and opens it
//! again through the same [`crate::open::open_inner`] a restart takes (sled's
//! recovery, the event log's new segment, the verification on open), then
//! serves it. Meanwhile every write and read is refused with
//! [`StoreError::Recovering`], which the receiver answers 500 (Konnect
//! retries).
//!
//! Correctness: a delivery is acknowledged only after its flush succeeded,
//! so everything acknowledged is on disk before the poisoning and is there
//! after the reopen; what was written after it is either recovered whole
//! (sled applies a batch all or nothing; the event log is read only through
//! pointers in sled) or not at all, and the open flushes what it recovered
//! before the first answer, so a retried delivery counted as a duplicate is
//! durable. Readers see only ids that were flushed (a group applied to
//! sled waits for its flush before it is listed), so what a failed flush
//! leaves behind was never served, and the reopened store does not give
//! its ids again. sled allows one open database per directory (a file lock, also
//! within a process): the reopen waits for every handle of the old one,
//! readers included, to be gone; readers of the old store see
//! [`StoreError::Recovering`] at their next step and end.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::poison::Wake;
use crate::error::StoreError;
use crate::events::state::Counters;
use crate::events::timefmt::now_ms;
use crate::open::{open_inner, Inner, OpenReport, StoreOptions};

/// Bytes the probe writes and syncs before a reopen is tried: room for
/// sled's segments and a few groups' event chunks, so that the first
/// deliveries after the reopen do not fail at once again.
const PROBE_BYTES: usize = 4 << 20;
/// A failure this soon after a reopening continues the backoff where it
/// was, instead of starting again at the shortest wait: a disk that takes
/// the probe but not the store's writes is not reopened in a tight loop.
const SETTLED: Duration = Duration::from_secs(60);
/// A closing that takes longer than this is reported as stuck.
const STUCK: Duration = Duration::from_secs(30);
/// The probe's file, in the store's directory (removed after each probe).
const PROBE_FILE: &str = "reopen-probe.tmp";

/// Whether the store takes writes, and its recoveries from failed writes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StoreHealth {
    /// A write or flush failed: the store refuses writes and reads until
    /// it is reopened (automatically, once writes succeed again).
    pub recovering: bool,
    /// The failure that closed it, while recovering.
    pub reason: Option<String>,
    /// Since when (ms since the epoch), while recovering.
    pub since_ms: Option<i64>,
    /// Reopening attempts that failed since then.
    pub failed_attempts: u64,
    /// Why the last attempt failed (no space yet, the old store still in
    /// use by a reader), while recovering.
    pub last_attempt_error: Option<String>,
    /// Times the store was reopened after a failure, since it was opened.
    pub recoveries: u64,
    /// When the last reopening succeeded (ms since the epoch).
    pub last_recovery_ms: Option<i64>,
    /// How long the last outage lasted, from the failure to the reopening.
    pub last_outage_ms: Option<u64>,
}

/// What the [`crate::Store`] handles and the supervisor share.
pub(crate) struct Slot {
    pub path: std::path::PathBuf,
    pub options: StoreOptions,
    /// Kept across reopenings, so that counters since open stay monotonic.
    pub counters: Arc<Counters>,
    /// The open store; `None` while it is being reopened.
    pub current: RwLock<Option<Arc<Inner>>>,
    pub health: Mutex<StoreHealth>,
    /// What the last opening found.
    pub open_report: Mutex<OpenReport>,
    /// Given to each open store, which sends [`Wake::Poisoned`] on it.
    pub wake: mpsc::Sender<Wake>,
    /// The next id of the closed store: a group that failed may have been
    /// seen by a reader (applied, not yet flushed), so its ids are not
    /// given again (a cursor past them would skip their successors).
    pub handed_out: Arc<AtomicU64>,
}

impl Slot {
    pub fn health(&self) -> std::sync::MutexGuard<'_, StoreHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open store, or why there is none to use.
    pub fn current(&self) -> Result<Arc<Inner>, StoreError> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some(inner) => match inner.core.poison() {
                None => Ok(inner.clone()),
                Some(failure) => Err(StoreError::Recovering {
                    reason: failure.to_string(),
                }),
            },
            None => Err(StoreError::Recovering {
                reason: self
                    .health()
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the store is being reopened".into()),
            }),
        }
    }
}

/// The supervisor thread; stops (and is joined) when dropped.
pub(crate) struct Supervisor {
    wake: mpsc::Sender<Wake>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn spawn(
    slot: Arc<Slot>,
    woken: mpsc::Receiver<Wake>,
) -> Result<Supervisor, StoreError> {
    let wake = slot.wake.clone();
    let thread = thread::Builder::new()
        .name("auditsink-store-recovery".into())
        .spawn(move || supervise(&slot, &woken))
        .map_err(|source| StoreError::Io {
            path: "recovery thread".into(),
            source,
        })?;
    Ok(Supervisor {
        wake,
        thread: Some(thread),
    })
}

fn supervise(slot: &Slot, woken: &mpsc::Receiver<Wake>) {
    let mut delay = slot.options.reopen_backoff_min;
    let mut reopened: Option<Instant> = None;
    while let Ok(Wake::Poisoned) = woken.recv() {
        let Some((reason, closing)) = close_poisoned(slot) else {
            continue;
        };
        let started = Instant::now();
        tracing::error!(
            reason = %reason,
            "store closed after a failed write; reopening it once writes succeed again"
        );
        if !reopened.is_some_and(|at| at.elapsed() <= SETTLED) {
            delay = slot.options.reopen_backoff_min;
        }
        let mut last_error = String::new();
        loop {
            match woken.recv_timeout(delay) {
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                // A late wake-up of the store just closed.
                Ok(Wake::Poisoned) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            match closed(&closing, started).and_then(|()| reopen(slot)) {
                Ok(()) => {
                    reopened = Some(Instant::now());
                    let outage = started.elapsed();
                    let mut health = slot.health();
                    tracing::info!(
                        outage_ms = outage.as_millis() as u64,
                        failed_attempts = health.failed_attempts,
                        "store reopened after a failed write; taking writes again"
                    );
                    *health = StoreHealth {
                        recoveries: health.recoveries + 1,
                        last_recovery_ms: Some(now_ms()),
                        last_outage_ms: Some(outage.as_millis() as u64),
                        ..StoreHealth::default()
                    };
                    break;
                }
                Err(e) => {
                    let e = match e {
                        StoreError::Recovering { reason } => reason,
                        other => other.to_string(),
                    };
                    if e != last_error {
                        tracing::warn!(error = %e, "store not reopened yet; will retry");
                    } else {
                        tracing::debug!(error = %e, "store not reopened yet; will retry");
                    }
                    let mut health = slot.health();
                    health.failed_attempts += 1;
                    health.last_attempt_error = Some(e.clone());
                    last_error = e;
                    delay = (delay * 2).min(slot.options.reopen_backoff_max);
                }
            }
        }
    }
}

/// Takes the poisoned store out of use (new calls are refused, readers in
/// progress stop at their next step) and closes it on a thread of its own;
/// the reason and what says when it is closed, or `None` if the open store
/// is not poisoned.
fn close_poisoned(slot: &Slot) -> Option<(String, mpsc::Receiver<()>)> {
    let mut current = slot.current.write().unwrap_or_else(|p| p.into_inner());
    let reason = current.as_ref()?.core.poison()?.to_string();
    {
        let mut health = slot.health();
        health.recovering = true;
        health.reason = Some(reason.clone());
        health.since_ms = Some(now_ms());
        health.failed_attempts = 0;
        health.last_attempt_error = None;
    }
    let old = current.take();
    drop(current);
    // The writer drains (its queue answered with the failure) once no call
    // in progress holds the store; sled's lock says when the last handle,
    // a reader's too, is gone. sled 0.34 can hang for good flushing on
    // close after a failed write of a large value (a blob): the closing
    // must not hold the supervisor, which then says so.
    let (done, closing) = mpsc::channel();
    let handed_out = slot.handed_out.clone();
    let spawned = thread::Builder::new()
        .name("auditsink-store-closer".into())
        .spawn(move || {
            if let Some(old) = old {
                let core = old.core.clone();
                drop(old);
                // Once the writer, retention and every call in progress
                // are done with it, its ids are final.
                while Arc::strong_count(&core) > 1 {
                    thread::sleep(Duration::from_millis(10));
                }
                let next_id = core.next_id();
                handed_out.fetch_max(next_id, Ordering::AcqRel);
                drop(core);
            }
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "starting the thread that closes the store failed");
    }
    Some((reason, closing))
}

/// Whether the poisoned store's closing (see [`close_poisoned`]) ended.
fn closed(closing: &mpsc::Receiver<()>, since: Instant) -> Result<(), StoreError> {
    match closing.try_recv() {
        Ok(()) | Err(mpsc::TryRecvError::Disconnected) => Ok(()),
        Err(mpsc::TryRecvError::Empty) if since.elapsed() < STUCK => Err(StoreError::Recovering {
            reason: "the closed store is still closing".into(),
        }),
        Err(mpsc::TryRecvError::Empty) => Err(StoreError::Recovering {
            reason: format!(
                "the closed store has not released its database for {} s (sled can hang \
                 flushing after a failed write of a large value): restart auditsink",
                since.elapsed().as_secs()
            ),
        }),
    }
}

/// One attempt: the probe, then the open a restart does.
fn reopen(slot: &Slot) -> Result<(), StoreError> {
    probe(&slot.path)?;
    let (inner, report) = open_inner(
        &slot.path,
        &slot.options,
        slot.counters.clone(),
        slot.wake.clone(),
        slot.handed_out.load(Ordering::Acquire),
    )
    .map_err(|e| match e {
        StoreError::Locked { .. } => StoreError::Recovering {
            reason: "the closed store is still held by a read in progress".into(),
        },
        other => other,
    })?;
    *slot.open_report.lock().unwrap_or_else(|p| p.into_inner()) = report;
    *slot.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(inner));
    Ok(())
}

/// Whether the directory takes a write and an fsync of [`PROBE_BYTES`].
fn probe(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path)
        .and_then(|mut file| {
            file.write_all(&vec![0; PROBE_BYTES])?;
            file.sync_all()
        })
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        });
    let _ = std::fs::remove_file(&path);
    written
}
