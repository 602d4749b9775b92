//! Seed 000's shopping cart, done right: every cart is one event-sourced entity with one
//! writer in the whole cluster. Carts are sharded over the cluster's `entity` nodes (cluster
//! sharding through [`shoal::node::Node`]) and persisted to a journal all nodes share
//! (PostgreSQL; a node alone may use the embedded SQLite store or memory); `endpoint` nodes
//! serve the HTTP API and reach each cart wherever it lives.
//!
//! * [`cart`] — the [`CartEntity`](cart::CartEntity): commands, events, state.
//! * [`http`] — the routes, validation and JSON errors.
//! * [`server`] — [`start`] (for tests: bind, return the bound addresses), [`run`] (for the
//!   binary: serve until SIGINT/SIGTERM, then shut down gracefully).
//!
//! With no flags the binary is one node with both roles on `sqlite:./data/shopping-cart.db`.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use shoal::store_url::StoreUrl;
//! use shopping_cart::{Config, start};
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

pub mod cart;
pub mod http;
pub mod server;

use std::time::Duration;

use shoal_service::{NodeArgs, ServiceDefaults};

pub use server::{Config, Defaults, Role, Server, run, shutdown_signal, start, start_with_store};
pub use shoal_service::init_tracing;

/// The command line of the `shopping-cart` binary. Every flag has an environment variable
/// (the same names as the `artifact-state` service: the shared ones are
/// [`shoal_service::NodeArgs`]).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "shopping-cart",
    version,
    about = "Seed 000's shopping cart on a Shoal cluster"
)]
pub struct Args {
    /// Address to listen on for HTTP, on endpoint nodes (`HOST:PORT`; port 0 picks a free
    /// one).
    #[arg(
        long,
        env = "SHOAL_HTTP",
        default_value = <Defaults as ServiceDefaults>::HTTP,
        value_name = "ADDR"
    )]
    pub http: String,

    /// The flags every Shoal service shares (cluster, seeds, roles, store, …); the store
    /// defaults to `sqlite:./data/shopping-cart.db`, the cluster name to `shopping-cart`.
    #[command(flatten)]
    pub node: NodeArgs,
}

impl Args {
    /// The service configuration these arguments describe.
    pub fn config(&self) -> Config {
        let mut config = self.node.over(Config {
            http: self.http.clone(),
            ..Config::default()
        });
        config.ask_timeout = config.ask_timeout.max(Duration::from_millis(1));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal::store_url::StoreUrl;

    #[test]
    fn flags_override_the_defaults() {
        let args = Args::try_parse_from([
            "shopping-cart",
            "--http",
            "0.0.0.0:9000",
            "--store",
            "memory:",
        ])
        .unwrap();
        assert_eq!(args.http, "0.0.0.0:9000");
        assert_eq!(args.config().store, StoreUrl::Memory);
        assert_eq!(args.config().ask_timeout, Duration::from_secs(5));
    }

    #[test]
    fn no_flags_is_one_node_with_both_roles_on_the_embedded_store() {
        let config = Args::try_parse_from(["shopping-cart"]).unwrap().config();
        assert_eq!(config.http, "127.0.0.1:8080");
        assert_eq!(
            config.store,
            StoreUrl::Sqlite("./data/shopping-cart.db".into())
        );
        assert_eq!(config.cluster.to_string(), "127.0.0.1:2551");
        assert!(config.seeds.is_empty());
        assert_eq!(config.roles, [Role::Endpoint, Role::Entity].into());
        assert_eq!(config.management, None);
        assert_eq!(config.secret, None);
        assert_eq!(config.cluster_name, "shopping-cart");
    }

    #[test]
    fn cluster_flags_are_parsed() {
        let args = Args::try_parse_from([
            "shopping-cart",
            "--cluster",
            "127.0.0.1:2600",
            "--seed",
            "127.0.0.1:2600",
            "--seed",
            "127.0.0.1:2601,127.0.0.1:2602",
            "--role",
            "endpoint",
            "--management",
            "127.0.0.1:8600",
            "--secret",
            "0123456789abcdef",
            "--store",
            "postgres://db/shoal",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!(config.cluster.to_string(), "127.0.0.1:2600");
        assert_eq!(config.seeds.len(), 3);
        assert_eq!(config.roles, [Role::Endpoint].into());
        assert!(config.is_endpoint() && !config.is_entity());
        assert_eq!(config.management, Some("127.0.0.1:8600".parse().unwrap()));
        assert_eq!(config.secret.as_deref(), Some("0123456789abcdef"));
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let both =
            Args::try_parse_from(["shopping-cart", "--role", "entity", "--role", "endpoint"])
                .unwrap()
                .config();
        assert_eq!(both.roles, [Role::Endpoint, Role::Entity].into());
        for bad in [
            &["--role", "worker"][..],
            &["--cluster", "nowhere"],
            &["--seed", "127.0.0.1"],
        ] {
            let mut all = vec!["shopping-cart"];
            all.extend_from_slice(bad);
            assert!(Args::try_parse_from(all).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_urls_are_checked_at_parse_time() {
        let args =
            Args::try_parse_from(["shopping-cart", "--store", "postgres://db/shoal"]).unwrap();
        assert_eq!(
            args.config().store,
            StoreUrl::Postgres("postgres://db/shoal".into())
        );
        let err = Args::try_parse_from(["shopping-cart", "--store", "postgres:"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid store URL"), "{err}");
        let err = Args::try_parse_from(["shopping-cart", "--store", "cassandra://x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown store URL"), "{err}");
    }
}
