//! `scripts/local-cluster.sh` with this crate's binary: PostgreSQL and five nodes (three
//! `entity`, two `endpoint`) come up, both endpoints answer the same cart, and
//! `local-cluster.sh stop` stops everything and removes the temporary directory.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::Http;
use serde_json::json;

/// How long the script may take to bring the cluster up (PostgreSQL, five nodes, all Up).
const UP_DEADLINE: Duration = Duration::from_secs(180);

/// How long stopping may take (every node hands off and leaves, then PostgreSQL stops).
const STOP_DEADLINE: Duration = Duration::from_secs(120);

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/local-cluster.sh")
}

/// The script running in the background, with its output lines.
struct Script {
    child: Child,
    lines: Receiver<String>,
    output: Vec<String>,
    state: PathBuf,
}

impl Script {
    fn start(state: &Path) -> Self {
        let mut command = Command::new("bash");
        command
            .arg(script_path())
            .args(["start", "shopping-cart", "--for", "600"]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SHOAL_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            // The binary of this build: no release build inside the test.
            .env(
                "SHOAL_LOCAL_CLUSTER_BIN",
                env!("CARGO_BIN_EXE_shopping-cart"),
            )
            .env("SHOAL_LOCAL_CLUSTER_STATE", state)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash runs the script");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            output: Vec::new(),
            state: state.to_path_buf(),
        }
    }

    /// Reads output lines until one satisfies `pred` (bounded).
    fn wait_for_line(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no such line within {within:?}; output:\n{}",
                        self.output.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the script ended; output:\n{}", self.output.join("\n"))
                }
            }
        }
    }

    /// The rest of the output, until the script exits (bounded), and its exit status.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.output.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the script did not end; output:\n{}",
                        self.output.join("\n")
                    )
                }
            }
        }
        self.child.wait().expect("wait")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // A failing test must not leave a cluster running: `stop` makes the script clean up.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("bash")
                .arg(script_path())
                .arg("stop")
                .env("SHOAL_LOCAL_CLUSTER_STATE", &self.state)
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The value after `key` in a whitespace-separated line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
    words
        .next()
        .unwrap_or_else(|| panic!("nothing after {key:?} in {line:?}"))
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_runs_five_nodes_and_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("local-cluster.state");
    let mut script = Script::start(&state);

    script.wait_for_line(UP_DEADLINE, |l| l.contains("5 nodes Up"));
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(script.wait_for_line(Duration::from_secs(5), |l| l.starts_with("node ")));
    }
    let logs = script.wait_for_line(Duration::from_secs(5), |l| l.starts_with("logs "));
    let work = PathBuf::from(field(&logs, "logs"))
        .parent()
        .expect("the logs are in the temporary directory")
        .to_path_buf();
    script.wait_for_line(Duration::from_secs(5), |l| l.starts_with("stopping in"));
    assert!(state.exists(), "the running cluster is recorded for `stop`");

    let entity: Vec<&String> = nodes.iter().filter(|l| l.contains(" entity ")).collect();
    let endpoints: Vec<&String> = nodes.iter().filter(|l| l.contains(" endpoint ")).collect();
    assert_eq!((entity.len(), endpoints.len()), (3, 2), "{nodes:#?}");
    assert!(entity.iter().all(|l| !l.contains(" http ")), "{nodes:#?}");

    // Every node sees five members Up (the script waited for it; check one view here).
    let management = Http::new(addr(field(&nodes[0], "management")));
    let members = management.get("/cluster/members").await.ok_json();
    assert_eq!(shoal_testkit::up_members(&members).len(), 5, "{members:#}");

    // Both endpoints answer the same cart; it lives on an entity node.
    let (e1, e2) = (
        Http::new(addr(field(endpoints[0], "http"))),
        Http::new(addr(field(endpoints[1], "http"))),
    );
    assert_eq!(
        e1.set_item("c1", "sku-1", 2).await["items"],
        json!({ "sku-1": 2 })
    );
    assert_eq!(e2.items("c1").await, json!({ "sku-1": 2 }));
    assert_eq!(
        e2.post("/cart?id=apple&quantity=3").await.ok_json()["items"],
        json!({ "apple": 3 })
    );
    assert_eq!(
        e1.get("/cart").await.ok_json()["items"],
        json!({ "apple": 3 })
    );

    // `stop` from "another terminal": every node leaves, PostgreSQL stops, nothing is left.
    let stop = Command::new("bash")
        .arg(script_path())
        .arg("stop")
        .env("SHOAL_LOCAL_CLUSTER_STATE", &state)
        .output()
        .expect("bash runs the script");
    assert!(
        stop.status.success(),
        "stop: {}{}",
        String::from_utf8_lossy(&stop.stdout),
        String::from_utf8_lossy(&stop.stderr)
    );
    let status = script.wait_exit(STOP_DEADLINE);
    let output = script.output.join("\n");
    assert!(status.success(), "exit {status:?}; output:\n{output}");
    assert!(output.contains("stopping 5 nodes"), "{output}");
    assert!(output.ends_with("stopped"), "{output}");
    assert!(!work.exists(), "{} removed", work.display());
    assert!(!state.exists(), "the record is removed");
    for line in &nodes {
        let management = addr(field(line, "management"));
        assert!(
            tokio::net::TcpStream::connect(management).await.is_err(),
            "nothing listens on {management} any more"
        );
    }
}
