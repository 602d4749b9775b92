//! Helpers shared by the integration tests: a tiny HTTP client, in-process servers, a store
//! with injectable faults, and the real binary as a child process.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use shoal::persistence::store::{EventRecord, Offset, PersistenceId, QueryMode, Store};
use shoal::store_url::StoreUrl;
use shopping_cart::{Config, Server};

/// How long any single HTTP exchange may take before the test fails (instead of hanging).
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// The longest a test waits for the binary to print its address or to exit.
pub(crate) const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

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

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, Bytes::new()).await
    }

    pub(crate) async fn post(&self, path: &str) -> Reply {
        self.send(Method::POST, path, None, Bytes::new()).await
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

    /// `POST /carts/{cart}/items` with `{"itemId": item, "quantity": quantity}`; expects 200.
    pub(crate) async fn set_item(&self, cart: &str, item: &str, quantity: u32) -> Value {
        let reply = self
            .post_json(
                &format!("/carts/{cart}/items"),
                &serde_json::json!({ "itemId": item, "quantity": quantity }),
            )
            .await;
        reply.ok_json()
    }

    /// `GET /carts/{cart}`; expects 200 and returns the `items` object.
    pub(crate) async fn items(&self, cart: &str) -> Value {
        let cart_json = self.get(&format!("/carts/{cart}")).await.ok_json();
        cart_json["items"].clone()
    }
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

// ---------------------------------------------------------------------------------------
// In-process servers

/// A configuration listening on a free loopback port.
/// A configuration for one node alone: HTTP and cluster on free loopback ports.
pub(crate) fn config(store: StoreUrl) -> Config {
    Config {
        http: "127.0.0.1:0".to_owned(),
        cluster: "127.0.0.1:0".parse().expect("an address"),
        store,
        ask_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// The HTTP address of an in-process server (an endpoint node).
pub(crate) fn http_addr(server: &Server) -> SocketAddr {
    server.http_addr().expect("an endpoint node serves HTTP")
}

/// The service on a fresh memory store, and a client for it.
pub(crate) async fn start_memory() -> (Server, Http) {
    let server = shopping_cart::start(config(StoreUrl::Memory))
        .await
        .expect("server starts");
    let http = Http::new(http_addr(&server));
    (server, http)
}

/// Every stored event of cart `cart_id`, read back through the journal.
pub(crate) async fn journal(store: &Arc<dyn Store>, cart_id: &str) -> Vec<EventRecord> {
    let pid = PersistenceId::of(shopping_cart::cart::ENTITY_TYPE, cart_id).expect("valid id");
    store
        .replay(pid, 1, u64::MAX, 100_000)
        .await
        .expect("replay")
}

/// The number of events in the whole store tagged `tag`.
pub(crate) async fn count_tagged(store: &Arc<dyn Store>, tag: &str) -> usize {
    use futures_util::StreamExt;
    let events: Vec<_> = store
        .events_by_tag(tag.to_owned(), Offset::START, QueryMode::Current)
        .collect()
        .await;
    events
        .into_iter()
        .map(|e| e.expect("tag query"))
        .filter(|e| e.event.tags.iter().any(|t| t == tag))
        .count()
}

// ---------------------------------------------------------------------------------------
// The real binary

/// The `shopping-cart` binary running as a child process.
pub(crate) struct Binary {
    child: Child,
    /// Its HTTP address.
    pub(crate) addr: SocketAddr,
    /// Its cluster address (as printed: `node ADDRESS#INCARNATION roles …`).
    pub(crate) cluster: SocketAddr,
    /// Its management address, when served.
    pub(crate) management: Option<SocketAddr>,
    log: PathBuf,
}

impl Binary {
    /// Starts the binary alone (its own cluster, on a free port) on `--store sqlite:{db}` and
    /// a free HTTP port, and waits (bounded) for its start lines. Its log goes to `log`.
    pub(crate) fn start(db: &Path, log: &Path) -> Self {
        Self::start_on(&format!("sqlite:{}", db.display()), log)
    }

    /// Starts the binary alone on the store `url` (see [`Binary::start`]).
    pub(crate) fn start_on(store_url: &str, log: &Path) -> Self {
        Self::start_with(&["--store", store_url, "--cluster", "127.0.0.1:0"], log)
    }

    /// Starts the binary with `--http 127.0.0.1:0` and `args`, and waits (bounded) for its
    /// start lines (`node …`, `management http://…`, `listening on http://…`, `started`).
    /// The `SHOAL_*` environment is cleared; its log goes to `log`.
    pub(crate) fn start_with(args: &[&str], log: &Path) -> Self {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_shopping-cart"));
        command.arg("--http").arg("127.0.0.1:0").args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SHOAL_") {
                command.env_remove(key);
            }
        }
        let mut child = command
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
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                }
            }
        });
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let (mut addr, mut cluster, mut management) = (None, None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    if let Some(a) = line.strip_prefix("listening on http://") {
                        addr = Some(a.parse().expect("a socket address"));
                    } else if let Some(a) = line.strip_prefix("management http://") {
                        management = Some(a.parse().expect("a socket address"));
                    } else if let Some(rest) = line.strip_prefix("node ") {
                        // `node ADDRESS#INCARNATION roles R`
                        let identity = rest.split_whitespace().next().unwrap_or_default();
                        let address = identity.split('#').next().unwrap_or_default();
                        cluster = Some(address.parse().expect("a cluster address"));
                    } else if line == "started" {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no `started` line within {PROCESS_DEADLINE:?}; log:\n{}",
                        read(log)
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!(
                        "the binary exited before listening ({status:?}); log:\n{}",
                        read(log)
                    );
                }
            }
        }
        Self {
            child,
            addr: addr.expect("a `listening on` line: an endpoint node"),
            cluster: cluster.expect("a `node` line"),
            management,
            log: log.to_path_buf(),
        }
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
                    "no exit within {PROCESS_DEADLINE:?} of SIGTERM; log:\n{}",
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
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A failing test must not leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
