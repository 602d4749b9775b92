//! Starting and stopping a node: store, cluster node, sharding, HTTP listener.

use std::future::{Future, IntoFuture};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shoal::cluster::ShutdownReason;
use shoal::node::{Node, NodeConfig};
use shoal::prelude::*;
use shoal::sharding::{Entity, EntityContext as ShardContext, ShardRegion, ShardingSettings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Config, Role};
use crate::entity::{ArtifactCommand, ArtifactStateEntity};
use crate::http::{AppState, router};

/// The cluster role of the nodes hosting entities.
pub const ENTITY_ROLE: &str = "entity";

/// The sharding settings of the entity type, the same on every node: entities live only on
/// nodes with the `entity` role.
pub fn sharding_settings() -> ShardingSettings {
    ShardingSettings {
        role: Some(ENTITY_ROLE.to_owned()),
        ..ShardingSettings::default()
    }
}

/// A running node. Stop it with [`Server::shutdown`].
pub struct Server {
    node: Node,
    region: ShardRegion<ArtifactCommand>,
    store: Arc<dyn Store>,
    http: Option<Http>,
    config: Config,
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
        let listener = TcpListener::bind(&config.http)
            .await
            .with_context(|| format!("cannot listen on {}", config.http))?;
        Some(listener)
    } else {
        None
    };

    let mut node_config = NodeConfig::new(store.clone());
    node_config.cluster_addr = config.cluster;
    node_config.seeds = config.seeds.clone();
    node_config.roles = config.roles.iter().map(|r| r.as_str().to_owned()).collect();
    node_config.cluster_name = config.cluster_name.clone();
    node_config.secret = config.secret.clone();
    node_config.management = config.management;
    let node = Node::start(node_config)
        .await
        .context("cannot start the node")?;

    // Every node starts sharding of the type: entity nodes host a region, the others a proxy.
    let entity = Entity::event_sourced(
        node.persistence(),
        |_: &ShardContext<ArtifactCommand>| ArtifactStateEntity,
        EntitySettings::default(),
    )
    .with_settings(sharding_settings());
    let region = match node.sharding().init(entity) {
        Ok(region) => region,
        Err(error) => {
            node.stop().await;
            return Err(error).context("cannot start sharding");
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
        config,
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

    /// This node's handle to the entities.
    pub fn region(&self) -> &ShardRegion<ArtifactCommand> {
        &self.region
    }

    /// The store the entities persist to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves until `signal` completes (then shuts down gracefully), the HTTP listener fails
    /// or the cluster downs or removes this node (then stops).
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
    /// timeout; later ones are cut off), then leaves the cluster gracefully (shards handed
    /// off first).
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
        let timeout = self.config.shutdown_timeout;
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
    let roles: Vec<&str> = server
        .config
        .roles
        .iter()
        .map(|r| Role::as_str(*r))
        .collect();
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
