//! No request may take the CPU or memory the others need: crafted lines
//! store in linear time. Real binary, real TLS, real gzip, real store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{query, write_config, TestServer};

const TOKEN: &str = "Bearer starvation";
const HEADER: &str = "CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|";

fn start(dir: &Path, limits: &str) -> TestServer {
    let config = write_config(
        dir,
        &format!(
            "[limits]\n{limits}\n[[source]]\nname = \"s\"\npath = \"/audit-logs\"\nauthorization = {TOKEN:?}\n"
        ),
    );
    TestServer::start(dir, &config)
}

#[test]
fn crafted_lines_store_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let escaped: Vec<String> = (0..100_000).map(|i| format!(r"k{i}=a\=b{i}")).collect();
    let repeated: Vec<String> = (0..400_000).map(|i| format!("k=v{i}")).collect();
    for (what, values) in [("escaped values", escaped), ("one key", repeated)] {
        let line = format!("{HEADER}{}", values.join(" "));
        let started = Instant::now();
        let response = server.deliver(TOKEN, line.as_bytes());
        let took = started.elapsed();
        eprintln!("{what}: a {} byte line stored in {took:?}", line.len());
        assert_eq!(response.status, 200, "{what}");
        assert_eq!(response.json()["stored"], 1, "{what}");
        // Quadratic, this took 74 s of CPU in a release build; linear, it
        // takes well under a second. The bound allows for a loaded debug build.
        assert!(
            took < Duration::from_secs(30),
            "{what}: storing a {} byte line took {took:?}",
            line.len()
        );
    }
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    let stored = query(&["--data-dir", data]);
    assert_eq!(stored.len(), 2);
    let one_key = stored
        .iter()
        .find(|e| e["fields"]["k"].is_string())
        .unwrap();
    assert_eq!(one_key["fields"]["k"], "v399999");
    assert_eq!(one_key["warnings"].as_array().unwrap().len(), 1);
    let escaped = stored
        .iter()
        .find(|e| e["fields"]["k7"].is_string())
        .unwrap();
    assert_eq!(escaped["fields"]["k7"], "a=b7");
    assert_eq!(escaped["fields"].as_object().unwrap().len(), 100_000);
}
