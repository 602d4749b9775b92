//! Cluster sharding: asks to sharded entities, on the hosting node and from another node over
//! TCP, against the same asks sent straight to an actor (same run). Entities are plain
//! actors, so the figures isolate routing (region → shard → entity), not persistence.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props, ReplyTo};
use shoal_cluster::{Cluster, ClusterConfig, MemberStatus, RemoteLink};
use shoal_persistence::memory::MemoryStore;
use shoal_remote::{ClusterSecret, EndpointConfig, Remote, RemoteReplyTo, TcpTransport};
use shoal_sharding::{Entity, EntityContext, ShardRegion, Sharding, ShardingSettings};

use crate::measure::Latencies;

const ASK: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum Msg {
    Ping(u64, RemoteReplyTo<u64>),
}

struct Echo;

impl Actor for Echo {
    type Msg = Msg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        let Msg::Ping(n, reply) = msg;
        reply.send(n + 1);
        Ok(())
    }
}

/// The local ceiling: the same request answered through a plain `ReplyTo`.
struct LocalEcho;

impl Actor for LocalEcho {
    type Msg = (u64, ReplyTo<u64>);
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        (n, reply): (u64, ReplyTo<u64>),
    ) -> Result<(), ActorError> {
        reply.send(n + 1);
        Ok(())
    }
}

struct BenchNode {
    remote: Remote,
    cluster: Cluster,
    system: ActorSystem,
    region: ShardRegion<Msg>,
}

async fn node(seed: Option<SocketAddr>, entity: bool) -> anyhow::Result<BenchNode> {
    let config = EndpointConfig::new("bench", ClusterSecret::new("bench-secret-0123456789abcdef"));
    let remote = Remote::bind(
        Arc::new(TcpTransport::new()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
    )
    .await?;
    let (link, inbox) = RemoteLink::register(&remote, 4096)?;
    let roles: BTreeSet<String> = if entity {
        ["entity".to_string()].into()
    } else {
        BTreeSet::new()
    };
    let cluster = Cluster::start(
        ClusterConfig {
            roles,
            seed_nodes: vec![seed.unwrap_or(remote.local().addr)],
            ..ClusterConfig::default()
        },
        remote.local(),
        Arc::new(link),
        inbox,
        None,
        remote.local().incarnation,
    )?;
    let system = ActorSystem::new("bench");
    let sharding = Sharding::new(&cluster, &remote, &system, Arc::new(MemoryStore::new()));
    let region = sharding.init(
        Entity::new("Echo", |_: EntityContext<Msg>| {
            Props::new(|| Echo).with_mailbox_capacity(4096)
        })
        .with_settings(ShardingSettings {
            role: Some("entity".into()),
            passivation_idle_timeout: None,
            ..ShardingSettings::default()
        }),
    )?;
    Ok(BenchNode {
        remote,
        cluster,
        system,
        region,
    })
}

async fn wait_up(node: &BenchNode, n: usize) -> anyhow::Result<()> {
    let mut state = node.cluster.state();
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| {
            s.converged
                && s.members.len() == n
                && s.members.iter().all(|m| m.status == MemberStatus::Up)
        }),
    )
    .await??;
    Ok(())
}

/// `clients` concurrent askers, each with its own target (entity), for `seconds`.
async fn closed_loop<F, Fut>(
    seconds: u64,
    clients: usize,
    ask: F,
) -> anyhow::Result<(f64, Latencies)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let ask = ask.clone();
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    k = ask(client, k).await;
                    lat.record(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await?);
    }
    Ok((all.len() as f64 / started.elapsed().as_secs_f64(), all))
}

pub(crate) async fn run(seconds: u64) -> anyhow::Result<()> {
    let host = node(None, true).await?;
    let caller = node(Some(host.remote.local().addr), false).await?;
    wait_up(&host, 2).await?;
    wait_up(&caller, 2).await?;

    // Ceilings: a plain actor on the host, asked locally and from the caller node.
    let echo = host
        .system
        .spawn("echo", Props::new(|| Echo).with_mailbox_capacity(4096));
    host.remote.register("echo", echo)?;
    let direct = caller.remote.resolve::<Msg>(host.remote.local(), "echo");
    let local_echo = host.system.spawn(
        "local-echo",
        Props::new(|| LocalEcho).with_mailbox_capacity(4096),
    );

    // Warm up: every entity the clients use gets its home and starts.
    let ids: Vec<String> = (0..64).map(|i| format!("e{i}")).collect();
    for id in &ids {
        caller
            .region
            .entity_ref(id.as_str())?
            .ask(|r| Msg::Ping(0, r), ASK)
            .await?;
        host.region
            .entity_ref(id.as_str())?
            .ask(|r| Msg::Ping(0, r), ASK)
            .await?;
    }
    direct.ask(|r| Msg::Ping(0, r), ASK).await?;

    println!(
        "## Cluster sharding: asks to sharded entities ({seconds} s per phase, loopback TCP)\n"
    );
    println!("| path | concurrent asks | asks/s | p50 µs | p99 µs | vs ceiling |");
    println!("|---|---:|---:|---:|---:|---:|");
    for clients in [1usize, 64] {
        let a = local_echo.clone();
        let (ceiling, mut lat) = closed_loop(seconds, clients, move |_, k| {
            let a = a.clone();
            async move { a.ask(|r| (k, r), ASK).await.expect("answer") }
        })
        .await?;
        row(
            "`ActorRef::ask`, same node (ceiling)",
            clients,
            ceiling,
            &mut lat,
            ceiling,
        );
        let refs: Arc<Vec<_>> = Arc::new(
            ids.iter()
                .map(|id| host.region.entity_ref(id.as_str()).expect("valid"))
                .collect(),
        );
        let (rate, mut lat) = closed_loop(seconds, clients, move |c, k| {
            let r = refs[c].clone();
            async move { r.ask(|r| Msg::Ping(k, r), ASK).await.expect("answer") }
        })
        .await?;
        row(
            "`EntityRef::ask`, entity on this node",
            clients,
            rate,
            &mut lat,
            ceiling,
        );
    }
    for clients in [1usize, 64] {
        let d = direct.clone();
        let (ceiling, mut lat) = closed_loop(seconds, clients, move |_, k| {
            let d = d.clone();
            async move { d.ask(|r| Msg::Ping(k, r), ASK).await.expect("answer") }
        })
        .await?;
        row(
            "`RemoteRef::ask` to the actor's node (ceiling)",
            clients,
            ceiling,
            &mut lat,
            ceiling,
        );
        let refs: Arc<Vec<_>> = Arc::new(
            ids.iter()
                .map(|id| caller.region.entity_ref(id.as_str()).expect("valid"))
                .collect(),
        );
        let (rate, mut lat) = closed_loop(seconds, clients, move |c, k| {
            let r = refs[c].clone();
            async move { r.ask(|r| Msg::Ping(k, r), ASK).await.expect("answer") }
        })
        .await?;
        row(
            "`EntityRef::ask` from a proxy node",
            clients,
            rate,
            &mut lat,
            ceiling,
        );
    }
    println!();
    for n in [caller, host] {
        n.cluster.stop();
        n.system.shutdown().await;
        n.remote.shutdown().await;
    }
    Ok(())
}

fn row(path: &str, clients: usize, rate: f64, lat: &mut Latencies, ceiling: f64) {
    println!(
        "| {path} | {clients} | {rate:.0} | {:.1} | {:.1} | {:.0} % |",
        lat.percentile_ms(50.0) * 1000.0,
        lat.percentile_ms(99.0) * 1000.0,
        100.0 * rate / ceiling
    );
}
