//! Test harness: the real `auditsink` binary on port 0, a real TLS client
//! (rustls, trusting the server's certificate), real gzip bodies, a real store
//! directory.
#![allow(dead_code)]

pub mod irregular;
pub mod nats;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_auditsink");

/// A local port nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binary with `stdin`; (exit code, stdout, stderr).
pub fn run_bin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written from another thread: the child may fill its stdout before it
    // has read all of its stdin.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `auditsink simulate` (keys in `dir/keys`) into `dir/NAME`; the path.
pub fn simulate_to(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let keys = dir.join("keys");
    let mut all = vec!["simulate", "--jwks-dir", keys.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_bin(&all, b"");
    assert_eq!(code, 0, "{stderr}");
    let path = dir.join(name);
    std::fs::write(&path, stdout).unwrap();
    path
}

/// The shared corpus, or None (with the reason printed) when it is absent.
pub fn corpus(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus")
        .join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: shared corpus file {} not found", path.display());
        None
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A running `auditsink serve`.
pub struct TestServer {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Minimal config: loopback, port 0, everything else default. `extra` is
/// appended verbatim (e.g. `[[source]]` tables).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("auditsink.toml");
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}",
        dir.join("data").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    config
}

impl TestServer {
    /// Starts the binary with `config` and waits for both listeners.
    pub fn start(dir: &Path, config: &Path) -> TestServer {
        let mut command = Command::new(BIN);
        command.args(["serve", "--config"]).arg(config);
        TestServer::start_command(dir, config, command)
    }

    /// Starts `command` (which must run `auditsink serve --config CONFIG`,
    /// e.g. through a shell that sets limits first, with `exec`), with
    /// `RUST_LOG=info` unless the command sets it.
    pub fn start_command(dir: &Path, config: &Path, mut command: Command) -> TestServer {
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn auditsink");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    stderr.lock().unwrap().push(line);
                }
            });
        }
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while addr.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "server did not report its listeners; stderr: {:?}",
                        stderr.lock().unwrap()
                    )
                });
            if let Some(rest) = line.split("listening on https://").nth(1) {
                addr = Some(address_prefix(rest));
            }
            if line.contains("indexer: no webhook listener") {
                // An indexer (`--role indexer`) has no webhook listener.
                addr = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
            }
            if let Some(rest) = line.split("admin on http://").nth(1) {
                admin = Some(address_prefix(rest));
            }
        }
        let stdout = Arc::new(Mutex::new(String::new()));
        {
            let stdout = stdout.clone();
            let pipe = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = stdout.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        TestServer {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            stdout,
            child,
            stderr,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// What the server printed on stdout so far.
    pub fn stdout_now(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the server printed on stdout so far, once it contains `needle`
    /// (or after 5 s): the pipe is read by another thread.
    pub fn stdout_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stdout.lock().unwrap().clone();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.admin_get("/metrics");
        assert_eq!(code, 200);
        body
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// POSTs `body` to `path` over TLS with these extra headers.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        https_request(
            self.addr,
            &self.data_dir().join("tls/cert.pem"),
            "POST",
            path,
            headers,
            body,
        )
    }

    /// POSTs a gzip (`Content-Encoding: application/gzip`) batch, as Konnect does.
    pub fn deliver(&self, authorization: &str, lines: &[u8]) -> HttpResponse {
        self.post(
            "/audit-logs",
            &[
                ("Authorization", authorization),
                ("Content-Encoding", "application/gzip"),
                ("Content-Type", "application/text"),
            ],
            &gzip(lines),
        )
    }

    /// GETs an admin path; the body as text.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(self.admin).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let response = read_response(&mut tcp);
        (response.status, String::from_utf8(response.body).unwrap())
    }

    pub fn status(&self) -> Value {
        let (code, body) = self.admin_get("/status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The socket address at the start of `text` (pretty or JSON log lines).
fn address_prefix(text: &str) -> SocketAddr {
    let end = text
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(text.len());
    text[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Reads one HTTP/1.1 response without waiting for the connection to close
/// (keep-alive): head, then `Content-Length` bytes.
pub fn read_one_response(stream: &mut impl Read) -> HttpResponse {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    raw.extend(body);
    read_response(&mut raw.as_slice())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A TLS connection to `addr`, verifying the server certificate against
/// `ca` for the name `localhost`.
pub fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// The head of an HTTP/1.1 request with `Connection: close`.
pub fn request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: usize,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {content_length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One HTTP/1.1 request over rustls.
pub fn https_request(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut tls = tls_connect(addr, ca);
    tls.write_all(request_head(method, path, headers, body.len()).as_bytes())
        .unwrap();
    tls.write_all(body).unwrap();
    tls.flush().unwrap();
    read_response(&mut tls)
}

/// One plain HTTP/1.1 request (`Host: localhost`), as to the admin listener.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp.write_all(request_head(method, path, headers, body.len()).as_bytes())
        .unwrap();
    tcp.write_all(body).unwrap();
    read_response(&mut tcp)
}

pub fn read_response(stream: &mut impl Read) -> HttpResponse {
    let mut raw = Vec::new();
    // The server closes after the response (Connection: close); a TLS peer
    // that closes without close_notify is reported as an error after the data.
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Runs `auditsink query` with these arguments; the NDJSON rows.
pub fn query(args: &[&str]) -> Vec<Value> {
    let output = Command::new(BIN).arg("query").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// rustls server settings with `chain` (the server's certificate first)
/// and `key`.
fn tls_server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A self-signed certificate for `localhost`, its PEM written to
/// `dir/file` for the client to trust: the server's rustls settings and
/// that file.
pub fn self_signed_tls(dir: &Path, file: &str) -> (Arc<rustls::ServerConfig>, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = dir.join(file);
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let chain = vec![certified.cert.der().clone()];
    (tls_server_config(chain, &certified.key_pair), ca)
}

/// A private CA (its PEM written to `dir/file`, what a `ca_file` names)
/// and a server certificate it signed for `127.0.0.1` and `localhost`, as
/// an organisation's internal PKI issues: the server's rustls settings
/// (the chain ends with the leaf: the CA is the client's to have) and the
/// CA file.
pub fn private_ca_tls(dir: &Path, file: &str) -> (Arc<rustls::ServerConfig>, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "auditsink test private CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let ca = dir.join(file);
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    (tls_server_config(vec![cert.der().clone()], &key), ca)
}
