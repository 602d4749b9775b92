//! Roles, the configuration every service runs with, and the shared command-line flags.
//!
//! | flag | environment |
//! | --- | --- |
//! | `--cluster ADDR` | `SHOAL_CLUSTER` |
//! | `--seed ADDR` (repeatable) | `SHOAL_SEEDS` (comma-separated) |
//! | `--role ROLE` (repeatable) | `SHOAL_ROLES` (comma-separated) |
//! | `--store URL` | `SHOAL_STORE` |
//! | `--management ADDR` | `SHOAL_MANAGEMENT` |
//! | `--secret SECRET` | `SHOAL_CLUSTER_SECRET` |
//! | `--cluster-name NAME` | `SHOAL_CLUSTER_NAME` |
//! | `--ask-timeout-ms MS` | `SHOAL_ASK_TIMEOUT_MS` |
//!
//! A service flattens [`NodeArgs`] into its own command line (next to its `--http` and
//! whatever else it has) and applies them over its [`ServiceConfig`].

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shoal::node::NodeConfig;
use shoal::prelude::Store;
use shoal::sharding::ShardingSettings;
use shoal::store_url::StoreUrl;

/// The cluster role of the nodes hosting entities.
pub const ENTITY_ROLE: &str = "entity";

/// The sharding settings of a service's entity type, the same on every node: entities live
/// only on nodes with the `entity` role.
pub fn sharding_settings() -> ShardingSettings {
    ShardingSettings {
        role: Some(ENTITY_ROLE.to_owned()),
        ..ShardingSettings::default()
    }
}

/// What a node does. A node has one or both roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the HTTP API and sends commands through sharding (a shard region proxy when
    /// the node is not also an `entity` node).
    Endpoint,
    /// Hosts the entities (its cluster role `entity`).
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

/// A service's defaults: what a node of it does with no flags.
pub trait ServiceDefaults {
    /// The HTTP address.
    const HTTP: &'static str;
    /// The store URL.
    const STORE: &'static str;
    /// The cluster name.
    const CLUSTER_NAME: &'static str;
}

/// How a node of a service runs. `D` names the service (its [`ServiceDefaults`]).
pub struct ServiceConfig<D> {
    /// Where the HTTP API listens (only on `endpoint` nodes), `HOST:PORT`; port 0 picks a
    /// free one.
    pub http: String,
    /// Where the node listens for other nodes; port 0 picks a free one.
    pub cluster: SocketAddr,
    /// Seed nodes to join through; empty: form a cluster alone.
    pub seeds: Vec<SocketAddr>,
    /// The node's roles (empty counts as both).
    pub roles: BTreeSet<Role>,
    /// The event store (PostgreSQL when several nodes share it).
    pub store: StoreUrl,
    /// Where the management HTTP listens, if it is served.
    pub management: Option<SocketAddr>,
    /// The cluster secret (at least 16 bytes), required when joining other nodes.
    pub secret: Option<String>,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster_name: String,
    /// How long a request waits for its entity before answering 503.
    pub ask_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
    /// Which service's defaults (a marker; fill it with `..Config::default()`).
    pub defaults: PhantomData<D>,
}

impl<D: ServiceDefaults> Default for ServiceConfig<D> {
    fn default() -> Self {
        Self {
            http: D::HTTP.to_owned(),
            cluster: shoal::node::DEFAULT_CLUSTER_ADDR
                .parse()
                .expect("a valid default address"),
            seeds: Vec::new(),
            roles: [Role::Endpoint, Role::Entity].into(),
            store: StoreUrl::parse(D::STORE).expect("a valid default store"),
            management: None,
            secret: None,
            cluster_name: D::CLUSTER_NAME.to_owned(),
            ask_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            defaults: PhantomData,
        }
    }
}

impl<D> Clone for ServiceConfig<D> {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            cluster: self.cluster,
            seeds: self.seeds.clone(),
            roles: self.roles.clone(),
            store: self.store.clone(),
            management: self.management,
            secret: self.secret.clone(),
            cluster_name: self.cluster_name.clone(),
            ask_timeout: self.ask_timeout,
            shutdown_timeout: self.shutdown_timeout,
            defaults: PhantomData,
        }
    }
}

impl<D> std::fmt::Debug for ServiceConfig<D> {
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

impl<D> ServiceConfig<D> {
    /// Whether this node serves the HTTP API (no roles counts as both).
    pub fn is_endpoint(&self) -> bool {
        self.roles.is_empty() || self.roles.contains(&Role::Endpoint)
    }

    /// Whether this node hosts entities (no roles counts as both).
    pub fn is_entity(&self) -> bool {
        self.roles.is_empty() || self.roles.contains(&Role::Entity)
    }

    /// The cluster role names of this node (no roles counts as both).
    pub fn role_names(&self) -> BTreeSet<String> {
        [Role::Endpoint, Role::Entity]
            .into_iter()
            .filter(|role| match role {
                Role::Endpoint => self.is_endpoint(),
                Role::Entity => self.is_entity(),
            })
            .map(|role| role.as_str().to_owned())
            .collect()
    }

    /// The configuration of the cluster node, on `store`.
    pub fn node_config(&self, store: Arc<dyn Store>) -> NodeConfig {
        let mut node_config = NodeConfig::new(store);
        node_config.cluster_addr = self.cluster;
        node_config.seeds = self.seeds.clone();
        node_config.roles = self.role_names();
        node_config.cluster_name = self.cluster_name.clone();
        node_config.secret = self.secret.clone();
        node_config.management = self.management;
        node_config
    }
}

/// The flags every service shares: where the node listens, whom it joins, what it does,
/// where it stores. Each is optional and overrides the service's configuration only when
/// given (see [`NodeArgs::apply_to`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// Where the node listens for other nodes; port 0 picks a free one [default:
    /// 127.0.0.1:2551].
    #[arg(long, env = "SHOAL_CLUSTER", value_name = "ADDR")]
    pub cluster: Option<SocketAddr>,

    /// A seed node to join through (repeatable, or comma-separated). None: this node forms a
    /// cluster alone.
    #[arg(
        long = "seed",
        env = "SHOAL_SEEDS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub seeds: Vec<SocketAddr>,

    /// A role of this node (repeatable): `endpoint` serves HTTP and reaches the entities
    /// through sharding, `entity` hosts entities [default: both].
    #[arg(
        long = "role",
        env = "SHOAL_ROLES",
        value_delimiter = ',',
        value_name = "ROLE"
    )]
    pub roles: Vec<Role>,

    /// The event store: `sqlite:PATH` (created if missing), `postgres://…` (shared by the
    /// nodes of a cluster) or `memory:` (lost on exit) [default: the service's SQLite file].
    #[arg(long, env = "SHOAL_STORE", value_name = "URL")]
    pub store: Option<StoreUrl>,

    /// Where the management HTTP (`/cluster/members`, `/ready`, `/alive`) listens
    /// [default: not served].
    #[arg(long, env = "SHOAL_MANAGEMENT", value_name = "ADDR")]
    pub management: Option<SocketAddr>,

    /// The shared cluster secret, at least 16 bytes (needed to join seed nodes; a node alone
    /// uses a random one).
    #[arg(
        long,
        env = "SHOAL_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret: Option<String>,

    /// The cluster's name; nodes of another cluster are refused [default: the service's
    /// name].
    #[arg(long, env = "SHOAL_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// How long a request waits for its entity before answering 503, in milliseconds
    /// [default: 5000].
    #[arg(long, env = "SHOAL_ASK_TIMEOUT_MS", value_name = "MS")]
    pub ask_timeout_ms: Option<u64>,
}

impl NodeArgs {
    /// Overrides in `config` what these flags give (a flag not given leaves it as it is).
    pub fn apply_to<D>(&self, config: &mut ServiceConfig<D>) {
        if let Some(cluster) = self.cluster {
            config.cluster = cluster;
        }
        if !self.seeds.is_empty() {
            config.seeds = self.seeds.clone();
        }
        if !self.roles.is_empty() {
            config.roles = self.roles.iter().copied().collect();
        }
        if let Some(store) = &self.store {
            config.store = store.clone();
        }
        if let Some(management) = self.management {
            config.management = Some(management);
        }
        if let Some(secret) = &self.secret {
            config.secret = Some(secret.clone());
        }
        if let Some(name) = &self.cluster_name {
            config.cluster_name = name.clone();
        }
        if let Some(ms) = self.ask_timeout_ms {
            config.ask_timeout = Duration::from_millis(ms);
        }
    }

    /// `config` with these flags applied over it.
    pub fn over<D>(&self, mut config: ServiceConfig<D>) -> ServiceConfig<D> {
        self.apply_to(&mut config);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    struct Test;
    impl ServiceDefaults for Test {
        const HTTP: &'static str = "127.0.0.1:1";
        const STORE: &'static str = "memory:";
        const CLUSTER_NAME: &'static str = "test";
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn flags_override_only_what_they_give() {
        let cli = Cli::try_parse_from([
            "test",
            "--seed",
            "127.0.0.1:2600,127.0.0.1:2601",
            "--role",
            "entity",
        ])
        .unwrap();
        let config = cli.node.over(ServiceConfig::<Test>::default());
        assert_eq!(config.seeds.len(), 2);
        assert_eq!(config.roles, [Role::Entity].into());
        assert!(!config.is_endpoint() && config.is_entity());
        assert_eq!(config.cluster_name, "test");
        assert_eq!(config.store, StoreUrl::Memory);
        let node = config.node_config(Arc::new(shoal::persistence::memory::MemoryStore::new()));
        assert_eq!(node.roles, ["entity".to_owned()].into());
    }

    #[test]
    fn no_roles_counts_as_both() {
        let config = ServiceConfig::<Test> {
            roles: BTreeSet::new(),
            ..ServiceConfig::default()
        };
        assert_eq!(
            config.role_names(),
            ["endpoint".to_owned(), "entity".to_owned()].into()
        );
    }
}
