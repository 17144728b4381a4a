//! The ledger: one JSON line per event and fate, so that a receiver's store
//! can be checked against what was sent.
//!
//! `{"seq":N,"channel":"org","rt":MS,"fate":"acknowledged","delivery":"live","status":200,"attempts":1,"at":"...","raw":"..."}`
//! - `fate`: `acknowledged` (a live delivery answered 2xx), `dropped`
//!   (given up after Konnect's retries, or a final answer), `replayed` (a
//!   replay job's delivery answered 2xx);
//! - `delivery`: `live` or `replay`;
//! - `status`: the last answer's code, 0 for a connection error.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use serde_json::json;

use super::generated::Generated;

/// What happened to a batch's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Acknowledged,
    Dropped,
    Replayed,
}

impl Fate {
    fn name(self) -> &'static str {
        match self {
            Fate::Acknowledged => "acknowledged",
            Fate::Dropped => "dropped",
            Fate::Replayed => "replayed",
        }
    }
}

/// The ledger file.
pub struct Ledger {
    out: Mutex<BufWriter<std::fs::File>>,
}

/// How a batch ended, for its ledger lines.
pub struct Outcome<'a> {
    pub channel: &'a str,
    pub fate: Fate,
    pub replay: bool,
    pub status: u16,
    pub attempts: u32,
    pub at_ms: i64,
}

impl Ledger {
    pub fn create(path: &Path) -> anyhow::Result<Ledger> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the ledger {}", path.display()))?;
        Ok(Ledger {
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Writes one line per event of a batch, and flushes (a test may read
    /// the ledger while the emulator runs).
    pub fn record(&self, events: &[Generated], outcome: &Outcome<'_>) {
        let at = auditsink_storage::format_ms(outcome.at_ms);
        let mut out = self.out();
        for event in events {
            let line = json!({
                "seq": event.seq,
                "channel": outcome.channel,
                "rt": event.rt_ms,
                "fate": outcome.fate.name(),
                "delivery": if outcome.replay { "replay" } else { "live" },
                "status": outcome.status,
                "attempts": outcome.attempts,
                "at": at,
                "raw": &*event.line,
            });
            if let Err(e) = writeln!(out, "{line}") {
                eprintln!("auditsink emulate konnect: writing the ledger: {e}");
                return;
            }
        }
        if let Err(e) = out.flush() {
            eprintln!("auditsink emulate konnect: writing the ledger: {e}");
        }
    }

    /// The output, locked (going on after a panic elsewhere: each record
    /// is written whole under the lock).
    fn out(&self) -> MutexGuard<'_, BufWriter<std::fs::File>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        let mut out = self.out();
        out.flush().context("writing the ledger")?;
        out.get_ref().sync_all().context("writing the ledger")
    }
}
