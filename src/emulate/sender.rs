//! The live sender: while a channel's webhook is enabled, events are
//! generated at `--rate`, stamped with the time they are due, and every
//! `--batch-interval-ms` the ones due since are delivered as one batch
//! (each batch on its own task, so a batch in its retries does not hold up
//! the next, as Konnect's do not).

use std::collections::VecDeque;
use std::sync::Arc;

use super::delivery::deliver;
use super::state::{lock, now_ms, Channel, Emulator, Generated};

/// Konnect keeps audit logs this long: older events are not replayed.
pub const KEEP_MS: i64 = 7 * 86_400_000;

/// Runs until the process ends.
pub async fn run(emulator: Arc<Emulator>) {
    let mut tick = tokio::time::interval(emulator.settings.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for channel in emulator.channels() {
            let Some(target) = emulator.target(&channel) else {
                *lock(&channel.next_due_ms) = None;
                continue;
            };
            let batch = generate(&emulator, &channel, now_ms());
            if batch.is_empty() {
                continue;
            }
            let emulator = emulator.clone();
            tokio::spawn(async move {
                deliver(&emulator, &channel, &target, &batch, false).await;
            });
        }
    }
}

/// The events due on `channel` up to `now` (none on the first tick after
/// the webhook was enabled: generation starts then), kept for replays.
fn generate(emulator: &Emulator, channel: &Channel, now: i64) -> Vec<Generated> {
    let format = match emulator.target(channel) {
        Some(target) => target.log_format.output(),
        None => return Vec::new(),
    };
    let step = 1000.0 / emulator.settings.rate;
    let mut due = lock(&channel.next_due_ms);
    let mut next = due.unwrap_or(now as f64 + step);
    let mut batch = Vec::new();
    let mut events = lock(&channel.events);
    while next <= now as f64 {
        let rt_ms = next as i64;
        next += step;
        match events.next_line(rt_ms, &emulator.key, format) {
            Ok(line) => batch.push(Generated {
                seq: emulator.next_seq(),
                rt_ms,
                line: line.into(),
            }),
            Err(e) => eprintln!("auditsink emulate konnect: cannot render an event: {e:#}"),
        }
    }
    *due = Some(next);
    drop(events);
    drop(due);
    let mut history = lock(&channel.history);
    history.extend(batch.iter().cloned());
    trim(&mut history, emulator.settings.keep, now - KEEP_MS);
    batch
}

/// Keeps at most `keep` events, none older than `oldest_ms`.
fn trim(history: &mut VecDeque<Generated>, keep: usize, oldest_ms: i64) {
    while history.len() > keep || history.front().is_some_and(|e| e.rt_ms < oldest_ms) {
        history.pop_front();
    }
}
