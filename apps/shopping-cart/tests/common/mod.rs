//! Helpers shared by the integration tests: a tiny HTTP client, in-process servers, a store
//! with injectable faults, and the real binary as a child process.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shoal::persistence::store::{EventRecord, Offset, PersistenceId, QueryMode, Store};
use shoal::store_url::StoreUrl;
use shoal_testkit::{HttpClient, ServiceProcess, service_command};
use shopping_cart::{Config, Server};

// Each test file uses a different subset of these too.
#[allow(unused_imports)]
pub(crate) use shoal_testkit::read;

/// The longest a test waits for the binary to print its address or to exit.
pub(crate) const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// HTTP

/// A client for the shopping cart's API: [`HttpClient`] and the cart calls.
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

/// The `shopping-cart` binary running as a child process. Killed (SIGKILL) when dropped.
pub(crate) struct Binary {
    process: ServiceProcess,
    /// Its HTTP address.
    pub(crate) addr: SocketAddr,
    /// Its cluster address (as printed: `node ADDRESS#INCARNATION roles …`).
    pub(crate) cluster: SocketAddr,
}

impl Deref for Binary {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
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

    /// Restarts on the cluster address `cluster` of a killed run: the new incarnation
    /// replaces the old at once (as a service with a fixed port does); on a new address the
    /// shards of the killed run would wait the removal margin (3.5 s) before moving.
    pub(crate) fn restart_on(store_url: &str, cluster: SocketAddr, log: &Path) -> Self {
        Self::start_with(
            &["--store", store_url, "--cluster", &cluster.to_string()],
            log,
        )
    }

    /// Starts the binary with `--http 127.0.0.1:0` and `args`, and waits (bounded) for its
    /// start lines (`node …`, `management http://…`, `listening on http://…`, `started`).
    /// The `SHOAL_*` environment is cleared; its log goes to `log`.
    pub(crate) fn start_with(args: &[&str], log: &Path) -> Self {
        let mut command = service_command(Path::new(env!("CARGO_BIN_EXE_shopping-cart")));
        command.arg("--http").arg("127.0.0.1:0").args(args);
        let process = ServiceProcess::start(command, "shopping-cart", log, PROCESS_DEADLINE);
        Self {
            addr: process
                .http
                .expect("a `listening on` line: an endpoint node"),
            cluster: process.cluster(),
            process,
        }
    }

    /// SIGKILL: no shutdown hook runs.
    pub(crate) fn kill(self) {
        self.process.kill();
    }

    /// SIGTERM, then waits (bounded) for the exit.
    #[cfg(unix)]
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        self.process.terminate()
    }
}
