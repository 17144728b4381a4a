//! Opening the store's directory: what a start does, and what the
//! reopening after a failed write does (see [`crate::recover`]): sled and
//! the event log opened, the write state found, the newest events
//! verified (rebuilt if need be), the group-commit pipeline and the
//! retention thread started.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::engine::dir_lock;
use crate::engine::log;
use crate::engine::pipeline;
use crate::engine::poison::Wake;
use crate::engine::runs::Runs;
use crate::error::StoreError;
use crate::events::core::Core;
use crate::events::gaps::Gaps;
use crate::events::keys::{
    key_id, DEDUPE_RUNS, EVENT, FORMAT_VERSION, META_COUNTS, META_FORMAT, META_HORIZON,
    META_NEXT_ID, META_REBUILDING, QUARANTINE, TRACE_RUNS,
};
use crate::events::maintain::{self, RetentionSummary};
use crate::events::state::{Counters, Counts, WriteState};
use crate::events::timefmt::now_ms;
use crate::events::{chunk, query, sinks};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Remove events and quarantined lines received more than this many days
    /// ago, in a background thread (`None`: keep everything forever).
    pub retention_days: Option<u64>,
    /// How often the retention thread runs (first run right after open).
    pub retention_interval: Duration,
    /// How many of the newest events to verify on open.
    pub verify_on_open: usize,
    /// sled's page cache, in bytes. Memory grows with it (and, beyond it,
    /// with sled's per-page bookkeeping for the whole store).
    pub cache_capacity_bytes: u64,
    /// After a failed write closed the store, the first wait before trying
    /// to reopen it; doubled after each failed attempt, up to
    /// [`StoreOptions::reopen_backoff_max`].
    pub reopen_backoff_min: Duration,
    /// The longest wait between two attempts to reopen the store.
    pub reopen_backoff_max: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention_days: None,
            retention_interval: Duration::from_secs(3600),
            verify_on_open: 5000,
            cache_capacity_bytes: 256 * 1024 * 1024,
            reopen_backoff_min: Duration::from_millis(100),
            reopen_backoff_max: Duration::from_secs(5),
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// Newest events whose dedupe and index entries were verified.
    pub verified_events: u64,
    /// Problems the verification found (the first ones).
    pub problems: Vec<String>,
    /// Whether the dedupe entries and indexes were rebuilt (after problems,
    /// or to finish a rebuild that was interrupted).
    pub rebuilt: bool,
}

/// One opening of the store's directory.
pub(crate) struct Inner {
    // Dropped in this order: retention stops, the writer drains, then the
    // database closes when the last reference to `core` goes.
    retention: Option<Background>,
    pub(crate) writer: pipeline::Handle<Core>,
    pub(crate) core: Arc<Core>,
    pub(crate) gaps: Gaps,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.retention.take());
        self.core.filter().stop();
        // A poisoned store is closed as it is: the reopening reads what is
        // on disk.
        if self.core.poison().is_none() {
            if let Err(e) = self.core.flush() {
                tracing::error!(error = %e, "store flush on close failed");
            }
        }
    }
}

/// A background thread that stops when dropped.
struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the store's directory: what a start does, and what the reopening
/// after a failed write does (see [`crate::recover`]), which gives the ids it
/// must not give again (`handed_out`: readers of the closed store may
/// have seen them).
pub(crate) fn open_inner(
    dir: &Path,
    options: &StoreOptions,
    counters: Arc<Counters>,
    wake: mpsc::Sender<Wake>,
    handed_out: u64,
) -> Result<(Inner, OpenReport), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = open_db(dir, options.cache_capacity_bytes)?;
    let tree = db.open_tree("store")?;
    match tree.get(META_FORMAT)? {
        None => {
            tree.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
        }
        Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(|b| u32::from_be_bytes(b).to_string())
                .unwrap_or_else(|_| format!("{:?}", v.as_ref()));
            return Err(StoreError::Format {
                path: dir.to_path_buf(),
                reason: format!(
                    "has format version {found}; this version reads only format \
                     {FORMAT_VERSION} (open it with the build that wrote it)"
                ),
            });
        }
    }
    let gaps = Gaps::open(&db)?;
    let log = Arc::new(log::SegmentLog::open(dir)?);
    let mut state = initial_state(&tree, &log)?;
    state.next_id = state.next_id.max(handed_out);
    let (dedupe, mut damaged) = Runs::load(&tree, DEDUPE_RUNS)?;
    let (traces, damaged_traces) = Runs::load(&tree, TRACE_RUNS)?;
    damaged.extend(damaged_traces);
    let core = Arc::new(Core::new(
        dir,
        db,
        tree,
        state,
        counters,
        (dedupe, traces),
        log,
        wake,
    )?);
    {
        let state = core.lock();
        core.counters().mirror(state.counts);
        core.counters()
            .horizon
            .store(state.horizon, Ordering::Relaxed);
    }
    let open_report = verify_on_open(&core, options.verify_on_open, damaged)?;
    {
        let state = core.lock();
        core.filter().start(
            core.tree(),
            core.dedupe(),
            state.horizon,
            state.counts.events,
            Vec::new(),
        );
    }
    let writer = match pipeline::spawn(core.clone()) {
        Ok(writer) => writer,
        Err(e) => {
            core.filter().stop();
            return Err(e);
        }
    };
    let retention = match options.retention_days {
        Some(days) => match spawn_retention(core.clone(), days, options.retention_interval) {
            Ok(retention) => Some(retention),
            Err(e) => {
                core.filter().stop();
                return Err(e);
            }
        },
        None => None,
    };
    let inner = Inner {
        retention,
        writer,
        core,
        gaps,
    };
    // What sled recovered (groups it wrote before a failed flush, whose
    // retries will count as duplicates) is made durable before the
    // first answer.
    inner.core.flush()?;
    Ok((inner, open_report))
}

/// Opens the sled database. A lock that is released a moment later (a
/// store of this process just closed while sled's I/O threads finish, or a
/// child process forked meanwhile still holds the descriptor until it execs)
/// is waited for briefly; a store held by a running server is not.
fn open_db(dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, StoreError> {
    let mut attempts = 0;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            // Durability comes from the explicit flush of every group
            // commit; the background flusher only bounds the work left for it.
            .flush_every_ms(Some(1000))
            .cache_capacity(cache_capacity_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(_) if dir_lock::is_held(dir) && attempts < 10 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(25));
            }
            Err(_) if dir_lock::is_held(dir) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The next id and counts: as recorded, but never below what the records
/// show (ids must never be reused, even after everything expired).
fn initial_state(tree: &sled::Tree, log: &Arc<log::SegmentLog>) -> Result<WriteState, StoreError> {
    let recorded = tree
        .get(META_NEXT_ID)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(1);
    let mut next_id = recorded.max(1);
    match chunk::Records::newest_first(tree, log).next() {
        Some(Ok((id, _))) => next_id = next_id.max(id + 1),
        // A newest chunk that does not decode must not keep the store (and
        // `check --repair`) from opening: its key, the first id it holds,
        // still bounds the ids; verifying on open reports it.
        Some(Err(StoreError::Corrupt { .. })) => {
            let end: &[u8] = &[EVENT + 1];
            if let Some(item) = tree.range::<&[u8], _>(&[EVENT][..]..end).next_back() {
                if let Some(first) = item?.0.get(1..9).and_then(|b| b.try_into().ok()) {
                    next_id = next_id.max(u64::from_be_bytes(first) + 1);
                }
            }
        }
        Some(Err(e)) => return Err(e),
        None => {}
    }
    if let Some(item) = query::records_after(tree, QUARANTINE, None).next_back() {
        let (key, _) = item?;
        if let Some(id) = key_id(&key) {
            next_id = next_id.max(id + 1);
        }
    }
    let counts = tree
        .get(META_COUNTS)?
        .and_then(|v| Counts::decode(&v))
        .unwrap_or_default();
    let horizon = tree
        .get(META_HORIZON)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    Ok(WriteState {
        next_id,
        counts,
        horizon,
    })
}

/// Verifies the newest `n` events' derived entries; rebuilds them all if
/// that (or loading the runs: `damaged`) found problems.
fn verify_on_open(core: &Core, n: usize, damaged: Vec<String>) -> Result<OpenReport, StoreError> {
    let mut report = OpenReport {
        problems: damaged,
        ..OpenReport::default()
    };
    let interrupted = core.tree().get(META_REBUILDING)?.is_some();
    if n > 0 && report.problems.is_empty() && !interrupted {
        let (checked, problems) = maintain::verify_tail(core, n)?;
        report.verified_events = checked;
        report.problems = problems.into_iter().take(20).collect();
    }
    if interrupted || !report.problems.is_empty() {
        tracing::warn!(
            problems = ?report.problems, interrupted,
            "the store's dedupe entries or indexes do not match its events; rebuilding them"
        );
        let summary = maintain::rebuild(core)?;
        tracing::info!(events = summary.events, "indexes rebuilt");
        report.rebuilt = true;
    }
    Ok(report)
}

/// One retention run, counted.
pub(crate) fn retention_run(
    core: &Arc<Core>,
    cutoff_ms: i64,
) -> Result<RetentionSummary, StoreError> {
    let sinks = sinks::Sinks::open(core.db())?;
    let summary = maintain::retention(core, cutoff_ms, &|| sinks.hold(now_ms()), &mut || {})?;
    // Parked entries whose events are gone (past a sink's `max_lag_days`;
    // also those a crash right after a removal left).
    let horizon = core.counters().horizon.load(Ordering::Relaxed);
    let unparked = sinks::Sinks::open_writable(core)?.drop_parked_below(horizon)?;
    if unparked > 0 {
        tracing::warn!(
            parked_events = unparked,
            "retention removed parked events older than their sink's max_lag_days"
        );
    }
    let c = &core.counters();
    c.retention_runs.fetch_add(1, Ordering::Relaxed);
    c.retention_events_removed
        .fetch_add(summary.events_removed, Ordering::Relaxed);
    c.retention_quarantine_removed
        .fetch_add(summary.quarantine_removed, Ordering::Relaxed);
    c.retention_events_held
        .store(summary.events_held, Ordering::Relaxed);
    c.retention_last_ms
        .store(now_ms().max(1) as u64, Ordering::Relaxed);
    Ok(summary)
}

fn spawn_retention(core: Arc<Core>, days: u64, every: Duration) -> Result<Background, StoreError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let period_ms = i64::try_from(days)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000);
    let thread = thread::Builder::new()
        .name("auditsink-store-retention".into())
        .spawn(move || loop {
            let cutoff = now_ms().saturating_sub(period_ms);
            match retention_run(&core, cutoff) {
                Ok(summary) => {
                    if summary != RetentionSummary::default() {
                        tracing::info!(
                            events = summary.events_removed,
                            quarantined = summary.quarantine_removed,
                            retention_days = days,
                            "retention removed expired records"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "retention run failed; will retry"),
            }
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        })
        .map_err(|source| StoreError::Io {
            path: "retention thread".into(),
            source,
        })?;
    Ok(Background {
        stop: Some(stop),
        thread: Some(thread),
    })
}
