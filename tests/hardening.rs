//! What the internet sends a receiver: oversized and hostile bodies, slow and
//! idle clients, plain HTTP and garbage on the TLS port, overload, a failing
//! disk. Real binary, real TLS, real gzip, real store.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    gzip, query, read_one_response, request_head, tls_connect, write_config, TestServer, BIN,
};

const TOKEN: &str = "Bearer hardening";

fn start(dir: &Path, limits: &str) -> TestServer {
    let config = write_config(
        dir,
        &format!("[limits]\n{limits}\n[[source]]\nname = \"h\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"),
    );
    TestServer::start(dir, &config)
}

fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id={prefix}-{i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ca(server: &TestServer) -> std::path::PathBuf {
    server.data_dir().join("tls/cert.pem")
}

/// Waits until reading `stream` reports end of stream or an error, or fails
/// after `limit`. Returns how long it took.
fn closed_within(stream: &mut impl Read, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let took = started.elapsed();
                assert!(took < limit, "closed only after {took:?} (limit {limit:?})");
                return took;
            }
            Ok(_) => assert!(started.elapsed() < limit, "still open after {limit:?}"),
        }
    }
}

#[test]
fn oversized_bodies_are_413() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "max_body_bytes = 4096\nmax_decompressed_bytes = 65536\nmax_lines_per_request = 10",
    );
    let headers = [("Authorization", TOKEN)];
    let response = server.post("/audit-logs", &headers, &vec![b'x'; 5000]);
    assert_eq!(response.status, 413, "over max_body_bytes");
    let small_but_large = gzip(&vec![b'a'; 70_000]);
    assert!(small_but_large.len() < 4096);
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "gzip")],
        &small_but_large,
    );
    assert_eq!(response.status, 413, "over max_decompressed_bytes");
    let response = server.post("/audit-logs", &headers, lines("l", 11).as_bytes());
    assert_eq!(response.status, 413, "over max_lines_per_request");
    let response = server.post("/audit-logs", &headers, lines("l", 10).as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(server.status()["sources"][0]["rejected"]["too_large"], 3);
}

#[test]
fn gzip_bomb_costs_at_most_the_decompressed_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit_mib = 32;
    let server = start(
        dir.path(),
        &format!("max_decompressed_bytes = {}", limit_mib * 1024 * 1024),
    );
    // A warm-up delivery so the baseline includes the request path's own memory.
    assert_eq!(
        server.deliver(TOKEN, lines("warm", 100).as_bytes()).status,
        200
    );
    let baseline = server.peak_rss_kib();
    // 128 gzip members of 8 MiB of zeros: ~1 MiB on the wire, 1 GiB inflated.
    let member = gzip(&vec![0u8; 8 * 1024 * 1024]);
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 128)
        .collect();
    assert!(bomb.len() < 2 * 1024 * 1024, "{}", bomb.len());
    let response = server.post(
        "/audit-logs",
        &[("Authorization", TOKEN), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(response.status, 413);
    let growth_mib = (server.peak_rss_kib().saturating_sub(baseline)) / 1024;
    eprintln!("peak RSS growth from a 1 GiB bomb: {growth_mib} MiB (limit {limit_mib} MiB)");
    assert!(
        growth_mib <= limit_mib + 8,
        "a 1 GiB bomb raised peak memory by {growth_mib} MiB (limit {limit_mib} MiB)"
    );
    assert_eq!(
        server.deliver(TOKEN, lines("after", 3).as_bytes()).status,
        200,
        "still serving"
    );
}

#[test]
fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "tls_handshake_timeout_secs = 1\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nkeep_alive_idle_secs = 1",
    );
    let limit = Duration::from_secs(4);

    // Half-open: TCP connect, then nothing (no TLS handshake).
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(limit)).unwrap();
    let took = closed_within(&mut silent, limit);
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );

    // Slowloris on the body: one byte every 300 ms.
    let mut tls = tls_connect(server.addr, &ca(&server));
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let body = lines("slow", 20);
    tls.write_all(
        request_head(
            "POST",
            "/audit-logs",
            &[("Authorization", TOKEN)],
            body.len(),
        )
        .as_bytes(),
    )
    .unwrap();
    let started = Instant::now();
    let mut answered = Vec::new();
    for byte in body.as_bytes() {
        if tls.write_all(&[*byte]).and_then(|_| tls.flush()).is_err() {
            break;
        }
        let mut buffer = [0u8; 256];
        match tls.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answered.extend_from_slice(&buffer[..n]);
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(
            started.elapsed() < limit,
            "a trickling body was not cut off"
        );
    }
    let text = String::from_utf8_lossy(&answered);
    eprintln!("trickling body answered after {:?}", started.elapsed());
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "expected 408, got {text:?}"
    );

    // Slowloris on the head.
    let mut tls = tls_connect(server.addr, &ca(&server));
    tls.write_all(b"POST /audit-logs HTTP/1.1\r\n").unwrap();
    tls.flush().unwrap();
    let started = Instant::now();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(300));
        if tls.write_all(b"X").and_then(|_| tls.flush()).is_err() {
            break;
        }
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buffer = [0u8; 256];
        if tls.read(&mut buffer).is_ok() {
            break; // closed (Ok(0)) or answered with an error
        }
    }
    assert!(
        started.elapsed() < limit,
        "a trickling head was not cut off"
    );

    assert_eq!(
        server.deliver(TOKEN, lines("ok", 2).as_bytes()).status,
        200,
        "still serving"
    );
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    // A long head timeout, so only the idle timeout can close the connection.
    let server = start(
        dir.path(),
        "header_read_timeout_secs = 30\nkeep_alive_idle_secs = 1",
    );
    let limit = Duration::from_secs(4);
    // Keep-alive idle: one request, then silence.
    let mut tls = tls_connect(server.addr, &ca(&server));
    let body = lines("idle", 1);
    let mut head = request_head(
        "POST",
        "/audit-logs",
        &[("Authorization", TOKEN)],
        body.len(),
    );
    head = head.replace("Connection: close\r\n", "");
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body.as_bytes()).unwrap();
    tls.flush().unwrap();
    assert_eq!(read_one_response(&mut tls).status, 200);
    let took = closed_within(&mut tls, limit);
    eprintln!("idle keep-alive connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "idle connection closed too early: {took:?}"
    );
}

#[test]
fn garbage_and_plain_http_on_the_tls_port_leave_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "tls_handshake_timeout_secs = 2");
    for junk in [
        b"GET /audit-logs HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        Vec::new(),
    ] {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(&junk);
        if junk.is_empty() {
            drop(tcp); // connect and leave
            continue;
        }
        closed_within(&mut tcp, Duration::from_secs(5));
    }
    assert_eq!(server.deliver(TOKEN, lines("ok", 2).as_bytes()).status, 200);
    // No connection task left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = server.metrics();
        if metrics.contains("auditsink_connections_open 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections left open:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn at_the_connection_limit_an_idle_connection_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "max_connections = 2");
    let mut first = tls_connect(server.addr, &ca(&server));
    let mut second = tls_connect(server.addr, &ca(&server));
    // Complete both handshakes, the first well before the second; neither
    // sends a request.
    for tls in [&mut first, &mut second] {
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A third is served: the one idle the longest (the first) is closed.
    let mut third = tls_connect(server.addr, &ca(&server));
    third
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while third.conn.is_handshaking() {
        third
            .conn
            .complete_io(&mut third.sock)
            .expect("served by closing an idle connection");
    }
    first
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    closed_within(&mut first, Duration::from_secs(10));
}

#[test]
fn overload_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "max_inflight_requests = 1");
    // Hold the only slot: a request whose body has not all arrived.
    let body = lines("held", 5);
    let (first_half, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut held = tls_connect(server.addr, &ca(&server));
    held.write_all(
        request_head(
            "POST",
            "/audit-logs",
            &[("Authorization", TOKEN)],
            body.len(),
        )
        .as_bytes(),
    )
    .unwrap();
    held.write_all(first_half).unwrap();
    held.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let response = server.deliver(TOKEN, lines("turned-away", 3).as_bytes());
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));

    held.write_all(rest).unwrap();
    held.flush().unwrap();
    assert_eq!(common::read_response(&mut held).status, 200);
    let response = server.deliver(TOKEN, lines("turned-away", 3).as_bytes());
    assert_eq!(response.status, 200, "served once the slot is free");
    assert_eq!(server.status()["sources"][0]["rejected"]["overloaded"], 1);
}

#[test]
fn a_failing_disk_is_500_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[[source]]\nname = \"h\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"),
    );
    // Files may not grow past 1 MiB: writes fail with EFBIG (SIGXFSZ
    // ignored so the process sees the error instead of dying).
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 1024; exec \"$0\" serve --config \"$1\"",
            BIN,
        ])
        .arg(&config);
    let server = TestServer::start_command(dir.path(), &config, command);
    let mut acknowledged = Vec::new();
    let mut statuses = Vec::new();
    for batch in 0..40 {
        let body = (0..200)
            .map(|i| format!("CEF:0|V|P|1|c|n|1|id={batch}-{i} pad={}", "p".repeat(300)))
            .collect::<Vec<_>>();
        let response = server.deliver(TOKEN, body.join("\n").as_bytes());
        statuses.push(response.status);
        match response.status {
            200 => acknowledged.extend(body),
            500 => {}
            other => panic!("unexpected status {other}"),
        }
        if statuses.iter().filter(|&&s| s == 500).count() >= 3 {
            break;
        }
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&500),
        "{statuses:?}"
    );
    let (code, _) = server.admin_get("/healthz");
    assert_eq!(code, 200, "the process survives a failing disk");
    let (code, _) = server.admin_get("/readyz");
    assert_eq!(code, 503, "and reports that it cannot take writes");
    drop(server);

    // Without the limit, the store opens and holds every acknowledged event.
    let data_dir = dir.path().join("data");
    let stored: std::collections::HashSet<String> =
        query(&["--data-dir", data_dir.to_str().unwrap()])
            .into_iter()
            .map(|e| e["raw"].as_str().unwrap().to_owned())
            .collect();
    let missing = acknowledged.iter().filter(|l| !stored.contains(*l)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events missing",
        acknowledged.len()
    );
}

#[test]
fn metrics_readyz_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\nname = \"m\"\npath = \"/audit-logs\"\nauthorization = [\"Bearer old\", {TOKEN:?}]\n\
             authorization_sha256 = \"{}\"\n",
            sha256_hex("Bearer hashed")
        ),
    );
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config);
    let server = TestServer::start_command(dir.path(), &config, command);
    for token in ["Bearer old", TOKEN, "Bearer hashed"] {
        assert_eq!(
            server.deliver(token, lines(token, 2).as_bytes()).status,
            200,
            "{token}"
        );
    }
    assert_eq!(server.deliver("Bearer nope", b"x").status, 401);
    let mut body = lines("dup", 1);
    body.push_str("\nnot an event\n");
    server.deliver(TOKEN, body.as_bytes());
    server.deliver(TOKEN, lines("dup", 1).as_bytes());

    let (code, text) = server.admin_get("/readyz");
    assert_eq!((code, text.as_str()), (200, "ready\n"));
    let metrics = server.metrics();
    for expected in [
        "auditsink_requests_total{source=\"m\",status=\"200\"} 5",
        "auditsink_requests_total{source=\"m\",status=\"401\"} 1",
        "auditsink_events_total{source=\"m\",outcome=\"stored\"} 7",
        "auditsink_events_total{source=\"m\",outcome=\"duplicate\"} 1",
        "auditsink_events_total{source=\"m\",outcome=\"quarantined\"} 1",
        "auditsink_request_duration_seconds_count{source=\"m\"} 6",
        "auditsink_batch_lines_count{source=\"m\"} 5",
        "auditsink_received_bytes_total{source=\"m\",form=\"compressed\"}",
        "auditsink_received_bytes_total{source=\"m\",form=\"decompressed\"}",
        "auditsink_inflight_requests 0",
        "auditsink_store_size_bytes ",
        "auditsink_store_flushes ",
        "# EOF",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    let logs = server.stderr();
    let deliveries: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "delivery")
        .collect();
    assert_eq!(
        deliveries.len(),
        5,
        "one structured line per delivery: {logs:?}"
    );
    let last = &deliveries[4];
    assert_eq!(last["source"], "m");
    assert_eq!(last["status"], 200);
    assert_eq!(last["duplicates"], 1);
    assert!(last["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(last["duration_ms"].is_u64());
    assert!(
        logs.iter()
            .all(|l| !l.contains("hardening") && !l.contains("Bearer")),
        "no tokens in logs"
    );
}

fn sha256_hex(value: &str) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(value.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

#[test]
fn tls_versions_alpn_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let write_pair = |name: &str| {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert_path, pair.cert.pem()).unwrap();
        std::fs::write(&key_path, pair.key_pair.serialize_pem()).unwrap();
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, pair.cert.pem()).unwrap();
        ca
    };
    let ca_a = write_pair("a");
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    // write_config put [server] listen first; a second [server] table is not
    // valid TOML, so merge by rewriting.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replacen("[server]\nlisten = \"127.0.0.1:0\"\n", "", 1)
        .replacen("[server]\n", "[server]\nlisten = \"127.0.0.1:0\"\n", 1);
    std::fs::write(&config, text).unwrap();
    let server = TestServer::start(dir.path(), &config);

    for (versions, alpn, expected_alpn) in [
        (
            &[&rustls::version::TLS12][..],
            vec![b"h2".to_vec()],
            Some(b"h2".to_vec()),
        ),
        (
            &[&rustls::version::TLS13][..],
            vec![b"http/1.1".to_vec()],
            Some(b"http/1.1".to_vec()),
        ),
    ] {
        let negotiated =
            handshake(server.addr, &ca_a, versions, alpn).expect("handshake with cert A");
        assert_eq!(negotiated, expected_alpn);
    }

    let ca_b = write_pair("b");
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake(server.addr, &ca_b, &[&rustls::version::TLS13], vec![]).is_err() {
        assert!(
            Instant::now() < deadline,
            "certificate B not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        handshake(server.addr, &ca_a, &[&rustls::version::TLS13], vec![]).is_err(),
        "A is retired"
    );
    assert!(server
        .stderr()
        .iter()
        .any(|l| l.contains("TLS certificate reloaded")));

    // Without a signal: a change to the files is picked up by the poll.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    let ca_c = write_pair("c");
    let deadline = Instant::now() + Duration::from_secs(15);
    while handshake(server.addr, &ca_c, &[&rustls::version::TLS13], vec![]).is_err() {
        assert!(
            Instant::now() < deadline,
            "certificate C not picked up from the changed files"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TLS handshake trusting only `ca`; the negotiated ALPN protocol.
fn handshake(
    addr: std::net::SocketAddr,
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> Result<Option<Vec<u8>>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).map_err(|e| {
            e.into_inner()
                .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                .map(|b| *b)
                .unwrap_or(rustls::Error::General("io".into()))
        })?;
    }
    Ok(connection.alpn_protocol().map(<[u8]>::to_vec))
}
