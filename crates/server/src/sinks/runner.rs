//! One sink's loop: read the events after its cursor, send them as a
//! batch, and move the cursor only once the destination acknowledged.
//!
//! ```text
//! read state ─► read batch after cursor ─► mark in_flight (durable) ─► send
//!     ▲                                                                 │
//!     └──── commit cursor, counters, parked events (durable) ◄──────────┘
//! ```
//!
//! A `kill -9` anywhere leaves the cursor at the last acknowledged batch;
//! the next run sends the rest again, and the events up to the in-flight
//! mark (the ones that may have arrived) are counted as `resent`. A
//! destination that fails is retried with exponential backoff and jitter
//! (1 s doubling up to `retry_max_secs`) forever; events it refuses for
//! good are parked and the cursor moves past them, and so are events whose
//! stored record is damaged (a chunk that does not read is parked as one
//! entry for its ids, under its first; a failed read or write stops the
//! sink instead, to be retried). `sink retry` reads such an entry's ids
//! again and sends every event of them that reads now.
//!
//! Why one piece (about 770 lines): the order of the durable writes, the
//! read ahead, the resend counting and the retries together make the
//! guarantee; split, each part's correctness would rest on another file.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditsink_storage::{ForwardEvent, ParkedEvent, SinkState, SinkUpdateError, Store, StoreError};
use rand::Rng;
use tokio::sync::watch;

use super::destination::{damaged_reason, Destination, ItemOutcome, SendFailure, DAMAGED_RECORD};
use super::health::SinkHealth;
use crate::state::now_ms;

/// How often an idle sink looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// The first wait after a failure.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Events counted for `lag_events` at most.
const LAG_CAP: u64 = 100_000;
/// How often the lag is counted while the sink is busy.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// What one sink needs to run.
pub struct Runner {
    /// The sink's name (its state's key in the store).
    pub name: String,
    /// The store.
    pub store: Store,
    /// Where events go.
    pub destination: Box<dyn Destination>,
    /// Sources forwarded (empty: all).
    pub sources: HashSet<String>,
    /// Most events per batch.
    pub batch_max_events: usize,
    /// Most bytes per batch (about).
    pub batch_max_bytes: usize,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Its live status.
    pub health: Arc<SinkHealth>,
    /// The next batch, already read and marked in flight.
    pub(super) prefetched: Option<Prefetched>,
    /// The lag being counted in the background, if it is.
    pub(super) lag_count: Option<tokio::task::JoinHandle<()>>,
}

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            max: max.max(BACKOFF_MIN),
        }
    }

    /// The next wait: between half and all of the current step (jitter,
    /// so that sinks restarted together do not retry together); the step doubles.
    fn wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What one step did.
enum Step {
    /// Nothing to send.
    Idle,
    /// Moved on.
    Progress,
}

/// Why a step stopped.
enum Stopped {
    /// The server is stopping.
    Shutdown,
    /// The destination failed.
    Failed(SendFailure),
}

impl From<auditsink_storage::StoreError> for Stopped {
    fn from(e: auditsink_storage::StoreError) -> Stopped {
        Stopped::Failed(SendFailure::refused(format!("store: {e}")))
    }
}

/// How many of `events` may have reached the destination already (their
/// ids are not above the in-flight mark).
fn resends(events: &[ForwardEvent], in_flight: u64) -> u64 {
    events.iter().filter(|e| e.id <= in_flight).count() as u64
}

/// The next batch, read and marked in flight with the last batch's cursor.
pub(super) struct Prefetched {
    /// The cursor it follows.
    after: u64,
    read: Read,
    /// The in-flight mark before it was marked.
    prior_in_flight: u64,
    /// Resends counted when it was marked.
    counted_resent: u64,
}

/// A read in progress.
type Reading = tokio::task::JoinHandle<Result<Read, auditsink_storage::StoreError>>;

/// What reading a batch found.
struct Read {
    events: Vec<ForwardEvent>,
    /// The last id looked at (events of other sources included): the
    /// cursor once the batch is delivered.
    end: Option<u64>,
    /// Records among them that do not decode, parked with the batch.
    damaged: Vec<ParkedEvent>,
}

impl Runner {
    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.retry_max);
        let mut last_lag = Instant::now() - LAG_EVERY;
        tracing::info!(sink = %self.name, "sink started");
        loop {
            if *stop.borrow() {
                break;
            }
            let step = self.step(&mut stop).await;
            match step {
                Ok(Step::Progress) => {
                    backoff.reset();
                    if last_lag.elapsed() >= LAG_EVERY {
                        self.count_lag_meanwhile();
                        last_lag = Instant::now();
                    }
                }
                Ok(Step::Idle) => {
                    backoff.reset();
                    self.settle_lag().await;
                    self.health.set_lag(Default::default());
                    if pause(&mut stop, IDLE_POLL).await {
                        break;
                    }
                }
                Err(Stopped::Shutdown) => break,
                Err(Stopped::Failed(failure)) => {
                    self.health.failed(&failure.error, failure.configuration);
                    let wait = backoff.wait();
                    tracing::warn!(sink = %self.name, error = %failure.error, retry_in = ?wait, "sink delivery failed");
                    self.settle_lag().await;
                    self.refresh_lag().await;
                    if pause(&mut stop, wait).await {
                        break;
                    }
                }
            }
        }
        self.settle_lag().await;
        tracing::info!(sink = %self.name, "sink stopped");
    }

    /// Counts the lag on a blocking thread while the sink goes on (a count
    /// reads up to `LAG_CAP` events: waiting for it would stop forwarding
    /// for as long); one count at a time.
    fn count_lag_meanwhile(&mut self) {
        if self
            .lag_count
            .as_ref()
            .is_some_and(|count| !count.is_finished())
        {
            return;
        }
        let store = self.store.clone();
        let health = self.health.clone();
        let cursor = health.snapshot().state.cursor;
        self.lag_count = Some(tokio::task::spawn_blocking(move || {
            if let Ok(lag) = store.sink_lag(cursor, LAG_CAP) {
                health.set_lag(lag);
            }
        }));
    }

    /// Waits for a count [`Runner::count_lag_meanwhile`] started, so that
    /// it does not overwrite a lag set after it.
    async fn settle_lag(&mut self) {
        if let Some(count) = self.lag_count.take() {
            let _ = count.await;
        }
    }

    async fn refresh_lag(&mut self) {
        let store = self.store.clone();
        let cursor = self.health.snapshot().state.cursor;
        if let Ok(Ok(lag)) =
            tokio::task::spawn_blocking(move || store.sink_lag(cursor, LAG_CAP)).await
        {
            self.health.set_lag(lag);
        }
    }

    fn state(&self) -> Result<SinkState, Stopped> {
        self.store.sink_state(&self.name)?.ok_or_else(|| {
            Stopped::Failed(SendFailure::refused(
                "the sink's state is missing from the store",
            ))
        })
    }

    /// Shows `state`; counts the parked events again when they changed.
    fn publish(&self, state: &SinkState, parked_changed: bool) {
        let parked = if parked_changed {
            self.store.sink_parked_count(&self.name).unwrap_or(0)
        } else {
            self.health.snapshot().parked
        };
        self.health.set_state(state, parked);
    }

    /// One batch: parked events asked to be retried first, then new ones.
    async fn step(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Step, Stopped> {
        let state = self.state()?;
        self.publish(&state, false);
        if state.retry_pending && self.retry_parked(&state, stop).await? {
            return Ok(Step::Progress);
        }
        let (read, premarked) = match self.prefetched.take() {
            Some(next)
                if next.after == state.cursor
                    && next.read.end.is_some_and(|end| end <= state.in_flight) =>
            {
                (next.read, Some((next.prior_in_flight, next.counted_resent)))
            }
            _ => (self.read(state.cursor).await?, None),
        };
        let Some(end) = read.end else {
            return Ok(Step::Idle);
        };
        if read.events.is_empty() {
            // Only events of other sources (or damaged): move past them.
            let new = SinkState {
                cursor: end,
                in_flight: state.in_flight.max(end),
                parked_total: state.parked_total + id_count(&read.damaged),
                ..state.clone()
            };
            if self.commit(&state, &new, &read.damaged, &[])? {
                self.log_parked(&read.damaged);
            }
            return Ok(Step::Progress);
        }
        // Before sending: a restart must know these may have arrived; and
        // the resends are counted now, as a crash during this send would
        // leave copies at the destination too. (A batch read ahead was
        // marked with the last batch's cursor, in the same write.)
        let marked = match premarked {
            Some(_) => state.clone(),
            None => SinkState {
                in_flight: state.in_flight.max(end),
                resent: state.resent + resends(&read.events, state.in_flight),
                ..state.clone()
            },
        };
        if marked != state && !self.commit(&state, &marked, &[], &[])? {
            return Ok(Step::Progress);
        }
        // The next batch is read while this one is sent.
        let reading_next = self.start_read(end);
        let outcomes = match self.send_all(&read.events, stop).await {
            Ok(outcomes) => outcomes,
            Err(Stopped::Failed(failure)) if !failure.maybe_delivered => {
                // Nothing arrived: sent again, they are not resends.
                let undo = match premarked {
                    Some((prior_in_flight, counted)) => SinkState {
                        in_flight: prior_in_flight,
                        resent: marked.resent.saturating_sub(counted),
                        ..marked.clone()
                    },
                    None => state.clone(),
                };
                if undo != marked {
                    let _ = self.commit(&marked, &undo, &[], &[]);
                }
                return Err(Stopped::Failed(failure));
            }
            Err(e) => return Err(e),
        };
        let (delivered, mut parked) = tally(&read.events, outcomes);
        parked.extend(read.damaged.iter().cloned());
        // Read the next batch now and mark it in flight in the same write
        // as this batch's cursor: one durable write per batch.
        let next = match self.finish_read(reading_next).await {
            Ok(next) if next.end.is_some() && !next.events.is_empty() => Some(next),
            _ => None,
        };
        let next_resent = next
            .as_ref()
            .map_or(0, |next| resends(&next.events, marked.in_flight));
        let new = SinkState {
            cursor: end,
            in_flight: marked
                .in_flight
                .max(next.as_ref().and_then(|n| n.end).unwrap_or(end)),
            delivered: marked.delivered + delivered,
            resent: marked.resent + next_resent,
            parked_total: marked.parked_total + id_count(&parked),
            ..marked.clone()
        };
        if self.commit(&marked, &new, &parked, &[])? {
            self.prefetched = next.map(|read| Prefetched {
                after: end,
                read,
                prior_in_flight: marked.in_flight,
                counted_resent: next_resent,
            });
            self.log_parked(&parked);
        }
        self.health.succeeded(now_ms());
        Ok(Step::Progress)
    }

    /// Logs the events just parked: a damaged stored record as an error
    /// (the store needs looking at), a refusal as a warning.
    fn log_parked(&self, parked: &[ParkedEvent]) {
        let (damaged, refused): (Vec<&ParkedEvent>, Vec<&ParkedEvent>) = parked
            .iter()
            .partition(|p| p.reason.starts_with(DAMAGED_RECORD));
        for p in damaged {
            tracing::error!(sink = %self.name, id = %auditsink_storage::format_id(p.id), reason = %p.reason, "an event's stored record is damaged; parked, the sink goes on");
        }
        if let Some(first) = refused.first() {
            tracing::warn!(sink = %self.name, parked = refused.len(), reason = %first.reason, "destination refused events for good; parked");
        }
    }

    /// Commits a state change; whether it applied: a change made
    /// meanwhile (a rewind, a retry) wins, and the step is redone from it.
    fn commit(
        &self,
        expected: &SinkState,
        new: &SinkState,
        parked: &[ParkedEvent],
        unparked: &[u64],
    ) -> Result<bool, Stopped> {
        match self
            .store
            .sink_commit(&self.name, expected, new, parked, unparked)
        {
            Ok(()) => {
                self.publish(new, !parked.is_empty() || !unparked.is_empty());
                Ok(true)
            }
            Err(SinkUpdateError::Changed) => {
                tracing::info!(sink = %self.name, "sink state changed meanwhile (rewind or retry); going on from it");
                Ok(false)
            }
            Err(SinkUpdateError::Store(e)) => Err(e.into()),
        }
    }

    /// The events after `cursor` of the forwarded sources, within the
    /// batch limits.
    async fn read(&mut self, cursor: u64) -> Result<Read, Stopped> {
        let reading = self.start_read(cursor);
        self.finish_read(reading).await
    }

    /// Starts reading the events after `cursor` on a blocking thread (so
    /// that the next batch is read while this one is sent).
    fn start_read(&self, cursor: u64) -> Reading {
        let store = self.store.clone();
        let sources = self.sources.clone();
        let max_events = self.batch_max_events;
        let scan_max = max_events.saturating_mul(8).max(1000);
        tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let mut damaged = Vec::new();
            let mut end = None;
            for (scanned, event) in store.forward_events(cursor)?.enumerate() {
                match event {
                    Ok(event) => {
                        end = Some(event.id);
                        if sources.is_empty() || sources.contains(event.source()) {
                            events.push(event);
                        }
                    }
                    // Whichever source it came from: parked, for the
                    // operator to see.
                    Err(StoreError::DamagedEvent { id, reason }) => {
                        end = Some(id);
                        damaged.push(damaged_parked(id, &reason));
                    }
                    // One entry, under its first id, for the ids it held.
                    Err(StoreError::DamagedChunk {
                        first,
                        last,
                        reason,
                    }) => {
                        end = Some(last);
                        damaged.push(damaged_chunk_parked(first, last, &reason));
                    }
                    Err(e) => return Err(e),
                }
                if events.len() >= max_events || scanned + 1 >= scan_max {
                    break;
                }
            }
            Ok(Read {
                events,
                end,
                damaged,
            })
        })
    }

    /// The batch a [`Runner::start_read`] read, within `batch_max_bytes`.
    async fn finish_read(&mut self, reading: Reading) -> Result<Read, Stopped> {
        let Read {
            events,
            mut end,
            mut damaged,
        } = reading
            .await
            .map_err(|e| Stopped::Failed(SendFailure::refused(format!("reading: {e}"))))??;
        let kept = self.batch_len(&events);
        let mut events = events;
        if kept < events.len() {
            events.truncate(kept);
            end = events.last().map(|e| e.id);
            damaged.retain(|d| Some(d.id) <= end);
        }
        Ok(Read {
            events,
            end,
            damaged,
        })
    }

    /// Sends `events` until each has an outcome: per-event retries alone
    /// (with backoff), a request refused for good in halves down to the
    /// events it refuses (parked).
    async fn send_all(
        &mut self,
        events: &[ForwardEvent],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<ItemOutcome>, Stopped> {
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; events.len()];
        let mut groups: VecDeque<Vec<usize>> = VecDeque::from([(0..events.len()).collect()]);
        let mut backoff = Backoff::new(self.retry_max);
        let mut first = true;
        while let Some(group) = groups.pop_front() {
            let owned: Vec<ForwardEvent>;
            let batch: &[ForwardEvent] = if first {
                events
            } else {
                owned = group.iter().map(|&i| events[i].clone()).collect();
                &owned
            };
            let sent = tokio::select! {
                sent = self.destination.send(batch) => sent,
                _ = stop.wait_for(|stopping| *stopping) => return Err(Stopped::Shutdown),
            };
            first = false;
            match sent {
                Ok(results) if results.len() == group.len() => {
                    let mut again = Vec::new();
                    for (&i, result) in group.iter().zip(results) {
                        match result {
                            ItemOutcome::Retry(why) => {
                                tracing::debug!(sink = %self.name, id = events[i].id, %why, "event sent again alone");
                                again.push(i);
                            }
                            done => outcomes[i] = Some(done),
                        }
                    }
                    if !again.is_empty() {
                        self.health.failed(
                            "some events were refused for now; sending them again",
                            false,
                        );
                        if pause(stop, backoff.wait()).await {
                            return Err(Stopped::Shutdown);
                        }
                        groups.push_back(again);
                    }
                }
                Ok(results) => {
                    return Err(Stopped::Failed(SendFailure::unknown(format!(
                        "the destination gave {} outcomes for {} events",
                        results.len(),
                        group.len()
                    ))))
                }
                Err(failure) => match failure.permanent {
                    Some(answer) if group.len() == 1 => {
                        outcomes[group[0]] = Some(ItemOutcome::Park {
                            reason: failure.error,
                            answer,
                        });
                    }
                    Some(_) => {
                        let (left, right) = group.split_at(group.len() / 2);
                        groups.push_front(right.to_vec());
                        groups.push_front(left.to_vec());
                    }
                    None => {
                        let some_arrived = outcomes
                            .iter()
                            .any(|o| matches!(o, Some(ItemOutcome::Delivered)));
                        return Err(Stopped::Failed(SendFailure {
                            maybe_delivered: failure.maybe_delivered || some_arrived,
                            ..failure
                        }));
                    }
                },
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ItemOutcome::Retry("no outcome".into())))
            .collect())
    }

    /// Sends `events` in batches within the batch limits, each until
    /// every event of it has an outcome (see [`Runner::send_all`]).
    async fn send_batches(
        &mut self,
        events: &[ForwardEvent],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<ItemOutcome>, Stopped> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut start = 0;
        while start < events.len() {
            let end = start + self.batch_len(&events[start..]);
            outcomes.extend(self.send_all(&events[start..end], stop).await?);
            start = end;
        }
        Ok(outcomes)
    }

    /// How many of `events`, from the first, make one batch: within
    /// `batch_max_events` and `batch_max_bytes`, and at least one.
    fn batch_len(&self, events: &[ForwardEvent]) -> usize {
        let mut bytes = 0;
        for (i, event) in events.iter().enumerate().take(self.batch_max_events) {
            bytes += self.destination.size_hint(event);
            if bytes > self.batch_max_bytes && i > 0 {
                return i;
            }
        }
        events.len().min(self.batch_max_events.max(1))
    }

    /// Sends the parked events `sink retry` marked; whether there were
    /// any. Each entry's ids are read again (all of a damaged chunk's):
    /// the entry goes once each of them is delivered, parked anew (a
    /// record still damaged, an event refused again) or no longer stored
    /// (removed by retention); it stays as it is while its chunk still
    /// does not read.
    async fn retry_parked(
        &mut self,
        state: &SinkState,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, Stopped> {
        let marked: Vec<ParkedEvent> = self
            .store
            .sink_parked(&self.name, usize::MAX)?
            .into_iter()
            .filter(|p| p.retry)
            .take(self.batch_max_events)
            .collect();
        if marked.is_empty() {
            // Every marked one went out: the request is done.
            let done = SinkState {
                retry_pending: false,
                retry_in_flight: 0,
                ..state.clone()
            };
            self.commit(state, &done, &[], &[])?;
            // Read the state again before going on.
            return Ok(true);
        }
        let mut events = Vec::new();
        let mut unparked = Vec::new();
        let mut parked_again = Vec::new();
        let mut retried = 0;
        for parked in &marked {
            // About a batch a step (a chunk's entry may hold many); the
            // rest stay marked for the next.
            if !events.is_empty() && events.len() >= self.batch_max_events {
                break;
            }
            retried += 1;
            match self.read_parked(parked)? {
                Some(read) => {
                    unparked.push(parked.id);
                    events.extend(read.events);
                    parked_again.extend(read.damaged);
                }
                // Its chunk still does not read: parked as it was.
                None => parked_again.push(ParkedEvent {
                    retry: false,
                    parked_at_ms: now_ms(),
                    ..parked.clone()
                }),
            }
        }
        // Marked before sending, as the forwarding marks in_flight: this
        // step sent again after a crash counts what the last one may have
        // delivered as resends.
        let sending;
        let state = if events.is_empty() {
            state
        } else {
            sending = SinkState {
                retry_in_flight: events.len() as u64,
                resent: state.resent + state.retry_in_flight.min(events.len() as u64),
                ..state.clone()
            };
            if !self.commit(state, &sending, &[], &[])? {
                return Ok(true);
            }
            &sending
        };
        let outcomes = self.send_batches(&events, stop).await?;
        let (delivered, refused) = tally(&events, outcomes);
        parked_again.extend(refused);
        let new = SinkState {
            delivered: state.delivered + delivered,
            retry_in_flight: 0,
            ..state.clone()
        };
        // An entry unparked and parked again (still damaged, refused
        // again) is replaced.
        self.commit(state, &new, &parked_again, &unparked)?;
        self.health.succeeded(now_ms());
        tracing::info!(sink = %self.name, retried, events = events.len(), delivered, parked = parked_again.len(), "parked events sent again");
        Ok(true)
    }

    /// The ids of a parked entry read again: the events among them of the
    /// forwarded sources, and the parked entries of those that still do
    /// not read (ids no longer stored are left out). `None` when the
    /// whole entry still does not read.
    fn read_parked(&self, parked: &ParkedEvent) -> Result<Option<Reread>, StoreError> {
        let last = parked.last;
        let mut read = Reread::default();
        for item in self.store.forward_events(parked.id.saturating_sub(1))? {
            let reached = match item {
                Ok(event) if event.id > last => break,
                Ok(event) => {
                    let id = event.id;
                    if self.sources.is_empty() || self.sources.contains(event.source()) {
                        read.events.push(event);
                    }
                    id
                }
                Err(StoreError::DamagedEvent { id, .. }) if id > last => break,
                Err(StoreError::DamagedEvent { id, reason }) => {
                    read.damaged.push(damaged_parked(id, &reason));
                    id
                }
                Err(StoreError::DamagedChunk { first, .. }) if first > last => break,
                Err(StoreError::DamagedChunk {
                    first,
                    last: chunk_last,
                    ..
                }) if first <= parked.id && chunk_last >= last => return Ok(None),
                // Part of the entry's ids (the chunks were rewritten since).
                Err(StoreError::DamagedChunk {
                    first,
                    last: chunk_last,
                    reason,
                }) => {
                    let chunk_last = chunk_last.min(last);
                    read.damaged
                        .push(damaged_chunk_parked(first, chunk_last, &reason));
                    chunk_last
                }
                Err(e) => return Err(e),
            };
            if reached >= last {
                break;
            }
        }
        Ok(Some(read))
    }
}

/// A parked entry's ids read again.
#[derive(Default)]
struct Reread {
    /// Its events that read, to send.
    events: Vec<ForwardEvent>,
    /// Parked entries for its ids that still do not read.
    damaged: Vec<ParkedEvent>,
}

/// How many ids `parked` stand for.
fn id_count(parked: &[ParkedEvent]) -> u64 {
    parked.iter().map(ParkedEvent::id_count).sum()
}

/// Counts the delivered events and makes the parked entries.
fn tally(events: &[ForwardEvent], outcomes: Vec<ItemOutcome>) -> (u64, Vec<ParkedEvent>) {
    let mut delivered = 0;
    let mut parked = Vec::new();
    let now = now_ms();
    for (event, outcome) in events.iter().zip(outcomes) {
        match outcome {
            ItemOutcome::Delivered => delivered += 1,
            ItemOutcome::Park { reason, answer } => parked.push(ParkedEvent {
                id: event.id,
                last: event.id,
                reason,
                answer,
                parked_at_ms: now,
                retry: false,
            }),
            ItemOutcome::Retry(_) => {}
        }
    }
    (delivered, parked)
}

/// The parked entry of event `id`, whose stored record does not decode
/// (`why`): nothing was sent, so there is no answer.
fn damaged_parked(id: u64, why: &str) -> ParkedEvent {
    ParkedEvent {
        id,
        last: id,
        reason: damaged_reason(why),
        answer: String::new(),
        parked_at_ms: now_ms(),
        retry: false,
    }
}

/// The one parked entry of the ids `first` to `last` of a stored chunk
/// that does not read (`why`).
fn damaged_chunk_parked(first: u64, last: u64, why: &str) -> ParkedEvent {
    let why = format!("the whole chunk of events {first:016x} to {last:016x} does not read: {why}");
    ParkedEvent {
        last,
        ..damaged_parked(first, &why)
    }
}

/// Waits `duration`; true if the server is stopping.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    let stopping = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|stopping| *stopping) => true,
    };
    stopping || *stop.borrow()
}
