//! The web console in a real browser: Debian's headless Chromium driven
//! through WebDriver (chromedriver, started here on a free loopback port
//! and stopped by PID). Two sources receive the shared Konnect samples;
//! the status page shows their cards, a search by principal pages through
//! exactly what `auditsink query` returns, an event shows its raw line,
//! hostile fields stay text with no script run, and the reprocess button
//! moves a line that the source's new policy accepts. A screenshot of each
//! page is written under target/tmp/console-screenshots/.
//!
//! Skips (saying why) without chromium and chromedriver (`.ci/run`
//! installs them); without the shared corpus it uses `auditsink simulate`
//! lines of the same shape.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{corpus, gzip, simulate_to, unused_port, write_config, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const US_TOKEN: &str = "Bearer console-us";
const EU_TOKEN: &str = "Bearer console-eu";
const HOSTILE_CEF: &str = "CEF:0|Evil|<script>window.__xss=1</script>|1|c|<img src=x onerror=\"window.__xss=2\">|1|\
rt=1764100000000 principal_id=<script>window.__xss=3</script> src=<img src=y onerror=window.__xss=4> act=x";
const HOSTILE_QUARANTINE: &str =
    "not an event <img src=z onerror=window.__xss=5><script>window.__xss=6</script>";

/// Chromium's flags: headless, no sandbox (CI runs as root), and nothing
/// that talks to the network or a profile of its own.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
];

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver process on a loopback port; killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver, or says why it cannot.
    fn start() -> Result<ChromeDriver, String> {
        let driver = find_program(&["chromedriver"])
            .ok_or("chromedriver not found on PATH (apt-get install chromium-driver)")?;
        let chromium = find_program(&["chromium", "chromium-browser"])
            .ok_or("chromium not found on PATH (apt-get install chromium)")?;
        let port = unused_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", driver.display()))?;
        let mut driver = ChromeDriver {
            child,
            port,
            chromium,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || driver.child.try_wait().ok().flatten().is_some() {
                return Err("chromedriver did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session with blocking calls (the test is otherwise blocking).
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(driver: &ChromeDriver) -> Browser {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": driver.chromium, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{}", driver.port)),
            )
            .expect("a WebDriver session with headless Chromium");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            runtime,
            client: Some(client),
            shots,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap();
    }

    fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .unwrap()
            .to_string()
    }

    /// Waits (generously: CI is loaded) for an element.
    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.runtime
            .block_on(
                self.client()
                    .wait()
                    .at_most(Duration::from_secs(30))
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| {
                let page = self
                    .runtime
                    .block_on(self.client().source())
                    .unwrap_or_default();
                panic!("{css} on {}: {e}; the page:\n{page}", self.url())
            })
    }

    fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.runtime
            .block_on(self.client().find_all(Locator::Css(css)))
            .unwrap()
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.runtime.block_on(element.text()).unwrap()
    }

    fn attr(&self, element: &fantoccini::elements::Element, name: &str) -> Option<String> {
        self.runtime.block_on(element.attr(name)).unwrap()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.runtime.block_on(element.click()).unwrap();
    }

    /// Clicks a link or submit button and waits for the next page: until
    /// then, what is found is still the old page's.
    fn follow(&self, css: &str) {
        let before = self.url();
        self.click(css);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.url() == before {
            assert!(
                Instant::now() < deadline,
                "{css}: the next page did not load"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.runtime.block_on(element.clear()).unwrap();
        self.runtime.block_on(element.send_keys(text)).unwrap();
    }

    fn script(&self, js: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(js, vec![]))
            .unwrap()
    }

    /// Saves a screenshot as an artifact; checks it is a non-empty PNG.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        assert!(png.len() > 1000, "{name}: a {}-byte screenshot", png.len());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Whether a stored payload ran, and whether the page's own script did.
    fn scripts(&self) -> (Value, Value) {
        let found = self.script(
            "return [typeof window.__xss, document.documentElement.dataset.console || null];",
        );
        (found[0].clone(), found[1].clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

fn sources(jwks: &Path, eu_policy: &str) -> String {
    format!(
        "[[source]]\nname = \"konnect-us\"\npath = \"/us\"\nauthorization = {US_TOKEN:?}\nformat = \"cef\"\n\
         [[source]]\nname = \"konnect-eu\"\npath = \"/eu\"\nauthorization = {EU_TOKEN:?}\nformat = \"json\"\n\
         jwks = {:?}\nsignatures = \"{eu_policy}\"\n\
         [[source]]\nname = \"idle\"\npath = \"/idle\"\nauthorization = \"Bearer idle\"\n",
        jwks.display().to_string()
    )
}

fn deliver(server: &TestServer, path: &str, token: &str, body: &[u8]) -> Value {
    let response = server.post(
        path,
        &[
            ("Authorization", token),
            ("Content-Encoding", "application/gzip"),
        ],
        &gzip(body),
    );
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// The shared Konnect samples (CEF, JSON lines, their JWKS), or, without
/// the corpus, the same kind of lines from `auditsink simulate`.
fn samples(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    if let (Some(cef), Some(jsonl), Some(jwks)) = (
        corpus("konnect-sample.cef"),
        corpus("konnect-sample.jsonl"),
        corpus("konnect-sample-jwks.json"),
    ) {
        return (cef, jsonl, jwks);
    }
    eprintln!("using `auditsink simulate` lines instead of the shared samples");
    let cef = simulate_to(dir, "sample.cef", &["-n", "60", "--format", "cef"]);
    let jsonl = simulate_to(dir, "sample.jsonl", &["-n", "60", "--format", "json"]);
    (cef, jsonl, dir.join("keys/jwks.json"))
}

fn card_value(browser: &Browser, source: &str, key: &str) -> String {
    browser.text(&format!(
        "article[data-source=\"{source}\"] [data-key=\"{key}\"]"
    ))
}

#[test]
fn console_in_a_real_browser() {
    let driver = match ChromeDriver::start() {
        Ok(driver) => driver,
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (cef, jsonl, jwks) = samples(dir.path());
    let config = write_config(dir.path(), &sources(&jwks, "enforce"));
    let config_arg = config.to_str().unwrap().to_owned();
    let server = TestServer::start(dir.path(), &config);

    // konnect-us: the CEF samples, a hostile event and a hostile non-event.
    let mut us_body = std::fs::read(&cef).unwrap();
    us_body.extend(format!("{HOSTILE_CEF}\n{HOSTILE_QUARANTINE}\n").as_bytes());
    assert_eq!(
        deliver(&server, "/us", US_TOKEN, &us_body),
        json!({"received": 62, "stored": 61, "duplicates": 0, "quarantined": 1})
    );
    // konnect-eu (signatures enforced): the JSON samples, and one of them
    // without its signature, which enforce quarantines.
    let json_text = std::fs::read_to_string(&jsonl).unwrap();
    let mut unsigned: Value = serde_json::from_str(json_text.lines().next().unwrap()).unwrap();
    unsigned.as_object_mut().unwrap().remove("sig");
    let unsigned = unsigned.to_string();
    let eu_body = format!("{json_text}{unsigned}\n");
    assert_eq!(
        deliver(&server, "/eu", EU_TOKEN, eu_body.as_bytes()),
        json!({"received": 61, "stored": 60, "duplicates": 0, "quarantined": 1})
    );
    // Then a delivery to konnect-eu with a wrong token: it is failing now.
    let refused = server.post("/eu", &[("Authorization", "Bearer wrong")], b"x\n");
    assert_eq!(refused.status, 401);

    let browser = Browser::open(&driver);
    let admin = format!("http://{}", server.admin);

    // Status: a card per source with its badge and counts, as /status says.
    browser.goto(&format!("{admin}/"));
    let status = server.status();
    for (name, badge, stored, quarantined, requests) in [
        ("konnect-us", "active", "61", "1", "1"),
        ("konnect-eu", "failing", "60", "1", "2"),
        ("idle", "inactive", "0", "0", "0"),
    ] {
        let card = format!("article[data-source=\"{name}\"]");
        let shown = browser.find(&format!("{card} [data-badge]"));
        assert_eq!(
            browser.attr(&shown, "data-badge").as_deref(),
            Some(badge),
            "{name}"
        );
        assert_eq!(
            browser.text(&format!("{card} [data-badge]")).to_lowercase(),
            badge
        );
        assert_eq!(
            card_value(&browser, name, "events_stored"),
            stored,
            "{name}"
        );
        assert_eq!(
            card_value(&browser, name, "quarantined"),
            quarantined,
            "{name}"
        );
        assert_eq!(card_value(&browser, name, "requests"), requests, "{name}");
        let json = status["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        assert_eq!(json["webhook_status"], badge);
        assert_eq!(json["events_stored"].to_string(), stored);
    }
    assert_eq!(
        card_value(&browser, "konnect-eu", "rejected.unauthorized"),
        "1"
    );
    assert_eq!(
        card_value(&browser, "konnect-eu", "last_response_code"),
        "401"
    );
    assert_eq!(browser.text("[data-key=\"store.events\"]"), "121");
    assert_eq!(browser.find_all("article[data-source] .chart svg").len(), 3);
    assert_eq!(
        browser.scripts().1,
        "ready",
        "the console's own script runs"
    );
    browser.screenshot("status");

    // Search by the busiest principal, two per page, through the form.
    let all = common::query(&["--config", &config_arg]);
    let mut by_principal = std::collections::BTreeMap::<String, usize>::new();
    for row in &all {
        if let Some(p) = row["fields"]["principal_id"].as_str() {
            *by_principal.entry(p.to_owned()).or_default() += 1;
        }
    }
    let (principal, _) = by_principal.iter().max_by_key(|(_, n)| **n).unwrap();
    let expected = common::query(&["--config", &config_arg, "--principal", principal]);
    assert!(
        expected.len() >= 3,
        "a principal with several events: {expected:?}"
    );
    let expected_ids: Vec<&str> = expected.iter().map(|r| r["id"].as_str().unwrap()).collect();
    browser.follow("header nav a[href=\"/search\"]");
    browser.type_into("input[name=\"principal\"]", principal);
    browser.type_into("input[name=\"limit\"]", "2");
    browser.follow("form.search button[type=\"submit\"]");
    browser.find("table.events");
    assert!(
        browser.url().contains(&format!("principal={principal}")),
        "{}",
        browser.url()
    );
    assert_eq!(
        browser.text("[data-total]"),
        format!("{} matching events", expected.len())
    );
    browser.find(".chart svg rect");
    browser.screenshot("search");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        for row in browser.find_all("table.events tbody tr") {
            seen.push(browser.attr(&row, "data-id").unwrap());
        }
        if browser.find_all("a[rel=\"next\"]").is_empty() {
            break;
        }
        browser.follow("a[rel=\"next\"]");
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(
        seen, expected_ids,
        "the pages hold exactly `query`'s answer, in order"
    );
    assert_eq!(pages, expected.len().div_ceil(2));

    // The last one's page: its raw line, id, source and a principal link.
    let last = expected.last().unwrap();
    let last_id = last["id"].as_str().unwrap();
    browser.follow(&format!("tr[data-id=\"{last_id}\"] a[href^=\"/event/\"]"));
    assert_eq!(
        browser.text("pre[data-key=\"raw\"]"),
        last["raw"].as_str().unwrap()
    );
    assert_eq!(browser.text("dd[data-key=\"id\"]"), last_id);
    assert_eq!(
        browser.text("dd[data-key=\"source\"]"),
        last["source"].as_str().unwrap()
    );
    assert_eq!(
        browser.text("dd[data-key=\"signature\"]"),
        last["signature"].as_str().unwrap()
    );
    browser.find("p.links a[href^=\"/search?principal=\"]");
    browser.screenshot("event");

    // Hostile fields render as text, in the table and on the event page,
    // and none of them runs.
    let hostile = all.iter().find(|r| r["vendor"] == "Evil").unwrap();
    let hostile_id = hostile["id"].as_str().unwrap();
    browser.goto(&format!(
        "{admin}/search?principal=%3Cscript%3Ewindow.__xss%3D3%3C%2Fscript%3E"
    ));
    let cells = browser.find_all(&format!("tr[data-id=\"{hostile_id}\"] td"));
    assert_eq!(cells.len(), 7);
    let name = browser.runtime.block_on(cells[1].text()).unwrap();
    assert_eq!(name, "<img src=x onerror=\"window.__xss=2\">");
    assert_eq!(browser.scripts(), (json!("undefined"), json!("ready")));
    browser.goto(&format!("{admin}/event/{hostile_id}"));
    assert_eq!(
        browser.text("dd[data-key=\"product\"]"),
        "<script>window.__xss=1</script>"
    );
    assert_eq!(browser.text("pre[data-key=\"raw\"]"), HOSTILE_CEF);
    let injected =
        browser.script("return document.querySelectorAll('main img, main script').length;");
    assert_eq!(injected, 0);
    assert_eq!(browser.scripts(), (json!("undefined"), json!("ready")));
    browser.screenshot("hostile-event");

    // Quarantine: both lines with their reasons.
    browser.follow("header nav a[href=\"/quarantine\"]");
    assert_eq!(browser.text("[data-total]"), "2 lines kept");
    assert_eq!(browser.find_all("table.quarantine tbody tr").len(), 2);
    assert_eq!(browser.scripts(), (json!("undefined"), json!("ready")));
    browser.screenshot("quarantine");
    assert!(server.stop().success());

    // The operator switches konnect-eu to `tag` and restarts; the button
    // now moves the unsigned line into the events (signature: missing).
    write_config(dir.path(), &sources(&jwks, "tag"));
    let server = TestServer::start(dir.path(), &config);
    let admin = format!("http://{}", server.admin);
    browser.goto(&format!("{admin}/quarantine"));
    browser.click("form.reprocess button[type=\"submit\"]");
    assert_eq!(browser.text("[data-key=\"moved\"]"), "moved 1");
    assert_eq!(browser.text("[data-key=\"kept\"]"), "kept 1");
    assert_eq!(browser.text("[data-total]"), "1 line kept");
    let left = browser.text("table.quarantine tbody tr pre");
    assert_eq!(left, HOSTILE_QUARANTINE);
    assert_eq!(browser.scripts(), (json!("undefined"), json!("ready")));
    browser.screenshot("quarantine-reprocessed");
    let moved: Vec<Value> = common::query(&["--config", &config_arg])
        .into_iter()
        .filter(|r| r["raw"] == unsigned.as_str())
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["signature"], "missing");
    assert_eq!(moved[0]["source"], "konnect-eu");
    drop(browser);
    assert!(server.stop().success());
}
