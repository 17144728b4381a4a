//! The store on a real sled directory.

use auditsink_parser::{Event, LineFormat, SignatureStatus};
use auditsink_storage::{AppendSummary, Batch, QuarantinedLine, Query, Store, StoreError};

fn event(raw: &str, sig: Option<&str>) -> Event {
    Event {
        format: LineFormat::Cef,
        timestamp: None,
        cef_version: Some(0),
        vendor: Some("V".into()),
        product: Some("P".into()),
        product_version: Some("1".into()),
        event_class_id: Some("c".into()),
        name: Some("n".into()),
        severity: serde_json::json!(1),
        fields: serde_json::Map::new(),
        origin: None,
        sig: sig.map(str::to_owned),
        signature: SignatureStatus::Unverified,
        warnings: Vec::new(),
        raw: raw.to_owned(),
    }
}

/// A well-formed signature (64 bytes, base64url unpadded) derived from `n`.
fn sig(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 64])
}

fn batch(events: Vec<Event>, quarantine: Vec<QuarantinedLine>) -> Batch {
    Batch {
        source: "test".into(),
        received_at_ms: 1_700_000_000_123,
        events,
        quarantine,
    }
}

fn summary(stored: u64, duplicates: u64, quarantined: u64) -> AppendSummary {
    AppendSummary {
        stored,
        duplicates,
        quarantined,
    }
}

#[test]
fn dedupes_by_sig_then_by_raw_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (s1, s2) = (sig(1), sig(2));
    let first = batch(
        vec![
            event("a sig=1", Some(&s1)),
            event("b", None),
            event("b", None),
            event("a' sig=1", Some(&s1)),
        ],
        vec![],
    );
    // Within one batch: the second "b" and the second sig=1 are duplicates.
    assert_eq!(
        store.append_blocking(first.clone()).unwrap(),
        summary(2, 2, 0)
    );
    // The same batch three times stores it once.
    assert_eq!(
        store.append_blocking(first.clone()).unwrap(),
        summary(0, 4, 0)
    );
    assert_eq!(store.append_blocking(first).unwrap(), summary(0, 4, 0));
    // A replay overlapping stored events stores only the new ones.
    let replay = batch(
        vec![
            event("b", None),
            event("c", None),
            event("d sig=2", Some(&s2)),
        ],
        vec![],
    );
    assert_eq!(store.append_blocking(replay).unwrap(), summary(2, 1, 0));
    let raws: Vec<String> = store.events(None).map(|e| e.unwrap().event.raw).collect();
    assert_eq!(raws, ["a sig=1", "b", "c", "d sig=2"]);
}

#[test]
fn quarantine_keeps_exact_bytes_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bad = QuarantinedLine {
        raw: vec![b'x', 0xff, 0xfe, b'\n'],
        reason: "invalid UTF-8 at byte 1".into(),
    };
    let text = QuarantinedLine {
        raw: b"not cef".to_vec(),
        reason: "no CEF header".into(),
    };
    let result = store
        .append_blocking(batch(vec![event("e", None)], vec![bad.clone(), text]))
        .unwrap();
    assert_eq!(result, summary(1, 0, 2));
    let rows: Vec<_> = store.quarantine(None).map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].raw, bad.raw);
    assert_eq!(rows[0].reason, bad.reason);
    assert_eq!(rows[0].source, "test");
    let json = rows[0].to_json();
    assert_eq!(json["raw_bytes"], serde_json::json!([120, 255, 254, 10]));
    assert_eq!(rows[1].to_json()["raw"], "not cef");
    assert!(rows[1].to_json().get("raw_bytes").is_none());
}

#[test]
fn stored_event_json_has_store_keys_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append_blocking(batch(vec![event("e", Some("s"))], vec![]))
        .unwrap();
    let stored = store.events(None).next().unwrap().unwrap();
    let json = stored.to_json();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(&keys[..4], ["id", "received_at", "source", "format"]);
    assert_eq!(json["received_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(json["sig"], "s");
    assert_eq!(json["raw"], "e");
    assert_eq!(json["id"].as_str().unwrap().len(), 16);
}

#[test]
fn survives_reopen_and_ids_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let first_ids: Vec<u64> = {
        let store = Store::open(dir.path()).unwrap();
        store
            .append_blocking(batch(vec![event("1", None), event("2", None)], vec![]))
            .unwrap();
        store.events(None).map(|e| e.unwrap().id).collect()
    };
    let store = Store::open(dir.path()).unwrap();
    store
        .append_blocking(batch(vec![event("3", None), event("1", None)], vec![]))
        .unwrap();
    let all: Vec<_> = store.events(None).map(Result::unwrap).collect();
    assert_eq!(
        all.len(),
        3,
        "the duplicate of a stored event is not stored after reopen"
    );
    assert_eq!(all[..2].iter().map(|e| e.id).collect::<Vec<_>>(), first_ids);
    assert!(all[2].id > all[1].id);
    let after: Vec<_> = store
        .events(Some(all[0].id))
        .map(|e| e.unwrap().event.raw)
        .collect();
    assert_eq!(after, ["2", "3"]);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    // sled locks the directory per process; a second open in this process
    // must fail the same way a second process does.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "open_from_child", "--ignored", "--nocapture"])
        .env("AUDITSINK_TEST_STORE", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(stdout.contains("LOCKED"), "{stdout}");
}

#[test]
#[ignore = "helper for second_open_of_the_same_directory_is_refused"]
fn open_from_child() {
    let Ok(dir) = std::env::var("AUDITSINK_TEST_STORE") else {
        return;
    };
    match Store::open(std::path::Path::new(&dir)) {
        Err(StoreError::Locked { .. }) => println!("LOCKED"),
        Err(other) => println!("OTHER {other}"),
        Ok(_) => println!("OPENED"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land_and_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let events = (0..50)
                    .map(|i| event(&format!("t{t} e{i}"), None))
                    .collect();
                store.append(batch(events, vec![])).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), summary(50, 0, 0));
    }
    assert_eq!(store.event_count(), 64 * 50);
    let (batches, flushes) = store.commit_counts();
    assert_eq!(batches, 64);
    assert!(
        flushes < batches,
        "concurrent batches share flushes: {flushes} flushes for {batches} batches"
    );
}

/// Concurrent deliveries carrying the same events (Konnect retrying while
/// the first attempt is still being stored) store each event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_the_same_events_store_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 16 deliveries of 4 overlapping batches: batch k holds events
    // 25k .. 25k+50, so neighbours share 25 events; 125 events in all.
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let store = store.clone();
            let first = (t % 4) * 25;
            tokio::spawn(async move {
                let events = (first..first + 50)
                    .map(|i| {
                        // Half identified by signature, half by raw line.
                        let s = (i % 2 == 0).then(|| sig(i as u8));
                        event(&format!("event {i}"), s.as_deref())
                    })
                    .collect();
                store.append(batch(events, vec![])).await.unwrap()
            })
        })
        .collect();
    let (mut stored, mut duplicates) = (0, 0);
    for task in tasks {
        let summary = task.await.unwrap();
        assert_eq!(summary.stored + summary.duplicates, 50);
        stored += summary.stored;
        duplicates += summary.duplicates;
    }
    assert_eq!((stored, duplicates), (125, 16 * 50 - 125));
    let mut raws: Vec<String> = store.events(None).map(|e| e.unwrap().event.raw).collect();
    assert_eq!(raws.len(), 125);
    raws.sort();
    raws.dedup();
    assert_eq!(raws.len(), 125, "an event is stored twice");
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Maintenance (here `check`) waits for the groups in flight between the
/// writer and the syncer and then sees a consistent store, while appends go
/// on; neither side waits forever.
#[test]
fn check_runs_consistently_between_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let appenders: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for b in 0..25 {
                    let events = (0..100)
                        .map(|i| event(&format!("t{t} b{b} e{i}"), None))
                        .collect();
                    let summary = store.append_blocking(batch(events, vec![])).unwrap();
                    assert_eq!(summary, summary_of(100));
                }
                done.send(()).unwrap();
            })
        })
        .collect();
    drop(done);
    let watchdog = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut checks = 0;
    let mut ended = 0;
    while ended < 4 {
        assert!(
            std::time::Instant::now() < watchdog,
            "appends or checks stuck"
        );
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        checks += 1;
        // (Back to back, checks would keep the write lock from the writer.)
        std::thread::sleep(std::time::Duration::from_millis(20));
        while finished.try_recv().is_ok() {
            ended += 1;
        }
    }
    for appender in appenders {
        appender.join().unwrap();
    }
    assert!(checks > 1);
    assert_eq!(store.event_count(), 4 * 25 * 100);
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn summary_of(stored: u64) -> AppendSummary {
    summary(stored, 0, 0)
}

/// A quarantined body too large for a sled log segment goes to sled's blob
/// files, which the store syncs itself; it comes back whole after reopen.
#[test]
fn a_quarantined_body_larger_than_a_log_segment_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    {
        let store = Store::open(dir.path()).unwrap();
        let summary = store
            .append_blocking(batch(
                vec![event("small", None)],
                vec![QuarantinedLine {
                    raw: body.clone(),
                    reason: "undecodable request body".into(),
                }],
            ))
            .unwrap();
        assert_eq!(summary, self::summary(1, 0, 1));
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(blobs > 0, "the body was expected in a sled blob file");
    }
    let store = Store::open(dir.path()).unwrap();
    let kept: Vec<_> = store.quarantine(None).map(Result::unwrap).collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].raw == body, "the body comes back byte-exact");
}

#[test]
fn time_span_is_the_earliest_and_latest_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.time_span().unwrap(), None);
    // Out of time order on arrival; one without a timestamp takes its
    // received_at (1_700_000_000_123).
    let at = |raw: &str, ts: Option<&str>| Event {
        timestamp: ts.map(str::to_owned),
        ..event(raw, None)
    };
    store
        .append_blocking(batch(
            vec![
                at("b", Some("2023-11-14T22:20:00.000Z")),
                at("a", Some("2023-11-14T20:00:30.500Z")),
                at("c", None),
                at("d", Some("2023-11-14T21:00:00.000Z")),
            ],
            vec![],
        ))
        .unwrap();
    let (first, last) = store.time_span().unwrap().unwrap();
    // Exact to the minute: the time index keeps one key per minute.
    assert_eq!(first.div_euclid(60_000), 1_699_992_030_500 / 60_000);
    assert_eq!(last.div_euclid(60_000), 1_700_000_400_000 / 60_000);
    assert!(first <= 1_699_992_030_500 && last >= 1_700_000_400_000 - 59_999);
}

#[test]
fn count_by_time_equals_a_count_per_bar() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t0 = 1_764_100_000_000i64;
    let events: Vec<Event> = (0..600)
        .map(|i: i64| {
            let mut e = event(&format!("line {i}"), None);
            // Out of order by a few minutes, so that ids and times differ.
            e.timestamp = Some(auditsink_storage::format_ms(
                t0 + ((i * 7919) % 600) * 20_000,
            ));
            e.name = Some(if i % 3 == 0 { "a" } else { "b" }.into());
            e.fields
                .insert("principal_id".into(), format!("p{}", i % 5).into());
            e.fields.insert("org_id".into(), "org".into());
            e.fields
                .insert("trace_id".into(), format!("{}", i % 50).into());
            e
        })
        .collect();
    store.append_blocking(batch(events, vec![])).unwrap();
    let queries = [
        Query::default(),
        Query {
            principal: Some("p2".into()),
            ..Query::default()
        },
        Query {
            org: Some("org".into()),
            name: Some("a".into()),
            ..Query::default()
        },
        Query {
            trace: Some("7".into()),
            ..Query::default()
        },
        Query {
            trace: Some("7".into()),
            principal: Some("p2".into()),
            since_ms: Some(t0 + 600_000),
            ..Query::default()
        },
        Query {
            name: Some("b".into()),
            since_ms: Some(t0 + 1_000_000),
            until_ms: Some(t0 + 5_000_000),
            ..Query::default()
        },
        Query {
            principal: Some("nobody".into()),
            ..Query::default()
        },
    ];
    let (start, bar, bars) = (t0 - 60_000, 300_000i64, 42usize);
    for query in &queries {
        let counts = store.count_by_time(query, start, bar, bars).unwrap();
        let expected: Vec<u64> = (0..bars as i64)
            .map(|i| {
                let since = (start + i * bar).max(query.since_ms.unwrap_or(i64::MIN));
                let until = (start + (i + 1) * bar).min(query.until_ms.unwrap_or(i64::MAX));
                if since >= until {
                    return 0;
                }
                let bar_query = Query {
                    since_ms: Some(since),
                    until_ms: Some(until),
                    ..query.clone()
                };
                store.count(&bar_query).unwrap()
            })
            .collect();
        assert_eq!(counts, expected, "{query:?}");
        assert_eq!(
            counts.iter().sum::<u64>(),
            store.count(query).unwrap(),
            "{query:?}"
        );
    }
}
