//! Forwarding over syslog/TLS (RFC 5425 octet counting, RFC 5424 header)
//! into a real rsyslog from Debian (`rsyslog` + `rsyslog-openssl`), started
//! here in the foreground on a free loopback port with a generated
//! certificate, writing the messages to a file: every line arrives
//! byte-exact and its signature still verifies, also with the sender
//! killed with SIGKILL mid-forwarding three times (at least once: the
//! extra copies are at most what `/status` reports as resent).

mod common;
mod sink_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{run_bin, simulate_to, unused_port, write_config, TestServer};
use sink_support::wait_until;

const TOKEN: &str = "Bearer syslog-test-token";

/// rsyslogd with its TLS driver, or why not.
fn rsyslogd() -> Result<PathBuf, String> {
    let binary = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("rsyslogd is not installed (Debian: apt-get install rsyslog rsyslog-openssl)")?;
    let driver = [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
        "/usr/lib/rsyslog",
    ]
    .iter()
    .any(|d| Path::new(d).join("lmnsd_ossl.so").exists());
    if !driver {
        return Err(
            "rsyslog's OpenSSL driver lmnsd_ossl.so is missing (apt-get install rsyslog-openssl)"
                .into(),
        );
    }
    Ok(binary)
}

struct Rsyslog {
    child: Child,
    port: u16,
    out: PathBuf,
    headers: PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_rsyslog(binary: &Path, dir: &Path) -> Rsyslog {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("rsyslog-cert.pem");
    let key = dir.join("rsyslog-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let port = unused_port();
    let out = dir.join("messages.log");
    let headers = dir.join("headers.log");
    let config = dir.join("rsyslog.conf");
    std::fs::write(
        &config,
        format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="{cert}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="message" type="string" string="%msg%\n")
template(name="header" type="string" string="%pri% %protocol-version% %timereported:::date-rfc3339% %app-name% %msgid%\n")
action(type="omfile" file="{out}" template="message")
action(type="omfile" file="{headers}" template="header")
"#,
            work = work.display(),
            cert = cert.display(),
            key = key.display(),
            out = out.display(),
            headers = headers.display(),
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&config)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rsyslogd");
    wait_until(Duration::from_secs(15), "rsyslogd listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Rsyslog {
        child,
        port,
        out,
        headers,
    }
}

fn kill_9(server: &TestServer) {
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn received(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn syslog_over_tls_into_rsyslog_arrives_byte_exact_and_signed() {
    let binary = match rsyslogd() {
        Ok(binary) => binary,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = start_rsyslog(&binary, dir.path());
    // Signed Konnect events (CEF with a syslog prefix), 3 x 1500.
    let mut files = Vec::new();
    for seed in 1..=3 {
        files.push(simulate_to(
            dir.path(),
            &format!("events-{seed}.cef"),
            &["--count", "1500", "--seed", &seed.to_string()],
        ));
    }
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\nname = \"konnect\"\npath = \"/audit-logs\"\nauthorization = \"{TOKEN}\"\n\
             [[sink]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"localhost:{}\"\n\
             transport = \"tls\"\nca_file = \"{}\"\nbatch_max_events = 200\n",
            rsyslog.port,
            dir.path().join("rsyslog-cert.pem").display()
        ),
    );
    let mut sent = Vec::new();
    let mut server = TestServer::start(dir.path(), &config);
    // Three SIGKILLs at different moments: while the sink forwards the
    // batches delivered so far, a moment after the last delivery, and
    // right after the sink caught up (what it wrote before must arrive).
    for (kill, file) in files.iter().enumerate() {
        let body = std::fs::read(file).unwrap();
        let batches: Vec<Vec<u8>> = body
            .split_inclusive(|&b| b == b'\n')
            .collect::<Vec<_>>()
            .chunks(300)
            .map(|c| c.concat())
            .collect();
        for (i, batch) in batches.iter().enumerate() {
            let answer = server.deliver(TOKEN, batch);
            assert_eq!(answer.status, 200);
            if kill == 0 && i == 2 {
                kill_9(&server);
                drop(server);
                server = TestServer::start(dir.path(), &config);
            }
        }
        sent.extend(String::from_utf8(body).unwrap().lines().map(str::to_owned));
        match kill {
            1 => std::thread::sleep(Duration::from_millis(60)),
            2 => wait_until(Duration::from_secs(30), "the sink caught up", || {
                server.status()["sinks"][0]["lag_events"] == 0
            }),
            _ => continue,
        }
        kill_9(&server);
        drop(server);
        server = TestServer::start(dir.path(), &config);
    }
    let missing = || {
        let got: std::collections::HashSet<String> = received(&rsyslog.out).into_iter().collect();
        sent.iter()
            .enumerate()
            .filter(|(_, l)| !got.contains(*l))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !missing().is_empty() {
        if std::time::Instant::now() > deadline {
            let missing = missing();
            panic!(
                "{} lines never arrived (of {}), from #{} to #{}; sink: {}",
                missing.len(),
                sent.len(),
                missing[0],
                missing[missing.len() - 1],
                server.status()["sinks"][0]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(Duration::from_secs(10), "the sink caught up", || {
        server.status()["sinks"][0]["lag_events"] == 0
    });
    let status = server.status()["sinks"][0].clone();
    let lines = received(&rsyslog.out);
    let mut copies: HashMap<&str, u64> = HashMap::new();
    for line in &lines {
        *copies.entry(line.as_str()).or_default() += 1;
    }
    assert_eq!(
        copies.len(),
        sent.len(),
        "nothing but the sent lines arrived"
    );
    let extra: u64 = copies.values().map(|n| n - 1).sum();
    let resent = status["resent"].as_u64().unwrap();
    eprintln!(
        "syslog: {} lines, {extra} extra copies, {resent} reported resent",
        sent.len()
    );
    assert!(
        extra <= resent,
        "extra copies {extra} > reported resent {resent}: {status}"
    );
    assert!(resent <= 3 * 200, "{status}");
    assert_eq!(status["state"], "healthy");

    // Byte-exact: the signatures still verify on what rsyslog wrote.
    let jwks = dir.path().join("keys/jwks.json");
    let (code, _, stderr) = run_bin(
        &[
            "verify",
            "--jwks",
            jwks.to_str().unwrap(),
            rsyslog.out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("valid={}", lines.len())),
        "{stderr}"
    );
    assert!(stderr.contains("invalid=0"), "{stderr}");

    // The RFC 5424 header: version 1, app name, the event's own time.
    let headers = received(&rsyslog.headers);
    assert_eq!(headers.len(), lines.len());
    assert!(
        headers
            .iter()
            .all(|h| h.starts_with("110 1 ") && h.ends_with(" auditsink cef")),
        "{:?}",
        &headers[..3]
    );
    let first_time = headers[0].split(' ').nth(2).unwrap();
    assert!(
        first_time.starts_with("2025-11-25T19:46:40"),
        "event time, not now: {}",
        headers[0]
    );
    server.stop();
}
