//! Starting a whole cluster node in one call: remoting over TCP, membership (with the
//! split-brain resolver), an actor system, persistence on the chosen store, cluster sharding
//! and the management HTTP. What a service's `main` needs; [`Node::shutdown`] leaves
//! gracefully (shards handed off first, so no message is lost).
//!
//! ```no_run
//! # async fn run() -> Result<(), shoal::node::NodeError> {
//! use shoal::node::{Node, NodeConfig};
//!
//! let store = shoal::store_url::open_store("sqlite:./data/app.db").await.unwrap();
//! let node = Node::start(NodeConfig::new(store)).await?;
//! // node.sharding().init(…) your entity types, serve your HTTP, then:
//! node.run_until_signal().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_actor::ActorSystem;
use shoal_cluster::{Cluster, ClusterConfig, RemoteLink, ShutdownReason};
use shoal_persistence::Persistence;
use shoal_persistence::store::Store;
use shoal_remote::{ClusterSecret, EndpointConfig, Remote, TcpTransport, UniqueAddress};
use shoal_sharding::Sharding;

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM (what [`Node::run_until_signal`] waits
/// for).
pub use shoal_management::shutdown_signal;

/// The default cluster address (as Akka's seed examples: port 2551).
pub const DEFAULT_CLUSTER_ADDR: &str = "127.0.0.1:2551";

/// How to start a [`Node`].
#[derive(Clone)]
pub struct NodeConfig {
    /// Where the node listens for other nodes. Default 127.0.0.1:2551.
    pub cluster_addr: SocketAddr,
    /// The address other nodes reach it by, when it differs (NAT, containers).
    pub advertised_addr: Option<SocketAddr>,
    /// Seed nodes to join through. Empty: this node forms a cluster of its own.
    pub seeds: Vec<SocketAddr>,
    /// The node's roles (e.g. `endpoint`, `entity`).
    pub roles: BTreeSet<String>,
    /// The cluster's name; nodes of another cluster are refused. Default `shoal`.
    pub cluster_name: String,
    /// The shared secret every node proves in the handshake (at least 16 bytes). `None`:
    /// allowed only for a node without other seeds, which then uses a random one.
    pub secret: Option<String>,
    /// Where the management HTTP listens; `None`: not served.
    pub management: Option<SocketAddr>,
    /// The event store (shared by all nodes of a cluster: PostgreSQL).
    pub store: Arc<dyn Store>,
    /// Membership timings and the split-brain resolver (seeds and roles are taken from the
    /// fields above).
    pub cluster: ClusterConfig,
}

impl NodeConfig {
    /// A single node on `store` with the defaults.
    pub fn new(store: Arc<dyn Store>) -> Self {
        NodeConfig {
            cluster_addr: DEFAULT_CLUSTER_ADDR.parse().expect("valid"),
            advertised_addr: None,
            seeds: Vec::new(),
            roles: BTreeSet::new(),
            cluster_name: "shoal".into(),
            secret: None,
            management: None,
            store,
            cluster: ClusterConfig::default(),
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("cluster_addr", &self.cluster_addr)
            .field("advertised_addr", &self.advertised_addr)
            .field("seeds", &self.seeds)
            .field("roles", &self.roles)
            .field("cluster_name", &self.cluster_name)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("management", &self.management)
            .finish_non_exhaustive()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A running cluster node. Cheap handles to its parts; [`shutdown`](Self::shutdown) to
/// leave.
#[derive(Clone)]
pub struct Node {
    remote: Remote,
    cluster: Cluster,
    system: ActorSystem,
    persistence: Persistence,
    sharding: Sharding,
    management: Option<SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.remote.local())
            .field("management", &self.management)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Bind, join (or form) the cluster, start sharding and the management HTTP.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let only_self = config
            .seeds
            .iter()
            .all(|s| *s == config.cluster_addr || Some(*s) == config.advertised_addr);
        let secret = match &config.secret {
            Some(s) if s.len() >= 16 => s.clone(),
            Some(_) => {
                return Err(NodeError::Config(
                    "the cluster secret must be at least 16 bytes".into(),
                ));
            }
            None if only_self => {
                // A node alone: nobody else can join it, so any secret will do.
                let mut bytes = [0u8; 16];
                bytes
                    .iter_mut()
                    .for_each(|b| *b = fastrand::alphanumeric() as u8);
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => {
                return Err(NodeError::Config(
                    "nodes that join seed nodes need the shared cluster secret \
                     (--secret or SHOAL_CLUSTER_SECRET, at least 16 bytes)"
                        .into(),
                ));
            }
        };
        let mut endpoint =
            EndpointConfig::new(config.cluster_name.clone(), ClusterSecret::new(&secret));
        endpoint.advertised_addr = config.advertised_addr;
        let remote = Remote::bind(Arc::new(TcpTransport::new()), config.cluster_addr, endpoint)
            .await
            .map_err(|e| NodeError::Bind {
                addr: config.cluster_addr,
                reason: e.to_string(),
            })?;
        let me = remote.local();
        let mut cluster_config = config.cluster.clone();
        cluster_config.roles = config.roles.clone();
        cluster_config.seed_nodes = if config.seeds.is_empty() {
            vec![me.addr]
        } else {
            config.seeds.clone()
        };
        let (link, inbox) =
            RemoteLink::register(&remote, 4096).map_err(|e| NodeError::Config(e.to_string()))?;
        let cluster = Cluster::start(
            cluster_config,
            me,
            Arc::new(link),
            inbox,
            None,
            me.incarnation,
        )
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let system = ActorSystem::new("shoal");
        let persistence = Persistence::new(config.store.clone());
        let sharding = Sharding::new(&cluster, &remote, &system, config.store.clone());
        let management = match config.management {
            Some(addr) => Some(
                shoal_management::serve_with_sharding(addr, cluster.state(), sharding.clone())
                    .await
                    .map_err(|e| NodeError::Bind {
                        addr,
                        reason: e.to_string(),
                    })?,
            ),
            None => None,
        };
        tracing::info!(node = %me, management = ?management, "node started");
        Ok(Node {
            remote,
            cluster,
            system,
            persistence,
            sharding,
            management,
        })
    }

    /// This node's identity.
    pub fn address(&self) -> UniqueAddress {
        self.remote.local()
    }

    /// The remoting layer.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Membership.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The actor system.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// Persistence on the node's store.
    pub fn persistence(&self) -> &Persistence {
        &self.persistence
    }

    /// Cluster sharding.
    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// Where the management HTTP listens, if it does.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management
    }

    /// Waits until this node is `Up` (or `timeout`). Returns whether it is.
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        let mut state = self.cluster.state();
        let up = state.wait_for(|s| s.self_status == Some(shoal_cluster::MemberStatus::Up));
        matches!(tokio::time::timeout(timeout, up).await, Ok(Ok(_)))
    }

    /// Runs until SIGINT/SIGTERM (then leaves gracefully) or until the cluster downs or
    /// removes this node (then stops without leaving). Returns why it ended.
    pub async fn run_until_signal(&self) -> Ended {
        let mut stopped = self.cluster.stopped();
        let ended = tokio::select! {
            () = shutdown_signal() => Ended::Signal,
            reason = stopped.wait_for(Option::is_some) => {
                Ended::Cluster(reason.ok().and_then(|r| *r))
            }
        };
        match ended {
            Ended::Signal => self.shutdown().await,
            Ended::Cluster(reason) => {
                tracing::warn!(?reason, "cluster membership ended: stopping");
                self.stop().await;
            }
        }
        ended
    }

    /// Leave gracefully: hand off every shard, leave the cluster, wait to be removed, stop.
    pub async fn shutdown(&self) {
        tracing::info!("handing off shards");
        if !self.sharding.shutdown(Duration::from_secs(20)).await {
            tracing::warn!("shards not all handed off in 20 s; leaving anyway");
        }
        tracing::info!("leaving the cluster");
        self.cluster.leave(self.address().addr);
        let mut stopped = self.cluster.stopped();
        // Only the outcome is kept: the `watch::Ref` inside must not live across the
        // `.await` below (it would make this future `!Send`).
        let left = tokio::time::timeout(Duration::from_secs(15), stopped.wait_for(Option::is_some))
            .await
            .is_ok();
        if !left {
            tracing::warn!("did not finish leaving in 15 s; stopping");
        }
        self.stop().await;
    }

    /// Stop at once, without leaving (what a crash looks like to the others, minus the
    /// crash).
    pub async fn stop(&self) {
        self.cluster.stop();
        self.system.shutdown_within(Duration::from_secs(5)).await;
        self.remote.shutdown().await;
    }
}

/// Why [`Node::run_until_signal`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SIGINT or SIGTERM: the node left gracefully.
    Signal,
    /// The cluster downed or removed the node.
    Cluster(Option<ShutdownReason>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// Services spawn these (e.g. `tokio::spawn(node.shutdown())`): they must stay `Send`.
    #[allow(dead_code, clippy::diverging_sub_expression)]
    fn futures_are_send(node: Node) {
        assert_send(node.shutdown());
        assert_send(node.stop());
        assert_send(node.run_until_signal());
        assert_send(node.wait_until_up(Duration::from_secs(1)));
    }
}
