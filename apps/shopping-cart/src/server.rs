//! Starting and stopping a node: store, cluster node (remoting, membership, sharding,
//! management), the carts' shard region and the HTTP listener.

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal::cluster::ShutdownReason;
use shoal::node::{Node, NodeConfig};
use shoal::prelude::*;
use shoal::sharding::{Entity, EntityContext as ShardContext, ShardRegion, ShardingSettings};
use shoal::store_url::StoreUrl;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cart::{CartCommand, CartEntity};
use crate::http::{AppState, router};

/// The default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// The default store: the embedded SQLite file.
pub const DEFAULT_STORE: &str = "sqlite:./data/shopping-cart.db";

/// The default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "shopping-cart";

/// The cluster role of the nodes hosting carts.
pub const ENTITY_ROLE: &str = "entity";

/// What a node does. A node has one or both roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    /// Serves the HTTP API and sends commands through sharding (a shard region proxy when
    /// the node is not also an `entity` node).
    Endpoint,
    /// Hosts carts (its cluster role `entity`).
    Entity,
}

impl Role {
    /// The cluster role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Endpoint => "endpoint",
            Role::Entity => "entity",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sharding settings of carts, the same on every node: carts live only on nodes with the
/// `entity` role.
pub fn sharding_settings() -> ShardingSettings {
    ShardingSettings {
        role: Some(ENTITY_ROLE.to_owned()),
        ..ShardingSettings::default()
    }
}

/// How the service runs.
#[derive(Clone)]
pub struct Config {
    /// Where to listen for HTTP (endpoint nodes only), `HOST:PORT`; port 0 picks a free port
    /// ([`Server::http_addr`]).
    pub http: String,
    /// Where the node listens for other nodes; port 0 picks a free one.
    pub cluster: SocketAddr,
    /// Seed nodes to join through; empty: form a cluster alone.
    pub seeds: Vec<SocketAddr>,
    /// The node's roles (empty counts as both).
    pub roles: BTreeSet<Role>,
    /// Which store to use (PostgreSQL when several nodes share it).
    pub store: StoreUrl,
    /// Where the management HTTP listens, if it is served.
    pub management: Option<SocketAddr>,
    /// The cluster secret (at least 16 bytes), required when joining other nodes.
    pub secret: Option<String>,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster_name: String,
    /// How long a request waits for its cart before answering 503.
    pub ask_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: DEFAULT_HTTP.to_owned(),
            cluster: shoal::node::DEFAULT_CLUSTER_ADDR
                .parse()
                .expect("a valid default address"),
            seeds: Vec::new(),
            roles: [Role::Endpoint, Role::Entity].into(),
            store: StoreUrl::Sqlite("./data/shopping-cart.db".into()),
            management: None,
            secret: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            ask_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("cluster", &self.cluster)
            .field("seeds", &self.seeds)
            .field("roles", &self.roles)
            .field("store", &self.store)
            .field("management", &self.management)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("cluster_name", &self.cluster_name)
            .field("ask_timeout", &self.ask_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Config {
    /// Whether this node serves the HTTP API (no roles counts as both).
    pub fn is_endpoint(&self) -> bool {
        self.roles.is_empty() || self.roles.contains(&Role::Endpoint)
    }

    /// Whether this node hosts carts (no roles counts as both).
    pub fn is_entity(&self) -> bool {
        self.roles.is_empty() || self.roles.contains(&Role::Entity)
    }

    fn role_names(&self) -> BTreeSet<String> {
        let mut roles = BTreeSet::new();
        if self.is_endpoint() {
            roles.insert(Role::Endpoint.as_str().to_owned());
        }
        if self.is_entity() {
            roles.insert(Role::Entity.as_str().to_owned());
        }
        roles
    }
}

/// A running node. Stop it with [`Server::shutdown`]; dropping it leaves it running until
/// the runtime ends.
pub struct Server {
    node: Node,
    region: ShardRegion<CartCommand>,
    store: Arc<dyn Store>,
    http: Option<Http>,
    roles: BTreeSet<String>,
    shutdown_timeout: Duration,
}

struct Http {
    local_addr: SocketAddr,
    stop_accepting: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

/// Opens the store named in `config` and starts the node.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let store = config
        .store
        .open()
        .await
        .with_context(|| format!("cannot open store {}", config.store))?;
    tracing::info!(store = %config.store, "store opened");
    start_with_store(config, store).await
}

/// Starts the node on `store` (`config.store` is not used), for tests and embedding.
pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
    // Bind HTTP first: a taken port fails before the node joins anything.
    let listener = if config.is_endpoint() {
        Some(
            TcpListener::bind(&config.http)
                .await
                .with_context(|| format!("cannot listen on {}", config.http))?,
        )
    } else {
        None
    };

    let roles = config.role_names();
    let mut node_config = NodeConfig::new(store.clone());
    node_config.cluster_addr = config.cluster;
    node_config.seeds = config.seeds.clone();
    node_config.roles = roles.clone();
    node_config.cluster_name = config.cluster_name.clone();
    node_config.secret = config.secret.clone();
    node_config.management = config.management;
    let node = Node::start(node_config)
        .await
        .context("cannot start the cluster node")?;

    // Every node starts sharding of carts: entity nodes host a region, the others a proxy.
    let settings = EntitySettings::default().with_snapshots(100, 2);
    let entity = Entity::event_sourced(
        node.persistence(),
        |_: &ShardContext<CartCommand>| CartEntity,
        settings,
    )
    .with_settings(sharding_settings());
    let region = match node.sharding().init(entity) {
        Ok(region) => region,
        Err(error) => {
            node.stop().await;
            return Err(error).context("cannot start sharding of carts");
        }
    };

    let http = match listener {
        Some(listener) => {
            let local_addr = listener.local_addr().context("listener has no address")?;
            let app = router(AppState::new(region.clone(), config.ask_timeout));
            let (stop_accepting, stop) = oneshot::channel::<()>();
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A dropped sender (the Server was dropped) is not a request to stop.
                    if stop.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
                .into_future();
            let serving = tokio::spawn(serve);
            tracing::info!(%local_addr, "listening");
            Some(Http {
                local_addr,
                stop_accepting,
                serving,
            })
        }
        None => None,
    };
    Ok(Server {
        node,
        region,
        store,
        http,
        roles,
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl Server {
    /// The address the HTTP API listens on (with the real port when configured with port
    /// 0); `None` on a node without the `endpoint` role.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr)
    }

    /// The cluster node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This node's handle to the carts.
    pub fn region(&self) -> &ShardRegion<CartCommand> {
        &self.region
    }

    /// The store the carts persist to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Serves until `signal` completes (then shuts down gracefully), the HTTP listener fails
    /// (then leaves the cluster) or the cluster downs or removes this node (then stops).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        enum Outcome {
            Signal,
            Removed(Option<ShutdownReason>),
            Served(Result<std::io::Result<()>, tokio::task::JoinError>),
        }
        let mut stopped = self.node.cluster().stopped();
        let outcome = {
            let serving = async {
                match self.http.as_mut() {
                    Some(http) => (&mut http.serving).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = signal => Outcome::Signal,
                reason = stopped.wait_for(Option::is_some) => {
                    Outcome::Removed(reason.ok().and_then(|r| *r))
                }
                served = serving => Outcome::Served(served),
            }
        };
        match outcome {
            Outcome::Signal => {
                tracing::info!("shutdown requested");
                self.shutdown().await
            }
            Outcome::Removed(reason) => {
                tracing::warn!(?reason, "the cluster removed this node: stopping");
                self.stop_http().await?;
                self.node.stop().await;
                Err(anyhow::anyhow!(
                    "the cluster removed this node ({reason:?})"
                ))
            }
            Outcome::Served(served) => {
                // Only a listener error ends serving without a signal.
                self.http = None;
                self.node.shutdown().await;
                match served {
                    Ok(result) => result.context("HTTP server failed"),
                    Err(join) => Err(anyhow::anyhow!("HTTP server task failed: {join}")),
                }
            }
        }
    }

    /// Stops accepting HTTP connections, lets in-flight requests finish (up to the shutdown
    /// timeout; later ones are cut off), then leaves the cluster gracefully: this node's
    /// carts are stopped and their shards handed off to the other entity nodes first.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let served = self.stop_http().await;
        self.node.shutdown().await;
        tracing::info!("stopped");
        served
    }

    async fn stop_http(&mut self) -> anyhow::Result<()> {
        let Some(Http {
            stop_accepting,
            mut serving,
            ..
        }) = self.http.take()
        else {
            return Ok(());
        };
        let _ = stop_accepting.send(());
        let timeout = self.shutdown_timeout;
        match tokio::time::timeout(timeout, &mut serving).await {
            Ok(Ok(result)) => result.context("HTTP server failed"),
            Ok(Err(join)) => Err(anyhow::anyhow!("HTTP server task failed: {join}")),
            Err(_) => {
                tracing::warn!(
                    ?timeout,
                    "in-flight requests did not finish in time; closing their connections"
                );
                serving.abort();
                Ok(())
            }
        }
    }
}

/// Starts the node, prints what it serves on standard output (`node ADDRESS#INCARNATION
/// roles R`, then `management http://ADDR` and `listening on http://ADDR` when served, then
/// `started`), serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    let roles: Vec<&str> = server.roles.iter().map(String::as_str).collect();
    let mut lines = format!("node {} roles {}\n", server.node.address(), roles.join(","));
    if let Some(addr) = server.node.management_addr() {
        lines.push_str(&format!("management http://{addr}\n"));
    }
    if let Some(addr) = server.http_addr() {
        lines.push_str(&format!("listening on http://{addr}\n"));
    }
    lines.push_str("started\n");
    // Tests and scripts wait for these lines; a closed stdout is not a reason to fail.
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(lines.as_bytes());
    let _ = stdout.flush();
    server.run_until(shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
