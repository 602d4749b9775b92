//! Starting and stopping a node: store, cluster node (remoting, membership, sharding,
//! management), the carts' shard region and the HTTP listener.

use std::sync::Arc;
use std::time::Duration;

use shoal::node::Node;
use shoal::prelude::*;
use shoal::sharding::{Entity, EntityContext as ShardContext, ShardRegion};
use shoal_service::{ServiceConfig, ServiceDefaults};

pub use shoal_service::{ENTITY_ROLE, Role, sharding_settings, shutdown_signal};

use crate::cart::{CartCommand, CartEntity};
use crate::http::{AppState, router};

/// The shopping cart's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults;

impl ServiceDefaults for Defaults {
    const HTTP: &'static str = "127.0.0.1:8080";
    const STORE: &'static str = "sqlite:./data/shopping-cart.db";
    const CLUSTER_NAME: &'static str = "shopping-cart";
}

/// How the service runs ([`Server::http_addr`] has the real HTTP port when configured with
/// port 0).
pub type Config = ServiceConfig<Defaults>;

/// A running node. Stop it with [`Server::shutdown`]; dropping it leaves it running until
/// the runtime ends.
pub type Server = shoal_service::Service<Defaults, CartCommand>;

/// Carts, the same on every node: entity nodes host a region, the others a proxy.
fn carts(node: &Node) -> Entity<CartCommand> {
    let settings = EntitySettings::default().with_snapshots(100, 2);
    Entity::event_sourced(
        node.persistence(),
        |_: &ShardContext<CartCommand>| CartEntity,
        settings,
    )
    .with_settings(sharding_settings())
}

/// The HTTP API on `region`.
fn api(region: ShardRegion<CartCommand>, ask_timeout: Duration) -> axum::Router {
    router(AppState::new(region, ask_timeout))
}

/// Opens the store named in `config` and starts the node.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    Server::start(config, carts, api).await
}

/// Starts the node on `store` (`config.store` is not used), for tests and embedding.
pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
    Server::start_with_store(config, store, carts, api).await
}

/// Starts the node, prints what it serves on standard output (`node ADDRESS#INCARNATION
/// roles R`, then `management http://ADDR` and `listening on http://ADDR` when served, then
/// `started`), serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    start(config).await?.run().await
}
