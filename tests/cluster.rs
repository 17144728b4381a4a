//! The cluster roles on a real 3-node NATS JetStream cluster (loopback,
//! stores in a temporary directory; skipped, saying why, without
//! `nats-server`): receivers publish, an indexer consumes into its store.
//!
//! - deliveries spread over two receivers and replayed to the other one
//!   are stored once by each indexer (two, with their own durable
//!   consumers), and the answers count the duplicates;
//! - `kill -9` of one NATS node mid-load loses nothing acknowledged; of
//!   two, deliveries get 500 within `ack_timeout`, and 200 again once a
//!   node returns;
//! - `kill -9` of a receiver mid-load (the sender turns to the other) and
//!   of the indexer, three times: the indexer's store ends equal to the
//!   sender's ledger, exactly.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::{gzip, write_config, TestServer, BIN};
use serde_json::Value;

const TOKEN: &str = "Bearer cluster-test-token";
const PER_BATCH: usize = 50;

/// A source every process shares (same path and token on every receiver).
fn source_table() -> String {
    format!("[[source]]\nname = \"konnect\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n")
}

/// `auditsink serve --role ROLE` in `dir`, with the cluster's `[cluster]`.
fn start_role(dir: &Path, nats: &NatsCluster, extra: &str, role: &str) -> TestServer {
    std::fs::create_dir_all(dir).unwrap();
    let config = write_config(
        dir,
        &format!("{}{}", source_table(), nats.config_table(extra)),
    );
    restart_role(dir, &config, role)
}

fn restart_role(dir: &Path, config: &Path, role: &str) -> TestServer {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--role", role, "--config"])
        .arg(config);
    TestServer::start_command(dir, config, command)
}

/// Unique CEF lines of batch `batch` of run `run`.
fn batch_lines(run: &str, batch: usize) -> Vec<String> {
    (0..PER_BATCH)
        .map(|i| {
            format!(
                "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt={} src=10.0.0.1 \
                 org_id=org-cluster principal_id={run} trace_id={batch}-{i} \
                 action=retrieve granted=true n={run}-b{batch}-e{i}",
                1_764_100_000_000u64 + (batch * 1000 + i) as u64
            )
        })
        .collect()
}

/// One delivery over TLS; any failure to get an answer is an `Err`.
fn try_deliver(server: &Receiver, lines: &[String]) -> Result<(u16, Value), String> {
    let body = gzip(lines.join("\n").as_bytes());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&server.ca).map_err(|e| e.to_string())?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(server.addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let head = common::request_head(
        "POST",
        "/audit-logs",
        &[
            ("Authorization", TOKEN),
            ("Content-Encoding", "application/gzip"),
            ("Content-Type", "application/text"),
        ],
        body.len(),
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(&body).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let body = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Ok((status, body))
}

/// Where a receiver listens, and the certificate to trust.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    ca: PathBuf,
}

impl From<&TestServer> for Receiver {
    fn from(server: &TestServer) -> Receiver {
        Receiver {
            addr: server.addr,
            ca: server.data_dir().join("tls/cert.pem"),
        }
    }
}

/// Every event in the indexer's store, by raw line: how many times each.
fn stored_lines(indexer: &TestServer) -> HashMap<String, usize> {
    let rows = common::query(&["--config", indexer.config.to_str().unwrap()]);
    let mut stored = HashMap::new();
    for row in rows {
        *stored
            .entry(row["raw"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    stored
}

/// Waits until the indexer's store holds `events` events (and no more
/// arrive for a moment), within `within`.
fn wait_for_events(indexer: &TestServer, events: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = indexer.status();
        let stored = status["store"]["events"].as_u64().unwrap();
        if stored >= events {
            assert_eq!(stored, events, "more events than sent: {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the indexer holds {stored} of {events} events after {within:?}: {}",
            status["cluster"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kill -9` a process.
fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn replays_across_two_receivers_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsCluster::start(&dir.path().join("nats"), 3) else {
        return;
    };
    let extra = "ack_timeout = \"10s\"";
    let a = start_role(&dir.path().join("a"), &nats, extra, "receiver");
    let b = start_role(&dir.path().join("b"), &nats, extra, "receiver");
    let indexer = start_role(&dir.path().join("indexer"), &nats, extra, "indexer");
    // A second indexer (another site) keeps its own full copy.
    let other_site = start_role(
        &dir.path().join("indexer-b"),
        &nats,
        &format!("{extra}\ndurable = \"site-b\""),
        "indexer",
    );
    let receivers = [Receiver::from(&a), Receiver::from(&b)];
    const BATCHES: usize = 12;
    let mut sent = Vec::new();
    // Spread over both receivers...
    for batch in 0..BATCHES {
        let mut lines = batch_lines("replay", batch);
        if batch == 0 {
            // A line that is no event, and an event twice in one delivery.
            lines.push("not an audit event".to_owned());
            lines.push(lines[0].clone());
        }
        let (status, answer) = try_deliver(&receivers[batch % 2], &lines).unwrap();
        assert_eq!(status, 200, "{answer}");
        let duplicates = u64::from(batch == 0);
        assert_eq!(answer["stored"], PER_BATCH as u64, "{answer}");
        assert_eq!(answer["duplicates"], duplicates, "{answer}");
        assert_eq!(answer["quarantined"], duplicates, "{answer}");
        sent.extend(batch_lines("replay", batch));
    }
    // ...then replayed, each to the other receiver, as a Konnect replay job.
    for batch in 0..BATCHES {
        let lines = batch_lines("replay", batch);
        let (status, answer) = try_deliver(&receivers[(batch + 1) % 2], &lines).unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["stored"], 0, "{answer}");
        assert_eq!(answer["duplicates"], PER_BATCH as u64, "{answer}");
    }
    for copy in [&indexer, &other_site] {
        wait_for_events(copy, sent.len() as u64, Duration::from_secs(60));
        let stored = stored_lines(copy);
        assert_eq!(stored.len(), sent.len());
        for line in &sent {
            assert_eq!(stored.get(line), Some(&1), "{line}");
        }
    }
    let status = indexer.status();
    assert_eq!(status["store"]["quarantine"], 1, "{status}");
    // The stream deduplicated the replays: the indexer never saw them.
    assert_eq!(status["cluster"]["indexed_duplicates"], 0, "{status}");
    assert_eq!(status["cluster"]["role"], "indexer");
    // What each receiver says about the stream.
    let status = a.status()["cluster"].clone();
    assert_eq!(status["connection"], "connected", "{status}");
    assert!(status["duplicate_messages"].as_u64().unwrap() >= PER_BATCH as u64 * 5);
    let metrics = b.metrics();
    assert!(
        metrics.contains("auditsink_cluster_duplicate_messages_total"),
        "{metrics}"
    );
}

/// Delivers `lines` to `receiver` until it answers 200, as Konnect retries
/// (a 500 or no answer: again after `pause`); the 500s seen.
fn deliver_until_accepted(receiver: &Receiver, lines: &[String], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut refused = 0;
    loop {
        match try_deliver(receiver, lines) {
            Ok((200, _)) => return refused,
            Ok((500, _)) => refused += 1,
            Ok((status, answer)) => panic!("unexpected {status}: {answer}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "not accepted within {within:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn losing_nats_nodes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = NatsCluster::start(&dir.path().join("nats"), 3) else {
        return;
    };
    let ack_timeout = Duration::from_secs(10);
    let extra = "ack_timeout = \"10s\"";
    let receiver_process = start_role(&dir.path().join("r"), &nats, extra, "receiver");
    let indexer = start_role(&dir.path().join("indexer"), &nats, extra, "indexer");
    let receiver = Receiver::from(&receiver_process);
    // Load from two threads; one node is killed in the middle of it.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0u64));
    let killed = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|thread| {
            let (receiver, acked, refused, killed) = (
                receiver.clone(),
                acked.clone(),
                refused.clone(),
                killed.clone(),
            );
            std::thread::spawn(move || {
                let mut batch = 0;
                // Until some batches after the kill.
                let mut after_kill = 0;
                while after_kill < 8 {
                    let lines = batch_lines(&format!("node-t{thread}"), batch);
                    let kill_seen = killed.load(Ordering::Acquire);
                    *refused.lock().unwrap() +=
                        deliver_until_accepted(&receiver, &lines, Duration::from_secs(60));
                    acked.lock().unwrap().extend(lines);
                    batch += 1;
                    if kill_seen {
                        after_kill += 1;
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 6 * PER_BATCH {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The stream's leader: the stream elects another one meanwhile.
    let leader = nats
        .stream_leader("AUDITSINK")
        .expect("the stream has a leader");
    nats.kill(leader);
    killed.store(true, Ordering::Release);
    for sender in senders {
        sender.join().unwrap();
    }
    // The stream's new leader was elected within ack_timeout: no 500.
    let refused = *refused.lock().unwrap();
    let errors: Vec<String> = receiver_process
        .stderr()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(refused, 0, "500s after losing one node: {errors:#?}");
    // Two nodes lost: no quorum. A 500, within ack_timeout (and a little).
    let second = (leader + 1) % 3;
    nats.kill(second);
    let lost = batch_lines("no-quorum", 0);
    let started = Instant::now();
    let (status, answer) = try_deliver(&receiver, &lost).unwrap();
    let took = started.elapsed();
    assert_eq!(status, 500, "{answer}");
    assert!(
        took < ack_timeout + Duration::from_secs(3),
        "the 500 took {took:?}"
    );
    // A node returns: deliveries are accepted again.
    nats.restart(leader, 2);
    deliver_until_accepted(&receiver, &lost, Duration::from_secs(60));
    let mut acked = acked.lock().unwrap().clone();
    acked.extend(lost);
    wait_for_events(&indexer, acked.len() as u64, Duration::from_secs(90));
    let stored = stored_lines(&indexer);
    assert_eq!(stored.len(), acked.len());
    for line in &acked {
        assert_eq!(stored.get(line), Some(&1), "{line}");
    }
}

#[test]
fn killed_receiver_and_indexer_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = NatsCluster::start(&dir.path().join("nats"), 3) else {
        return;
    };
    let extra = "ack_timeout = \"10s\"";
    let a = start_role(&dir.path().join("a"), &nats, extra, "receiver");
    let b = start_role(&dir.path().join("b"), &nats, extra, "receiver");
    let indexer_dir = dir.path().join("indexer");
    let mut indexer = start_role(&indexer_dir, &nats, extra, "indexer");
    let indexer_config = indexer.config.clone();
    let receivers = [Receiver::from(&a), Receiver::from(&b)];
    const BATCHES: usize = 60;
    // The sender: each batch to receiver a, and to b when a fails.
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            for batch in 0..BATCHES {
                let lines = batch_lines("kill", batch);
                let deadline = Instant::now() + Duration::from_secs(60);
                'retry: loop {
                    for receiver in &receivers {
                        if let Ok((200, _)) = try_deliver(receiver, &lines) {
                            break 'retry;
                        }
                    }
                    assert!(Instant::now() < deadline, "batch {batch} never accepted");
                    std::thread::sleep(Duration::from_millis(200));
                }
                ledger.lock().unwrap().extend(lines);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let wait_for_ledger = |batches: usize| {
        while ledger.lock().unwrap().len() < batches * PER_BATCH {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_ledger(8);
    kill_9(a.pid());
    // The indexer, three times, while the load goes on.
    for round in 1..=3 {
        wait_for_ledger(8 + round * 12);
        kill_9(indexer.pid());
        drop(indexer);
        indexer = restart_role(&indexer_dir, &indexer_config, "indexer");
    }
    sender.join().unwrap();
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger.len(), BATCHES * PER_BATCH);
    // Messages delivered to a killed indexer and never acknowledged come
    // again after the consumer's ack wait.
    wait_for_events(&indexer, ledger.len() as u64, Duration::from_secs(90));
    let stored = stored_lines(&indexer);
    assert_eq!(stored.len(), ledger.len());
    for line in &ledger {
        assert_eq!(stored.get(line), Some(&1), "{line}");
    }
    drop(b);
}

/// `auditsink serve` with `args` and `config`, expected to fail at start:
/// its stderr.
fn failed_start(config: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "it started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn roles_need_a_cluster_and_a_stream_with_the_configured_settings() {
    let dir = tempfile::tempdir().unwrap();
    // No [cluster]: the roles that need one say so (no NATS needed).
    let plain = write_config(dir.path(), &source_table());
    for role in ["receiver", "indexer"] {
        let stderr = failed_start(&plain, &["--role", role]);
        assert!(stderr.contains("needs a [cluster] table"), "{stderr}");
    }
    let Some(nats) = NatsCluster::start(&dir.path().join("nats"), 1) else {
        return;
    };
    // One server, replicas = 1: the stream is created.
    let first = start_role(&dir.path().join("first"), &nats, "replicas = 1", "all");
    // `all` with [cluster]: receiver and indexer in one process.
    let lines = batch_lines("all", 0);
    let (status, answer) = try_deliver(&Receiver::from(&first), &lines).unwrap();
    assert_eq!((status, &answer["stored"]), (200, &Value::from(PER_BATCH)));
    wait_for_events(&first, PER_BATCH as u64, Duration::from_secs(30));
    let cluster = first.status()["cluster"].clone();
    assert_eq!(cluster["role"], "all", "{cluster}");
    assert_eq!(cluster["published_messages"], PER_BATCH, "{cluster}");
    // The same stream asked for with other settings: a clear error.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = write_config(
        &other_dir,
        &format!(
            "{}{}",
            source_table(),
            nats.config_table("replicas = 1\nduplicate_window = \"1h\"")
        ),
    );
    let stderr = failed_start(&other, &["--role", "receiver"]);
    assert!(
        stderr.contains("exists with other settings")
            && stderr.contains("duplicate_window: configured 3600s, the stream has 691200s"),
        "{stderr}"
    );
    // No server at the configured address: said at start.
    let away = write_config(
        &other_dir,
        &format!(
            "{}[cluster]\nnats_urls = [\"nats://127.0.0.1:{}\"]\n",
            source_table(),
            common::unused_port()
        ),
    );
    let stderr = failed_start(&away, &["--role", "receiver"]);
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    drop(first);

    // A server that wants a token: `token_env` gives it.
    let Some(guarded) =
        NatsCluster::start_with(&dir.path().join("guarded"), 1, &["--auth", "s3cret"])
    else {
        return;
    };
    let guarded_dir = dir.path().join("with-token");
    std::fs::create_dir_all(&guarded_dir).unwrap();
    let with_token = write_config(
        &guarded_dir,
        &format!(
            "{}{}",
            source_table(),
            guarded.config_table("replicas = 1\ntoken_env = \"AUDITSINK_TEST_NATS_TOKEN\"")
        ),
    );
    let stderr = failed_start(&with_token, &["--role", "receiver"]);
    assert!(
        stderr.contains("AUDITSINK_TEST_NATS_TOKEN (`[cluster] token_env`) is not set"),
        "{stderr}"
    );
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--role", "receiver", "--config"])
        .arg(&with_token)
        .env("AUDITSINK_TEST_NATS_TOKEN", "wrong");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("cannot connect to NATS"),
        "{stderr}"
    );
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--role", "receiver", "--config"])
        .arg(&with_token)
        .env("AUDITSINK_TEST_NATS_TOKEN", "s3cret");
    let receiver = TestServer::start_command(&guarded_dir, &with_token, command);
    let (status, answer) = try_deliver(&Receiver::from(&receiver), &lines).unwrap();
    assert_eq!(status, 200, "{answer}");
    drop(receiver);

    // A server with TLS: `ca_file` makes its certificate trusted.
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let pair =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert, key) = (tls_dir.join("nats.pem"), tls_dir.join("nats.key"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
    let Some(secured) = NatsCluster::start_with(
        &dir.path().join("secured"),
        1,
        &[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    let untrusted = write_config(
        &tls_dir,
        &format!("{}{}", source_table(), secured.config_table("replicas = 1")),
    );
    let stderr = failed_start(&untrusted, &["--role", "receiver"]);
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    let trusted = write_config(
        &tls_dir,
        &format!(
            "{}{}",
            source_table(),
            secured.config_table(&format!("replicas = 1\nca_file = {cert:?}"))
        ),
    );
    let receiver = restart_role(&tls_dir, &trusted, "receiver");
    let (status, answer) = try_deliver(&Receiver::from(&receiver), &lines).unwrap();
    assert_eq!(status, 200, "{answer}");
}
