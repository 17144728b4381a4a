//! What a first-time user runs into: read commands on a data directory that
//! does not exist, a reversed time window, a port already taken, the
//! webhook setup printed again after a failed first start, and the example
//! configuration started as shipped. The real binary throughout.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{run_bin, write_config, TestServer, BIN};

/// `serve --config CONFIG` run to its exit; (exit code, stdout, stderr).
fn serve_to_exit(config: &Path) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn read_commands_refuse_a_missing_data_dir_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let data_dir = missing.to_str().unwrap();
    let commands: [&[&str]; 6] = [
        &["query", "--count"],
        &["query"],
        &["export"],
        &["check"],
        &["quarantine", "list"],
        &["replay", "--since", "1h", "--url", "https://localhost:1/"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--data-dir", data_dir]);
        let (code, stdout, stderr) = run_bin(&args, b"");
        assert_eq!(code, 2, "{args:?}: {stdout} {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains(&format!("no store in {data_dir}")),
            "{args:?}: {stderr}"
        );
        assert!(!missing.exists(), "{args:?} created {data_dir}");
    }
}

#[test]
fn a_reversed_time_window_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let window = ["--since", "2025-11-26", "--until", "2025-11-25"];
    for command in ["query", "export", "replay"] {
        let mut args = vec![command];
        args.extend(window);
        args.extend(["--data-dir", data_dir]);
        if command == "replay" {
            args.extend(["--url", "https://localhost:1/"]);
        }
        let (code, _, stderr) = run_bin(&args, b"");
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains(
                "the time window is empty: --since (2025-11-26T00:00:00Z) is not before --until (2025-11-25T00:00:00Z)"
            ),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn a_taken_port_names_its_config_key_and_says_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (key, server, admin) in [
        (
            "[admin] listen",
            "127.0.0.1:0".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "[server] listen",
            format!("127.0.0.1:{port}"),
            "127.0.0.1:0".to_owned(),
        ),
    ] {
        let config = dir.path().join("taken.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nlisten = \"{server}\"\n[admin]\nlisten = \"{admin}\"\n",
                dir.path().join("data").display().to_string()
            ),
        )
        .unwrap();
        let (code, _, stderr) = serve_to_exit(&config);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (`{key}`)")),
            "{stderr}"
        );
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains("another process listens there"), "{stderr}");
    }
}

#[test]
fn webhook_prints_the_konnect_call_after_a_failed_first_serve() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = dir.path().join("data");
    let config = dir.path().join("auditsink.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nlisten = \"0.0.0.0:8443\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // The first start generates the token, then cannot bind: it never
    // printed the token or the call.
    let (code, stdout, stderr) = serve_to_exit(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(!stdout.contains("Bearer"), "{stdout}");
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    let token = token.trim();
    assert!(token.starts_with("Bearer "));

    let config_arg = config.to_str().unwrap();
    // stdout is a pipe here: the token stays hidden, the call reads its file.
    let (code, stdout, stderr) = run_bin(
        &[
            "webhook",
            "--config",
            config_arg,
            "--host",
            "receiver.example",
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(token), "{stdout}");
    for expected in [
        "endpoint               https://receiver.example:8443/audit-logs",
        "curl -X PATCH https://us.api.konghq.com/v2/audit-log-webhook",
        &format!(
            r#""authorization":"'"$(cat '{}')"'""#,
            data.join("token").display()
        ),
        r#""skip_ssl_verification":true"#,
        r#""log_format":"cef""#,
        "--show-token prints it",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    // The printed call, run by a shell, sends exactly the token.
    let body = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("-d "))
        .unwrap();
    let echoed = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s' {body}"))
        .output()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&echoed.stdout).unwrap();
    assert_eq!(sent["authorization"], token);
    assert_eq!(sent["endpoint"], "https://receiver.example:8443/audit-logs");

    let (code, stdout, _) = run_bin(
        &[
            "webhook",
            "--config",
            config_arg,
            "--show-token",
            "--region",
            "eu",
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("authorization          {token}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(r#""authorization":"{token}""#)));
    assert!(stdout.contains("https://eu.api.konghq.com/v2/audit-log-webhook"));
}

#[test]
fn a_running_server_and_webhook_agree_on_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let server = TestServer::start(dir.path(), &config);
    let token = server.token();
    let stdout = server.stdout_containing("audit-log-webhook");
    assert!(stdout.contains("`auditsink webhook` prints it"), "{stdout}");
    assert!(stdout.contains(&token));
    let (code, shown, _) = run_bin(
        &[
            "webhook",
            "--config",
            config.to_str().unwrap(),
            "--show-token",
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert!(shown.contains(&format!(r#""authorization":"{token}""#)));
    // Port 0 in the configuration: the port is a placeholder, and a note says so.
    assert!(shown.contains("https://"), "{shown}");
    assert!(shown.contains(":PORT/audit-logs"), "{shown}");
    assert!(shown.contains("only this machine can connect"), "{shown}");
}
