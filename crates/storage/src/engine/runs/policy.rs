//! When runs merge: the merge policy. How a merge is done (pages written
//! ahead, the manifest swapped, the trash emptied) is [`super::Runs`]'s.
//!
//! Size-tiered: once [`FANOUT`] runs of one size class (entries, in powers
//! of `FANOUT`) exist, the oldest `FANOUT` become one run, as long as it
//! stays under [`MAX_MERGED`] entries; a lookup reads about `FANOUT - 1`
//! runs per class plus the runs that reached the cap, one page each. A run
//! whose ids are all below the retention horizon is dropped whole, first.

use std::sync::Arc;

use super::{Run, RunList};

/// Runs of one size class merged at a time.
pub(crate) const FANOUT: usize = 16;
/// No merge writes a run larger than this (48 MiB).
pub(crate) const MAX_MERGED: u64 = 2 << 20;

/// The next step of merging a run list.
pub(super) enum MergePlan {
    /// Drop these runs whole: every id in them is below the horizon.
    Drop(Vec<Arc<Run>>),
    /// Merge these runs into one, dropping entries below the horizon.
    Merge(Vec<Arc<Run>>),
}

/// Size class of a run: floor(log_FANOUT(entries)).
fn class(len: u64) -> u32 {
    let mut class = 0;
    let mut n = len;
    while n >= FANOUT as u64 {
        n /= FANOUT as u64;
        class += 1;
    }
    class
}

/// What to do next with `list`, whose entries below `min_id` are expired;
/// `None` when nothing is due.
pub(super) fn next_step(list: &RunList, min_id: u64) -> Option<MergePlan> {
    let expired: Vec<Arc<Run>> = list
        .runs
        .iter()
        .filter(|r| r.max_id < min_id)
        .cloned()
        .collect();
    if !expired.is_empty() {
        return Some(MergePlan::Drop(expired));
    }
    let mut classes: Vec<u32> = list.runs.iter().map(|r| class(r.len)).collect();
    classes.sort_unstable();
    classes.dedup();
    for c in classes {
        if list.runs.iter().filter(|r| class(r.len) == c).count() < FANOUT {
            continue;
        }
        // The oldest of the class, as many as fit under the cap (a run too
        // large to join stays; younger ones still merge).
        let mut inputs: Vec<Arc<Run>> = Vec::with_capacity(FANOUT);
        let mut total = 0;
        for run in list.runs.iter().rev().filter(|r| class(r.len) == c) {
            if inputs.len() == FANOUT {
                break;
            }
            if total + run.len <= MAX_MERGED {
                total += run.len;
                inputs.push(run.clone());
            }
        }
        if inputs.len() >= 2 {
            return Some(MergePlan::Merge(inputs));
        }
    }
    None
}
