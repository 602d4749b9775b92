//! Helpers shared by the integration tests: a tiny HTTP client, in-process nodes, and the
//! real binary as a child process.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use artifact_state::{Config, Role, Server};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use shoal::store_url::StoreUrl;

/// How long any single HTTP exchange may take before the test fails (instead of hanging).
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The longest a test waits for the binary to start or to exit, or for a condition.
pub(crate) const PROCESS_DEADLINE: Duration = Duration::from_secs(90);

/// The cluster secret of the multi-node tests.
pub(crate) const SECRET: &str = "artifact-state-test-secret-0123";

// ---------------------------------------------------------------------------------------
// HTTP

/// A minimal HTTP/1 client bound to one server.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Http {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request; `path` is used as given (percent-encode it yourself).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request
            .body(Full::new(body.into()))
            .expect("a valid request");
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: reading body: {e}"))
                .to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(REQUEST_DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST_DEADLINE:?}"))
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            serde_json::to_vec(body).expect("serializable"),
        )
        .await
    }

    /// `POST /artifactState/{route}` with `{"artifactId":…,"userId":…}`.
    pub(crate) async fn call(&self, route: &str, artifact_id: u64, user_id: &str) -> Reply {
        self.post_json(
            &format!("/artifactState/{route}"),
            &json!({ "artifactId": artifact_id, "userId": user_id }),
        )
        .await
    }

    /// A `set…` route; expects `{"success":true}`.
    pub(crate) async fn set(&self, route: &str, artifact_id: u64, user_id: &str) {
        let body = self.call(route, artifact_id, user_id).await.ok_json();
        assert_eq!(body, json!({ "success": true }), "{route}");
    }

    /// An `is…` route; expects the seed's answer shape and returns `answer`.
    pub(crate) async fn is(&self, route: &str, artifact_id: u64, user_id: &str) -> bool {
        let body = self.call(route, artifact_id, user_id).await.ok_json();
        assert_eq!(body["artifactId"], json!(artifact_id), "{body}");
        assert_eq!(body["userId"], json!(user_id), "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");
        body["answer"]
            .as_bool()
            .unwrap_or_else(|| panic!("no boolean answer in {body}"))
    }

    /// `POST getAllStates`; returns `(artifactRead, artifactInUserFeed)`.
    pub(crate) async fn states(&self, artifact_id: u64, user_id: &str) -> (bool, bool) {
        let body = self
            .call("getAllStates", artifact_id, user_id)
            .await
            .ok_json();
        parse_states(&body, artifact_id, user_id)
    }

    /// `GET getAllStates?…` (the user id must not need percent-encoding).
    pub(crate) async fn states_by_get(&self, artifact_id: u64, user_id: &str) -> (bool, bool) {
        let body = self
            .get(&format!(
                "/artifactState/getAllStates?artifactId={artifact_id}&userId={user_id}"
            ))
            .await
            .ok_json();
        parse_states(&body, artifact_id, user_id)
    }
}

fn parse_states(body: &Value, artifact_id: u64, user_id: &str) -> (bool, bool) {
    assert_eq!(body["artifactId"], json!(artifact_id), "{body}");
    assert_eq!(body["userId"], json!(user_id), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(4), "{body}");
    (
        body["artifactRead"].as_bool().expect("artifactRead"),
        body["artifactInUserFeed"]
            .as_bool()
            .expect("artifactInUserFeed"),
    )
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test if it is not JSON or not served as JSON.
    pub(crate) fn json(&self) -> Value {
        let ct = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}, body {:?}",
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Expects 200 and returns the JSON body.
    pub(crate) fn ok_json(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        self.json()
    }

    /// Expects `status` and a JSON body `{"error": "<non-empty>"}`; returns the message.
    pub(crate) fn expect_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {body}"));
        assert!(!message.is_empty(), "empty error message");
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(1),
            "error body has only \"error\": {body}"
        );
        message.to_owned()
    }
}

/// Polls `GET getAllStates` on `http` until it answers 200 (the cluster has formed and the
/// shard has a home), up to [`PROCESS_DEADLINE`].
pub(crate) async fn wait_until_serving(http: &Http, label: &str) {
    let start = Instant::now();
    loop {
        let reply = http
            .get("/artifactState/getAllStates?artifactId=0&userId=warm-up")
            .await;
        if reply.status == StatusCode::OK {
            return;
        }
        assert!(
            start.elapsed() < PROCESS_DEADLINE,
            "{label}: not serving within {PROCESS_DEADLINE:?}; last answer {} {}",
            reply.status,
            reply.text()
        );
        // Each attempt already waited up to the ask timeout; try again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the states, retrying only while the answer is 503 (an entity moving to another
/// node), up to [`PROCESS_DEADLINE`].
pub(crate) async fn states_when_available(
    http: &Http,
    artifact_id: u64,
    user_id: &str,
) -> (bool, bool) {
    let start = Instant::now();
    loop {
        let reply = http.call("getAllStates", artifact_id, user_id).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            let body = reply.ok_json();
            return (
                body["artifactRead"].as_bool().unwrap(),
                body["artifactInUserFeed"].as_bool().unwrap(),
            );
        }
        assert!(
            start.elapsed() < PROCESS_DEADLINE,
            "{artifact_id}/{user_id} unavailable for {PROCESS_DEADLINE:?}: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// In-process nodes

/// A single complete node (endpoint and entity) on free loopback ports.
pub(crate) fn config(store: StoreUrl) -> Config {
    Config {
        http: "127.0.0.1:0".to_owned(),
        cluster: "127.0.0.1:0".parse().expect("valid"),
        store,
        ..Config::default()
    }
}

/// A single node on a fresh memory store, and a client for it.
pub(crate) async fn start_memory() -> (Server, Http) {
    start_with(config(StoreUrl::Memory)).await
}

/// A node with `config`, and a client for it.
pub(crate) async fn start_with(config: Config) -> (Server, Http) {
    let server = artifact_state::start(config).await.expect("node starts");
    let http = Http::new(server.http_addr().expect("an endpoint node"));
    (server, http)
}

/// The roles as a set.
pub(crate) fn roles(roles: &[Role]) -> BTreeSet<Role> {
    roles.iter().copied().collect()
}

// ---------------------------------------------------------------------------------------
// The real binary

/// The `artifact-state` binary running as a child process. Killed (SIGKILL) when dropped.
pub(crate) struct Binary {
    child: Child,
    /// `ADDRESS#INCARNATION`.
    pub(crate) identity: String,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) management: Option<SocketAddr>,
    log: PathBuf,
    label: String,
}

impl Binary {
    /// Starts the binary with `args` (no `SHOAL_*` variables from the environment; the
    /// cluster secret [`SECRET`]), logs to `log`, and waits (bounded) for its `started` line.
    pub(crate) fn start(label: &str, args: &[String], log: &Path) -> Self {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_artifact-state"));
        command.args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("SHOAL_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .env("SHOAL_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        // Reads stdout to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let (mut identity, mut http, mut management) = (String::new(), None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    if let Some(rest) = line.strip_prefix("node ") {
                        identity = rest.split_whitespace().next().unwrap_or("").to_owned();
                    } else if let Some(addr) = line.strip_prefix("listening on http://") {
                        http = Some(addr.parse().expect("a socket address"));
                    } else if let Some(addr) = line.strip_prefix("management http://") {
                        management = Some(addr.parse().expect("a socket address"));
                    } else if line == "started" {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{label}: no `started` line within {PROCESS_DEADLINE:?}; log:\n{}",
                        read(log)
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "{label}: the binary exited before starting ({status:?}); log:\n{}",
                        read(log)
                    );
                }
            }
        }
        Self {
            child,
            identity,
            http,
            management,
            log: log.to_path_buf(),
            label: label.to_owned(),
        }
    }

    /// A client for its HTTP API.
    pub(crate) fn client(&self) -> Http {
        Http::new(self.http.expect("an endpoint node"))
    }

    /// SIGKILL: no shutdown hook runs.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits (bounded) for the exit.
    #[cfg(unix)]
    pub(crate) fn terminate(mut self) -> ExitStatus {
        use rustix::process::{Pid, Signal, kill_process};
        kill_process(Pid::from_child(&self.child), Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: no exit within {PROCESS_DEADLINE:?} of SIGTERM; log:\n{}",
                    self.label,
                    read(&self.log)
                );
            }
            // Polling the exit status in a bounded loop; nothing else tells us.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        read(&self.log)
    }

    /// `GET /cluster/members` on its management HTTP.
    pub(crate) async fn members(&self) -> Value {
        let addr = self.management.expect("management served");
        Http::new(addr).get("/cluster/members").await.ok_json()
    }

    /// Polls the members until `pred` holds, up to [`PROCESS_DEADLINE`].
    pub(crate) async fn wait_members(&self, what: &str, mut pred: impl FnMut(&Value) -> bool) {
        let start = Instant::now();
        loop {
            let members = self.members().await;
            if pred(&members) {
                return;
            }
            assert!(
                start.elapsed() < PROCESS_DEADLINE,
                "{}: {what} not reached within {PROCESS_DEADLINE:?}; members: {members:#}",
                self.label
            );
            // Polling an external process: there is nothing to await but time.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A failing test must not leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` members, all `Up` and reachable, with a converged view.
pub(crate) fn all_up(n: usize) -> impl FnMut(&Value) -> bool {
    move |m| {
        let members = m["members"].as_array().cloned().unwrap_or_default();
        m["converged"] == json!(true)
            && members.len() == n
            && members
                .iter()
                .all(|x| x["status"] == "Up" && x["reachable"] == json!(true))
    }
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Arguments as owned strings.
pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
