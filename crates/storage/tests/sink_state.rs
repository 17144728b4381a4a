//! Per-sink delivery state: cursors survive a reopen, changes are
//! compare-and-swap, parked events are kept with why, and retention never
//! removes what a sink has not delivered (unless it is older than the
//! sink's `max_lag_days`).

use auditsink_parser::{parse_line, Event, Format, ParseOptions};
use auditsink_storage::testing::Damage;
use auditsink_storage::{
    Batch, ParkedEvent, SinkStart, SinkState, SinkUpdateError, Store, StoreError,
};

const DAY: i64 = 86_400_000;

fn event(n: u32) -> Event {
    let line = format!("CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000000 n={n}");
    parse_line(line.as_bytes(), &ParseOptions::new(Format::Cef)).unwrap()
}

fn append(store: &Store, received_at_ms: i64, range: std::ops::Range<u32>) {
    store
        .append_blocking(Batch {
            source: "konnect".into(),
            received_at_ms,
            events: range.map(event).collect(),
            quarantine: Vec::new(),
        })
        .unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ids(store: &Store) -> Vec<u64> {
    store.events(None).map(|e| e.unwrap().id).collect()
}

/// A parked entry of the ids `first` to `last`: one event the destination
/// refused, or a stored chunk that did not read (as the sink parks them).
fn parked(first: u64, last: u64) -> ParkedEvent {
    let reason = if first == last {
        "status 400: mapper_parsing_exception"
    } else {
        "the stored record is damaged: the whole chunk does not read"
    };
    ParkedEvent {
        id: first,
        last,
        reason: reason.into(),
        answer: String::new(),
        parked_at_ms: 1,
        retry: false,
    }
}

#[test]
fn retention_keeps_what_a_sink_has_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = now_ms();
    append(&store, now - 10 * DAY, 0..10);
    let all = ids(&store);
    let sink = store
        .sink_register("siem", SinkStart::Beginning, None)
        .unwrap();
    assert_eq!(sink.cursor, 0);
    // The sink delivered the first four.
    let delivered = SinkState {
        cursor: all[3],
        in_flight: all[3],
        delivered: 4,
        ..sink.clone()
    };
    store
        .sink_commit("siem", &sink, &delivered, &[], &[])
        .unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!(summary.events_removed, 4);
    assert_eq!(summary.events_held, 6, "kept for the sink");
    assert_eq!(ids(&store), all[4..].to_vec());
    assert_eq!(store.stats().retention_events_held, 6);
    // Delivered: retention takes them.
    let done = SinkState {
        cursor: all[9],
        in_flight: all[9],
        ..delivered.clone()
    };
    store
        .sink_commit("siem", &delivered, &done, &[], &[])
        .unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (6, 0));
    assert!(ids(&store).is_empty());
}

#[test]
fn max_lag_days_lets_retention_remove_old_undelivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = now_ms();
    append(&store, now - 10 * DAY, 0..5);
    append(&store, now - 3 * DAY, 5..8);
    store
        .sink_register("slow", SinkStart::Beginning, Some(5))
        .unwrap();
    // Older than 2 days: all 8 expired; the sink holds those younger than 5 days.
    let summary = store.apply_retention(now - 2 * DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (5, 3));
    assert_eq!(store.event_count(), 3);
}

#[test]
fn cursors_parked_events_and_rewinds_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    append(&store, now_ms(), 0..5);
    let all = ids(&store);
    // `now` starts after what is stored.
    let late = store.sink_register("late", SinkStart::Now, None).unwrap();
    assert_eq!(late.cursor, *all.last().unwrap());
    let state = store
        .sink_register("siem", SinkStart::Beginning, None)
        .unwrap();
    let parked = ParkedEvent {
        id: all[1],
        last: all[1],
        reason: "status 400: mapper_parsing_exception".into(),
        answer: "x".repeat(10_000),
        parked_at_ms: 1,
        retry: false,
    };
    let next = SinkState {
        cursor: all[2],
        in_flight: all[2],
        delivered: 2,
        parked_total: 1,
        ..state.clone()
    };
    store
        .sink_commit("siem", &state, &next, &[parked], &[])
        .unwrap();
    // A change on a stale state is refused (a rewind won meanwhile).
    assert!(matches!(
        store.sink_commit("siem", &state, &next, &[], &[]),
        Err(SinkUpdateError::Changed)
    ));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.sink_state("siem").unwrap(), Some(next.clone()));
    let listed = store.sink_parked("siem", 100).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].answer.len(), auditsink_storage::MAX_PARKED_TEXT);
    assert_eq!(store.sink_retry("siem").unwrap(), 1);
    assert!(store.sink_parked("siem", 100).unwrap()[0].retry);
    // Rewind: back only, and what is sent again counts as resent.
    let rewound = store.sink_rewind("siem", 0).unwrap().unwrap();
    assert_eq!((rewound.cursor, rewound.in_flight), (0, all[2]));
    assert_eq!(
        store.sink_rewind("siem", all[4]).unwrap().unwrap().cursor,
        0
    );
    let lag = store.sink_lag(0, 3).unwrap();
    assert!(lag.capped && lag.events == 3);
    store.sink_forget("siem").unwrap();
    assert_eq!(store.sink_state("siem").unwrap(), None);
    assert!(store.sink_parked("siem", 100).unwrap().is_empty());
    // Identities are those of the dedupe: equal for the same line.
    let first = store.events(None).next().unwrap().unwrap();
    assert_eq!(first.identity().len(), 32);
    assert_ne!(
        first.identity(),
        store.event(all[1]).unwrap().unwrap().identity()
    );
}

#[test]
fn retention_keeps_parked_events_until_max_lag_days_and_then_drops_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = now_ms();
    append(&store, now - 10 * DAY, 0..10);
    let all = ids(&store);
    // Everything delivered but the third event, parked.
    let state = store
        .sink_register("siem", SinkStart::Beginning, None)
        .unwrap();
    let done = SinkState {
        cursor: all[9],
        in_flight: all[9],
        delivered: 9,
        parked_total: 1,
        ..state.clone()
    };
    store
        .sink_commit("siem", &state, &done, &[parked(all[2], all[2])], &[])
        .unwrap();
    // Kept for `sink retry`, with what comes after it (retention removes
    // a prefix of the ids).
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (2, 8));
    assert_eq!(ids(&store), all[2..].to_vec());
    assert_eq!(store.sink_parked("siem", 10).unwrap().len(), 1);
    // Parked events too old for `max_lag_days` are not held: removed,
    // their parked entries go with them.
    store
        .sink_register("siem", SinkStart::Beginning, Some(5))
        .unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (8, 0));
    assert!(ids(&store).is_empty());
    assert!(store.sink_parked("siem", 10).unwrap().is_empty());
    assert_eq!(store.sink_parked_count("siem").unwrap(), 0);
}

/// A stored chunk that did not read is parked as one entry for its ids,
/// under the first: retention keeps every one of them once it reads again
/// (a segment restored from a backup), also when the first is no longer
/// stored (retention rewrote the chunk under its key).
#[test]
fn retention_keeps_every_event_of_a_parked_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = now_ms();
    // Three writes, three chunks, all expired.
    for first in [0, 10, 20] {
        append(&store, now - 10 * DAY, first..first + 10);
    }
    let all = ids(&store);
    let state = store
        .sink_register("siem", SinkStart::Beginning, None)
        .unwrap();
    // Delivered up to the fourth of the second chunk: retention removes
    // them, and rewrites that chunk with the rest under its key.
    let delivered = SinkState {
        cursor: all[13],
        in_flight: all[13],
        delivered: 14,
        ..state.clone()
    };
    store
        .sink_commit("siem", &state, &delivered, &[], &[])
        .unwrap();
    assert_eq!(store.apply_retention(now - DAY).unwrap().events_removed, 14);
    assert_eq!(ids(&store), all[14..].to_vec());
    drop(store);
    // That chunk no longer reads; the operator sends everything again.
    let first = Damage::open(dir.path()).damage_log_chunk(0);
    assert_eq!(first, all[10], "the rewritten chunk keeps its key");
    let store = Store::open(dir.path()).unwrap();
    let rewound = store.sink_rewind("siem", all[9]).unwrap().unwrap();
    let Some(Err(StoreError::DamagedChunk { first, last, .. })) =
        store.forward_events(all[9]).unwrap().next()
    else {
        panic!("the damaged chunk first");
    };
    assert_eq!((first, last), (all[10], all[19]));
    // Parked as the sink parks it, the rest delivered.
    let chunk = parked(first, last);
    let done = SinkState {
        cursor: all[29],
        in_flight: all[29],
        delivered: 24,
        parked_total: 10,
        ..rewound.clone()
    };
    store
        .sink_commit("siem", &rewound, &done, std::slice::from_ref(&chunk), &[])
        .unwrap();
    assert_eq!(store.sink_parked_count("siem").unwrap(), 10);
    drop(store);
    // Restored: it reads again, and retention keeps all of it (and what
    // comes after: it removes a prefix of the ids).
    Damage::open(dir.path()).repair_log_chunk(0);
    let store = Store::open(dir.path()).unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (0, 16));
    assert_eq!(ids(&store), all[14..].to_vec());
    // Still parked after a retention run that removed nothing of it.
    assert_eq!(store.sink_parked("siem", 10).unwrap(), [chunk]);
    // Sent (unparked): retention takes them.
    store
        .sink_commit("siem", &done, &done, &[], &[first])
        .unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!((summary.events_removed, summary.events_held), (16, 0));
    assert!(ids(&store).is_empty());
}

/// A parked chunk that still does not read is kept by retention (its
/// segment may yet be restored) until the sink no longer has it parked.
#[test]
fn retention_keeps_a_parked_chunk_that_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = now_ms();
    for first in [0, 10, 20] {
        append(&store, now - 10 * DAY, first..first + 10);
    }
    let all = ids(&store);
    drop(store);
    Damage::open(dir.path()).damage_log_chunk(1);
    let store = Store::open(dir.path()).unwrap();
    let state = store
        .sink_register("siem", SinkStart::Beginning, None)
        .unwrap();
    let read: Vec<_> = store.forward_events(0).unwrap().collect();
    assert_eq!(read.len(), 21);
    let Err(StoreError::DamagedChunk { first, last, .. }) = &read[10] else {
        panic!("the damaged chunk second: {:?}", read[10]);
    };
    assert_eq!((*first, *last), (all[10], all[19]));
    // Nothing delivered yet: all held, the events that read counted.
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!(
        (summary.events_removed, summary.events_held),
        (0, 20),
        "{summary:?}"
    );
    // The rest delivered, the chunk parked.
    let done = SinkState {
        cursor: all[29],
        in_flight: all[29],
        delivered: 20,
        parked_total: 10,
        ..state.clone()
    };
    let chunk = parked(*first, *last);
    store
        .sink_commit("siem", &state, &done, std::slice::from_ref(&chunk), &[])
        .unwrap();
    // The chunk before it goes; it stays, and what comes after it.
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!(
        (
            summary.events_removed,
            summary.damaged_chunks_removed,
            summary.events_held
        ),
        (10, 0, 10),
        "{summary:?}"
    );
    assert_eq!(store.sink_parked("siem", 10).unwrap(), [chunk]);
    drop(store);
    // Restored, all of it is there to send again.
    Damage::open(dir.path()).repair_log_chunk(0);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(ids(&store), all[10..].to_vec());
    drop(store);
    // Damaged again and no longer parked: retention removes it.
    Damage::open(dir.path()).damage_log_chunk(0);
    let store = Store::open(dir.path()).unwrap();
    store
        .sink_commit("siem", &done, &done, &[], &[all[10]])
        .unwrap();
    let summary = store.apply_retention(now - DAY).unwrap();
    assert_eq!(
        (summary.events_removed, summary.damaged_chunks_removed),
        (10, 1),
        "{summary:?}"
    );
    assert!(ids(&store).is_empty());
}
