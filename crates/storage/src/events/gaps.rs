//! What the receiver may have missed, kept so that it survives restarts:
//! every answer other than 200, per source and second with its status
//! codes, the receiver's own runs (when each started, when it was last
//! alive, whether it stopped cleanly), so that a time it was down shows too,
//! and the event times of lines whose signature did not verify (a break in
//! the signed record: Konnect's replay resends the authentic lines).
//! `auditsink konnect replay --gaps` asks Konnect to replay these windows.
//!
//! A sled tree of its own (`gaps`), apart from the events:
//!
//! | key | value |
//! |---|---|
//! | `a` len(u16) source second_ms(u64) | (status u16, count u64) pairs |
//! | `r` started_ms(u64) | alive_ms(u64), stopped(u8) |
//! | `s` len(u16) source second_ms(u64) | count(u64): lines of that event second whose signature failed |
//!
//! One entry per source and second bounds what a flood of rejected requests
//! can write, signature failures are kept only for event times Konnect can
//! replay, and entries older than Konnect's replay horizon are pruned.

use serde::Serialize;

use crate::error::StoreError;
use crate::events::keys::hex;

const ANSWER: u8 = b'a';
const RUN: u8 = b'r';
const SIGNATURE: u8 = b's';

/// How long entries are kept: Konnect replays at most 7 days back; a day
/// more so that a window starting at the horizon is still whole.
pub const KEEP_MS: i64 = 8 * 86_400_000;

/// The non-200 answers one source gave within one second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedAnswers {
    /// The configured source.
    pub source: String,
    /// Start of the second, ms since the epoch.
    pub second_ms: i64,
    /// Status codes and how many times each was answered in that second.
    pub statuses: Vec<(u16, u64)>,
}

/// The lines of one source, with event times in one second, whose
/// signature was invalid or missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFailures {
    /// The configured source.
    pub source: String,
    /// Start of the second of the events' time, ms since the epoch.
    pub second_ms: i64,
    /// How many such lines arrived (resends of the same line included).
    pub count: u64,
}

/// One run of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    /// When it started, ms since the epoch.
    pub started_ms: i64,
    /// When it was last known to be running.
    pub alive_ms: i64,
    /// Whether it stopped cleanly (else it is running, or was killed).
    pub stopped: bool,
}

/// The record of answers and runs.
#[derive(Clone)]
pub struct Gaps {
    tree: sled::Tree,
}

fn ms(value: i64) -> [u8; 8] {
    (value.max(0) as u64).to_be_bytes()
}

fn read_ms(bytes: &[u8]) -> Option<i64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?) as i64)
}

fn answer_prefix(source: &str) -> Vec<u8> {
    source_prefix(ANSWER, source)
}

fn source_prefix(kind: u8, source: &str) -> Vec<u8> {
    let name = source.as_bytes();
    let name = &name[..name.len().min(u16::MAX as usize)];
    let mut key = Vec::with_capacity(3 + name.len() + 8);
    key.push(kind);
    key.extend_from_slice(&(name.len() as u16).to_be_bytes());
    key.extend_from_slice(name);
    key
}

fn decode_statuses(bytes: &[u8]) -> Vec<(u16, u64)> {
    bytes
        .chunks_exact(10)
        .map(|pair| {
            let status = u16::from_be_bytes([pair[0], pair[1]]);
            let count = pair[2..].try_into().map(u64::from_be_bytes).unwrap_or(0);
            (status, count)
        })
        .collect()
}

fn encode_statuses(statuses: &[(u16, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(statuses.len() * 10);
    for (status, count) in statuses {
        out.extend_from_slice(&status.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The source and second of an `a` or `s` key.
fn decode_source_second(key: &[u8]) -> Option<(String, i64)> {
    let len = u16::from_be_bytes(key.get(1..3)?.try_into().ok()?) as usize;
    let source = std::str::from_utf8(key.get(3..3 + len)?).ok()?.to_owned();
    Some((source, read_ms(key.get(3 + len..)?)?))
}

fn decode_answer(key: &[u8], value: &[u8]) -> Option<FailedAnswers> {
    let (source, second_ms) = decode_source_second(key)?;
    Some(FailedAnswers {
        source,
        second_ms,
        statuses: decode_statuses(value),
    })
}

fn decode_signature(key: &[u8], value: &[u8]) -> Option<SignatureFailures> {
    let (source, second_ms) = decode_source_second(key)?;
    Some(SignatureFailures {
        source,
        second_ms,
        count: read_ms(value)? as u64,
    })
}

impl Gaps {
    pub(crate) fn open(db: &sled::Db) -> Result<Gaps, StoreError> {
        Ok(Gaps {
            tree: db.open_tree("gaps")?,
        })
    }

    /// Records that `source` answered `status` (not 200) at `at_ms`.
    pub fn record_answer(&self, source: &str, at_ms: i64, status: u16) -> Result<(), StoreError> {
        let mut key = answer_prefix(source);
        key.extend_from_slice(&ms(at_ms - at_ms.rem_euclid(1000)));
        self.tree.update_and_fetch(key, |old| {
            let mut statuses = old.map(decode_statuses).unwrap_or_default();
            match statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, count)) => *count += 1,
                None => statuses.push((status, 1)),
            }
            Some(encode_statuses(&statuses))
        })?;
        Ok(())
    }

    /// The recorded answers of every source from `since_ms` on, by source
    /// then time.
    pub fn answers(&self, since_ms: i64) -> Result<Vec<FailedAnswers>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([ANSWER]) {
            let (key, value) = entry?;
            let answer = decode_answer(&key, &value).ok_or_else(|| StoreError::Corrupt {
                key: hex(&key),
                reason: "not an answer record".into(),
            })?;
            if answer.second_ms + 1000 > since_ms {
                out.push(answer);
            }
        }
        Ok(out)
    }

    /// Records that lines of `source` with these event times (ms) failed
    /// their signature check, received at `now_ms`. Times Konnect cannot
    /// replay (older than its horizon, or more than a day ahead) are not
    /// kept: a replay could not mend them.
    pub fn record_signature_failures(
        &self,
        source: &str,
        event_times_ms: &[i64],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut seconds: Vec<i64> = event_times_ms
            .iter()
            .filter(|&&t| t > now_ms - KEEP_MS && t < now_ms + 86_400_000)
            .map(|&t| t - t.rem_euclid(1000))
            .collect();
        seconds.sort_unstable();
        for run in seconds.chunk_by(|a, b| a == b) {
            let mut key = source_prefix(SIGNATURE, source);
            key.extend_from_slice(&ms(run[0]));
            let added = run.len() as u64;
            self.tree.update_and_fetch(key, |old| {
                let count = old.and_then(read_ms).unwrap_or(0) as u64;
                Some(count.saturating_add(added).to_be_bytes().to_vec())
            })?;
        }
        Ok(())
    }

    /// The recorded signature failures of every source with event times
    /// from `since_ms` on, by source then time.
    pub fn signature_failures(&self, since_ms: i64) -> Result<Vec<SignatureFailures>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([SIGNATURE]) {
            let (key, value) = entry?;
            let failures = decode_signature(&key, &value).ok_or_else(|| StoreError::Corrupt {
                key: hex(&key),
                reason: "not a signature failure record".into(),
            })?;
            if failures.second_ms + 1000 > since_ms {
                out.push(failures);
            }
        }
        Ok(out)
    }

    /// Records a run starting at `now_ms`; returns its key for
    /// [`Gaps::alive`] and [`Gaps::stopped`].
    pub fn start_run(&self, now_ms: i64) -> Result<i64, StoreError> {
        self.write_run(now_ms, now_ms, false)?;
        self.tree.flush()?;
        Ok(now_ms)
    }

    /// The run that started at `started_ms` is still running at `now_ms`.
    pub fn alive(&self, started_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        self.write_run(started_ms, now_ms, false)
    }

    /// The run that started at `started_ms` stopped cleanly at `now_ms`.
    pub fn stopped(&self, started_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        self.write_run(started_ms, now_ms, true)?;
        self.tree.flush()?;
        Ok(())
    }

    fn write_run(&self, started_ms: i64, alive_ms: i64, stopped: bool) -> Result<(), StoreError> {
        let mut key = vec![RUN];
        key.extend_from_slice(&ms(started_ms));
        let mut value = ms(alive_ms).to_vec();
        value.push(u8::from(stopped));
        self.tree.insert(key, value)?;
        Ok(())
    }

    /// The runs that were alive at or after `since_ms`, oldest first, with
    /// the one just before them (a downtime starts where it ended).
    pub fn runs(&self, since_ms: i64) -> Result<Vec<Run>, StoreError> {
        let mut all = Vec::new();
        for entry in self.tree.scan_prefix([RUN]) {
            let (key, value) = entry?;
            let run = (|| {
                Some(Run {
                    started_ms: read_ms(key.get(1..)?)?,
                    alive_ms: read_ms(value.get(..8)?)?,
                    stopped: *value.get(8)? != 0,
                })
            })()
            .ok_or_else(|| StoreError::Corrupt {
                key: hex(&key),
                reason: "not a run record".into(),
            })?;
            all.push(run);
        }
        let first = all
            .iter()
            .position(|run| run.alive_ms >= since_ms)
            .unwrap_or(all.len());
        Ok(all.split_off(first.saturating_sub(1)))
    }

    /// Removes what is older than [`KEEP_MS`] before `now_ms`; returns how
    /// many entries went.
    pub fn prune(&self, now_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms - KEEP_MS;
        let mut old = Vec::new();
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let expired = match key.first() {
                Some(&ANSWER | &SIGNATURE) => {
                    decode_source_second(&key).is_some_and(|(_, second)| second < cutoff)
                }
                Some(&RUN) => value
                    .get(..8)
                    .and_then(read_ms)
                    .is_some_and(|alive| alive < cutoff),
                _ => false,
            };
            if expired {
                old.push(key);
            }
        }
        // The newest run is kept, so the next start still sees a downtime.
        if let Some(newest) = self.tree.scan_prefix([RUN]).next_back() {
            let (key, _) = newest?;
            old.retain(|k| *k != key);
        }
        let mut batch = sled::Batch::default();
        for key in &old {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch)?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps() -> (tempfile::TempDir, Gaps) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, Gaps::open(&db).unwrap())
    }

    #[test]
    fn answers_are_counted_per_source_second_and_status() {
        let (_dir, gaps) = gaps();
        gaps.record_answer("us", 10_100, 401).unwrap();
        gaps.record_answer("us", 10_900, 401).unwrap();
        gaps.record_answer("us", 10_950, 500).unwrap();
        gaps.record_answer("us", 12_000, 429).unwrap();
        gaps.record_answer("eu", 10_000, 413).unwrap();
        let all = gaps.answers(0).unwrap();
        assert_eq!(
            all,
            vec![
                FailedAnswers {
                    source: "eu".into(),
                    second_ms: 10_000,
                    statuses: vec![(413, 1)]
                },
                FailedAnswers {
                    source: "us".into(),
                    second_ms: 10_000,
                    statuses: vec![(401, 2), (500, 1)]
                },
                FailedAnswers {
                    source: "us".into(),
                    second_ms: 12_000,
                    statuses: vec![(429, 1)]
                },
            ]
        );
        assert_eq!(gaps.answers(11_000).unwrap().len(), 1);
    }

    #[test]
    fn signature_failures_are_counted_per_source_and_event_second() {
        let (_dir, gaps) = gaps();
        let now = 30 * 86_400_000;
        let times = [
            now - 5_500,
            now - 5_100,
            now - 3_000,
            now - 9 * 86_400_000,
            now + 2 * 86_400_000,
        ];
        gaps.record_signature_failures("us", &times, now).unwrap();
        gaps.record_signature_failures("us", &[now - 5_999], now)
            .unwrap();
        gaps.record_signature_failures("eu", &[now - 1], now)
            .unwrap();
        let all = gaps.signature_failures(0).unwrap();
        let failure = |source: &str, second_ms, count| SignatureFailures {
            source: source.into(),
            second_ms,
            count,
        };
        assert_eq!(
            all,
            vec![
                failure("eu", now - 1_000, 1),
                failure("us", now - 6_000, 3),
                failure("us", now - 3_000, 1),
            ],
            "times outside the replay horizon are not kept"
        );
        assert_eq!(gaps.signature_failures(now - 4_000).unwrap().len(), 2);
        assert_eq!(gaps.prune(now + 8 * 86_400_000 - 2_000).unwrap(), 2);
        assert_eq!(gaps.signature_failures(0).unwrap().len(), 1);
    }

    #[test]
    fn runs_and_pruning() {
        let (_dir, gaps) = gaps();
        let day = 86_400_000;
        let first = gaps.start_run(day).unwrap();
        gaps.alive(first, day + 5_000).unwrap();
        gaps.stopped(first, day + 6_000).unwrap();
        let second = gaps.start_run(20 * day).unwrap();
        gaps.alive(second, 20 * day + 5_000).unwrap();
        gaps.record_answer("us", day + 1_000, 401).unwrap();
        gaps.record_answer("us", 20 * day, 500).unwrap();
        let runs = gaps.runs(20 * day).unwrap();
        assert_eq!(runs.len(), 2, "the run before the window is included");
        assert_eq!(
            runs[0],
            Run {
                started_ms: day,
                alive_ms: day + 6_000,
                stopped: true
            }
        );
        assert!(!runs[1].stopped);
        assert_eq!(gaps.prune(20 * day + 5_000).unwrap(), 2);
        assert_eq!(gaps.runs(0).unwrap().len(), 1);
        assert_eq!(gaps.answers(0).unwrap().len(), 1);
    }
}
