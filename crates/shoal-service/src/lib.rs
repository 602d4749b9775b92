//! What a Shoal HTTP service needs around a [`shoal::node::Node`], shared by the services in
//! `apps/`:
//!
//! * [`config`] — the node's [`Role`]s (`endpoint`, `entity`), the [`ServiceConfig`] every
//!   service runs with (each service brings its own defaults through [`ServiceDefaults`]),
//!   and [`NodeArgs`], the shared command-line flags and their `SHOAL_*` environment
//!   variables.
//! * [`server`] — [`NodeService`]: binds HTTP before the node joins anything, serves an
//!   [`axum::Router`], and shuts down in order (stop accepting, let in-flight requests
//!   finish, then leave the cluster); [`Service`]: that with the service's one sharded
//!   entity type (its store, region and configuration); [`shutdown_signal`],
//!   [`init_tracing`].
//! * [`error`] — [`ApiError`]: a status and `{"error": message}`, and the mapping of
//!   rejections and of an entity that does not answer to 4xx/503.
//!
//! What a service does with its entities (routes, commands, validation, messages) stays in
//! the service.

pub mod config;
pub mod error;
pub mod server;

pub use config::{ENTITY_ROLE, NodeArgs, Role, ServiceConfig, ServiceDefaults, sharding_settings};
pub use error::{ApiError, AskMessages, log_request, method_not_allowed, not_found};
pub use server::{NodeService, Service, init_tracing};
pub use shoal::node::shutdown_signal;
