//! Identity details, queries, verification and repair, retention and
//! quarantine reprocessing, on a real sled directory.

use std::time::Duration;

use auditsink_parser::{parse_line, Event, Format, ParseOptions};
use auditsink_storage::testing::Damage;
use auditsink_storage::{
    AppendSummary, Batch, IndexKind, QuarantineReason, QuarantinedLine, Query, Reparse,
    ReprocessSummary, RetentionSummary, Store, StoreOptions,
};
use base64::Engine;

const T0: i64 = 1_764_100_000_000; // 2025-11-25T19:46:40Z

/// A Konnect-like CEF event at `T0 + minute` minutes.
fn konnect(n: u32, minute: i64, principal: &str, name: &str, sig: Option<&str>) -> Event {
    let sig = sig.map(|s| format!(" sig={s}")).unwrap_or_default();
    let line = format!(
        "CEF:0|KongInc|Konnect|1.0|konnect|{name}|1|rt={} src=10.0.0.1 org_id=org-1 \
         principal_id={principal} trace_id={} action=retrieve n={n}{sig}",
        T0 + minute * 60_000,
        1000 + n
    );
    parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef)).unwrap()
}

fn batch(received_at_ms: i64, events: Vec<Event>, quarantine: Vec<QuarantinedLine>) -> Batch {
    Batch {
        source: "konnect".into(),
        received_at_ms,
        events,
        quarantine,
    }
}

fn ns(
    iter: impl Iterator<Item = Result<auditsink_storage::StoredEvent, auditsink_storage::StoreError>>,
) -> Vec<String> {
    iter.map(|e| e.unwrap().event.fields["n"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn padded_and_unpadded_signatures_are_one_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = [7u8; 64];
    let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let padded = base64::engine::general_purpose::URL_SAFE.encode(bytes);
    assert_ne!(unpadded, padded);
    let first = konnect(1, 0, "p", "Authz.usage", Some(&unpadded));
    // The same event relayed with a padded signature (and so another raw line).
    let again = konnect(1, 0, "p", "Authz.usage", Some(&padded));
    assert_ne!(first.raw, again.raw);
    let summary = store
        .append_blocking(batch(T0, vec![first, again], vec![]))
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (1, 1));
    // A signature that does not decode is no identity: the raw line is.
    let a = konnect(2, 0, "p", "Authz.usage", Some("not-a-signature"));
    let b = konnect(3, 0, "p", "Authz.usage", Some("not-a-signature"));
    let summary = store
        .append_blocking(batch(T0, vec![a.clone(), b, a], vec![]))
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (2, 1));
}

fn populated() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 3 deliveries; event n at minute n % 10; principals alternate; names by n % 3.
    let mut n = 0;
    for delivery in 0..3 {
        let events = (0..10)
            .map(|_| {
                n += 1;
                let principal = if n % 2 == 0 { "alice" } else { "bob" };
                let name = ["Authz.usage", "Authz.routes", "Ingress"][(n % 3) as usize];
                konnect(n, i64::from(n % 10), principal, name, None)
            })
            .collect();
        store
            .append_blocking(batch(T0 + delivery, events, vec![]))
            .unwrap();
    }
    (dir, store)
}

#[test]
fn queries_use_every_filter_and_keep_arrival_order() {
    let (_dir, store) = populated();
    let run = |q: Query| ns(store.query(&q).unwrap());
    let count = |q: Query| store.count(&q).unwrap();
    let minute = |m: i64| Some(T0 + m * 60_000);

    assert_eq!(run(Query::default()).len(), 30);
    // Minutes 2..4: n % 10 in {2, 3}.
    let q = Query {
        since_ms: minute(2),
        until_ms: minute(4),
        ..Query::default()
    };
    assert_eq!(run(q.clone()), ["2", "3", "12", "13", "22", "23"]);
    assert_eq!(count(q), 6);
    // Exact to the ms: `until` is exclusive, `since` inclusive.
    let q = Query {
        since_ms: minute(3),
        until_ms: Some(T0 + 3 * 60_000 + 1),
        ..Query::default()
    };
    assert_eq!(run(q), ["3", "13", "23"]);
    let q = Query {
        principal: Some("alice".into()),
        name: Some("Authz.routes".into()),
        ..Query::default()
    };
    // n even and n % 3 == 1: 4, 10, 16, 22, 28.
    assert_eq!(run(q.clone()), ["4", "10", "16", "22", "28"]);
    assert_eq!(count(q.clone()), 5);
    let q = Query {
        since_ms: minute(5),
        ..q
    };
    assert_eq!(run(q.clone()), ["16", "28"]);
    assert_eq!(count(q), 2);
    let q = Query {
        trace: Some("1017".into()),
        org: Some("org-1".into()),
        ..Query::default()
    };
    assert_eq!(run(q), ["17"]);
    let q = Query {
        principal: Some("nobody".into()),
        ..Query::default()
    };
    assert!(run(q.clone()).is_empty());
    assert_eq!(count(q), 0);
    // Paging: after + limit.
    let all = store
        .query(&Query::default())
        .unwrap()
        .map(|e| e.unwrap().id)
        .collect::<Vec<_>>();
    let q = Query {
        org: Some("org-1".into()),
        after: Some(all[9]),
        limit: Some(3),
        ..Query::default()
    };
    assert_eq!(run(q.clone()), ["11", "12", "13"]);
    assert_eq!(count(q), 3);
    assert_eq!(
        count(Query {
            limit: Some(7),
            ..Query::default()
        }),
        7
    );
    let empty = Query {
        since_ms: minute(5),
        until_ms: minute(5),
        ..Query::default()
    };
    assert!(run(empty).is_empty());
}

#[test]
fn events_without_timestamp_are_indexed_by_receive_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let event = parse_line(
        b"CEF:0|V|P|1|c|n|1|principal_id=x",
        &ParseOptions::new(Format::Cef),
    )
    .unwrap();
    assert!(event.timestamp.is_none());
    store
        .append_blocking(batch(T0, vec![event], vec![]))
        .unwrap();
    let q = |since: i64, until: i64| {
        store
            .count(&Query {
                since_ms: Some(since),
                until_ms: Some(until),
                ..Query::default()
            })
            .unwrap()
    };
    assert_eq!(q(T0, T0 + 1), 1);
    assert_eq!(q(T0 + 1, T0 + 2), 0);
}

/// The closed store in `dir`, opened to damage it, as a crash, a bug or a
/// failing disk could.
fn damage(dir: &std::path::Path) -> Damage {
    Damage::open(dir)
}

/// Opens the store in `dir` without verifying it (damage stays for `check`).
fn open_unverified(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        verify_on_open: 0,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

/// Opens the store in `dir` and checks that opening found `problem` and
/// rebuilt the indexes.
fn open_rebuilt(dir: &std::path::Path, problem: &str) -> Store {
    let store = Store::open(dir).unwrap();
    let report = store.open_report();
    assert!(report.rebuilt, "{report:?}");
    assert!(
        report.problems.iter().any(|p| p.contains(problem)),
        "{report:?}"
    );
    store
}

#[test]
fn check_finds_damaged_indexes_and_rebuild_repairs_them() {
    let (dir, store) = populated();
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events, 30);
    assert_eq!(report.dedupe_entries, 30);
    assert_eq!(report.index_entries["principal_id"], 30);
    assert_eq!(report.index_entries["time"], 30);
    drop(store);

    {
        let damage = damage(dir.path());
        // Drop one principal posting (missing entries), add a posting for an
        // event that does not exist and a dedupe entry pointing nowhere.
        damage.remove_posting(IndexKind::Principal, None);
        damage.add_posting(IndexKind::Name, "Ghost", 999);
        // A dedupe entry that points at event 999 instead of its own.
        damage.point_dedupe_entry_at(999);
    }

    let store = open_unverified(dir.path());
    let report = store.check().unwrap();
    assert!(!report.is_ok());
    let text = report.problems.join("\n");
    assert!(
        text.contains("missing from the principal_id index"),
        "{text}"
    );
    assert!(text.contains("dangling name index entry"), "{text}");
    assert!(text.contains("dangling dedupe entry"), "{text}");
    // Queries on the damaged index miss events (that is why check exists).
    let alice = Query {
        principal: Some("alice".into()),
        ..Query::default()
    };
    let before = store.count(&alice).unwrap()
        + store
            .count(&Query {
                principal: Some("bob".into()),
                ..Query::default()
            })
            .unwrap();
    assert!(before < 30);

    let rebuilt = store.rebuild_indexes().unwrap();
    assert_eq!(rebuilt.events, 30);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(store.count(&alice).unwrap(), 15);
    // Dedupe works again after the rebuild.
    assert_replay_is_a_duplicate(&store);
}

#[test]
fn check_pinpoints_missing_postings_past_a_malformed_posting_key() {
    let (dir, store) = populated();
    drop(store);
    {
        let damage = damage(dir.path());
        // A malformed key (a posting key and one more byte) between
        // alice's first two postings, where no lookup of hers lands...
        assert_eq!(
            damage.posting_count(IndexKind::Principal, "alice"),
            3,
            "one posting per delivery"
        );
        damage.add_malformed_posting_key(IndexKind::Principal, "alice");
        // ...and bob's first posting (his 5 events of the first delivery)
        // gone, so that check looks for the missing entries one by one.
        damage.remove_posting(IndexKind::Principal, Some("bob"));
    }
    let store = open_unverified(dir.path());
    let report = store.check().unwrap();
    let missing: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| p.contains("missing from the principal_id index"))
        .collect();
    assert_eq!(missing.len(), 5, "only bob's: {:#?}", report.problems);
}

#[test]
fn open_verifies_the_newest_events_and_rebuilds_when_damaged() {
    let (dir, store) = populated();
    drop(store);
    // One event's identity is no longer recorded (another one is).
    damage(dir.path()).change_dedupe_identity();
    let store = open_rebuilt(dir.path(), "no dedupe entry");
    assert!(store.check().unwrap().is_ok());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.open_report().rebuilt);
    assert_eq!(store.open_report().verified_events, 30);
    drop(store);
    // One principal's posting is gone.
    damage(dir.path()).remove_posting(IndexKind::Principal, None);
    let store = open_rebuilt(dir.path(), "missing from the principal_id index");
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_newest_chunk_that_does_not_decode_does_not_keep_the_store_closed() {
    let (dir, store) = populated();
    drop(store);
    damage(dir.path()).truncate_newest_chunk_pointer();
    let store = open_rebuilt(dir.path(), "corrupt record");
    // The events of the other deliveries are still there, and new ids do
    // not collide with the damaged chunk's.
    assert!(store.check().unwrap().events >= 20);
    let summary = store
        .append_blocking(batch(
            T0 + 10,
            vec![konnect(99, 0, "carol", "Ingress", None)],
            vec![],
        ))
        .unwrap();
    assert_eq!(summary.stored, 1);
}

#[test]
fn retention_removes_old_events_with_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let day = 86_400_000;
    let old: Vec<Event> = (0..5)
        .map(|n| konnect(n, 0, "alice", "Authz.usage", None))
        .collect();
    let new: Vec<Event> = (5..8)
        .map(|n| konnect(n, 0, "alice", "Authz.usage", None))
        .collect();
    let junk = |s: &str| QuarantinedLine {
        raw: s.as_bytes().to_vec(),
        reason: "no CEF header".into(),
    };
    store
        .append_blocking(batch(T0 - 10 * day, old.clone(), vec![junk("old junk")]))
        .unwrap();
    store
        .append_blocking(batch(T0, new, vec![junk("new junk")]))
        .unwrap();
    let summary = store.apply_retention(T0 - day).unwrap();
    assert_eq!(
        summary,
        RetentionSummary {
            events_removed: 5,
            quarantine_removed: 1,
            // The new events' chunk is in the same log segment.
            log_segments_removed: 0,
            damaged_chunks_removed: 0,
            events_held: 0,
        }
    );
    assert_eq!(store.event_count(), 3);
    assert_eq!(store.quarantine_count(), 1);
    let alice = Query {
        principal: Some("alice".into()),
        ..Query::default()
    };
    assert_eq!(store.count(&alice).unwrap(), 3);
    assert_eq!(ns(store.query(&alice).unwrap()), ["5", "6", "7"]);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.dedupe_entries, 3);
    assert_eq!(
        store.apply_retention(T0 - day).unwrap(),
        RetentionSummary::default()
    );
    assert_eq!(store.stats().retention_events_removed, 5);
    // Ids are never reused, even for a store emptied by retention.
    let last = store.events(None).last().unwrap().unwrap().id;
    store.apply_retention(T0 + 1).unwrap();
    assert_eq!(store.event_count(), 0);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    store.append_blocking(batch(T0 + 2, old, vec![])).unwrap();
    assert!(store.events(None).next().unwrap().unwrap().id > last);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn retention_thread_runs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    {
        let store = Store::open(dir.path()).unwrap();
        let old = (0..3).map(|n| konnect(n, 0, "a", "n", None)).collect();
        store
            .append_blocking(batch(now - 3 * 86_400_000, old, vec![]))
            .unwrap();
        let fresh = (3..5).map(|n| konnect(n, 0, "a", "n", None)).collect();
        store.append_blocking(batch(now, fresh, vec![])).unwrap();
    }
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            retention_days: Some(1),
            retention_interval: Duration::from_millis(50),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.event_count() != 2 || store.stats().retention_runs == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = store.stats();
    assert_eq!(stats.retention_days, Some(1));
    assert!(stats.retention_runs >= 1);
    assert_eq!(stats.retention_events_removed, 3);
}

#[test]
fn writes_go_through_between_the_steps_of_a_long_retention_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let day = 86_400_000;
    // Retention removes about 1000 events per step under the write lock:
    // this run takes 40 steps, about 1 s in a debug build (200 in an
    // optimized one, where a step is ten times faster and the write's
    // syncs are not), so that half of them take far longer than the write.
    let steps = if cfg!(debug_assertions) { 40 } else { 200 };
    let mut n = 0;
    for _ in 0..steps {
        let old = (0..1000)
            .map(|_| {
                n += 1;
                konnect(n, 0, "alice", "Authz.usage", None)
            })
            .collect();
        store
            .append_blocking(batch(T0 - 10 * day, old, vec![]))
            .unwrap();
    }
    let old_events = store.event_count();
    let fresh: Vec<Event> = (0..10)
        .map(|i| konnect(n + 1 + i, 0, "bob", "Authz.usage", None))
        .collect();
    std::thread::scope(|scope| {
        let retention = scope.spawn(|| store.apply_retention(T0 - day).unwrap());
        loop {
            let finished = retention.is_finished();
            if store.event_count() != old_events {
                break;
            }
            assert!(!finished, "retention removed nothing");
            std::thread::yield_now();
        }
        let summary = store
            .append_blocking(batch(T0, fresh.clone(), vec![]))
            .unwrap();
        assert_eq!(summary.stored, 10);
        // The write was not held up until the run's end: old events were
        // still there when it was answered.
        let old_left = store.event_count() - 10;
        let removed = retention.join().unwrap().events_removed;
        assert_eq!(removed, old_events as u64);
        assert!(
            old_left > old_events / 2,
            "the write waited for retention: {old_left} of {old_events} old events left"
        );
    });
    assert_eq!(store.event_count(), 10);
    // Every posting the expired events were in lost them.
    let by = |principal: &str| Query {
        principal: Some(principal.into()),
        ..Query::default()
    };
    assert_eq!(store.count(&by("alice")).unwrap(), 0);
    assert_eq!(store.count(&by("bob")).unwrap(), 10);
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn reprocess_moves_what_now_parses_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stored = konnect(1, 0, "alice", "Authz.usage", None);
    let parsable = konnect(2, 0, "bob", "Authz.usage", None);
    let line = |raw: &str, reason: &str| QuarantinedLine {
        raw: raw.as_bytes().to_vec(),
        reason: reason.into(),
    };
    store
        .append_blocking(batch(
            T0,
            vec![stored.clone()],
            vec![
                // Quarantined by an older parser; the current one reads them.
                line(&parsable.raw, "CEF: old parser bug at byte 3"),
                line(&stored.raw, "CEF: old parser bug at byte 3"),
                line("still not an event", "no CEF header"),
                // A body that did not decode is kept, even if it parses
                // (its own bytes: the same bytes are one identity).
                QuarantinedLine {
                    raw: format!("{} ", parsable.raw).into_bytes(),
                    reason: QuarantineReason::Body("undecodable request body: gzip header".into()),
                },
                line("CEF:0|V|P|1|c|n|1|a=b\nCEF:0|V|P|1|c|n|1|a=c", "two lines"),
            ],
        ))
        .unwrap();
    let summary = store
        .reprocess_quarantine(&|_| Reparse {
            options: ParseOptions::new(Format::Auto),
            keys: None,
            enforce: false,
        })
        .unwrap();
    assert_eq!(
        summary,
        ReprocessSummary {
            examined: 5,
            moved: 1,
            duplicates: 1,
            kept: 3
        }
    );
    assert_eq!(store.quarantine_count(), 3);
    let kept: Vec<_> = store.quarantine(None).map(|q| q.unwrap().reason).collect();
    assert_eq!(kept[0], "no CEF header");
    let moved = store
        .query(&Query {
            principal: Some("bob".into()),
            ..Query::default()
        })
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(moved.event.raw, parsable.raw);
    assert_eq!(
        (moved.received_at_ms, moved.source.as_str()),
        (T0, "konnect")
    );
    assert!(store.check().unwrap().is_ok());
    // Idempotent.
    let again = store
        .reprocess_quarantine(&|_| Reparse {
            options: ParseOptions::new(Format::Auto),
            keys: None,
            enforce: false,
        })
        .unwrap();
    assert_eq!((again.moved, again.kept), (0, 3));
}

#[test]
fn counts_survive_reopen() {
    let (dir, store) = populated();
    store
        .append_blocking(batch(
            T0,
            vec![],
            vec![QuarantinedLine {
                raw: b"x".to_vec(),
                reason: "r".into(),
            }],
        ))
        .unwrap();
    assert_eq!((store.event_count(), store.quarantine_count()), (30, 1));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!((store.event_count(), store.quarantine_count()), (30, 1));
    assert_eq!(
        store.append_blocking(batch(T0, vec![], vec![])).unwrap(),
        AppendSummary::default()
    );
    assert!(store.size_on_disk().unwrap() > 0);
}

#[test]
fn reprocess_honours_an_enforced_signature_policy() {
    use auditsink_parser::signature::{KeySet, SigningKeyPair};
    use auditsink_parser::SignatureStatus;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let pair = SigningKeyPair::generate();
    let keys =
        std::sync::Arc::new(KeySet::from_jwks(SigningKeyPair::jwks(&[&pair]).as_bytes()).unwrap());
    let signed = pair.sign_cef_line("CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1 n=1");
    let forged = signed.replace("n=1", "n=2");
    let unsigned = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1 n=3";
    let quarantined = [&signed, &forged, unsigned]
        .iter()
        .map(|raw| QuarantinedLine {
            raw: raw.as_bytes().to_vec(),
            reason: "older parser".into(),
        })
        .collect();
    store
        .append_blocking(batch(T0, vec![], quarantined))
        .unwrap();
    let summary = store
        .reprocess_quarantine(&|_| Reparse {
            options: ParseOptions::new(Format::Auto),
            keys: Some(keys.clone()),
            enforce: true,
        })
        .unwrap();
    assert_eq!((summary.moved, summary.kept), (1, 2));
    let moved = store.events(None).next().unwrap().unwrap();
    assert_eq!(moved.event.raw, signed);
    assert_eq!(moved.event.signature, SignatureStatus::Valid);
    // Under `tag`, the others move too, with their outcome recorded.
    let summary = store
        .reprocess_quarantine(&|_| Reparse {
            options: ParseOptions::new(Format::Auto),
            keys: Some(keys.clone()),
            enforce: false,
        })
        .unwrap();
    assert_eq!((summary.moved, summary.kept), (2, 0));
    let statuses: Vec<_> = store
        .events(None)
        .map(|e| e.unwrap().event.signature)
        .collect();
    assert_eq!(
        statuses,
        [
            SignatureStatus::Valid,
            SignatureStatus::Invalid,
            SignatureStatus::Missing
        ]
    );
}

#[test]
fn a_forged_line_with_a_copied_signature_does_not_shadow_the_genuine_event() {
    use auditsink_parser::SignatureStatus;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 64]);
    let mut forged = konnect(1, 0, "mallory", "Authz.usage", Some(&sig));
    forged.signature = SignatureStatus::Invalid;
    let mut genuine = konnect(1, 0, "alice", "Authz.usage", Some(&sig));
    genuine.signature = SignatureStatus::Valid;
    let summary = store
        .append_blocking(batch(T0, vec![forged.clone(), genuine.clone()], vec![]))
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (2, 0));
    // The genuine event is deduplicated by its signature from then on.
    let summary = store
        .append_blocking(batch(T0, vec![genuine, forged], vec![]))
        .unwrap();
    assert_eq!((summary.stored, summary.duplicates), (0, 2));
}

#[test]
fn events_packed_in_many_chunks_read_page_and_expire_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events: Vec<Event> = (0..1500)
        .map(|n| konnect(n, i64::from(n) / 100, "p", "Authz.usage", None))
        .collect();
    let summary = store.append_blocking(batch(T0, events, vec![])).unwrap();
    assert_eq!(summary.stored, 1500);
    // Quarantined lines received at different times that later parse: one
    // chunk holding events of two receive times.
    let line = |n: u32| konnect(n, 0, "q", "Late", None).raw.into_bytes();
    let late = |n: u32, at: i64| {
        batch(
            at,
            vec![],
            vec![QuarantinedLine {
                raw: line(n),
                reason: "unparsed".into(),
            }],
        )
    };
    store.append_blocking(late(5000, T0 + 10)).unwrap();
    store.append_blocking(late(5001, T0 + 20)).unwrap();
    let reparse = |_: &str| Reparse {
        options: ParseOptions::new(Format::Cef),
        keys: None,
        enforce: false,
    };
    assert_eq!(store.reprocess_quarantine(&reparse).unwrap().moved, 2);
    assert_eq!(store.event_count(), 1502);

    let all: Vec<_> = store.events(None).map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 1502);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    for probe in [0, 1, 17, 499, 1000, 1499, 1500, 1501] {
        let id = all[probe].id;
        assert_eq!(store.event(id).unwrap().as_ref(), Some(&all[probe]));
        let after: Vec<u64> = store.events(Some(id)).map(|e| e.unwrap().id).collect();
        assert_eq!(after.len(), 1501 - probe, "after {probe}");
        assert_eq!(after.first(), all.get(probe + 1).map(|e| &e.id));
    }
    assert_eq!(store.event(all[1501].id + 1).unwrap(), None);
    let trace = Query {
        trace: Some("1777".into()),
        ..Query::default()
    };
    assert_eq!(ns(store.query(&trace).unwrap()), ["777"]);
    assert!(store.check().unwrap().is_ok());

    // Reopen: the next id comes after the last event of the last chunk.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.open_report().problems.is_empty());
    let more = store
        .append_blocking(batch(
            T0 + 30,
            vec![konnect(9000, 0, "r", "New", None)],
            vec![],
        ))
        .unwrap();
    assert_eq!(more.stored, 1);
    let last = store.events(Some(all[1501].id)).next().unwrap().unwrap();
    assert!(last.id > all[1501].id);

    // Retention up to the second late event: it, and everything after it,
    // stays; its chunk is rewritten with it alone.
    let removed = store.apply_retention(T0 + 20).unwrap();
    assert_eq!(removed.events_removed, 1501);
    let left = ns(store.events(None));
    assert_eq!(left, ["5001", "9000"]);
    assert_eq!(store.event(all[1500].id).unwrap(), None);
    assert_eq!(
        store.event(all[1501].id).unwrap().as_ref(),
        Some(&all[1501])
    );
    assert!(store.check().unwrap().is_ok());
    // Duplicates are still found, after reopen too.
    let again = store
        .append_blocking(batch(
            T0 + 40,
            vec![konnect(9000, 0, "r", "New", None)],
            vec![],
        ))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    damage(dir.path()).set_format_version(1);
    let error = Store::open(dir.path()).err().expect("refused").to_string();
    assert!(error.contains("format version 1"), "{error}");
}

#[test]
fn a_damaged_run_directory_does_not_keep_the_store_closed() {
    let (dir, store) = populated();
    drop(store);
    damage(dir.path()).garble_dedupe_run_directory();
    let store = open_rebuilt(dir.path(), "run directory");
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn retention_deletes_the_event_log_segments_nothing_points_into() {
    let day = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let segments = || {
        std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .count()
    };
    let store = Store::open(dir.path()).unwrap();
    let old = (0..40)
        .map(|n| konnect(n, 0, "alice", "Authn.login", None))
        .collect();
    store
        .append_blocking(batch(T0 - 10 * day, old, vec![]))
        .unwrap();
    drop(store);
    // Each open starts a segment: the new events are in another one.
    let store = Store::open(dir.path()).unwrap();
    let new = (40..50)
        .map(|n| konnect(n, 0, "bob", "Authn.login", None))
        .collect();
    store.append_blocking(batch(T0, new, vec![])).unwrap();
    assert_eq!(segments(), 2);
    let summary = store.apply_retention(T0 - day).unwrap();
    assert_eq!(summary.events_removed, 40);
    assert_eq!(summary.log_segments_removed, 1);
    assert_eq!(segments(), 1);
    assert_eq!(store.events(None).count(), 10);
    assert!(store.check().unwrap().is_ok());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.events(None).map(Result::unwrap).count(), 10);
}

#[test]
fn a_damaged_index_page_is_rebuilt_on_open() {
    let (dir, store) = populated();
    drop(store);
    damage(dir.path()).truncate_dedupe_page();
    // `check` reports it (so that `check --repair` gets to repair it).
    let store = open_unverified(dir.path());
    let report = store.check().unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.contains("wrong size")),
        "{report:?}"
    );
    drop(store);
    let store = open_rebuilt(dir.path(), "wrong size");
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn trace_queries_see_no_error_while_runs_merge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = konnect(0, 0, "alice", "Authn.login", None);
    store
        .append_blocking(batch(T0, vec![first], vec![]))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let trace = Query {
                trace: Some("1000".into()),
                ..Query::default()
            };
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(store.count(&trace).unwrap(), 1);
                reads += 1;
            }
            reads
        });
        // 200 single-event deliveries: runs merge every 16.
        for n in 1..=200 {
            let event = konnect(n, 0, "bob", "Authn.login", None);
            store
                .append_blocking(batch(T0, vec![event], vec![]))
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_store_never_written_to_checks_ok() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.events, 0);
}

#[test]
fn a_damaged_event_chunk_is_reported_and_repair_leaves_only_it() {
    let (dir, store) = populated();
    drop(store);
    damage(dir.path()).damage_first_log_chunk();

    let store = open_unverified(dir.path());
    let report = store.check().unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("checksum")),
        "{report:?}"
    );
    store.rebuild_indexes().unwrap();
    let report = store.check().unwrap();
    assert!(
        report.problems.iter().all(|p| p.contains("checksum")),
        "only the damaged chunk is left: {report:?}"
    );
}

#[test]
fn retention_goes_past_a_damaged_old_chunk() {
    let day = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (range, received) in [(0..5, T0 - 10 * day), (5..10, T0 - 9 * day), (10..12, T0)] {
        let events = range
            .map(|n| konnect(n, 0, "alice", "Authn.login", None))
            .collect();
        store
            .append_blocking(batch(received, events, vec![]))
            .unwrap();
    }
    drop(store);
    // The oldest delivery's chunk is the first in the log.
    damage(dir.path()).damage_first_log_chunk();

    let store = open_unverified(dir.path());
    let summary = store.apply_retention(T0 - day).unwrap();
    assert_eq!(summary.events_removed, 5);
    assert_eq!(summary.damaged_chunks_removed, 1);
    assert_eq!(store.events(None).map(Result::unwrap).count(), 2);
}

/// Dedupe works: event 1 of `konnect`'s first delivery, sent again, is
/// counted as a duplicate.
fn assert_replay_is_a_duplicate(store: &Store) {
    let replay = konnect(1, 1, "bob", "Authz.routes", None);
    assert_eq!(
        store
            .append_blocking(batch(T0, vec![replay], vec![]))
            .unwrap()
            .duplicates,
        1
    );
}

/// A quarantined line's raw bytes, for `QuarantinedLine`s.
fn bad(raw: &str) -> QuarantinedLine {
    QuarantinedLine {
        raw: raw.as_bytes().to_vec(),
        reason: "no CEF header".into(),
    }
}

fn raws(store: &Store) -> Vec<(String, String)> {
    store
        .quarantine(None)
        .map(|q| {
            let q = q.unwrap();
            (q.source, String::from_utf8(q.raw).unwrap())
        })
        .collect()
}

#[test]
fn quarantine_keeps_one_copy_of_a_line_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let summary = |stored, duplicates, quarantined| AppendSummary {
        stored,
        duplicates,
        quarantined,
    };
    // Twice in one delivery, then resent: one record, the rest duplicates.
    let first = batch(T0, vec![], vec![bad("garbage one"), bad("garbage one")]);
    assert_eq!(store.append_blocking(first).unwrap(), summary(0, 1, 1));
    let resent = batch(
        T0 + 1,
        vec![konnect(1, 0, "a", "n", None)],
        vec![bad("garbage one")],
    );
    assert_eq!(store.append_blocking(resent).unwrap(), summary(1, 1, 0));
    // Another source's identical line is its own.
    let other = Batch {
        source: "other".into(),
        ..batch(T0, vec![], vec![bad("garbage one")])
    };
    assert_eq!(store.append_blocking(other).unwrap(), summary(0, 0, 1));
    assert_eq!(
        raws(&store),
        [
            ("konnect".to_owned(), "garbage one".to_owned()),
            ("other".to_owned(), "garbage one".to_owned())
        ]
    );
    assert_eq!(store.quarantine_count(), 2);
    assert!(store.check().unwrap().is_ok());

    // Concurrent deliveries of one line (groups in flight): one record.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                store
                    .append_blocking(batch(T0, vec![], vec![bad("garbage two")]))
                    .unwrap()
            });
        }
    });
    assert_eq!(
        raws(&store)
            .iter()
            .filter(|(_, r)| r == "garbage two")
            .count(),
        1
    );

    // Retention removes a line with its entry: it is kept again later.
    store.apply_retention(T0 + 1).unwrap();
    assert_eq!(store.quarantine_count(), 0);
    assert!(store.check().unwrap().is_ok());
    let again = batch(T0 + 2, vec![], vec![bad("garbage one")]);
    assert_eq!(store.append_blocking(again).unwrap(), summary(0, 0, 1));

    // A line that now parses moves to the events, and its entry goes.
    let event = konnect(2, 0, "b", "n", None);
    let later = batch(T0 + 3, vec![], vec![bad(&event.raw)]);
    assert_eq!(
        store.append_blocking(later.clone()).unwrap(),
        summary(0, 0, 1)
    );
    let reprocessed = store
        .reprocess_quarantine(&|_| Reparse {
            options: ParseOptions::new(Format::Auto),
            keys: None,
            enforce: false,
        })
        .unwrap();
    assert_eq!(reprocessed.moved, 1);
    assert!(store.check().unwrap().is_ok());
    // Resent, it is an event now: a duplicate of the one moved.
    let resent = batch(T0 + 4, vec![event], vec![]);
    assert_eq!(store.append_blocking(resent).unwrap(), summary(0, 1, 0));
    assert_eq!(
        raws(&store),
        [("konnect".to_owned(), "garbage one".to_owned())]
    );
    drop(store);

    // A missing entry: `check` finds it, and the repair rebuilds it.
    damage(dir.path()).remove_quarantine_dedupe_entry();
    let store = Store::open(dir.path()).unwrap();
    let report = store.check().unwrap();
    assert!(!report.is_ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("no dedupe entry")),
        "{report:?}"
    );
    store.rebuild_indexes().unwrap();
    assert!(store.check().unwrap().is_ok());
}
