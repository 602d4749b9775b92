//! `GET /cluster/shards/{type}` over real HTTP, answered by an in-process node running
//! sharding (in-memory transport and store, real membership and coordinator).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props};
use shoal_cluster::{Cluster, ClusterConfig, MemberStatus, RemoteLink};
use shoal_persistence::memory::MemoryStore;
use shoal_remote::{ClusterSecret, EndpointConfig, MemoryNetwork, Remote, RemoteReplyTo};
use shoal_sharding::{Entity, EntityContext, ShardRegion, Sharding, ShardingSettings};
use shoal_testkit::HttpClient;

const WAIT: Duration = Duration::from_secs(30);

/// `GET path` (bounded by the testkit client's deadline) and its JSON answer.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    let reply = HttpClient::new(addr).get(path).await;
    (reply.status, reply.json())
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping(RemoteReplyTo<()>);

struct Pong;

impl Actor for Pong {
    type Msg = Ping;

    async fn handle(&mut self, _: &mut Context<Self>, Ping(reply): Ping) -> Result<(), ActorError> {
        reply.send(());
        Ok(())
    }
}

struct Node {
    remote: Remote,
    cluster: Cluster,
    region: ShardRegion<Ping>,
    management: SocketAddr,
}

/// A node joining `seeds` (itself when empty), with the sharded type `Counter` and
/// management serving shards.
async fn node(net: &MemoryNetwork, seeds: &[SocketAddr]) -> Node {
    let config = EndpointConfig::new("management-test", ClusterSecret::new("0123456789abcdef"));
    let remote = Remote::bind(net.transport(), "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let seeds = if seeds.is_empty() {
        vec![remote.local().addr]
    } else {
        seeds.to_vec()
    };
    let (link, inbox) = RemoteLink::register(&remote, 4096).unwrap();
    let cluster = Cluster::start(
        ClusterConfig {
            seed_nodes: seeds,
            seed_node_timeout: Duration::from_millis(500),
            join_retry_interval: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(100),
            tick_interval: Duration::from_millis(20),
            ..ClusterConfig::default()
        },
        remote.local(),
        Arc::new(link),
        inbox,
        None,
        remote.local().incarnation,
    )
    .unwrap();
    let system = ActorSystem::new("node");
    let sharding = Sharding::new(&cluster, &remote, &system, Arc::new(MemoryStore::new()));
    let region = sharding
        .init(
            Entity::new("Counter", |_: EntityContext<Ping>| Props::new(|| Pong)).with_settings(
                ShardingSettings {
                    number_of_shards: 20,
                    retry_interval: Duration::from_millis(200),
                    ..ShardingSettings::default()
                },
            ),
        )
        .unwrap();
    let management = shoal_management::serve_with_sharding(
        "127.0.0.1:0".parse().unwrap(),
        cluster.state(),
        sharding,
    )
    .await
    .unwrap();
    Node {
        remote,
        cluster,
        region,
        management,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_show_regions_shards_and_entity_counts() {
    let net = MemoryNetwork::new();
    let a = node(&net, &[]).await;
    let b = node(&net, &[a.remote.local().addr]).await;
    for n in [&a, &b] {
        let mut state = n.cluster.state();
        let up = state.wait_for(|s| {
            s.converged
                && s.members.len() == 2
                && s.members.iter().all(|m| m.status == MemberStatus::Up)
        });
        assert!(matches!(tokio::time::timeout(WAIT, up).await, Ok(Ok(_))));
    }

    let ids: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let mut shards = BTreeSet::new();
    for id in &ids {
        let entity = a.region.entity_ref(id.as_str()).unwrap();
        shards.insert(a.region.shard_of(entity.entity_id()).to_string());
        entity.ask(Ping, WAIT).await.unwrap();
    }

    // Asked from the node that sent nothing: both regions, every shard, every entity.
    let (code, body) = get(b.management, "/cluster/shards/Counter").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["type"], "Counter");
    let regions = body["regions"].as_array().unwrap();
    let nodes: BTreeSet<(String, u64)> = [&a, &b]
        .iter()
        .map(|n| {
            (
                n.remote.local().addr.to_string(),
                n.remote.local().incarnation,
            )
        })
        .collect();
    let listed_nodes: BTreeSet<(String, u64)> = regions
        .iter()
        .map(|r| {
            let address = r["address"].as_str().unwrap().to_owned();
            (address, r["incarnation"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(listed_nodes, nodes, "{body}");
    assert!(
        regions.iter().all(|r| r["reachable"] == json!(true)),
        "{body}"
    );
    let listed: Vec<&Value> = regions
        .iter()
        .flat_map(|r| r["shards"].as_array().unwrap())
        .collect();
    let listed_ids: BTreeSet<String> = listed
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed_ids, shards, "{body}");
    assert_eq!(listed.len(), shards.len(), "a shard in two regions: {body}");
    let entities: u64 = listed.iter().map(|s| s["entities"].as_u64().unwrap()).sum();
    assert_eq!(entities, ids.len() as u64, "{body}");

    let (code, body) = get(a.management, "/cluster/shards/Nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("Nope"), "{body}");
    let (code, _) = get(a.management, "/cluster/members").await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_unavailable_while_no_coordinator_answers() {
    let net = MemoryNetwork::new();
    // Its only seed does not exist: the node never joins, so no coordinator ever runs.
    let lonely = node(&net, &["127.0.0.1:1".parse().unwrap()]).await;
    let (code, body) = get(lonely.management, "/cluster/shards/Counter").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Counter"),
        "{body}"
    );
}

#[tokio::test]
async fn without_sharding_the_route_is_not_served() {
    let (_tx, rx) = tokio::sync::watch::channel(shoal_cluster::ClusterState {
        self_node: shoal_cluster::UniqueAddress::new("127.0.0.1:2551".parse().unwrap(), 1),
        self_status: None,
        members: vec![],
        unreachable: BTreeSet::new(),
        leader: None,
        converged: false,
        terminated: false,
    });
    let addr = shoal_management::serve("127.0.0.1:0".parse().unwrap(), rx)
        .await
        .unwrap();
    let (code, body) = get(addr, "/cluster/shards/Counter").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}
