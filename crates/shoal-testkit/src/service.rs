//! A Shoal service binary (one built on `shoal-service`) as a child process, and a minimal
//! HTTP/1 client for its API.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long any single HTTP exchange of [`HttpClient`] may take before the test fails
/// (instead of hanging).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// A minimal HTTP/1 client bound to one server.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpClient {
    /// A client for `http://{addr}`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request and reads the whole answer (failing the test after
    /// [`REQUEST_DEADLINE`]); `path` is used as given (percent-encode it yourself).
    pub async fn send(
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

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    /// `DELETE path`, no body.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, Bytes::new()).await
    }

    /// `POST path`, no body.
    pub async fn post(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None, Bytes::new()).await
    }

    /// `POST path` with `body` as `application/json`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            serde_json::to_vec(body).expect("serializable"),
        )
        .await
    }
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test if it is not JSON or not served as JSON.
    pub fn json(&self) -> Value {
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
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        self.json()
    }

    /// Expects `status` and a JSON body `{"error": "<non-empty>"}`; returns the message.
    pub fn expect_error(&self, status: StatusCode) -> String {
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

/// The lines a child prints on `stdout`, read to the end on a thread of their own (so the
/// child never blocks on a full pipe).
pub(crate) fn stdout_lines(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Nobody listening any more is fine: keep draining.
            let _ = tx.send(line);
        }
    });
    rx
}

/// `GET /cluster/members` on the management HTTP at `management`, as JSON; `strict`: also
/// expects 200 and a JSON content type.
pub(crate) async fn members(management: SocketAddr, strict: bool) -> Value {
    let reply = HttpClient::new(management).get("/cluster/members").await;
    if strict {
        return reply.ok_json();
    }
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("members are not JSON ({e}): {:?}", reply.text()))
}

/// Polls the members at `management` until `pred` holds, up to `within`; returns the
/// members that satisfied it and how long it took. Panics with `what` and the last answer
/// if not.
pub(crate) async fn wait_members(
    management: SocketAddr,
    strict: bool,
    what: &str,
    within: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let members = members(management, strict).await;
        if pred(&members) {
            return (members, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{what}: not reached within {within:?}; members: {members:#}"
        );
        // Polling an external process: there is nothing to await but time.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A command for a service binary with none of this process's `SHOAL_*` variables (set
/// the ones the test wants on it afterwards).
pub fn service_command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHOAL_") {
            command.env_remove(key);
        }
    }
    command
}

/// A service binary running as a child process, started by [`ServiceProcess::start`].
/// Killed (SIGKILL) when dropped.
pub struct ServiceProcess {
    child: Child,
    /// `ADDRESS#INCARNATION`, from its `node …` line.
    pub identity: String,
    /// Its HTTP API, from its `listening on http://…` line (endpoint nodes).
    pub http: Option<SocketAddr>,
    /// Its management HTTP, from its `management http://…` line (when served).
    pub management: Option<SocketAddr>,
    log: PathBuf,
    label: String,
    deadline: Duration,
}

impl ServiceProcess {
    /// Runs `command` (see [`service_command`]) with `RUST_LOG=info`, its stderr appended
    /// to `log`, and waits up to `deadline` for its start lines (`node ADDRESS#INCARNATION
    /// roles R`, `management http://ADDR`, `listening on http://ADDR`, `started`). `label`
    /// names it in failures; `deadline` also bounds [`terminate`](Self::terminate) and
    /// [`wait_members`](Self::wait_members).
    pub fn start(mut command: Command, label: &str, log: &Path, deadline: Duration) -> Self {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("the binary starts");
        let rx = stdout_lines(child.stdout.take().expect("piped stdout"));
        let until = Instant::now() + deadline;
        let (mut identity, mut http, mut management) = (String::new(), None, None);
        loop {
            let left = until.saturating_duration_since(Instant::now());
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
                        "{label}: no `started` line within {deadline:?}; log:\n{}",
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
            deadline,
        }
    }

    /// Its cluster address (the identity without the incarnation).
    pub fn cluster(&self) -> SocketAddr {
        let address = self.identity.split('#').next().unwrap_or_default();
        address.parse().expect("a cluster address")
    }

    /// SIGKILL: no shutdown hook runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits (bounded) for the exit.
    #[cfg(unix)]
    pub fn terminate(mut self) -> ExitStatus {
        use rustix::process::{Pid, Signal, kill_process};
        kill_process(Pid::from_child(&self.child), Signal::TERM).expect("SIGTERM");
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: no exit within {:?} of SIGTERM; log:\n{}",
                    self.label,
                    self.deadline,
                    read(&self.log)
                );
            }
            // Polling the exit status in a bounded loop; nothing else tells us.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }

    /// `GET /cluster/members` on its management HTTP.
    pub async fn members(&self) -> Value {
        members(self.management.expect("management served"), true).await
    }

    /// Polls the members until `pred` holds, up to the start deadline.
    pub async fn wait_members(&self, what: &str, pred: impl FnMut(&Value) -> bool) {
        let management = self.management.expect("management served");
        let what = format!("{}: {what}", self.label);
        wait_members(management, true, &what, self.deadline, pred).await;
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // A failing test must not leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file's text, or nothing if it cannot be read (a log not written yet).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
