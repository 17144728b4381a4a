//! When runs merge: the merge policy. How a merge is done (pages written
//! ahead, the manifest swapped, the trash emptied) is [`super::Runs`]'s.
//!
//! Size-tiered: once [`FANOUT`] runs of one size class (entries, in powers
//! of `FANOUT`) exist, the oldest `FANOUT` become one run, as long as it
//! stays under [`MAX_MERGED`] entries; a lookup reads about `FANOUT - 1`
//! runs per class plus the runs that reached the cap, one page each. A run
//! whose ids are all below the retention horizon is dropped whole, first.

/// What the policy reads of a run: its size and its newest id.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunShape {
    /// Entries in it.
    pub len: u64,
    /// The largest id of its entries.
    pub max_id: u64,
}

/// Runs of one size class merged at a time.
pub(crate) const FANOUT: usize = 16;
/// No merge writes a run larger than this (48 MiB).
pub(crate) const MAX_MERGED: u64 = 2 << 20;

/// The next step of merging a run list: positions in the list.
pub(super) enum MergePlan {
    /// Drop these runs whole: every id in them is below the horizon.
    Drop(Vec<usize>),
    /// Merge these runs into one, dropping entries below the horizon.
    Merge(Vec<usize>),
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

/// What to do next with a run list (its runs' shapes, in its order), whose
/// entries below `min_id` are expired; `None` when nothing is due.
pub(super) fn next_step(runs: &[RunShape], min_id: u64) -> Option<MergePlan> {
    let expired: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].max_id < min_id)
        .collect();
    if !expired.is_empty() {
        return Some(MergePlan::Drop(expired));
    }
    let mut classes: Vec<u32> = runs.iter().map(|r| class(r.len)).collect();
    classes.sort_unstable();
    classes.dedup();
    for c in classes {
        if runs.iter().filter(|r| class(r.len) == c).count() < FANOUT {
            continue;
        }
        // The oldest of the class, as many as fit under the cap (a run too
        // large to join stays; younger ones still merge).
        let mut inputs: Vec<usize> = Vec::with_capacity(FANOUT);
        let mut total = 0;
        for (i, run) in runs.iter().enumerate().rev() {
            if class(run.len) != c {
                continue;
            }
            if inputs.len() == FANOUT {
                break;
            }
            if total + run.len <= MAX_MERGED {
                total += run.len;
                inputs.push(i);
            }
        }
        if inputs.len() >= 2 {
            return Some(MergePlan::Merge(inputs));
        }
    }
    None
}
