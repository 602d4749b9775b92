//! Starting and stopping a node: store, cluster node, sharding of the artifact states, HTTP
//! listener (all of it [`shoal_service::Service`]; this module says which entity and which
//! routes).

use std::sync::Arc;
use std::time::Duration;

use shoal::node::Node;
use shoal::prelude::*;
use shoal::sharding::{Entity, EntityContext as ShardContext, ShardRegion};

pub use shoal_service::{ENTITY_ROLE, sharding_settings, shutdown_signal};

use crate::config::{Config, Defaults};
use crate::entity::{ArtifactCommand, ArtifactStateEntity};
use crate::http::{AppState, router};

/// A running node. Stop it with [`Server::shutdown`].
pub type Server = shoal_service::Service<Defaults, ArtifactCommand>;

/// The entity type, the same on every node: entity nodes host a region, the others a proxy.
fn entity(node: &Node) -> Entity<ArtifactCommand> {
    Entity::event_sourced(
        node.persistence(),
        |_: &ShardContext<ArtifactCommand>| ArtifactStateEntity,
        EntitySettings::default(),
    )
    .with_settings(sharding_settings())
}

/// The HTTP API on `region`.
fn api(region: ShardRegion<ArtifactCommand>, ask_timeout: Duration) -> axum::Router {
    router(AppState::new(region, ask_timeout))
}

/// Opens the store named in `config` and starts the node.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    Server::start(config, entity, api).await
}

/// Starts the node on `store` (`config.store` is not used), for tests and embedding.
pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
    Server::start_with_store(config, store, entity, api).await
}

/// Starts the node, prints what it serves on standard output (`node ADDRESS#INCARNATION
/// roles R`, then `management http://ADDR` and `listening on http://ADDR` when served, then
/// `started`), serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    start(config).await?.run().await
}
