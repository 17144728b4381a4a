//! Replay jobs: one per channel at a time, over the events generated in
//! the window (up to 7 days back), redelivered in order, in batches, with
//! the same retry rules as live deliveries. A job goes accepted, pending,
//! running, then completed, or failed when a batch was dropped or the
//! webhook cannot be delivered to.

use std::sync::Arc;

use super::delivery::deliver;
use super::sender::KEEP_MS;
use super::state::{lock, now_ms, Channel, Emulator, Job, JobStatus};

/// Events per replayed batch.
const REPLAY_BATCH: usize = 500;

/// Why a job was refused: (status code, detail).
pub type Refusal = (u16, String);

/// Checks a window and starts a job for it on `channel`.
pub fn start(
    emulator: &Arc<Emulator>,
    channel: &Arc<Channel>,
    start_ms: i64,
    end_ms: i64,
) -> Result<Job, Refusal> {
    let now = now_ms();
    if start_ms < now - KEEP_MS {
        return Err((
            400,
            "start_at is more than 7 days ago: audit logs are kept for 7 days".into(),
        ));
    }
    if start_ms >= now {
        return Err((400, "start_at is in the future".into()));
    }
    if end_ms <= start_ms {
        return Err((400, "end_at must be after start_at".into()));
    }
    let mut slot = lock(&channel.job);
    if slot.as_ref().is_some_and(|job| job.status.under_way()) {
        return Err((
            409,
            "a replay job is already in progress; wait for it to complete".into(),
        ));
    }
    let job = Job {
        start_ms,
        end_ms: end_ms.min(now),
        status: JobStatus::Accepted,
        updated_ms: now,
    };
    *slot = Some(job.clone());
    drop(slot);
    tokio::spawn(run(emulator.clone(), channel.clone()));
    Ok(job)
}

fn set_status(channel: &Channel, status: JobStatus) -> Option<Job> {
    let mut slot = lock(&channel.job);
    let job = slot.as_mut()?;
    job.status = status;
    job.updated_ms = now_ms();
    Some(job.clone())
}

async fn run(emulator: Arc<Emulator>, channel: Arc<Channel>) {
    let delay = emulator.settings.job_delay;
    tokio::time::sleep(delay).await;
    set_status(&channel, JobStatus::Pending);
    tokio::time::sleep(delay).await;
    let Some(job) = set_status(&channel, JobStatus::Running) else {
        return;
    };
    let events: Vec<_> = lock(&channel.history)
        .iter()
        .filter(|e| e.rt_ms >= job.start_ms && e.rt_ms < job.end_ms)
        .cloned()
        .collect();
    let outcome = match emulator.target(&channel) {
        None => JobStatus::Failed,
        Some(target) => {
            let mut outcome = JobStatus::Completed;
            for batch in events.chunks(REPLAY_BATCH) {
                if !deliver(&emulator, &channel, &target, batch, true).await {
                    outcome = JobStatus::Failed;
                }
            }
            outcome
        }
    };
    set_status(&channel, outcome);
}
