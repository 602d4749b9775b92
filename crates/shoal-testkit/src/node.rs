//! [`NodeProcess`]: a `shoal-node` binary running as a child process on loopback, observed
//! through its management HTTP.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::service::{members, stdout_lines, wait_members};

/// A free TCP port on 127.0.0.1 (bound, then released: another process could take it in
/// between, which is unlikely on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One node process. Killed (SIGKILL) when dropped.
pub struct NodeProcess {
    child: Child,
    /// The node's cluster address.
    pub cluster: SocketAddr,
    /// Its identity as printed at start (`ADDRESS#INCARNATION`).
    pub identity: String,
    /// Its management address.
    pub management: SocketAddr,
}

impl NodeProcess {
    /// Starts `bin` (the `shoal-node` binary) on `cluster` with `seeds`, management on a free
    /// port, and waits (up to 60 s) for its start line. Its logs go to this process's stderr.
    pub fn start(bin: &Path, cluster: SocketAddr, seeds: &[SocketAddr], secret: &str) -> Self {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(bin)
            .arg("--cluster")
            .arg(cluster.to_string())
            .arg("--seed")
            .arg(seeds.join(","))
            .arg("--management")
            .arg("127.0.0.1:0")
            .env("SHOAL_CLUSTER_SECRET", secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let rx = stdout_lines(child.stdout.take().expect("piped stdout"));
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("node on {cluster} printed no start line: {e}"));
        // `node ADDRESS#INCARNATION management http://ADDR`
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(
            parts.len() == 4 && parts[0] == "node" && parts[2] == "management",
            "unexpected start line {line:?}"
        );
        let management = parts[3]
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("management address in {line:?}: {e}"));
        Self {
            child,
            cluster,
            identity: parts[1].to_owned(),
            management,
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET /cluster/members` as JSON.
    pub async fn members(&self) -> Value {
        members(self.management, false).await
    }

    /// Polls [`members`](Self::members) until `pred` holds, up to `within`; returns the
    /// members that satisfied it and how long it took. Panics with the last answer if not.
    pub async fn wait_members(
        &self,
        within: Duration,
        pred: impl FnMut(&Value) -> bool,
    ) -> (Value, Duration) {
        let what = format!("node {}: condition", self.identity);
        wait_members(self.management, false, &what, within, pred).await
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Members with status `Up`, as `(address, incarnation)`.
pub fn up_members(members: &Value) -> Vec<(String, u64)> {
    members["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["status"] == "Up")
                .map(|m| {
                    (
                        m["address"].as_str().unwrap_or_default().to_owned(),
                        m["incarnation"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
