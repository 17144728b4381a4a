//! The group-commit pipeline: a writer thread and, beside it, a syncer, a
//! flusher and a merger, so that one group's fsyncs overlap the next
//! groups' CPU work. It knows nothing of what a group holds: the store on
//! top says how deliveries are staged and applied ([`GroupCommit`]).
//!
//! - The writer takes the deliveries queued meanwhile as one group (group
//!   commit) and, the write lock held, has them staged: what is new decided
//!   (against the identities of groups still in flight too), ids given,
//!   records appended to the log, the sled batch built. Then it goes on
//!   with the next group.
//! - The syncer takes every group staged meanwhile: one `fdatasync` of the
//!   log for all of them, then (the write lock held) each one applied in
//!   order.
//! - The flusher takes every group applied meanwhile: one sled flush (it
//!   covers everything applied before it started), and only then the
//!   answers.
//! - The merger merges the runs that piled up, beside all three.
//!
//! So sled never points at log bytes that are not on disk, an append is
//! answered only once all of it is durable, and N concurrent deliveries do
//! not cost N sequential fsyncs.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use crate::engine::database::Database;
use crate::engine::key_set::KeySet;
use crate::engine::runs::Key;
use crate::engine::write_lock::{InFlightToken, WriteGuard, WriteLock};
use crate::error::{StoreError, WriteFailure, WriteStep};

/// Upper bound on batches sharing one flush, so the first caller of a long
/// queue is not kept waiting behind an unbounded group.
const MAX_GROUP: usize = 256;

/// What the store on top of the pipeline does with a group: the pipeline
/// calls it from its threads, the write lock held where a guard is given.
pub(crate) trait GroupCommit: Sync + Sized {
    /// The write state behind the write lock.
    type State: Send;
    /// One caller's delivery, as queued.
    type Delivery: Send;
    /// What a caller is answered when its delivery is durable.
    type Summary: Send + Default;
    /// A group staged: in the log, not yet synced nor applied.
    type Staged: Send;

    /// The database the groups are written to.
    fn database(&self) -> &Database;

    /// The write lock over [`GroupCommit::State`].
    fn write_lock(&self) -> &WriteLock<Self::State>;

    /// Whether a delivery has anything to store (an empty one, such as a
    /// readiness probe, proves little about the disk).
    fn stores_something(delivery: &Self::Delivery) -> bool;

    /// Stages a group: each delivery's outcome (a delivery may fail alone),
    /// the staged write and the identities it stores, which later groups
    /// must treat as stored until it is applied. `in_flight` holds those of
    /// the groups staged before and not yet applied.
    #[allow(clippy::type_complexity)]
    fn stage(
        &self,
        guard: &mut WriteGuard<'_, Self, Self::State>,
        group: Vec<Self::Delivery>,
        in_flight: &KeySet,
    ) -> Result<(Self::Staged, Vec<Key>, Outcomes<Self::Summary>), StoreError>;

    /// Whether a staged group appended to the log (which must be synced
    /// before it is applied).
    fn appended(staged: &Self::Staged) -> bool;

    /// Applies a staged group atomically, its log appends synced.
    fn apply(
        staged: Self::Staged,
        guard: &WriteGuard<'_, Self, Self::State>,
    ) -> Result<(), StoreError>;

    /// Every id below it was removed: what merges may drop.
    fn horizon(state: &Self::State) -> u64;

    /// Merges the runs that piled up, until none is left or `stop` says so.
    fn merge(&self, horizon: u64, stop: impl Fn() -> bool);

    /// Counts a flush of the pipeline's.
    fn count_flush(&self);

    /// Counts a group's deliveries, as they are answered.
    fn count_deliveries(&self, deliveries: u64);

    /// Counts what a delivery answered with success stored.
    fn count_stored(&self, summary: &Self::Summary);
}

/// Each delivery's summary, or why that delivery alone failed.
pub(crate) type Outcomes<T> = Vec<Result<T, StoreError>>;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

struct Job<C: GroupCommit> {
    delivery: C::Delivery,
    reply: Reply<C::Summary>,
}

/// The pipeline's queue; dropping it stops the threads once they have
/// answered what they hold.
pub(crate) struct Handle<C: GroupCommit> {
    jobs: Option<mpsc::Sender<Job<C>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<C: GroupCommit> Drop for Handle<C> {
    /// Closes the queue and waits for the writer to finish what it holds, so
    /// that once the last `Store` clone is gone the directory can be reopened.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<C: GroupCommit> Handle<C> {
    /// Queues a delivery; the answer comes once it is durable (or failed).
    pub fn submit(
        &self,
        delivery: C::Delivery,
    ) -> Result<oneshot::Receiver<Result<C::Summary, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Job { delivery, reply })
            .map_err(|_| StoreError::WriterGone)?;
        Ok(receiver)
    }
}

/// Starts the pipeline's threads over `core`.
pub(crate) fn spawn<C>(core: std::sync::Arc<C>) -> Result<Handle<C>, StoreError>
where
    C: GroupCommit + Send + 'static,
    C::Delivery: 'static,
    C::Summary: 'static,
{
    let (jobs, queue) = mpsc::channel::<Job<C>>();
    let thread = thread::Builder::new()
        .name("auditsink-store-writer".into())
        .spawn(move || run(&*core, &queue))
        .map_err(|source| StoreError::Io {
            path: "writer thread".into(),
            source,
        })?;
    Ok(Handle {
        jobs: Some(jobs),
        thread: Some(thread),
    })
}

/// The identities of the groups in flight, by group sequence number.
#[derive(Default)]
struct Pending {
    groups: VecDeque<(u64, Vec<Key>)>,
    keys: KeySet,
}

impl Pending {
    /// Forgets the groups the syncer applied (their keys are in the runs).
    fn prune(&mut self, applied: u64) {
        while self.groups.front().is_some_and(|(seq, _)| *seq < applied) {
            if let Some((_, keys)) = self.groups.pop_front() {
                for key in keys {
                    self.keys.remove(&key);
                }
            }
        }
    }

    fn add(&mut self, seq: u64, keys: Vec<Key>) {
        self.keys.extend(keys.iter().copied());
        self.groups.push_back((seq, keys));
    }
}

/// A group staged by the writer, on its way to the syncer.
struct InFlight<'a, C: GroupCommit> {
    seq: u64,
    replies: Vec<Reply<C::Summary>>,
    /// The staged write and each delivery's summary, or why the whole
    /// group failed.
    staged: Result<(C::Staged, Outcomes<C::Summary>), WriteFailure>,
    /// Counts a staged group in flight while it exists.
    token: Option<InFlightToken<'a, C::State>>,
    stores_something: bool,
}

/// Groups applied, with their answers once flushed.
type Applied<T> = Vec<(Vec<Reply<T>>, Result<Outcomes<T>, WriteFailure>, bool)>;

/// The writer thread (see the module's comment): stages each group and
/// hands it to the syncer.
fn run<C: GroupCommit>(core: &C, queue: &mpsc::Receiver<Job<C>>) {
    // Sequence number of the last group the syncer applied, plus one.
    let applied_seq = AtomicU64::new(0);
    let applied_seq = &applied_seq;
    thread::scope(|scope| {
        // Dropped when the writer stops, which stops the syncer.
        let (staged, syncer_queue) = mpsc::channel::<InFlight<C>>();
        let (applied, flusher_queue) = mpsc::channel::<Applied<C::Summary>>();
        // Dropped when the syncer stops, which stops the merger.
        let (wanted, merger_queue) = mpsc::channel::<()>();
        let syncer = thread::Builder::new()
            .name("auditsink-store-syncer".into())
            .spawn_scoped(scope, move || {
                sync_and_apply(core, &syncer_queue, &applied, &wanted, applied_seq)
            });
        let flusher = thread::Builder::new()
            .name("auditsink-store-flusher".into())
            .spawn_scoped(scope, move || flush_and_answer(core, &flusher_queue));
        let merger = thread::Builder::new()
            .name("auditsink-store-merger".into())
            .spawn_scoped(scope, move || merge_when_wanted(core, &merger_queue));
        if let Err(e) = syncer.and(flusher).and(merger) {
            tracing::error!(error = %e, "starting the store's syncer, flusher and merger threads failed");
            return;
        }
        let mut pending = Pending::default();
        let mut seq = 0;
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let (deliveries, replies): (Vec<C::Delivery>, Vec<Reply<C::Summary>>) = group
                .into_iter()
                .map(|job| (job.delivery, job.reply))
                .unzip();
            let stores_something = deliveries.iter().any(C::stores_something);
            pending.prune(applied_seq.load(Ordering::Acquire));
            // After a failed write or flush nothing more is accepted.
            let (staged_group, token) = match core.database().poison() {
                Some(e) => (Err(e), None),
                None => match stage_group(core, deliveries, &mut pending, seq) {
                    Ok((staged, outcomes, token)) => (Ok((staged, outcomes)), Some(token)),
                    Err(e) => (Err(WriteFailure::new(WriteStep::Stage, e)), None),
                },
            };
            let group = InFlight {
                seq,
                replies,
                staged: staged_group,
                token,
                stores_something,
            };
            seq += 1;
            if staged.send(group).is_err() {
                return;
            }
        }
    });
}

/// Stages a group under the writer's turn of the write lock and counts it
/// in flight.
#[allow(clippy::type_complexity)]
fn stage_group<'a, C: GroupCommit>(
    core: &'a C,
    group: Vec<C::Delivery>,
    pending: &mut Pending,
    seq: u64,
) -> Result<(C::Staged, Outcomes<C::Summary>, InFlightToken<'a, C::State>), StoreError> {
    let mut guard = core.write_lock().lock_for_writer(core);
    let (staged, keys, outcomes) = core.stage(&mut guard, group, &pending.keys)?;
    pending.add(seq, keys);
    Ok((staged, outcomes, guard.into_in_flight()))
}

/// The syncer (see the module's comment).
fn sync_and_apply<'a, C: GroupCommit>(
    core: &'a C,
    queue: &mpsc::Receiver<InFlight<'a, C>>,
    applied: &mpsc::Sender<Applied<C::Summary>>,
    merge_wanted: &mpsc::Sender<()>,
    applied_seq: &AtomicU64,
) {
    let database = core.database();
    while let Ok(first) = queue.recv() {
        let mut groups = vec![first];
        while let Ok(group) = queue.try_recv() {
            groups.push(group);
        }
        let appended = groups
            .iter()
            .any(|g| matches!(&g.staged, Ok((staged, _)) if C::appended(staged)));
        if appended {
            // A failure poisons the store: nothing below is applied.
            let _ = database.sync_log();
        }
        let mut answers = Vec::with_capacity(groups.len());
        let mut last_seq = 0;
        // Taken out first: they are dropped without the lock.
        let tokens: Vec<InFlightToken<C::State>> =
            groups.iter_mut().filter_map(|g| g.token.take()).collect();
        {
            let guard = core.write_lock().lock_now(core);
            for group in groups {
                last_seq = group.seq;
                let outcome = match group.staged {
                    Err(e) => Err(e),
                    Ok((staged, outcomes)) => {
                        let applied = match database.poison() {
                            Some(e) => Err(e),
                            None => C::apply(staged, &guard).map_err(|e| {
                                let failure = WriteFailure::new(WriteStep::Apply, e);
                                // Later groups were staged as if this one were
                                // stored: none of them may be answered 200.
                                database.set_poison(failure.clone());
                                failure
                            }),
                        };
                        applied.map(|()| outcomes)
                    }
                };
                answers.push((group.replies, outcome, group.stores_something));
            }
        }
        applied_seq.store(last_seq + 1, Ordering::Release);
        drop(tokens);
        // Runs merge on their own thread, their batches needing no flush
        // before the answers: the next groups are not held up behind them.
        if applied.send(answers).is_err() || merge_wanted.send(()).is_err() {
            return;
        }
    }
}

/// The merger (see the module's comment): merges the runs that piled up
/// whenever the syncer added some. It counts as a group in flight
/// meanwhile, so that maintenance, the only other thing that merges or
/// drops runs, waits for it. Between merges it gives way to maintenance
/// that is waiting (which holds up the writer too) and stops once the
/// syncer has stopped.
fn merge_when_wanted<C: GroupCommit>(core: &C, wanted: &mpsc::Receiver<()>) {
    let lock = core.write_lock();
    let mut asked = wanted.recv().is_ok();
    while asked {
        while wanted.try_recv().is_ok() {}
        if core.database().poison().is_some() {
            asked = wanted.recv().is_ok();
            continue;
        }
        let guard = lock.lock_for_merger(core);
        let horizon = C::horizon(&guard);
        let token = guard.into_in_flight();
        // A wake-up that arrives meanwhile means another pass.
        let again = Cell::new(false);
        let closed = Cell::new(false);
        let stop = || {
            match wanted.try_recv() {
                Ok(()) => again.set(true),
                Err(mpsc::TryRecvError::Disconnected) => closed.set(true),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            closed.get() || lock.lock_now(core).maintenance_waiting()
        };
        core.merge(horizon, stop);
        drop(token);
        asked = !closed.get() && (again.get() || wanted.recv().is_ok());
    }
}

/// The flusher (see the module's comment): one sled flush for every group
/// applied since the last one, then the answers.
fn flush_and_answer<C: GroupCommit>(core: &C, queue: &mpsc::Receiver<Applied<C::Summary>>) {
    while let Ok(mut answers) = queue.recv() {
        while let Ok(more) = queue.try_recv() {
            answers.extend(more);
        }
        let flushed = if answers.iter().any(|(_, o, _)| o.is_ok()) {
            core.count_flush();
            core.database().flush().map_err(|e| match e {
                StoreError::Flush(failure) => failure,
                other => WriteFailure::new(WriteStep::Flush, other),
            })
        } else {
            Ok(())
        };
        for (replies, outcome, stores_something) in answers {
            let outcome = outcome.and_then(|summaries| flushed.clone().map(|()| summaries));
            answer(core, replies, outcome, stores_something);
        }
    }
}

/// Answers a group's callers; a failure of the whole group is one answer
/// for all (it is one write).
fn answer<C: GroupCommit>(
    core: &C,
    replies: Vec<Reply<C::Summary>>,
    mut outcome: Result<Outcomes<C::Summary>, WriteFailure>,
    stores_something: bool,
) {
    core.count_deliveries(replies.len() as u64);
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "store {e}; answering the group with an error");
    }
    if stores_something {
        // The group's failure, else the first delivery that failed alone.
        let error = match &outcome {
            Err(e) => Some(e.to_string()),
            Ok(outcomes) => outcomes
                .iter()
                .find_map(|o| o.as_ref().err().map(|e| e.to_string())),
        };
        core.database().set_write_error(error);
    }
    for (i, reply) in replies.into_iter().enumerate() {
        let answer = match outcome
            .as_mut()
            .map(|o| std::mem::replace(&mut o[i], Ok(C::Summary::default())))
        {
            Ok(Ok(summary)) => {
                core.count_stored(&summary);
                Ok(summary)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StoreError::Flush(e.clone())),
        };
        // The caller may have gone away (client disconnected): nothing to do.
        let _ = reply.send(answer);
    }
}
