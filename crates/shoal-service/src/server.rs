//! [`NodeService`]: a cluster node and its HTTP API, started and stopped in order;
//! [`Service`]: that, with one sharded entity type behind the API.

use std::future::{Future, IntoFuture};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal::cluster::ShutdownReason;
use shoal::node::shutdown_signal;
use shoal::node::{Node, NodeConfig};
use shoal::prelude::Store;
use shoal::sharding::{Entity, ShardRegion};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ServiceConfig;

/// A running cluster node and, on endpoint nodes, the HTTP server in front of it.
///
/// [`start`](Self::start) binds HTTP before the node joins anything (a taken port fails
/// first); the service then starts sharding of its entities on [`node`](Self::node) and
/// hands its router to [`serve`](Self::serve). [`shutdown`](Self::shutdown) stops accepting
/// HTTP connections, lets in-flight requests finish (up to the shutdown timeout; later ones
/// are cut off), then leaves the cluster gracefully (shards handed off first).
pub struct NodeService {
    node: Node,
    listener: Option<TcpListener>,
    http: Option<Http>,
    shutdown_timeout: Duration,
}

struct Http {
    local_addr: SocketAddr,
    stop_accepting: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

impl NodeService {
    /// Binds HTTP on `http` (`None`: a node without the endpoint role), then starts the
    /// node. `shutdown_timeout` bounds how long in-flight requests may take on shutdown.
    pub async fn start(
        http: Option<&str>,
        node_config: NodeConfig,
        shutdown_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let listener = match http {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let node = Node::start(node_config)
            .await
            .context("cannot start the cluster node")?;
        Ok(Self {
            node,
            listener,
            http: None,
            shutdown_timeout,
        })
    }

    /// Starts serving `app` on the bound listener (nothing on a node without one).
    pub fn serve(&mut self, app: axum::Router) -> anyhow::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let local_addr = listener.local_addr().context("listener has no address")?;
        let (stop_accepting, stop) = oneshot::channel::<()>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // A dropped sender (the service was dropped) is not a request to stop.
                if stop.await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
            .into_future();
        let serving = tokio::spawn(serve);
        tracing::info!(%local_addr, "listening");
        self.http = Some(Http {
            local_addr,
            stop_accepting,
            serving,
        });
        Ok(())
    }

    /// The address the HTTP API listens on (with the real port when configured with port
    /// 0); `None` on a node that does not serve it.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr)
    }

    /// The cluster node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Prints what this node serves on standard output, for tests and scripts: `node
    /// ADDRESS#INCARNATION roles R`, then `management http://ADDR` and `listening on
    /// http://ADDR` when served, then `started`.
    pub fn announce<'a>(&self, roles: impl IntoIterator<Item = &'a str>) {
        let roles: Vec<&str> = roles.into_iter().collect();
        let mut lines = format!("node {} roles {}\n", self.node.address(), roles.join(","));
        if let Some(addr) = self.node.management_addr() {
            lines.push_str(&format!("management http://{addr}\n"));
        }
        if let Some(addr) = self.http_addr() {
            lines.push_str(&format!("listening on http://{addr}\n"));
        }
        lines.push_str("started\n");
        // Tests and scripts wait for these lines; a closed stdout is not a reason to fail.
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(lines.as_bytes());
        let _ = stdout.flush();
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
    /// entities are stopped and their shards handed off to the other entity nodes first.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let served = self.stop_http().await;
        self.node.shutdown().await;
        tracing::info!("stopped");
        served
    }

    /// Stops the node at once, without serving (for a start that failed half-way).
    pub async fn stop(self) {
        self.node.stop().await;
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

/// A service node: its store, the cluster node, sharding of the service's one entity type
/// (entity nodes host a region, the others a proxy) and, on endpoint nodes, the HTTP API in
/// front of it. Stop it with [`Service::shutdown`]; dropping it leaves it running until the
/// runtime ends.
pub struct Service<D, M> {
    node: NodeService,
    region: ShardRegion<M>,
    store: Arc<dyn Store>,
    config: ServiceConfig<D>,
}

impl<D, M> Service<D, M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens the store named in `config` and starts the node (see
    /// [`start_with_store`](Self::start_with_store)).
    pub async fn start(
        config: ServiceConfig<D>,
        entity: impl FnOnce(&Node) -> Entity<M>,
        app: impl FnOnce(ShardRegion<M>, Duration) -> axum::Router,
    ) -> anyhow::Result<Self> {
        let store = config
            .store
            .open()
            .await
            .with_context(|| format!("cannot open store {}", config.store))?;
        tracing::info!(store = %config.store, "store opened");
        Self::start_with_store(config, store, entity, app).await
    }

    /// Starts the node on `store` (`config.store` is not used): binds HTTP (endpoint nodes),
    /// starts the cluster node, starts sharding of `entity(node)` and serves `app(region,
    /// ask timeout)`.
    pub async fn start_with_store(
        config: ServiceConfig<D>,
        store: Arc<dyn Store>,
        entity: impl FnOnce(&Node) -> Entity<M>,
        app: impl FnOnce(ShardRegion<M>, Duration) -> axum::Router,
    ) -> anyhow::Result<Self> {
        let mut node = NodeService::start(
            config.is_endpoint().then_some(config.http.as_str()),
            config.node_config(store.clone()),
            config.shutdown_timeout,
        )
        .await?;
        let region = match node.node().sharding().init(entity(node.node())) {
            Ok(region) => region,
            Err(error) => {
                node.stop().await;
                return Err(error).context("cannot start sharding");
            }
        };
        node.serve(app(region.clone(), config.ask_timeout))?;
        Ok(Self {
            node,
            region,
            store,
            config,
        })
    }
}

impl<D, M> Service<D, M> {
    /// The address the HTTP API listens on (with the real port when configured with port
    /// 0); `None` on a node without the `endpoint` role.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.node.http_addr()
    }

    /// The cluster node.
    pub fn node(&self) -> &Node {
        self.node.node()
    }

    /// This node's handle to the entities.
    pub fn region(&self) -> &ShardRegion<M> {
        &self.region
    }

    /// The store the entities persist to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &ServiceConfig<D> {
        &self.config
    }

    /// Serves until `signal` completes (then shuts down gracefully), the HTTP listener fails
    /// (then leaves the cluster) or the cluster downs or removes this node (then stops).
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.node.run_until(signal).await
    }

    /// Stops accepting HTTP connections, lets in-flight requests finish (up to the shutdown
    /// timeout; later ones are cut off), then leaves the cluster gracefully: this node's
    /// entities are stopped and their shards handed off to the other entity nodes first.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.node.shutdown().await
    }

    /// Prints what it serves ([`NodeService::announce`]: `node ADDRESS#INCARNATION roles R`,
    /// `management http://ADDR`, `listening on http://ADDR`, `started`), serves until SIGINT
    /// or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> anyhow::Result<()> {
        let roles = self.config.role_names();
        self.node.announce(roles.iter().map(String::as_str));
        self.run_until(shutdown_signal()).await
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
