//! In-test destinations for the sink tests: a small HTTP/1.1 server
//! (threads, keep-alive, `Content-Length` bodies), plain or HTTPS with a
//! certificate from a private CA ([`Https`]), with an Elasticsearch `_bulk`
//! subset (credentials checked when set) and a Splunk HEC subset (event +
//! ack, token checked), each able to fail on demand, and helpers to start
//! auditsink with a sink and feed it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How a fake destination behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Takes everything.
    Up,
    /// Answers 503 to every request.
    Down,
    /// Answers 403 (a bad token).
    Unauthorized,
}

/// A request as the fake saw it.
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// What a fake serves HTTPS with: a certificate for `127.0.0.1` and
/// `localhost` signed by a private CA, whose PEM is in `ca_file` (not
/// among the public web roots: a client trusts it only when told to).
#[derive(Clone)]
pub struct Https {
    pub ca_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl Https {
    /// A new CA and server certificate, the CA written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Https {
        let (config, ca_file) = crate::common::private_ca_tls(dir, &format!("{name}-ca.pem"));
        Https { ca_file, config }
    }
}

/// A running fake HTTP server.
pub struct FakeHttp {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Instant>>>,
    /// Connections whose TLS handshake failed (the client refused the
    /// certificate, or spoke plain HTTP).
    pub failed_handshakes: Arc<Mutex<Vec<String>>>,
    https: bool,
    stop: Arc<AtomicBool>,
}

impl FakeHttp {
    pub fn start(handler: Arc<Handler>) -> FakeHttp {
        FakeHttp::start_on(handler, None)
    }

    /// Plain HTTP, or HTTPS with `https`.
    pub fn start_on(handler: Arc<Handler>, https: Option<&Https>) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(Mutex::new(Vec::new()));
        let tls = https.map(|h| h.config.clone());
        {
            let stop = stop.clone();
            let requests = requests.clone();
            let failed_handshakes = failed_handshakes.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let handler = handler.clone();
                    let requests = requests.clone();
                    let failed_handshakes = failed_handshakes.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || match tls {
                        None => serve(stream, handler, requests),
                        Some(config) => {
                            let mut connection = rustls::ServerConnection::new(config).unwrap();
                            let mut stream = stream;
                            // The handshake first, to tell its failure apart.
                            while connection.is_handshaking() {
                                if let Err(e) = connection.complete_io(&mut stream) {
                                    failed_handshakes.lock().unwrap().push(e.to_string());
                                    return;
                                }
                            }
                            serve(
                                rustls::StreamOwned::new(connection, stream),
                                handler,
                                requests,
                            )
                        }
                    });
                }
            });
        }
        FakeHttp {
            addr,
            requests,
            failed_handshakes,
            https: https.is_some(),
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` in HTTPS mode.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: impl Read + Write, handler: Arc<Handler>, requests: Arc<Mutex<Vec<Instant>>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let seen = Seen {
            at: Instant::now(),
            method,
            path,
            headers,
            body,
        };
        requests.lock().unwrap().push(seen.at);
        let (status, answer) = handler(&seen);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let writer = reader.get_mut();
        if writer.write_all(response.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

/// The Elasticsearch `_bulk` subset: documents by `_id`; a `create` of an
/// existing `_id` is a 409; the first attempt at a document whose `n`
/// ends in `7` gets a per-item 429; a document whose raw line contains
/// `unmappable` gets a 400 mapper_parsing_exception until `accept_all`.
/// With `authorization` set, a request whose `Authorization` header is not
/// exactly that is answered 401 with Elasticsearch's `security_exception`.
pub struct FakeEs {
    pub http: FakeHttp,
    pub state: Arc<Mutex<EsState>>,
}

#[derive(Default)]
pub struct EsState {
    pub mode: Option<Mode>,
    /// `_id` → the document (its raw line).
    pub docs: HashMap<String, String>,
    /// `_id` → 201 answers given (exactly once means 1 each).
    pub created: HashMap<String, u32>,
    pub conflicts: u64,
    pub throttled: std::collections::HashSet<String>,
    pub accept_all: bool,
    pub delay: Duration,
    /// The `Authorization` header required (none: anything goes).
    pub authorization: Option<String>,
    /// Each `Authorization` header received (None: none), in order.
    pub authorizations: Vec<Option<String>>,
    /// Requests answered 401 for their credentials.
    pub refused: u64,
}

/// Elasticsearch's answer to a request with credentials it does not take
/// (as 8.x words it, `WWW-Authenticate` aside).
fn es_unauthenticated(path: &str, with_credentials: bool) -> String {
    let reason = if with_credentials {
        format!("unable to authenticate with provided credentials and anonymous access is not allowed for this request [{path}]")
    } else {
        format!("missing authentication credentials for REST request [{path}]")
    };
    let cause = json!({"type": "security_exception", "reason": reason});
    json!({
        "error": {"root_cause": [cause.clone()], "type": "security_exception", "reason": reason},
        "status": 401
    })
    .to_string()
}

impl FakeEs {
    pub fn start() -> FakeEs {
        FakeEs::start_on(None)
    }

    /// Plain HTTP, or HTTPS with `https`.
    pub fn start_on(https: Option<&Https>) -> FakeEs {
        let state = Arc::new(Mutex::new(EsState {
            mode: Some(Mode::Up),
            ..Default::default()
        }));
        let handler_state = state.clone();
        let http = FakeHttp::start_on(
            Arc::new(move |seen: &Seen| {
                let delay = handler_state.lock().unwrap().delay;
                std::thread::sleep(delay);
                let mut s = handler_state.lock().unwrap();
                match s.mode {
                    Some(Mode::Down) => return (503, r#"{"error":"unavailable"}"#.into()),
                    Some(Mode::Unauthorized) => {
                        return (401, r#"{"error":"security_exception"}"#.into())
                    }
                    _ => {}
                }
                let authorization = seen.headers.get("authorization").cloned();
                s.authorizations.push(authorization.clone());
                if s.authorization.is_some() && authorization != s.authorization {
                    s.refused += 1;
                    return (401, es_unauthenticated(&seen.path, authorization.is_some()));
                }
                if seen.method != "POST" || seen.path != "/_bulk" {
                    return (404, "{}".into());
                }
                if seen.headers.get("content-type").map(String::as_str)
                    != Some("application/x-ndjson")
                {
                    return (400, r#"{"error":"content type"}"#.into());
                }
                let text = String::from_utf8_lossy(&seen.body).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let mut items = Vec::new();
                for pair in lines.chunks(2) {
                    let action: Value = serde_json::from_str(pair[0]).unwrap();
                    let doc: Value = serde_json::from_str(pair[1]).unwrap();
                    let id = action["create"]["_id"].as_str().unwrap().to_owned();
                    let raw = doc["raw"].as_str().unwrap_or("").to_owned();
                    let status = if s.docs.contains_key(&id) {
                        s.conflicts += 1;
                        409
                    } else if raw.contains("unmappable") && !s.accept_all {
                        400
                    } else if doc["fields"]["n"]
                        .to_string()
                        .trim_matches('"')
                        .ends_with('7')
                        && s.throttled.insert(id.clone())
                    {
                        429
                    } else {
                        s.docs.insert(id.clone(), raw);
                        *s.created.entry(id.clone()).or_default() += 1;
                        201
                    };
                    let mut item =
                        json!({"_index": action["create"]["_index"], "_id": id, "status": status});
                    if status == 400 {
                        item["error"] = json!({"type": "mapper_parsing_exception", "reason": "failed to parse field"});
                    }
                    items.push(json!({ "create": item }));
                }
                (200, json!({"errors": true, "items": items}).to_string())
            }),
            https,
        );
        FakeEs { http, state }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }
}

/// The Splunk HEC subset: `/services/collector/event` (token checked,
/// channel required), `/services/collector/ack` (an ackId is acknowledged
/// from the third poll on, or `ack_after_polls`). Events are counted as
/// received at once, and as indexed only once their ackId was reported
/// true: a request whose sender stops polling (killed) stays unindexed, as
/// with an indexer that failed, which is what waiting for the ack guards
/// against.
pub struct FakeHec {
    pub http: FakeHttp,
    pub state: Arc<Mutex<HecState>>,
}

#[derive(Default)]
pub struct HecState {
    pub mode: Option<Mode>,
    /// raw line → copies received.
    pub copies: HashMap<String, u32>,
    /// raw line → copies indexed (acknowledged).
    pub indexed: HashMap<String, u32>,
    pub objects: Vec<Value>,
    pub next_ack: u64,
    pub polls: HashMap<u64, u32>,
    pub pending: HashMap<u64, Vec<String>>,
    /// The poll from which an ackId is reported indexed.
    pub ack_after_polls: u32,
    pub delay: Duration,
}

pub const HEC_TOKEN: &str = "hec-token-0123";

impl FakeHec {
    pub fn start() -> FakeHec {
        FakeHec::start_on(None)
    }

    /// Plain HTTP, or HTTPS with `https`.
    pub fn start_on(https: Option<&Https>) -> FakeHec {
        let state = Arc::new(Mutex::new(HecState {
            mode: Some(Mode::Up),
            ack_after_polls: 3,
            ..Default::default()
        }));
        let handler_state = state.clone();
        let http = FakeHttp::start_on(
            Arc::new(move |seen: &Seen| {
                let delay = handler_state.lock().unwrap().delay;
                std::thread::sleep(delay);
                let mut s = handler_state.lock().unwrap();
                match s.mode {
                    Some(Mode::Down) => {
                        return (503, r#"{"text":"Server is busy","code":9}"#.into())
                    }
                    Some(Mode::Unauthorized) => {
                        return (403, r#"{"text":"Invalid token","code":4}"#.into())
                    }
                    _ => {}
                }
                if seen.headers.get("authorization").map(String::as_str)
                    != Some(&format!("Splunk {HEC_TOKEN}"))
                {
                    return (403, r#"{"text":"Invalid token","code":4}"#.into());
                }
                if !seen.headers.contains_key("x-splunk-request-channel") {
                    return (
                        400,
                        r#"{"text":"Data channel is missing","code":10}"#.into(),
                    );
                }
                match seen.path.as_str() {
                    "/services/collector/event" => {
                        let mut raws = Vec::new();
                        for object in
                            serde_json::Deserializer::from_slice(&seen.body).into_iter::<Value>()
                        {
                            let object = object.unwrap();
                            let raw = object["event"]["raw"].as_str().unwrap().to_owned();
                            *s.copies.entry(raw.clone()).or_default() += 1;
                            raws.push(raw);
                            s.objects.push(object);
                        }
                        let ack = s.next_ack;
                        s.next_ack += 1;
                        s.pending.insert(ack, raws);
                        (
                            200,
                            json!({"text": "Success", "code": 0, "ackId": ack}).to_string(),
                        )
                    }
                    "/services/collector/ack" => {
                        let asked: Value = serde_json::from_slice(&seen.body).unwrap();
                        let mut acks = serde_json::Map::new();
                        let ack_after = s.ack_after_polls;
                        for id in asked["acks"].as_array().unwrap() {
                            let id = id.as_u64().unwrap();
                            let polls = s.polls.entry(id).or_default();
                            *polls += 1;
                            let indexed = *polls >= ack_after;
                            acks.insert(id.to_string(), Value::Bool(indexed));
                            if indexed {
                                for raw in s.pending.remove(&id).unwrap_or_default() {
                                    *s.indexed.entry(raw).or_default() += 1;
                                }
                            }
                        }
                        (200, json!({ "acks": acks }).to_string())
                    }
                    _ => (404, r#"{"text":"not found","code":404}"#.into()),
                }
            }),
            https,
        );
        FakeHec { http, state }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }
}

/// `count` CEF lines numbered from `first`; every line has a unique `n`.
pub fn lines(first: u64, count: u64, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for n in first..first + count {
        out.extend_from_slice(
            format!(
                "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt={} src=10.0.0.1 \
                 org_id=org-sink principal_id=p{} action=retrieve granted=true n={n}{tag}\n",
                1_764_100_000_000u64 + n,
                n % 10
            )
            .as_bytes(),
        );
    }
    out
}

/// Waits until `done` holds (checked every 100 ms), up to `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
