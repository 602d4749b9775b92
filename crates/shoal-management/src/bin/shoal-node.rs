//! A cluster node: joins through seed nodes over TCP, serves the management HTTP, leaves
//! gracefully on SIGINT/SIGTERM.
//!
//! ```text
//! shoal-node --cluster 127.0.0.1:2551 --seed 127.0.0.1:2551 --management 127.0.0.1:8558
//! shoal-node --cluster 127.0.0.1:2552 --seed 127.0.0.1:2551 --management 127.0.0.1:8559 --role entity
//! ```
//!
//! On start it prints one line to stdout: `node ADDRESS#INCARNATION management http://ADDR`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use shoal_cluster::runner::decode_inbound;
use shoal_cluster::{Cluster, ClusterConfig, EndpointLink};
use shoal_management::shutdown_signal;
use shoal_remote::{ClusterSecret, Endpoint, EndpointConfig, TcpTransport};

/// A Shoal cluster node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where the node listens for other nodes (and the address it is known by).
    #[arg(long, env = "SHOAL_CLUSTER", default_value = "127.0.0.1:2551")]
    cluster: SocketAddr,
    /// A seed node to join through (repeatable). The first seed forms the cluster when no
    /// other answers.
    #[arg(long = "seed", env = "SHOAL_SEEDS", value_delimiter = ',')]
    seeds: Vec<SocketAddr>,
    /// A role of this node (repeatable).
    #[arg(long = "role", env = "SHOAL_ROLES", value_delimiter = ',')]
    roles: Vec<String>,
    /// Where the management HTTP listens.
    #[arg(long, env = "SHOAL_MANAGEMENT", default_value = shoal_management::DEFAULT_ADDR)]
    management: SocketAddr,
    /// The cluster's name; nodes of another cluster are refused.
    #[arg(long, env = "SHOAL_CLUSTER_NAME", default_value = "shoal")]
    cluster_name: String,
    /// The shared cluster secret (proved in every handshake, never sent).
    #[arg(long, env = "SHOAL_CLUSTER_SECRET", hide_env_values = true)]
    secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.secret.len() >= 16,
        "the cluster secret must be at least 16 bytes"
    );
    let endpoint_config =
        EndpointConfig::new(args.cluster_name.clone(), ClusterSecret::new(&args.secret));
    let (endpoint, inbox) = Endpoint::bind_with_channel(
        Arc::new(TcpTransport::new()),
        args.cluster,
        endpoint_config,
        4096,
    )
    .await
    .with_context(|| format!("binding the cluster address {}", args.cluster))?;
    let config = ClusterConfig {
        seed_nodes: args.seeds.clone(),
        roles: args.roles.iter().cloned().collect::<BTreeSet<_>>(),
        ..ClusterConfig::default()
    };
    let self_node = endpoint.local();
    let cluster = Cluster::start(
        config,
        self_node,
        Arc::new(EndpointLink::new(endpoint.clone())),
        decode_inbound(inbox, 4096),
        None,
        self_node.incarnation,
    )
    .context("cluster configuration")?;
    let management = shoal_management::serve(args.management, cluster.state())
        .await
        .with_context(|| format!("binding the management address {}", args.management))?;
    println!("node {self_node} management http://{management}");

    let mut stopped = cluster.stopped();
    let leaving = tokio::select! {
        () = shutdown_signal() => true,
        reason = stopped.wait_for(Option::is_some) => {
            // Downed or removed: a downed node stops its own work.
            let reason = reason.ok().and_then(|r| *r);
            tracing::warn!(?reason, "cluster membership ended");
            false
        }
    };
    if leaving {
        tracing::info!("leaving the cluster");
        cluster.leave(self_node.addr);
        let left =
            tokio::time::timeout(Duration::from_secs(15), stopped.wait_for(Option::is_some)).await;
        if left.is_err() {
            tracing::warn!("did not finish leaving in time; stopping");
        }
    }
    cluster.stop();
    endpoint.shutdown().await;
    Ok(())
}
