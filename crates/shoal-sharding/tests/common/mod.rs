//! Shared by the sharding integration tests: in-process nodes (real remotes over the
//! in-memory transport, real cluster membership with fast timings, singletons, one shared
//! in-memory store — what PostgreSQL is for real nodes) and a registry of every entity start
//! and stop.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props, StopReason};
use shoal_cluster::{
    Cluster, ClusterConfig, ClusterState, MemberStatus, RemoteLink, UniqueAddress,
};
use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::Store;
use shoal_persistence::{
    Effect, EntityContext as PersistenceContext, EntitySettings, Event, EventSourced, Persistence,
};
use shoal_remote::{ClusterSecret, EndpointConfig, MemoryNetwork, Remote, RemoteReplyTo};
use shoal_sharding::{Entity, EntityContext, ShardRegion, Sharding, ShardingSettings};

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const ASK: Duration = Duration::from_secs(10);

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn fast(seeds: &[SocketAddr]) -> ClusterConfig {
    ClusterConfig::scaled_for_tests(seeds)
}

pub(crate) fn settings() -> ShardingSettings {
    ShardingSettings {
        number_of_shards: 30,
        retry_interval: ms(200),
        rebalance_interval: ms(500),
        removal_margin: ms(600),
        hand_off_timeout: ms(3000),
        ..ShardingSettings::default()
    }
}

// ---- a plain actor entity that tells where it runs ----

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) running: BTreeMap<String, Vec<UniqueAddress>>,
    pub(crate) starts: BTreeMap<String, usize>,
    pub(crate) max_copies: usize,
    /// `ProbeMsg::Seen` numbers as each entity received them, by entity and sender.
    pub(crate) seen: BTreeMap<(String, u32), Vec<u64>>,
}

impl Registry {
    /// Records that `id` started on `node`.
    pub(crate) fn started(&mut self, id: &str, node: UniqueAddress) {
        let copies = self.running.entry(id.to_owned()).or_default();
        copies.push(node);
        let n = copies.len();
        self.max_copies = self.max_copies.max(n);
        *self.starts.entry(id.to_owned()).or_default() += 1;
    }

    /// Records that `id` stopped on `node`.
    pub(crate) fn stopped(&mut self, id: &str, node: UniqueAddress) {
        let copies = self.running.get_mut(id).expect("started");
        let at = copies
            .iter()
            .position(|n| *n == node)
            .expect("running here");
        copies.remove(at);
    }
}

pub(crate) type Shared = Arc<Mutex<Registry>>;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ProbeMsg {
    Where(RemoteReplyTo<UniqueAddress>),
    /// Recorded in the registry: the `seq`-th message from `sender`.
    Seen {
        sender: u32,
        seq: u64,
    },
}

pub(crate) struct Probe {
    pub(crate) id: String,
    pub(crate) node: UniqueAddress,
    pub(crate) registry: Shared,
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        self.registry.lock().unwrap().started(&self.id, self.node);
        Ok(())
    }

    async fn handle(&mut self, _: &mut Context<Self>, msg: ProbeMsg) -> Result<(), ActorError> {
        match msg {
            ProbeMsg::Where(reply) => {
                reply.send(self.node);
            }
            ProbeMsg::Seen { sender, seq } => {
                let mut registry = self.registry.lock().unwrap();
                let seen = registry.seen.entry((self.id.clone(), sender)).or_default();
                seen.push(seq);
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _: &mut Context<Self>, _: &StopReason) {
        self.registry.lock().unwrap().stopped(&self.id, self.node);
    }
}

// ---- an event-sourced counter ----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CounterCmd {
    Add(RemoteReplyTo<u64>),
    Get(RemoteReplyTo<(u64, UniqueAddress)>),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Added;

impl Event for Added {
    const MANIFEST: &'static str = "Added";
}

pub(crate) struct Counter {
    pub(crate) node: UniqueAddress,
}

impl EventSourced for Counter {
    type Command = CounterCmd;
    type Event = Added;
    type State = u64;
    const TYPE_NAME: &'static str = "Counter";

    fn on_command(&self, _: &PersistenceContext, state: &u64, cmd: CounterCmd) -> Effect<Self> {
        match cmd {
            CounterCmd::Add(reply) => Effect::persist(Added).then_reply(reply, |s: &u64| *s),
            CounterCmd::Get(reply) => Effect::reply(reply, (*state, self.node)),
        }
    }

    fn on_event(state: &mut u64, _: &Added) {
        *state += 1;
    }
}

// ---- nodes ----

pub(crate) struct Node {
    pub(crate) cluster: Cluster,
    pub(crate) remote: Remote,
    pub(crate) system: ActorSystem,
    pub(crate) sharding: Sharding,
    pub(crate) probes: ShardRegion<ProbeMsg>,
    pub(crate) counters: ShardRegion<CounterCmd>,
}

impl Node {
    pub(crate) fn me(&self) -> UniqueAddress {
        self.remote.local()
    }

    pub(crate) async fn crash(self) {
        self.cluster.stop();
        self.remote.shutdown().await;
        self.system.shutdown().await;
    }
}

pub(crate) struct Setup {
    pub(crate) net: MemoryNetwork,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Shared,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) settings: ShardingSettings,
}

impl Setup {
    pub(crate) fn new(settings: ShardingSettings) -> Self {
        Setup {
            net: MemoryNetwork::new(),
            store: Arc::new(MemoryStore::new()),
            registry: Shared::default(),
            seeds: Vec::new(),
            settings,
        }
    }

    pub(crate) async fn node(&mut self) -> Node {
        let config = EndpointConfig::new("sharding-test", ClusterSecret::new("0123456789abcdef"));
        let remote = Remote::bind(self.net.transport(), "127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        if self.seeds.is_empty() {
            self.seeds.push(remote.local().addr);
        }
        let (link, inbox) = RemoteLink::register(&remote, 4096).unwrap();
        let cluster = Cluster::start(
            fast(&self.seeds),
            remote.local(),
            Arc::new(link),
            inbox,
            None,
            remote.local().incarnation,
        )
        .unwrap();
        let system = ActorSystem::new("node");
        let sharding = Sharding::new(&cluster, &remote, &system, self.store.clone());
        let (me, registry) = (remote.local(), self.registry.clone());
        let probes = sharding
            .init(
                Entity::new("Probe", move |ctx: EntityContext<ProbeMsg>| {
                    let (id, registry) = (ctx.entity_id().to_string(), registry.clone());
                    Props::new(move || Probe {
                        id: id.clone(),
                        node: me,
                        registry: registry.clone(),
                    })
                })
                .with_settings(self.settings.clone()),
            )
            .unwrap();
        let persistence = Persistence::new(self.store.clone());
        let counters = sharding
            .init(
                Entity::event_sourced(
                    &persistence,
                    move |_: &EntityContext<CounterCmd>| Counter { node: me },
                    EntitySettings::default(),
                )
                .with_settings(self.settings.clone()),
            )
            .unwrap();
        Node {
            cluster,
            remote,
            system,
            sharding,
            probes,
            counters,
        }
    }

    pub(crate) async fn nodes(&mut self, n: usize) -> Vec<Node> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(self.node().await);
        }
        for node in &nodes {
            wait(node, "all up", all_up(n)).await;
        }
        nodes
    }
}

pub(crate) async fn wait(node: &Node, what: &str, pred: impl FnMut(&ClusterState) -> bool) {
    let mut state = node.cluster.state();
    let reached = matches!(
        tokio::time::timeout(WAIT, state.wait_for(pred)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "{}: {what} not reached: {:?}",
        node.me(),
        *state.borrow()
    );
}

pub(crate) fn all_up(n: usize) -> impl FnMut(&ClusterState) -> bool {
    move |s| {
        s.converged
            && s.unreachable.is_empty()
            && s.members.len() == n
            && s.members.iter().all(|m| m.status == MemberStatus::Up)
    }
}

pub(crate) async fn where_is(node: &Node, id: &str) -> UniqueAddress {
    node.probes
        .entity_ref(id)
        .unwrap()
        .ask(ProbeMsg::Where, ASK)
        .await
        .unwrap_or_else(|e| panic!("{id} from {}: {e}", node.me()))
}

pub(crate) async fn get(node: &Node, id: &str) -> (u64, UniqueAddress) {
    node.counters
        .entity_ref(id)
        .unwrap()
        .ask(CounterCmd::Get, ASK)
        .await
        .unwrap_or_else(|e| panic!("{id} from {}: {e}", node.me()))
}
