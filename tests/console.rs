//! The web console's HTML answers, without a browser: hostile fields are
//! escaped on every page, every answer carries the security headers, the
//! reprocess button refuses cross-site and token-less posts, and the admin
//! listener asks for `[admin] authorization` when it is configured (and
//! refuses to start off loopback without it). The browser tests are in
//! `console_browser.rs`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

use common::{http_request, read_response, write_config, HttpResponse, TestServer, BIN};
use serde_json::Value;

const TOKEN: &str = "Bearer console-test-token";

/// Markup that runs script if a page writes it unescaped.
const HOSTILE_CEF: &str = "CEF:0|Evil|<script>window.__xss=1</script>|1|c|<img src=x onerror=\"window.__xss=2\">|1|\
rt=1764100000000 principal_id=<script>window.__xss=3</script> src=<b>x</b> act=x trace_id=777 suser=\"><svg onload=window.__xss=4>";
const HOSTILE_JSON: &str = r#"{"name":"<img src=x onerror=window.__xss=5>","principal_id":"p'\"<script>window.__xss=6</script>","<b>key</b>":"v","rt":1764100000001}"#;
const HOSTILE_QUARANTINE: &str = "not an event <script>window.__xss=7</script>";

const RAW_MARKUP: [&str; 5] = [
    "<script>window",
    "<img src=x",
    "<svg onload",
    "<b>x</b>",
    "<b>key",
];

fn source() -> String {
    format!(
        "[[source]]\nname = \"konnect-us\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"
    )
}

fn get(server: &TestServer, path: &str) -> HttpResponse {
    http_request(server.admin, "GET", path, &[], b"")
}

fn text(response: &HttpResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

fn assert_no_markup(page: &str, what: &str) {
    for markup in RAW_MARKUP {
        assert!(
            !page.contains(markup),
            "{what} holds raw {markup:?}:\n{page}"
        );
    }
}

fn assert_hardened(response: &HttpResponse, what: &str) {
    let csp = response.header("content-security-policy").unwrap_or("");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(response.header("x-frame-options"), Some("DENY"), "{what}");
}

fn event_ids(server: &TestServer) -> Vec<String> {
    text(&get(server, "/api/events?limit=100"))
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn pages_escape_hostile_fields_and_carry_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source());
    let server = TestServer::start(dir.path(), &config);
    let lines = format!("{HOSTILE_CEF}\n{HOSTILE_JSON}\n{HOSTILE_QUARANTINE}\n");
    let response = server.deliver(TOKEN, lines.as_bytes());
    assert_eq!(response.status, 200, "{}", text(&response));
    assert_eq!(response.json()["quarantined"], 1);
    let ids = event_ids(&server);
    assert_eq!(ids.len(), 2);

    let mut pages = vec![
        "/".to_owned(),
        "/search".to_owned(),
        "/search?principal=%3Cscript%3Ewindow.__xss%3D3%3C%2Fscript%3E".to_owned(),
        "/search?name=%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D5%3E&source=konnect-us"
            .to_owned(),
        "/quarantine".to_owned(),
    ];
    pages.extend(ids.iter().map(|id| format!("/event/{id}")));
    for path in &pages {
        let response = get(&server, path);
        assert_eq!(response.status, 200, "{path}: {}", text(&response));
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_hardened(&response, path);
        let page = text(&response);
        assert_no_markup(&page, path);
        // The page's own script is the only one, and it is a file.
        assert_eq!(page.matches("<script").count(), 1, "{path}");
        assert!(
            page.contains("<script src=\"/assets/console.js\" defer></script>"),
            "{path}"
        );
    }

    // The hostile text is there, as text.
    let search = text(&get(&server, &pages[2]));
    assert!(search.contains("data-total=\"1\""), "{search}");
    assert!(search.contains("&lt;script&gt;window.__xss=3&lt;/script&gt;"));
    assert!(search.contains("&lt;img src=x onerror=&quot;window.__xss=2&quot;&gt;"));
    // The form shows the filter back, escaped inside the attribute.
    assert!(search.contains("value=\"&lt;script&gt;window.__xss=3&lt;/script&gt;\""));
    let by_name = text(&get(&server, &pages[3]));
    assert!(by_name.contains("data-total=\"1\""), "{by_name}");
    assert!(by_name.contains("p&#39;&quot;&lt;script&gt;window.__xss=6&lt;/script&gt;"));
    let event = text(&get(&server, &format!("/event/{}", ids[0])));
    assert!(
        event.contains("&quot;&gt;&lt;svg onload=window.__xss=4&gt;"),
        "{event}"
    );
    assert!(event.contains("<pre class=\"raw\" data-key=\"raw\">CEF:0|Evil|&lt;script&gt;"));
    let event = text(&get(&server, &format!("/event/{}", ids[1])));
    assert!(event.contains("<th>&lt;b&gt;key&lt;/b&gt;</th>"), "{event}");
    let quarantine = text(&get(&server, "/quarantine"));
    assert!(quarantine.contains("not an event &lt;script&gt;window.__xss=7&lt;/script&gt;"));

    // Assets are served from the binary with their types.
    let js = get(&server, "/assets/console.js");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(text(&js).contains("data-refresh") || text(&js).contains("dataset.refresh"));
    let css = get(&server, "/assets/console.css");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // The JSON API carries nosniff and frame denial too.
    assert_hardened(&get(&server, "/status"), "/status");

    // The form's empty fields lead to the clean, bookmarkable URL.
    let form = get(
        &server,
        "/search?since=&until=&principal=p%201&name=&limit=20",
    );
    assert_eq!(form.status, 303);
    assert_eq!(
        form.header("location"),
        Some("/search?principal=p%201&limit=20")
    );
    // `source` is a filter of /api/events too (the NDJSON download).
    let other = text(&get(&server, "/api/events?source=elsewhere"));
    assert_eq!(other, "");
    assert_eq!(
        text(&get(&server, "/api/events?source=konnect-us"))
            .lines()
            .count(),
        2
    );
    assert_eq!(
        text(&get(&server, "/api/events/count?source=konnect-us&limit=1")),
        "{\"count\":1}\n"
    );

    // Errors are pages, with the input escaped.
    let bad = get(&server, "/search?limit=%3Cb%3E");
    assert_eq!(bad.status, 400);
    assert!(text(&bad).contains("limit must be"));
    assert_no_markup(&text(&bad), "bad limit");
    assert_eq!(get(&server, "/search?limit=5000").status, 400);
    // Bounds at the ends of the time axis chart without overflowing.
    for bounds in [
        "since=9223372036854775s",
        "since=9223372036854775s&source=konnect-us",
        "since=9223372036854775s&until=9223372036854775807",
        "since=9223372036854775s&until=9223372036854775807&source=konnect-us",
        "since=1970-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
    ] {
        let page = get(&server, &format!("/search?{bounds}"));
        assert_eq!(page.status, 200, "/search?{bounds}: {}", text(&page));
    }
    assert_eq!(get(&server, "/event/not-an-id").status, 404);
    assert_eq!(get(&server, "/event/00000000000fffff").status, 404);
    assert_eq!(get(&server, "/assets/nothing.js").status, 404);
    let post = http_request(server.admin, "POST", "/search", &[], b"");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
}

/// A request with a chosen `Host`.
fn get_with_host(server: &TestServer, path: &str, host: &str, extra: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(server.admin).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut tcp)
}

#[test]
fn a_browser_must_name_the_listener_by_a_loopback_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source());
    let server = TestServer::start(dir.path(), &config);
    let addr = server.admin.to_string();
    assert_eq!(get_with_host(&server, "/", &addr, "").status, 200);
    assert_eq!(
        get_with_host(&server, "/", "localhost:9090", "").status,
        200
    );
    // A page that rebinds its own name to 127.0.0.1 reads nothing.
    let rebound = get_with_host(&server, "/search", "rebound.example:9090", "");
    assert_eq!(rebound.status, 421);
    let fetch = get_with_host(
        &server,
        "/api/events",
        "rebound.example",
        "Sec-Fetch-Site: same-origin\r\n",
    );
    assert_eq!(fetch.status, 421);
    // Scripts that are not browsers keep working under any name.
    assert_eq!(
        get_with_host(&server, "/api/events", "admin", "").status,
        200
    );
}

fn form_token(server: &TestServer) -> String {
    let page = text(&get(server, "/quarantine"));
    let at = page
        .find("name=\"token\" value=\"")
        .expect("the form has a token")
        + 20;
    page[at..at + 64].to_owned()
}

fn quarantined(server: &TestServer) -> usize {
    text(&get(server, "/api/quarantine")).lines().count()
}

#[test]
fn reprocess_refuses_cross_site_and_token_less_posts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &source());
    let server = TestServer::start(dir.path(), &config);
    server.deliver(TOKEN, b"not an event\n");
    assert_eq!(quarantined(&server), 1);
    let token = form_token(&server);
    let form = format!("token={token}");
    let post = |headers: &[(&str, &str)], body: &str| {
        http_request(
            server.admin,
            "POST",
            "/quarantine/reprocess",
            headers,
            body.as_bytes(),
        )
    };
    let urlencoded = ("Content-Type", "application/x-www-form-urlencoded");
    for (headers, body, status) in [
        (vec![urlencoded], "", 403),
        (vec![urlencoded], "token=0000", 403),
        (
            vec![urlencoded],
            &format!("token={}", "0".repeat(64))[..],
            403,
        ),
        (
            vec![urlencoded, ("Origin", "http://evil.example")],
            &form[..],
            403,
        ),
        (vec![urlencoded, ("Origin", "null")], &form[..], 403),
        (
            vec![urlencoded, ("Sec-Fetch-Site", "cross-site")],
            &form[..],
            403,
        ),
        (
            vec![urlencoded, ("Sec-Fetch-Site", "same-site")],
            &form[..],
            403,
        ),
    ] {
        let response = post(&headers, body);
        assert_eq!(
            response.status,
            status,
            "{headers:?} {body:?}: {}",
            text(&response)
        );
        assert_hardened(&response, "refusal");
    }
    let too_big = "token=".to_owned() + &"a".repeat(10_000);
    assert_eq!(post(&[urlencoded], &too_big).status, 413);
    assert_eq!(get(&server, "/quarantine/reprocess").status, 405);
    // The API's POST is refused from another site as well; the CLI's
    // (no Origin, no Sec-Fetch-Site) goes through.
    let api = http_request(
        server.admin,
        "POST",
        "/api/quarantine/reprocess",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(api.status, 403);
    assert_eq!(quarantined(&server), 1);

    // The console's own post: same origin, with the token.
    let response = post(
        &[
            urlencoded,
            ("Origin", "http://localhost"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &form,
    );
    assert_eq!(response.status, 303, "{}", text(&response));
    assert_eq!(
        response.header("location"),
        Some("/quarantine?examined=1&moved=0&duplicates=0&kept=1")
    );
    let page = text(&get(
        &server,
        "/quarantine?examined=1&moved=0&duplicates=0&kept=1",
    ));
    assert!(
        page.contains("<span data-key=\"kept\">kept 1</span>"),
        "{page}"
    );
    let api = http_request(server.admin, "POST", "/api/quarantine/reprocess", &[], b"");
    assert_eq!(api.status, 200);
}

const ADMIN_AUTH: &str = "Basic YWRtaW46czNjcmV0"; // admin:s3cret

#[test]
fn admin_authorization_guards_every_path_and_is_required_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // Off loopback without authorization: refused at startup, with the way out.
    let open = dir.path().join("open.toml");
    std::fs::write(
        &open,
        format!(
            "data_dir = {:?}\n[admin]\nlisten = \"0.0.0.0:0\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&open)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address: set [admin] authorization"),
        "{stderr}"
    );
    assert!(stderr.contains("SSH tunnel"), "{stderr}");

    // With authorization (here on loopback: the check is the same anywhere).
    let config = write_config(dir.path(), &source());
    let text_config = std::fs::read_to_string(&config).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\nauthorization = {ADMIN_AUTH:?}\n"),
    );
    std::fs::write(&config, text_config).unwrap();
    let server = TestServer::start(dir.path(), &config);
    server.deliver(
        TOKEN,
        b"CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1764100000000 principal_id=p1\n",
    );
    for path in [
        "/",
        "/search",
        "/healthz",
        "/status",
        "/api/events",
        "/assets/console.css",
    ] {
        let refused = get(&server, path);
        assert_eq!(refused.status, 401, "{path}");
        assert!(
            refused
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic realm="),
            "{path}"
        );
        let wrong = http_request(
            server.admin,
            "GET",
            path,
            &[("Authorization", "Basic YWRtaW46d3Jvbmc=")],
            b"",
        );
        assert_eq!(wrong.status, 401, "{path}");
        let allowed = http_request(
            server.admin,
            "GET",
            path,
            &[("Authorization", ADMIN_AUTH)],
            b"",
        );
        assert_eq!(allowed.status, 200, "{path}");
    }
    // Behind a name (a reverse proxy, the host's DNS name), with credentials.
    let named = get_with_host(
        &server,
        "/",
        "auditsink.example.com",
        &format!("Authorization: {ADMIN_AUTH}\r\n"),
    );
    assert_eq!(named.status, 200);
    // The CLI reads the value from the configuration.
    let rows = common::query(&["--config", config.to_str().unwrap()]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["fields"]["principal_id"], "p1");
}
