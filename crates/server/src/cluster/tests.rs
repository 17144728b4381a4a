//! A delivery that goes through the stream is stored as a single process
//! would have stored it.

use auditsink_parser::{parse_borrowed, Format, ParseOptions, SignatureStatus};
use auditsink_storage::{PreparedBatch, QuarantineReason, Store, StoredEvent};

use super::indexer;
use super::wire::{self, Head};

const RECEIVED_AT: i64 = 1_767_225_600_000;
const YEAR: i32 = 2026;

/// A year-less syslog prefix (its time needs the year it was read in), a
/// JSON line, and a CEF line with a signature judged invalid (identity by
/// raw line) and one judged valid (identity by signature).
const LINES: [(&str, SignatureStatus); 4] = [
    (
        "<134>Dec 31 23:59:58 host CEF:0|Kong|Konnect|1|a|Authz.usage|1|src=10.0.0.1 principal_id=p1",
        SignatureStatus::Unverified,
    ),
    (
        r#"{"cef_version":0,"event_vendor":"Kong","name":"Authz.usage","rt":1764100000000,"principal_id":"p2"}"#,
        SignatureStatus::Missing,
    ),
    (
        "CEF:0|Kong|Konnect|1|a|b|1|rt=1764100000001 principal_id=p3 sig=c2lnbmF0dXJl",
        SignatureStatus::Invalid,
    ),
    (
        "CEF:0|Kong|Konnect|1|a|b|1|rt=1764100000002 principal_id=p4 sig=c2lnbmF0dXJl",
        SignatureStatus::Valid,
    ),
];

fn events(store: &Store) -> Vec<StoredEvent> {
    store.events(None).collect::<Result<_, _>>().unwrap()
}

#[test]
fn the_indexer_stores_what_a_single_process_would() {
    let head = Head {
        source: "eu",
        received_at_ms: RECEIVED_AT,
    };
    let options = ParseOptions {
        format: Format::Auto,
        year_hint: YEAR,
    };
    let mut direct = PreparedBatch::new("eu", RECEIVED_AT);
    let mut payloads = Vec::new();
    for (line, status) in LINES {
        let mut event = parse_borrowed(line.as_bytes(), &options).unwrap();
        event.signature = status;
        direct.add_event(&event);
        payloads.push(wire::encode_event(
            head,
            Format::Auto,
            status,
            YEAR,
            line.as_bytes(),
        ));
    }
    direct.add_quarantine(b"not an event \xff", &"no CEF header".into());
    payloads.push(wire::encode_quarantine(
        head,
        &"no CEF header".into(),
        b"not an event \xff",
    ));
    // A whole body stays a body through the stream.
    let body = QuarantineReason::Body("undecodable request body: bad gzip".into());
    direct.add_quarantine(b"\x1f\x8b not gzip", &body);
    payloads.push(wire::encode_quarantine(head, &body, b"\x1f\x8b not gzip"));
    // A payload no version reads is kept too, whole.
    payloads.push(vec![9, b'e']);

    let batches = indexer::prepare(&payloads);
    assert_eq!(batches.len(), 2, "one per delivery, and the unreadable one");
    let (single_dir, cluster_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let single = Store::open(single_dir.path()).unwrap();
    let cluster = Store::open(cluster_dir.path()).unwrap();
    let summary = single.append_prepared_blocking(direct).unwrap();
    let mut through = Vec::new();
    for batch in batches {
        through.push(cluster.append_prepared_blocking(batch).unwrap());
    }
    // Same events, times, signature verdicts and identities.
    assert_eq!(summary.stored, 4);
    assert_eq!(through[0], summary);
    assert_eq!(events(&cluster), events(&single));
    assert_eq!(cluster.quarantine_count(), single.quarantine_count() + 1);

    // Delivered again (a redelivery after a crash): stored once.
    let again = cluster
        .append_prepared_blocking(indexer::prepare(&payloads[..5]).remove(0))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 5));
}
