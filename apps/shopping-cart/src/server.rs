//! Starting and stopping the service: store, actor system, carts, HTTP listener.

use std::future::{Future, IntoFuture};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal::prelude::*;
use shoal::store_url::StoreUrl;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cart::CartEntity;
use crate::http::{AppState, router};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen, `HOST:PORT`; port 0 picks a free port ([`Server::local_addr`]).
    pub http: String,
    /// Which store to use.
    pub store: StoreUrl,
    /// How long a request waits for its cart before answering 503.
    pub ask_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish, and then how long the
    /// carts may take to stop.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:8080".to_owned(),
            store: StoreUrl::Sqlite("./data/shopping-cart.db".into()),
            ask_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A running service. Stop it with [`Server::shutdown`]; dropping it leaves it running until
/// the runtime ends.
pub struct Server {
    local_addr: SocketAddr,
    store: Arc<dyn Store>,
    system: ActorSystem,
    stop_accepting: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
    shutdown_timeout: Duration,
}

/// Opens the store named in `config` and starts the service.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let store = config
        .store
        .open()
        .await
        .with_context(|| format!("cannot open store {}", config.store))?;
    tracing::info!(store = %config.store, "store opened");
    start_with_store(config, store).await
}

/// Starts the service on `store` (`config.store` is not used), for tests and embedding.
pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(&config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let local_addr = listener.local_addr().context("listener has no address")?;

    let system = ActorSystem::new("shopping-cart");
    let persistence = Persistence::new(store.clone());
    let settings = EntitySettings::default().with_snapshots(100, 2);
    let carts = Entities::new(&system, &persistence, || CartEntity, settings);
    let app = router(AppState::new(Arc::new(carts), config.ask_timeout));

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
    Ok(Server {
        local_addr,
        store,
        system,
        stop_accepting,
        serving,
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl Server {
    /// The address the service listens on (with the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store the carts persist to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Serves until `signal` completes (or the listener fails), then shuts down.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutdown requested");
                self.shutdown().await
            }
            served = &mut self.serving => {
                // Only a listener error ends serving without a signal.
                self.system.shutdown().await;
                match served {
                    Ok(result) => result.context("HTTP server failed"),
                    Err(join) => Err(anyhow::anyhow!("HTTP server task failed: {join}")),
                }
            }
        }
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the shutdown
    /// timeout; later ones are cut off), then stops the carts (up to the shutdown timeout).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Server {
            system,
            stop_accepting,
            mut serving,
            shutdown_timeout,
            ..
        } = self;
        let _ = stop_accepting.send(());
        let served = match tokio::time::timeout(shutdown_timeout, &mut serving).await {
            Ok(Ok(result)) => result.context("HTTP server failed"),
            Ok(Err(join)) => Err(anyhow::anyhow!("HTTP server task failed: {join}")),
            Err(_) => {
                tracing::warn!(
                    timeout = ?shutdown_timeout,
                    "in-flight requests did not finish in time; closing their connections"
                );
                serving.abort();
                Ok(())
            }
        };
        if tokio::time::timeout(shutdown_timeout, system.shutdown())
            .await
            .is_err()
        {
            // An entity stuck in a store call cannot be interrupted; leave it to process exit.
            tracing::warn!(timeout = ?shutdown_timeout, "carts did not stop in time");
        }
        tracing::info!("stopped");
        served
    }
}

/// Starts the service, prints `listening on http://ADDR` on standard output, serves until
/// SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    // Tests and scripts wait for this line; a closed stdout is not a reason to fail.
    let _ = writeln!(
        std::io::stdout(),
        "listening on http://{}",
        server.local_addr()
    );
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
