//! A real NATS JetStream cluster for the cluster tests: `nats-server`
//! processes on free loopback ports (client, cluster routes, monitoring),
//! their stores in a temporary directory, stopped by PID.
//!
//! Without the binary the tests skip, saying why. It is found as
//! `$AUDITSINK_NATS_SERVER`, on `PATH`, or in `/usr/sbin` (Debian's
//! package); `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{http_request, unused_port};

/// The `nats-server` binary, or `None` with the reason printed.
pub fn server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("AUDITSINK_NATS_SERVER") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            eprintln!(
                "skipping: AUDITSINK_NATS_SERVER={} is not a file",
                path.display()
            );
            return None;
        }
        return Some(path);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from));
    let found = dirs
        .into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "skipping: nats-server not found (PATH, /usr/sbin; or set AUDITSINK_NATS_SERVER); \
             .ci/run installs it (apt-get install nats-server)"
        );
    }
    found
}

/// One node's ports and process.
struct Node {
    name: String,
    client: u16,
    route: u16,
    monitor: u16,
    child: Option<Child>,
}

/// A running cluster.
pub struct NatsCluster {
    binary: PathBuf,
    /// Extra `nats-server` arguments of every node.
    args: Vec<String>,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `size` nodes under `dir` and waits until JetStream has a
    /// metadata leader that sees every node; `None` without the binary.
    pub fn start(dir: &Path, size: usize) -> Option<NatsCluster> {
        NatsCluster::start_with(dir, size, &[])
    }

    /// [`NatsCluster::start`] with extra `nats-server` arguments (e.g.
    /// `--auth TOKEN`).
    pub fn start_with(dir: &Path, size: usize, args: &[&str]) -> Option<NatsCluster> {
        let binary = server_binary()?;
        let nodes = (0..size)
            .map(|i| Node {
                name: format!("n{i}"),
                client: unused_port(),
                route: unused_port(),
                monitor: unused_port(),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: dir.to_path_buf(),
            nodes,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_ready(size, Duration::from_secs(60));
        Some(cluster)
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.route))
            .collect();
        let node = &self.nodes[i];
        let store = self.dir.join(&node.name);
        std::fs::create_dir_all(&store).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{}.log", node.name))).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &node.client.to_string()])
            .args(["-js", "-sd"])
            .arg(&store)
            .args(["-n", &node.name, "-m", &node.monitor.to_string()])
            .args(&self.args);
        if self.nodes.len() > 1 {
            command
                .args(["--cluster_name", "auditsink-test"])
                .args(["-cluster", &format!("nats://127.0.0.1:{}", node.route)])
                .args(["-routes", &routes.join(",")]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.nodes[i].child = Some(child);
    }

    /// `nats://` URLs of every node (the configuration's `nats_urls`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// The `[cluster]` table for these nodes, with `extra` lines.
    pub fn config_table(&self, extra: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!("[cluster]\nnats_urls = [{}]\n{extra}\n", urls.join(", "))
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let status = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its store and waits until `live` nodes
    /// form the cluster with a metadata leader.
    pub fn restart(&mut self, i: usize, live: usize) {
        self.spawn(i);
        self.wait_ready(live, Duration::from_secs(60));
    }

    /// A node's monitoring endpoint, as JSON.
    pub fn monitor(&self, i: usize, path: &str) -> Option<Value> {
        let addr = format!("127.0.0.1:{}", self.nodes[i].monitor)
            .parse()
            .ok()?;
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        let response = http_request(addr, "GET", path, &[], b"");
        serde_json::from_slice(&response.body).ok()
    }

    /// The index of the node leading `stream`, as a live node reports it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .filter_map(|i| self.monitor(i, "/jsz?streams=true"))
            .find_map(|jsz| {
                jsz["account_details"]
                    .as_array()?
                    .iter()
                    .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                    .find(|s| s["name"] == stream)
                    .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_owned))
            })?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Waits until a live node reports a JetStream metadata leader and
    /// `live` current peers.
    fn wait_ready(&self, live: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].child.is_some())
                .filter_map(|i| self.monitor(i, "/jsz"))
                .any(|jsz| {
                    if self.nodes.len() == 1 {
                        // A single server: JetStream is on once it answers.
                        return jsz["config"]["store_dir"].is_string();
                    }
                    let meta = &jsz["meta_cluster"];
                    let leader = meta["leader"].as_str().is_some_and(|l| !l.is_empty());
                    let current = meta["replicas"]
                        .as_array()
                        .map(|r| r.iter().filter(|p| p["current"] == true).count())
                        .unwrap_or(0);
                    leader && current + 1 >= live
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster did not form within {within:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
