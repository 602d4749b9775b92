//! Seed 001's artifact-state PoC on Shoal: for every user × artifact, whether the user has
//! read the artifact and whether it is in the user's feed. Each pair is one event-sourced
//! entity, sharded over the cluster's `entity` nodes; `endpoint` nodes serve the REST API and
//! reach the entities through sharding. One binary: what a node does is configuration.
//!
//! * [`entity`] — the [`ArtifactStateEntity`](entity::ArtifactStateEntity): commands,
//!   events, state.
//! * [`http`] — the seed's routes, validation and JSON errors.
//! * [`config`] — flags, environment and the TOML file.
//! * [`server`] — [`start`] (for tests: bind, return the bound addresses), [`run`] (for the
//!   binary: serve until SIGINT/SIGTERM, then shut down gracefully).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use artifact_state::{Config, start};
//! use shoal::store_url::StoreUrl;
//!
//! let config = Config {
//!     http: "127.0.0.1:0".into(),
//!     cluster: "127.0.0.1:0".parse()?,
//!     store: StoreUrl::Memory,
//!     ..Config::default()
//! };
//! let server = start(config).await?;
//! println!("serving on {:?}", server.http_addr());
//! server.shutdown().await
//! # }
//! ```

pub mod config;
pub mod entity;
pub mod http;
pub mod server;

pub use config::{Args, Config, Defaults, FileConfig, Role};
pub use server::{Server, run, shutdown_signal, start, start_with_store};
pub use shoal_service::init_tracing;
