//! Forwarding to HTTP destinations, against in-test servers that implement
//! the documented protocol subsets (Elasticsearch `_bulk` with per-item
//! 201/409/429/400; Splunk HEC event + indexer acknowledgement) and fail
//! on demand, with the real binary killed with SIGKILL mid-forwarding;
//! over HTTPS with a private CA (`ca_file`, `insecure`), with
//! Elasticsearch API-key and Basic credentials, right and wrong.

mod common;
mod sink_support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auditsink_storage::testing::Damage;
use common::{run_bin, write_config, TestServer};
use serde_json::Value;
use sink_support::{lines, wait_until, FakeEs, FakeHec, Https, Mode, HEC_TOKEN};

const TOKEN: &str = "Bearer sink-test-token";
const SOURCE: &str = "[[source]]\nname = \"konnect\"\npath = \"/audit-logs\"\nauthorization = \"Bearer sink-test-token\"\n";

fn sink_status(server: &TestServer, name: &str) -> Value {
    server.status()["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name} in /status"))
}

fn deliver(server: &TestServer, body: &[u8]) {
    let answer = server.deliver(TOKEN, body);
    assert_eq!(
        answer.status, 200,
        "ingest must answer 200 whatever the sinks do"
    );
}

fn kill_9(server: &TestServer) {
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn cli(config: &Path, args: &[&str]) -> Vec<Value> {
    let mut full: Vec<&str> = args.to_vec();
    let config = config.to_str().unwrap();
    full.extend(["--config", config]);
    let (code, out, err) = run_bin(&full, b"");
    assert_eq!(code, 0, "auditsink {args:?}: {err}");
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Delivers `batches` of 100 lines (numbered from `first`) while the sink
/// forwards, killing the server with SIGKILL three times mid-forwarding
/// and restarting it on the same store. The server left running.
fn deliver_with_three_kills(
    dir: &Path,
    config: &Path,
    batches: u64,
    tag: &str,
) -> (TestServer, u64) {
    let mut server = TestServer::start(dir, config);
    let mut next = 0;
    for kill in 0..3u64 {
        for _ in 0..batches {
            deliver(&server, &lines(next, 100, tag));
            next += 100;
        }
        // Forwarding is under way (the destinations answer slowly):
        // SIGKILL at a varying moment of it.
        std::thread::sleep(Duration::from_millis(300 + kill * 170));
        kill_9(&server);
        drop(server);
        server = TestServer::start(dir, config);
    }
    (server, next)
}

#[test]
fn elasticsearch_gets_every_event_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let es = FakeEs::start();
    es.state.lock().unwrap().delay = Duration::from_millis(60);
    let config = write_config(
        dir.path(),
        &format!(
            "{SOURCE}[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\n\
             index = \"audit-%Y.%m.%d\"\nbatch_max_events = 40\n",
            es.http.url()
        ),
    );
    let (server, total) = deliver_with_three_kills(dir.path(), &config, 4, "");
    // Three lines the index refuses for good (a mapping error): parked.
    deliver(
        &server,
        b"CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000000 n=x1 msg=unmappable\n\
          CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000001 n=x2 msg=unmappable\n\
          CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000002 n=x3 msg=unmappable\n",
    );
    wait_until(Duration::from_secs(60), "every event in the index", || {
        es.state.lock().unwrap().docs.len() as u64 == total
            && sink_status(&server, "es")["parked"] == 3
    });
    {
        let state = es.state.lock().unwrap();
        // Exactly once: one 201 per document, whatever was resent.
        assert!(state.created.values().all(|&n| n == 1));
        let expected: HashSet<String> = String::from_utf8(lines(0, total, ""))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let indexed: HashSet<String> = state.docs.values().cloned().collect();
        assert_eq!(indexed, expected, "the index holds every line, byte-exact");
        // Per-item 429s were sent again alone and made it.
        assert!(!state.throttled.is_empty());
        eprintln!(
            "elasticsearch: {} documents, {} conflicts (resends), {} per-item 429s",
            state.docs.len(),
            state.conflicts,
            state.throttled.len()
        );
    }
    let status = sink_status(&server, "es");
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["type"], "elasticsearch");
    let resent = status["resent"].as_u64().unwrap();
    assert!(
        resent <= 3 * 40,
        "resends are bounded by one batch per crash: {status}"
    );
    assert!(es.state.lock().unwrap().conflicts <= resent, "{status}");

    // The parked events: listed with the reason and the answer.
    let parked = cli(&config, &["sink", "parked", "es"]);
    assert_eq!(parked.len(), 3);
    assert!(parked[0]["reason"]
        .as_str()
        .unwrap()
        .contains("mapper_parsing_exception"));
    assert!(parked[0]["answer"]
        .as_str()
        .unwrap()
        .contains("failed to parse"));
    // The index is fixed: retry sends them.
    es.state.lock().unwrap().accept_all = true;
    let marked = cli(&config, &["sink", "retry", "es"]);
    assert_eq!(marked[0]["marked"], 3);
    wait_until(Duration::from_secs(20), "the parked events indexed", || {
        es.state.lock().unwrap().docs.len() as u64 == total + 3
    });
    wait_until(Duration::from_secs(5), "no parked event left", || {
        sink_status(&server, "es")["parked"] == 0
    });

    // A rewind sends everything again: the index still has each event once.
    let rewound = cli(
        &config,
        &["sink", "rewind", "es", "--since", "2020-01-01T00:00:00Z"],
    );
    assert_eq!(rewound[0]["cursor"], 0);
    // Through the admin listener, a time that does not read is the
    // caller's error (400), an unknown endpoint 404; neither moves a cursor.
    for (path, status) in [
        ("/api/sinks/rewind?name=es&since=last%20tuesday", 400),
        ("/api/sinks/rewind?name=es", 400),
        ("/api/sinks/forget?name=es", 404),
    ] {
        let answer = common::http_request(server.admin, "POST", path, &[], b"");
        assert_eq!(answer.status, status, "{path}");
    }
    let conflicts_before = es.state.lock().unwrap().conflicts;
    wait_until(
        Duration::from_secs(30),
        "the rewound events sent again",
        || es.state.lock().unwrap().conflicts >= conflicts_before + total + 3,
    );
    assert!(es.state.lock().unwrap().created.values().all(|&n| n == 1));
    let listed = cli(&config, &["sink", "list"]);
    assert_eq!(listed[0]["name"], "es");
    wait_until(Duration::from_secs(10), "lag back to 0", || {
        sink_status(&server, "es")["lag_events"] == 0
    });
    let metrics = server.metrics();
    assert!(metrics
        .contains("auditsink_sink_delivered_events_total{sink=\"es\",type=\"elasticsearch\"}"));
    server.stop();
}

#[test]
fn splunk_hec_gets_every_event_at_least_once_with_acks_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let hec = FakeHec::start();
    {
        let mut state = hec.state.lock().unwrap();
        state.delay = Duration::from_millis(60);
        // Indexed after about a second: a SIGKILL lands while the sink waits
        // for the ack, and the events of that batch are never indexed.
        state.ack_after_polls = 5;
    }
    let config = write_config(
        dir.path(),
        &format!(
            "{SOURCE}[[sink]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{}\"\n\
             token = \"{HEC_TOKEN}\"\nindex = \"konnect\"\nhost = \"receiver-1\"\n\
             indexer_ack = true\nbatch_max_events = 100\n",
            hec.http.url()
        ),
    );
    let (server, total) = deliver_with_three_kills(dir.path(), &config, 4, "");
    let expected: Vec<String> = String::from_utf8(lines(0, total, ""))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Indexed means acknowledged: a batch whose sender was killed while it
    // waited for the ack is not, and must have been sent again.
    wait_until(
        Duration::from_secs(60),
        "every event indexed at Splunk",
        || {
            let state = hec.state.lock().unwrap();
            expected.iter().all(|l| state.indexed.contains_key(l))
        },
    );
    wait_until(Duration::from_secs(10), "the sink caught up", || {
        sink_status(&server, "splunk")["lag_events"] == 0
    });
    let status = sink_status(&server, "splunk");
    let state = hec.state.lock().unwrap();
    let extra: u64 = state.copies.values().map(|&n| u64::from(n) - 1).sum();
    let resent = status["resent"].as_u64().unwrap();
    eprintln!(
        "splunk_hec: {} events, {extra} extra copies, {resent} reported resent",
        state.copies.len()
    );
    assert_eq!(
        state.copies.len() as u64,
        total,
        "nothing but the sent lines"
    );
    // At least once: every extra copy is a reported resend (the report may
    // count a resend whose first copy never left the process), and resends
    // are bounded by one batch per crash.
    assert!(
        extra <= resent,
        "extra copies {extra} > reported resent {resent}"
    );
    assert!(resent <= 3 * 100, "{status}");
    // The HEC object: time in epoch seconds with ms, sourcetype by format.
    let first = state
        .objects
        .iter()
        .find(|o| o["event"]["raw"] == expected[5])
        .unwrap();
    assert_eq!(first["time"].to_string(), "1764100000.005");
    assert_eq!(first["sourcetype"], "konnect:audit:cef");
    assert_eq!(first["index"], "konnect");
    assert_eq!(first["host"], "receiver-1");
    assert_eq!(first["source"], "konnect");
    drop(state);
    assert_eq!(status["state"], "healthy");
    server.stop();
}

#[test]
fn a_destination_down_for_a_while_loses_nothing_and_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let es = FakeEs::start();
    es.set_mode(Mode::Down);
    let config = es_sink_config(dir.path(), &es);
    let server = TestServer::start(dir.path(), &config);
    let down_since = Instant::now();
    // Ingest goes on while the destination is down: the store is the buffer.
    for batch in 0..5 {
        deliver(&server, &lines(batch * 100, 100, ""));
    }
    std::thread::sleep(Duration::from_secs(9).saturating_sub(down_since.elapsed()));
    let status = sink_status(&server, "es");
    assert!(
        status["state"] == "retrying" || status["state"] == "failing",
        "{status}"
    );
    assert!(
        status["last_error"].as_str().unwrap().contains("503"),
        "{status}"
    );
    assert_eq!(status["lag_events"], 500, "{status}");
    assert_eq!(status["cursor"], 0);
    // The console's status page shows the sink and its state.
    let answer = common::http_request(server.admin, "GET", "/", &[], b"");
    assert_eq!(answer.status, 200);
    let page = String::from_utf8(answer.body).unwrap();
    assert!(page.contains("data-sink=\"es\""), "{page}");
    assert!(page.contains(&format!(
        "data-badge=\"{}\"",
        status["state"].as_str().unwrap()
    )));
    let attempts = es.http.requests.lock().unwrap().clone();
    let gaps: Vec<f64> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!("attempts while down: {}, gaps {gaps:?}", attempts.len());
    // 1 s doubling, with jitter between half and all of each step:
    // a handful of attempts in 9 s, each gap longer than the one before.
    assert!((3..=6).contains(&attempts.len()), "{gaps:?}");
    assert!(gaps[0] >= 0.45 && gaps[0] <= 1.6, "{gaps:?}");
    assert!(*gaps.last().unwrap() >= 1.9, "{gaps:?}");
    es.set_mode(Mode::Up);
    wait_until(Duration::from_secs(20), "the backlog delivered", || {
        es.state.lock().unwrap().docs.len() == 500
    });
    wait_until(Duration::from_secs(5), "healthy again", || {
        let status = sink_status(&server, "es");
        status["state"] == "healthy" && status["lag_events"] == 0
    });
    assert!(es.state.lock().unwrap().created.values().all(|&n| n == 1));
    server.stop();
}

#[test]
fn a_refused_token_shows_failing_and_parks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hec = FakeHec::start();
    let config = write_config(
        dir.path(),
        &format!(
            "{SOURCE}[[sink]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{}\"\n\
             token = \"wrong-token\"\n",
            hec.http.url()
        ),
    );
    let server = TestServer::start(dir.path(), &config);
    deliver(&server, &lines(0, 10, ""));
    wait_until(Duration::from_secs(10), "the sink failing", || {
        sink_status(&server, "splunk")["state"] == "failing"
    });
    let status = sink_status(&server, "splunk");
    assert_eq!(status["parked"], 0);
    assert_eq!(status["cursor"], 0);
    assert!(status["last_error"].as_str().unwrap().contains("403"));
    server.stop();
}

/// The config of a server in `dir` with one source and the sink `es` to
/// `es`'s index `audit`.
fn es_sink_config(dir: &Path, es: &FakeEs) -> PathBuf {
    write_config(
        dir,
        &format!(
            "{SOURCE}[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\nindex = \"audit\"\n",
            es.http.url()
        ),
    )
}

/// The closed store of the server run in `dir`, to damage.
fn damage(dir: &Path) -> Damage {
    Damage::open(&dir.join("data").join("store"))
}

#[test]
fn a_damaged_stored_record_is_parked_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let es = FakeEs::start();
    es.set_mode(Mode::Down);
    let config = es_sink_config(dir.path(), &es);
    let server = TestServer::start(dir.path(), &config);
    deliver(&server, &lines(0, 10, ""));
    server.stop();
    // Two records damaged, the chunk's checksum right: the third's head
    // (its version byte: the read fails) and the sixth's end (its fields:
    // the JSON rendering fails).
    let ids = damage(dir.path()).change_chunk_records(|i, record| match i {
        2 => record[0] ^= 0xff,
        5 => record.truncate(record.len() - 3),
        _ => {}
    });
    assert_eq!(ids.len(), 10);
    es.set_mode(Mode::Up);
    let server = TestServer::start(dir.path(), &config);
    wait_until(
        Duration::from_secs(20),
        "the rest delivered, the damaged parked",
        || {
            let status = sink_status(&server, "es");
            status["parked"] == 2 && status["cursor"] == ids[9]
        },
    );
    let docs = es.state.lock().unwrap().docs.clone();
    assert_eq!(docs.len(), 8, "{docs:?}");
    for damaged in ["n=2", "n=5"] {
        assert!(!docs.values().any(|raw| raw.ends_with(damaged)), "{docs:?}");
    }
    assert!(docs.values().any(|raw| raw.ends_with("n=9")), "{docs:?}");
    let status = sink_status(&server, "es");
    assert_eq!(status["delivered"], 8, "{status}");
    let parked = cli(&config, &["sink", "parked", "es"]);
    let parked_ids: Vec<&str> = parked.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        parked_ids,
        [format!("{:016x}", ids[2]), format!("{:016x}", ids[5])]
    );
    for p in &parked {
        assert!(
            p["reason"]
                .as_str()
                .unwrap()
                .starts_with("the stored record is damaged: "),
            "{p}"
        );
        assert_eq!(p["answer"], "", "{p}");
    }
    // Retried, they stay parked (still damaged); nothing else moves.
    let marked = cli(&config, &["sink", "retry", "es"]);
    assert_eq!(marked[0]["marked"], 2);
    wait_until(Duration::from_secs(10), "the retry done", || {
        cli(&config, &["sink", "parked", "es"])
            .iter()
            .all(|p| p["retry"] == false)
    });
    assert_eq!(cli(&config, &["sink", "parked", "es"]).len(), 2);
    assert_eq!(es.state.lock().unwrap().docs.len(), 8);
    server.stop();
}

#[test]
fn a_damaged_stored_chunk_is_parked_as_one_entry_and_sent_whole_once_restored() {
    let dir = tempfile::tempdir().unwrap();
    let es = FakeEs::start();
    es.set_mode(Mode::Down);
    let config = es_sink_config(dir.path(), &es);
    let server = TestServer::start(dir.path(), &config);
    // Three deliveries one after the other: three writes, three chunks.
    for (first, tag) in [(0, "a"), (10, "b"), (20, "c")] {
        deliver(&server, &lines(first, 10, tag));
    }
    server.stop();
    // The second chunk's checksum no longer matches: none of it reads.
    let first = damage(dir.path()).damage_log_chunk(1);
    es.set_mode(Mode::Up);
    let server = TestServer::start(dir.path(), &config);
    wait_until(
        Duration::from_secs(20),
        "the rest delivered, the chunk parked",
        || {
            let status = sink_status(&server, "es");
            status["parked"] == 10 && status["delivered"] == 20
        },
    );
    let docs = es.state.lock().unwrap().docs.clone();
    assert_eq!(docs.len(), 20, "{docs:?}");
    assert!(!docs.values().any(|raw| raw.ends_with('b')), "{docs:?}");
    for kept in ["n=9a", "n=20c", "n=29c"] {
        assert!(
            docs.values().any(|raw| raw.ends_with(kept)),
            "{kept}: {docs:?}"
        );
    }
    let parked = cli(&config, &["sink", "parked", "es"]);
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["id"], format!("{first:016x}"));
    assert_eq!(parked[0]["last"], format!("{:016x}", first + 9));
    assert_eq!(parked[0]["events"], 10);
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the stored record is damaged: the whole chunk of events ")
            && reason.contains(&format!("{first:016x} to {:016x}", first + 9)),
        "{reason}"
    );
    // Retried, it stays parked (still damaged); nothing else moves.
    let marked = cli(&config, &["sink", "retry", "es"]);
    assert_eq!(marked[0]["marked"], 1);
    wait_until(Duration::from_secs(10), "the retry done", || {
        cli(&config, &["sink", "parked", "es"])
            .iter()
            .all(|p| p["retry"] == false)
    });
    let parked = cli(&config, &["sink", "parked", "es"]);
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["last"], format!("{:016x}", first + 9));
    assert_eq!(es.state.lock().unwrap().docs.len(), 20);
    server.stop();
    // The segment restored from a backup: the chunk reads again, and a
    // retry sends every event of it, not only the first.
    assert_eq!(damage(dir.path()).repair_log_chunk(1), first);
    let server = TestServer::start(dir.path(), &config);
    let marked = cli(&config, &["sink", "retry", "es"]);
    assert_eq!(marked[0]["marked"], 1);
    wait_until(Duration::from_secs(10), "the chunk sent", || {
        let status = sink_status(&server, "es");
        status["parked"] == 0 && status["delivered"] == 30
    });
    assert!(cli(&config, &["sink", "parked", "es"]).is_empty());
    let docs = es.state.lock().unwrap().docs.clone();
    assert_eq!(docs.len(), 30, "{docs:?}");
    for n in 10..20 {
        assert!(
            docs.values().any(|raw| raw.ends_with(&format!("n={n}b"))),
            "n={n}b: {docs:?}"
        );
    }
    server.stop();
}

/// A `sink retry` cut off by SIGKILL after the destination took the events
/// and before it answered: sent again, they are counted as resent.
#[test]
fn a_retry_cut_off_by_kill_9_counts_what_it_sends_again_as_resent() {
    let dir = tempfile::tempdir().unwrap();
    let es = FakeEs::start();
    let config = es_sink_config(dir.path(), &es);
    let server = TestServer::start(dir.path(), &config);
    // Three lines the index refuses for good: parked.
    deliver(&server, &lines(0, 3, " unmappable"));
    wait_until(Duration::from_secs(20), "three parked", || {
        sink_status(&server, "es")["parked"] == 3
    });
    // The index takes them now but answers slowly: killed meanwhile.
    {
        let mut state = es.state.lock().unwrap();
        state.accept_all = true;
        state.delay = Duration::from_secs(2);
    }
    let requests_before = es.http.requests.lock().unwrap().len();
    cli(&config, &["sink", "retry", "es"]);
    wait_until(Duration::from_secs(10), "the retry sent", || {
        es.http.requests.lock().unwrap().len() > requests_before
    });
    kill_9(&server);
    drop(server);
    wait_until(Duration::from_secs(10), "the index took them", || {
        es.state.lock().unwrap().docs.len() == 3
    });
    es.state.lock().unwrap().delay = Duration::ZERO;

    let server = TestServer::start(dir.path(), &config);
    wait_until(Duration::from_secs(20), "the retry done", || {
        let status = sink_status(&server, "es");
        status["parked"] == 0 && status["delivered"] == 3
    });
    let status = sink_status(&server, "es");
    let es_state = es.state.lock().unwrap();
    assert_eq!(es_state.conflicts, 3, "sent again once each");
    assert_eq!(status["resent"], es_state.conflicts, "{status}");
    assert!(es_state.created.values().all(|&n| n == 1));
    drop(es_state);
    server.stop();
}

/// Starts the server on `config` with these environment variables (the
/// sinks' credentials).
fn start_with_env(dir: &Path, config: &Path, env: &[(&str, &str)]) -> TestServer {
    let mut command = Command::new(common::BIN);
    command.args(["serve", "--config"]).arg(config);
    for (name, value) in env {
        command.env(name, value);
    }
    TestServer::start_command(dir, config, command)
}

/// The config of a server in `dir` with one source and the sink `es` to
/// `url`, index `audit`, with `extra` keys.
fn es_config_with(dir: &Path, url: &str, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "{SOURCE}[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\n\
             index = \"audit\"\n{extra}"
        ),
    )
}

/// `ca_file = "PATH"`.
fn ca_file(https: &Https) -> String {
    format!("ca_file = {:?}\n", https.ca_file.display().to_string())
}

/// Everything the server printed, `/status` and `/metrics` contain none
/// of `secrets`.
fn assert_secrets_unseen(server: &TestServer, secrets: &[&str]) {
    let seen = [
        ("stdout", server.stdout_now()),
        ("stderr", server.stderr().join("\n")),
        ("/status", server.status().to_string()),
        ("/metrics", server.metrics()),
    ];
    for (place, text) in &seen {
        assert!(!text.is_empty() || *place == "stdout", "{place} is empty");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{place} shows the secret {secret:?}"
            );
        }
    }
}

/// The example of Elasticsearch's API key documentation: the id and key
/// the create-API-key API returns, and its `encoded` field,
/// base64("id:api_key"), which goes in `Authorization: ApiKey <encoded>`.
const ES_API_KEY_ID: &str = "VuaCfGcBCdbkQm-e5aOx";
const ES_API_KEY: &str = "ui2lp2axTNmsyakw9tvNnw";
const ES_API_KEY_ENCODED: &str = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";

#[test]
fn elasticsearch_over_https_with_a_private_ca_and_an_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let https = Https::new(dir.path(), "es");
    let es = FakeEs::start_on(Some(&https));
    let expected = format!("ApiKey {ES_API_KEY_ENCODED}");
    es.state.lock().unwrap().authorization = Some(expected.clone());
    let config = es_config_with(
        dir.path(),
        &es.http.url(),
        &format!(
            "{}api_key_env = \"AUDITSINK_TEST_ES_API_KEY\"\n",
            ca_file(&https)
        ),
    );
    assert!(es.http.url().starts_with("https://127.0.0.1:"));
    // At debug, the level at which an operator looks for what went wrong.
    let server = start_with_env(
        dir.path(),
        &config,
        &[
            ("AUDITSINK_TEST_ES_API_KEY", ES_API_KEY_ENCODED),
            ("RUST_LOG", "debug"),
        ],
    );
    delivers_20_with(&server, &es, &expected);
    assert!(es.http.failed_handshakes.lock().unwrap().is_empty());
    let status = sink_status(&server, "es");
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["delivered"], 20, "{status}");
    assert_secrets_unseen(&server, &[ES_API_KEY_ENCODED, ES_API_KEY, ES_API_KEY_ID]);
    server.stop();
}

/// `auditsink:pa:ss-word-42` in base64 (`echo -n ... | base64`): a password
/// may hold a colon, the user name may not (RFC 7617).
const ES_USER: &str = "auditsink";
const ES_PASSWORD: &str = "pa:ss-word-42";
const ES_BASIC: &str = "Basic YXVkaXRzaW5rOnBhOnNzLXdvcmQtNDI=";

/// Delivers 20 events through `server` and waits for `es` to index them,
/// each request of the sink's with the header `Authorization: <expected>`.
fn delivers_20_with(server: &TestServer, es: &FakeEs, expected: &str) {
    deliver(server, &lines(0, 20, ""));
    wait_until(Duration::from_secs(20), "20 documents indexed", || {
        es.state.lock().unwrap().docs.len() == 20
    });
    let state = es.state.lock().unwrap();
    assert_eq!(state.refused, 0);
    assert!(!state.authorizations.is_empty());
    for header in &state.authorizations {
        assert_eq!(header.as_deref(), Some(expected));
    }
}

/// An Elasticsearch over HTTPS (a private CA) that wants [`ES_BASIC`], and
/// the config of a server in `dir` with a sink to it (`ca_file`,
/// `username`, the password from `AUDITSINK_TEST_ES_PASSWORD`).
fn es_over_https_with_basic(dir: &Path) -> (Https, FakeEs, PathBuf) {
    let https = Https::new(dir, "es");
    let es = FakeEs::start_on(Some(&https));
    es.state.lock().unwrap().authorization = Some(ES_BASIC.to_owned());
    let config = es_config_with(
        dir,
        &es.http.url(),
        &format!(
            "{}username = \"{ES_USER}\"\npassword_env = \"AUDITSINK_TEST_ES_PASSWORD\"\n",
            ca_file(&https)
        ),
    );
    (https, es, config)
}

#[test]
fn elasticsearch_over_https_with_basic_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (_https, es, config) = es_over_https_with_basic(dir.path());
    let server = start_with_env(
        dir.path(),
        &config,
        &[
            ("AUDITSINK_TEST_ES_PASSWORD", ES_PASSWORD),
            ("RUST_LOG", "debug"),
        ],
    );
    delivers_20_with(&server, &es, ES_BASIC);
    assert_eq!(sink_status(&server, "es")["state"], "healthy");
    assert_secrets_unseen(
        &server,
        &[ES_PASSWORD, ES_BASIC.trim_start_matches("Basic ")],
    );
    server.stop();
}

#[test]
fn refused_elasticsearch_credentials_show_failing_park_nothing_and_deliver_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let (_https, es, config) = es_over_https_with_basic(dir.path());
    let server = start_with_env(
        dir.path(),
        &config,
        &[("AUDITSINK_TEST_ES_PASSWORD", "not-the-password")],
    );
    deliver(&server, &lines(0, 10, ""));
    wait_until(Duration::from_secs(10), "the sink failing", || {
        sink_status(&server, "es")["state"] == "failing"
    });
    // Refused again and again (backoff: 1 s, then 2 s, ...), nothing
    // parked, nothing counted delivered.
    wait_until(Duration::from_secs(10), "a second refusal", || {
        es.state.lock().unwrap().refused >= 2
    });
    let status = sink_status(&server, "es");
    assert_eq!(status["state"], "failing", "{status}");
    assert_eq!(status["parked"], 0, "{status}");
    assert_eq!(status["delivered"], 0, "{status}");
    assert_eq!(status["cursor"], 0, "{status}");
    assert_eq!(status["lag_events"], 10, "{status}");
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("unable to authenticate"),
        "{status}"
    );
    assert!(es.state.lock().unwrap().docs.is_empty());
    assert_secrets_unseen(&server, &["not-the-password"]);
    server.stop();
    assert!(cli(&config, &["sink", "parked", "es"]).is_empty());

    // The password fixed: everything delivered, nothing parked.
    let server = start_with_env(
        dir.path(),
        &config,
        &[("AUDITSINK_TEST_ES_PASSWORD", ES_PASSWORD)],
    );
    wait_until(Duration::from_secs(20), "the 10 events indexed", || {
        es.state.lock().unwrap().docs.len() == 10
    });
    wait_until(Duration::from_secs(5), "healthy", || {
        let status = sink_status(&server, "es");
        status["state"] == "healthy" && status["delivered"] == 10 && status["lag_events"] == 0
    });
    assert_eq!(sink_status(&server, "es")["parked"], 0);
    assert!(es.state.lock().unwrap().created.values().all(|&n| n == 1));
    server.stop();
    assert!(cli(&config, &["sink", "parked", "es"]).is_empty());
}

#[test]
fn https_from_a_private_ca_needs_ca_file_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let https = Https::new(dir.path(), "es");
    let es = FakeEs::start_on(Some(&https));
    // Without `ca_file` the certificate is trusted by nothing the sink has.
    let config = es_config_with(dir.path(), &es.http.url(), "");
    let server = TestServer::start(dir.path(), &config);
    deliver(&server, &lines(0, 10, ""));
    // Failing at its first attempt (the operator's to fix, not an outage
    // to wait out), saying what to set.
    wait_until(Duration::from_secs(5), "the sink failing", || {
        sink_status(&server, "es")["state"] == "failing"
    });
    let status = sink_status(&server, "es");
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("certificate") && error.contains("ca_file"),
        "{status}"
    );
    assert_eq!(status["parked"], 0, "{status}");
    assert_eq!(status["delivered"], 0, "{status}");
    // No request was written: sent again, the events are no resends.
    assert_eq!(status["resent"], 0, "{status}");
    assert!(es.state.lock().unwrap().authorizations.is_empty());
    let handshakes = es.http.failed_handshakes.lock().unwrap().clone();
    assert!(!handshakes.is_empty());
    server.stop();

    // insecure = true: no verification, delivered.
    let config = es_config_with(dir.path(), &es.http.url(), "insecure = true\n");
    let server = TestServer::start(dir.path(), &config);
    wait_until(Duration::from_secs(20), "the 10 events indexed", || {
        es.state.lock().unwrap().docs.len() == 10
    });
    wait_until(Duration::from_secs(5), "healthy", || {
        sink_status(&server, "es")["state"] == "healthy"
    });
    let status = sink_status(&server, "es");
    assert_eq!(status["parked"], 0, "{status}");
    assert_eq!(status["resent"], 0, "{status}");
    server.stop();
}

#[test]
fn splunk_hec_over_https_with_a_private_ca_and_indexer_ack() {
    let dir = tempfile::tempdir().unwrap();
    let https = Https::new(dir.path(), "hec");
    let hec = FakeHec::start_on(Some(&https));
    let config = write_config(
        dir.path(),
        &format!(
            "{SOURCE}[[sink]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{}\"\n\
             token_env = \"AUDITSINK_TEST_HEC_TOKEN\"\nindexer_ack = true\n{}",
            hec.http.url(),
            ca_file(&https)
        ),
    );
    let server = start_with_env(
        dir.path(),
        &config,
        &[
            ("AUDITSINK_TEST_HEC_TOKEN", HEC_TOKEN),
            ("RUST_LOG", "debug"),
        ],
    );
    deliver(&server, &lines(0, 20, ""));
    let expected: Vec<String> = String::from_utf8(lines(0, 20, ""))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    wait_until(Duration::from_secs(20), "every event indexed", || {
        let state = hec.state.lock().unwrap();
        expected.iter().all(|l| state.indexed.contains_key(l))
    });
    wait_until(Duration::from_secs(5), "delivered", || {
        sink_status(&server, "splunk")["delivered"] == 20
    });
    assert!(hec.http.failed_handshakes.lock().unwrap().is_empty());
    let status = sink_status(&server, "splunk");
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["parked"], 0, "{status}");
    assert_secrets_unseen(&server, &[HEC_TOKEN]);
    server.stop();
}
