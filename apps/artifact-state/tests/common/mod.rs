//! Helpers shared by the integration tests: a tiny HTTP client, in-process nodes, and the
//! real binary as a child process.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

use artifact_state::{Config, Role, Server};
use hyper::StatusCode;
use serde_json::{Value, json};
use shoal::store_url::StoreUrl;
use shoal_testkit::{HttpClient, ServiceProcess, service_command};

// Each test file uses a different subset of these too.
use shoal_testkit::Reply;
#[allow(unused_imports)]
pub(crate) use shoal_testkit::read;

/// The longest a test waits for the binary to start or to exit, or for a condition.
pub(crate) const PROCESS_DEADLINE: Duration = Duration::from_secs(90);

/// The cluster secret of the multi-node tests.
pub(crate) const SECRET: &str = "artifact-state-test-secret-0123";

// ---------------------------------------------------------------------------------------
// HTTP

/// A client for the artifact-state API: [`HttpClient`] and the seed's calls.
#[derive(Clone)]
pub(crate) struct Http(HttpClient);

impl Deref for Http {
    type Target = HttpClient;

    fn deref(&self) -> &HttpClient {
        &self.0
    }
}

impl Http {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self(HttpClient::new(addr))
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
pub(crate) struct Binary(ServiceProcess);

impl Deref for Binary {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl Binary {
    /// Starts the binary with `args` (no `SHOAL_*` variables from the environment; the
    /// cluster secret [`SECRET`]), logs to `log`, and waits (bounded) for its `started` line.
    pub(crate) fn start(label: &str, args: &[String], log: &Path) -> Self {
        let mut command = service_command(Path::new(env!("CARGO_BIN_EXE_artifact-state")));
        command.args(args).env("SHOAL_CLUSTER_SECRET", SECRET);
        Self(ServiceProcess::start(command, label, log, PROCESS_DEADLINE))
    }

    /// A client for its HTTP API.
    pub(crate) fn client(&self) -> Http {
        Http::new(self.http.expect("an endpoint node"))
    }

    /// SIGKILL: no shutdown hook runs.
    pub(crate) fn kill(self) {
        self.0.kill();
    }

    /// SIGTERM, then waits (bounded) for the exit.
    #[cfg(unix)]
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        self.0.terminate()
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

/// Arguments as owned strings.
pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
