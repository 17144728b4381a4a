//! The single writer thread and its group commit.
//!
//! Every batch is applied in its own sled transaction (atomic: a crash leaves
//! all of it or none of it), then the whole group that was waiting is made
//! durable by one `flush`, and only then is each caller answered. One writer
//! also makes "is this identity already stored?" and "store it" a single step
//! without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::oneshot;

use crate::keys::{identity, Trees};
use crate::record::{encode_event, encode_quarantine};
use crate::{AppendSummary, Batch, StoreError};

/// Upper bound on batches sharing one flush, so the first caller of a long
/// queue is not kept waiting behind an unbounded group.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<AppendSummary, StoreError>>;

struct Job {
    batch: Batch,
    reply: Reply,
}

/// Group-commit counters: how many batches shared how many flushes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub flushes: AtomicU64,
}

pub(crate) struct Handle {
    pub counters: Arc<Counters>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Handle {
    /// Closes the queue and waits for the writer to finish what it holds, so
    /// that once the last `Store` clone is gone the directory can be reopened.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Handle {
    pub fn submit(
        &self,
        batch: Batch,
    ) -> Result<oneshot::Receiver<Result<AppendSummary, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Job { batch, reply })
            .map_err(|_| StoreError::WriterGone)?;
        Ok(receiver)
    }
}

pub(crate) fn spawn(db: sled::Db, trees: Trees) -> Result<Handle, StoreError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let counters = Arc::new(Counters::default());
    let thread_counters = counters.clone();
    let thread = thread::Builder::new()
        .name("auditsink-store-writer".into())
        .spawn(move || run(&db, &trees, &queue, &thread_counters))
        .map_err(|source| StoreError::Io {
            path: "writer thread".into(),
            source,
        })?;
    Ok(Handle {
        counters,
        jobs: Some(jobs),
        thread: Some(thread),
    })
}

fn run(db: &sled::Db, trees: &Trees, queue: &mpsc::Receiver<Job>, counters: &Counters) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results: Vec<_> = group
            .iter()
            .map(|job| apply(db, trees, &job.batch))
            .collect();
        let flushed = db.flush();
        counters
            .batches
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        counters.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "store flush failed; answering the group with an error");
        }
        for (job, result) in group.into_iter().zip(results) {
            let answer = match &flushed {
                Ok(_) => result,
                Err(e) => Err(StoreError::Sled(e.clone())),
            };
            // The caller may have gone away (client disconnected): nothing to do.
            let _ = job.reply.send(answer);
        }
    }
}

/// Applies one batch atomically. Ids are drawn before the transaction because
/// its closure may run more than once; an id left unused is only a gap.
fn apply(db: &sled::Db, trees: &Trees, batch: &Batch) -> Result<AppendSummary, StoreError> {
    let event_ids = (0..batch.events.len())
        .map(|_| db.generate_id())
        .collect::<Result<Vec<_>, _>>()?;
    let quarantine_ids = (0..batch.quarantine.len())
        .map(|_| db.generate_id())
        .collect::<Result<Vec<_>, _>>()?;
    let identities: Vec<Vec<u8>> = batch.events.iter().map(identity).collect();

    let result = (&trees.events, &trees.dedupe, &trees.quarantine).transaction(
        |(events, dedupe, quarantine)| {
            let mut summary = AppendSummary::default();
            for ((event, id), key) in batch.events.iter().zip(&event_ids).zip(&identities) {
                if dedupe.get(key)?.is_some() {
                    summary.duplicates += 1;
                    continue;
                }
                let id = id.to_be_bytes();
                dedupe.insert(key.as_slice(), &id)?;
                events.insert(
                    &id,
                    encode_event(batch.received_at_ms, &batch.source, event),
                )?;
                summary.stored += 1;
            }
            for (line, id) in batch.quarantine.iter().zip(&quarantine_ids) {
                quarantine.insert(
                    &id.to_be_bytes(),
                    encode_quarantine(batch.received_at_ms, &batch.source, line),
                )?;
                summary.quarantined += 1;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(summary)
        },
    );
    match result {
        Ok(summary) => Ok(summary),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
    }
}
