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
    let keys = dir.path().join("keys");
    let (code, _, stderr) = run_bin(&["keygen", keys.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{stderr}");
    let jwks = keys.join("jwks.json");
    let commands: [&[&str]; 8] = [
        &["query", "--count"],
        &["query"],
        &["export"],
        &["check"],
        &["quarantine", "list"],
        &["quarantine", "reprocess"],
        &["verify", "--store", "--jwks", jwks.to_str().unwrap()],
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

/// The subcommands `auditsink --help` lists.
fn subcommands() -> Vec<String> {
    let (code, help, _) = run_bin(&["--help"], b"");
    assert_eq!(code, 0);
    let names: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    for expected in ["serve", "query", "send", "webhook", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    names
}

#[test]
fn completions_cover_every_subcommand() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = run_bin(&["completions", shell], b"");
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.len() > 1000, "{shell}: {script}");
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell} lacks {name}");
        }
        // Options of a subcommand too.
        assert!(script.contains("data-dir"), "{shell}");
    }
    let (code, _, stderr) = run_bin(&["completions", "tcsh"], b"");
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn man_pages_cover_every_subcommand() {
    let names = subcommands();
    let (code, page, stderr) = run_bin(&["man"], b"");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH auditsink 1"),
        "{page}"
    );
    assert!(page.contains(".TH auditsink 1"), "{page}");
    for name in &names {
        // roff escapes the hyphen of `auditsink-serve(1)`.
        assert!(
            page.contains(&format!("auditsink\\-{name}(1)")),
            "the page lacks {name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_bin(&["man", "--dir", dir.path().to_str().unwrap()], b"");
    assert_eq!(code, 0, "{stderr}");
    for name in &names {
        let page = std::fs::read_to_string(dir.path().join(format!("auditsink-{name}.1")))
            .unwrap_or_else(|e| panic!("auditsink-{name}.1: {e}"));
        assert!(page.contains(".SH SYNOPSIS"), "{name}: {page}");
    }
    let serve = std::fs::read_to_string(dir.path().join("auditsink-serve.1")).unwrap();
    assert!(serve.contains("\\-\\-config"), "{serve}");
}

/// `config/auditsink.toml` as shipped, with only its data directory and
/// ports changed (each replaced exactly once), starts without any
/// environment variable or network, and takes a delivery.
#[test]
fn the_example_configuration_starts_as_shipped() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditsink.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut text = shipped.clone();
    for (from, to) in [
        (
            "data_dir = \"./auditsink-data\"".to_owned(),
            format!("data_dir = {:?}", data.display().to_string()),
        ),
        (
            "listen = \"0.0.0.0:8443\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "listen = \"127.0.0.1:9090\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
    ] {
        assert_eq!(text.matches(&from).count(), 1, "{from}");
        text = text.replacen(&from, &to, 1);
    }
    let config = dir.path().join("auditsink.toml");
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(BIN);
    command.args(["serve", "--config"]).arg(&config);
    for (name, _) in std::env::vars() {
        if name.starts_with("AUDITSINK") {
            command.env_remove(name);
        }
    }
    let server = TestServer::start_command(dir.path(), &config, command);
    let line = b"Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 action=retrieve granted=true principal_id=p1";
    let answer = server.deliver(&server.token(), line);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["stored"], 1);
}

#[test]
fn the_systemd_unit_is_sandboxed_and_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/auditsink.service"),
    )
    .unwrap();
    for directive in [
        "ExecStart=/usr/local/bin/auditsink serve --config /etc/auditsink/auditsink.toml",
        "DynamicUser=yes",
        "StateDirectory=auditsink",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/auditsink",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "SystemCallFilter=@system-service",
        "\nCapabilityBoundingSet=\n",
        "\nAmbientCapabilities=\n",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping the systemd-analyze checks: systemd-analyze is not installed");
        return;
    }
    // Checked with the binary built here in place of the installed one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auditsink.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/auditsink", BIN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{complaints}");
    assert!(complaints.trim().is_empty(), "{complaints}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .split("Overall exposure level for auditsink.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {report}"));
    // systemd rates 0..10; below 2 is "OK", the best band.
    assert!(exposure < 2.0, "exposure {exposure}: {report}");
}
