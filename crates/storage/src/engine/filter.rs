//! An in-memory Bloom filter over the keys of one set of runs, so that
//! looking up a key that is not there (nearly every new key, when the runs
//! say what was seen before) costs no sled read: only when the filter says
//! "maybe" does the writer look the key up in the runs (a page read per
//! run). The runs stay the truth; the filter is derived from them and
//! never misses a key that is in them (a false positive only costs the
//! lookup it saves otherwise).
//!
//! It is built from a scan of the runs in a background thread
//! (on open, after a rebuild, and again larger when it fills up); the keys
//! staged meanwhile are kept and added when the scan ends. Until it is
//! ready the filter it replaces answers (overfull: more false positives,
//! no misses), or, on open and after a rebuild, every key is looked up. It
//! starts only while the write lock is held, given the keys of the groups
//! in flight (staged, not yet in the runs), so every key the scan can miss
//! is one it was given or one staged later. Removed keys (retention) stay in
//! it until it is rebuilt, as false positives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use crate::error::StoreError;

use crate::engine::runs::{Key, Runs};

/// Bits per key the filter is sized for (8 bits are set per key; about
/// 0.1% false positives when full: a false positive reads a page of every
/// run).
const BITS_PER_KEY: u64 = 16;
/// Smallest capacity, in keys.
const MIN_CAPACITY: u64 = 1 << 20;

/// 512 bits: one cache line. Every bit of a key is in one block, so a
/// look-up or an insert costs one cache miss, not one per bit (the filter
/// is megabytes: a plain Bloom filter's 8 to 11 misses per key were 5 % of
/// the receiver's CPU).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Block([u64; 8]);

/// A blocked Bloom filter over keys (also used on its own).
pub(crate) struct Bloom {
    blocks: Vec<Block>,
    capacity: u64,
    keys: u64,
}

/// Odd multipliers: one bit in each of a block's 8 words, each picked by
/// the top 6 bits of the key's hash times its salt (the split block Bloom
/// filter of Parquet and Impala, with 64-bit words).
const SALTS: [u64; 8] = [
    0x47b6_137b_4497_4d91,
    0x8824_ad5b_a2b7_289d,
    0x7054_95c7_2df1_424b,
    0x9efc_4947_5c6b_fb31,
    0x1e59_d4f1_a1e2_9f3b,
    0xbd0a_5b1b_ff1c_7c35,
    0x6a1b_a3d1_c0b2_4e87,
    0xd3c8_5f6f_9a2e_1b0d,
];

/// A key's block, and the bit in each of its words. Keys are 16 bytes of
/// SHA-256: already uniform.
fn positions(key: &Key, blocks: usize) -> (usize, [u64; 8]) {
    let mut a = [0; 8];
    let mut b = [0; 8];
    a.copy_from_slice(&key[..8]);
    b.copy_from_slice(&key[8..]);
    let (a, b) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
    // `blocks` is a power of two.
    let block = (a as usize) & (blocks - 1);
    (block, SALTS.map(|salt| 1 << (b.wrapping_mul(salt) >> 58)))
}

impl Bloom {
    pub fn with_capacity(keys: u64) -> Bloom {
        let capacity = keys.max(MIN_CAPACITY);
        let blocks = (capacity * BITS_PER_KEY / 512).next_power_of_two();
        Bloom {
            blocks: vec![Block([0; 8]); blocks as usize],
            capacity,
            keys: 0,
        }
    }

    pub fn add(&mut self, key: &Key) {
        let (block, bits) = positions(key, self.blocks.len());
        for (word, bit) in self.blocks[block].0.iter_mut().zip(bits) {
            *word |= bit;
        }
        self.keys += 1;
    }

    pub fn may_contain(&self, key: &Key) -> bool {
        let (block, bits) = positions(key, self.blocks.len());
        self.blocks[block]
            .0
            .iter()
            .zip(bits)
            .all(|(word, bit)| word & bit != 0)
    }
}

enum State {
    /// No filter: every key is looked up.
    Off,
    /// A scan is running (generation); keys staged meanwhile; the filter it
    /// replaces, if any, still answers meanwhile (fuller than it was sized
    /// for, so with more false positives, but it misses nothing).
    Building(u64, Vec<Key>, Option<Bloom>),
    Ready(Bloom),
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

/// The filter in front of one set of runs.
pub(crate) struct KeyFilter {
    shared: Arc<Shared>,
    generation: Mutex<u64>,
    builder: Mutex<Option<thread::JoinHandle<()>>>,
}

impl KeyFilter {
    pub fn new() -> KeyFilter {
        KeyFilter {
            shared: Arc::new(Shared {
                state: Mutex::new(State::Off),
                stop: AtomicBool::new(false),
            }),
            generation: Mutex::new(0),
            builder: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` may be in the runs (false: it certainly is not).
    pub fn may_contain(&self, key: &Key) -> bool {
        match &*self.state() {
            State::Ready(bloom) | State::Building(_, _, Some(bloom)) => bloom.may_contain(key),
            State::Building(_, _, None) | State::Off => true,
        }
    }

    /// Records a key about to be written to the runs.
    pub fn add(&self, key: &Key) {
        match &mut *self.state() {
            State::Ready(bloom) => bloom.add(key),
            State::Building(_, added, old) => {
                added.push(*key);
                if let Some(old) = old {
                    old.add(key);
                }
            }
            State::Off => {}
        }
    }

    /// Whether the filter is full (time to build a larger one).
    pub fn is_full(&self) -> bool {
        matches!(&*self.state(), State::Ready(b) if b.keys > b.capacity)
    }

    /// Stops using the filter (before the runs' entries are rewritten).
    pub fn disable(&self) {
        *self.state() = State::Off;
    }

    /// Starts building the filter from `runs`' entries of ids of at
    /// least `min_id` (the retention horizon), sized for `expected` keys,
    /// and the keys `staged` that are not in the runs yet. Call with the
    /// write lock held and nothing staged but those.
    pub fn start(
        &self,
        tree: &sled::Tree,
        runs: &Arc<Runs>,
        min_id: u64,
        expected: u64,
        staged: Vec<Key>,
    ) {
        let generation = {
            let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g
        };
        {
            let mut state = self.state();
            let old = match std::mem::replace(&mut *state, State::Off) {
                State::Ready(bloom) | State::Building(_, _, Some(bloom)) => Some(bloom),
                _ => None,
            };
            *state = State::Building(generation, staged, old);
        }
        let shared = self.shared.clone();
        let tree = tree.clone();
        let kind = runs.kind();
        let runs = runs.clone();
        let spawned = thread::Builder::new()
            .name("auditsink-store-filter".into())
            .spawn(move || build(&shared, &tree, &runs, min_id, generation, expected));
        let mut builder = self.builder.lock().unwrap_or_else(|p| p.into_inner());
        match spawned {
            Ok(handle) => {
                // The previous builder (if any) ends at its next check.
                if let Some(old) = builder.replace(handle) {
                    drop(builder);
                    let _ = old.join();
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    index = kind.as_str(),
                    "no key filter thread; looking every key up"
                );
                *self.state() = State::Off;
            }
        }
    }

    /// Stops the builder thread (on close).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let handle = self
            .builder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn build(
    shared: &Shared,
    tree: &sled::Tree,
    runs: &Runs,
    min_id: u64,
    generation: u64,
    expected: u64,
) {
    let current = || {
        matches!(&*shared.state.lock().unwrap_or_else(|p| p.into_inner()),
            State::Building(g, _, _) if *g == generation)
    };
    let give_up = |e: &StoreError| {
        tracing::warn!(
            error = %e,
            index = runs.kind().as_str(),
            "key filter scan failed; looking every key up"
        );
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*state, State::Building(g, _, _) if *g == generation) {
            *state = State::Off;
        }
    };
    let mut bloom = Bloom::with_capacity(expected.saturating_mul(2));
    let mut n = 0u64;
    let mut stopped = false;
    let scanned = runs.scan(tree, min_id, &mut |entry| {
        n += 1;
        if n % 4096 == 0 && (shared.stop.load(Ordering::Relaxed) || !current()) {
            stopped = true;
            return false;
        }
        bloom.add(&entry.key);
        true
    });
    if stopped {
        return;
    }
    if let Err(e) = scanned {
        give_up(&e);
        return;
    }
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if let State::Building(g, added, _) = &*state {
        if *g == generation {
            for key in added {
                bloom.add(key);
            }
            *state = State::Ready(bloom);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform 16-byte keys, as SHA-256 prefixes are (splitmix64: cheap in
    /// a debug build).
    fn key(i: u64) -> Key {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut key = [0; 16];
        key[..8].copy_from_slice(&mix(x).to_le_bytes());
        key[8..].copy_from_slice(&mix(x ^ 0x5555_5555_5555_5555).to_le_bytes());
        key
    }

    #[test]
    fn full_bloom_has_no_false_negatives_and_few_false_positives() {
        let mut bloom = Bloom::with_capacity(1000);
        let full = bloom.capacity;
        for i in 0..full {
            bloom.add(&key(i));
        }
        assert!((0..full).all(|i| bloom.may_contain(&key(i))));
        let tries = 200_000;
        let false_positives = (full..full + tries)
            .filter(|&i| bloom.may_contain(&key(i)))
            .count();
        // About 0.1 % by design (0.094 % here); 0.15 % is far out.
        assert!(false_positives < 300, "{false_positives} of {tries}");
    }
}
