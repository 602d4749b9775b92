//! Seed 000's shopping cart, done right: every cart is one event-sourced entity with one
//! writer, persisted to an embedded SQLite journal (or memory), served over HTTP.
//!
//! * [`cart`] — the [`CartEntity`](cart::CartEntity): commands, events, state.
//! * [`http`] — the routes, validation and JSON errors.
//! * [`server`] — [`start`] (for tests: bind, return the bound address), [`run`] (for the
//!   binary: serve until SIGINT/SIGTERM, then shut down gracefully).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use shoal::store_url::StoreUrl;
//! use shopping_cart::{Config, start};
//!
//! let config = Config { http: "127.0.0.1:0".into(), store: StoreUrl::Memory, ..Config::default() };
//! let server = start(config).await?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown().await
//! # }
//! ```

pub mod cart;
pub mod http;
pub mod server;

use std::time::Duration;

use shoal::store_url::StoreUrl;

pub use server::{Config, Server, run, shutdown_signal, start, start_with_store};

/// The command line of the `shopping-cart` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "shopping-cart",
    version,
    about = "Seed 000's shopping cart on Shoal"
)]
pub struct Args {
    /// Address to listen on for HTTP (`HOST:PORT`; port 0 picks a free one).
    #[arg(
        long,
        env = "SHOAL_HTTP",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub http: String,

    /// Where carts are stored: `sqlite:PATH` (created if missing) or `memory:` (lost on exit).
    #[arg(
        long,
        env = "SHOAL_STORE",
        default_value = "sqlite:./data/shopping-cart.db",
        value_name = "URL"
    )]
    pub store: StoreUrl,

    /// How long a request waits for its cart before answering 503, in milliseconds.
    #[arg(
        long,
        env = "SHOAL_ASK_TIMEOUT_MS",
        default_value_t = 5000,
        value_name = "MS"
    )]
    pub ask_timeout_ms: u64,
}

impl Args {
    /// The service configuration these arguments describe.
    pub fn config(&self) -> Config {
        Config {
            http: self.http.clone(),
            store: self.store.clone(),
            ask_timeout: Duration::from_millis(self.ask_timeout_ms.max(1)),
            ..Config::default()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
        assert_eq!(args.store, StoreUrl::Memory);
        assert_eq!(args.config().ask_timeout, Duration::from_secs(5));
    }

    #[test]
    fn store_urls_are_checked_at_parse_time() {
        let args =
            Args::try_parse_from(["shopping-cart", "--store", "postgres://db/shoal"]).unwrap();
        assert_eq!(args.store, StoreUrl::Postgres("postgres://db/shoal".into()));
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
