//! Cluster singletons over the in-memory transport: real tasks, endpoints, remotes and actor
//! systems, fast timings. A shared registry records every start and stop of every instance,
//! so the tests check "at most one running" across the whole run, not just at the end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props, StopReason};
use shoal_cluster::{
    Cluster, ClusterConfig, ClusterSingleton, ClusterState, MemberStatus, RemoteLink,
    SingletonProxy, SingletonSettings, UniqueAddress,
};
use shoal_remote::{ClusterSecret, EndpointConfig, MemoryNetwork, Remote, RemoteReplyTo};

const WAIT: Duration = Duration::from_secs(30);
/// One attempt of `answer_from`: an ask that went to a singleton just as it stopped is lost
/// (at most once) and times out; the next attempt finds the new one.
const ASK: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fast(seeds: &[SocketAddr], roles: &[&str]) -> ClusterConfig {
    ClusterConfig {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..ClusterConfig::scaled_for_tests(seeds)
    }
}

fn settings() -> SingletonSettings {
    // The margin matches the scaled-down resolver's stable_after.
    SingletonSettings::new("counter").with_removal_margin(ms(600))
}

/// Every start and stop of every singleton instance, with the number running after it.
#[derive(Default)]
struct Registry {
    running: Vec<UniqueAddress>,
    starts: Vec<UniqueAddress>,
    max_running: usize,
}

type Shared = Arc<Mutex<Registry>>;

#[derive(Debug, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get(RemoteReplyTo<(UniqueAddress, u64)>),
}

struct Counter {
    node: UniqueAddress,
    value: u64,
    registry: Shared,
}

impl Actor for Counter {
    type Msg = CounterMsg;

    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        let mut r = self.registry.lock().unwrap();
        r.running.push(self.node);
        r.starts.push(self.node);
        r.max_running = r.max_running.max(r.running.len());
        Ok(())
    }

    async fn handle(&mut self, _: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.value += n,
            CounterMsg::Get(reply) => {
                reply.send((self.node, self.value));
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _: &mut Context<Self>, _: &StopReason) {
        let mut r = self.registry.lock().unwrap();
        let at = r.running.iter().position(|n| *n == self.node);
        r.running.remove(at.expect("a running instance stops once"));
    }
}

struct Node {
    cluster: Cluster,
    remote: Remote,
    system: ActorSystem,
    proxy: SingletonProxy<CounterMsg>,
}

impl Node {
    fn me(&self) -> UniqueAddress {
        self.cluster.self_node()
    }

    /// What a crash looks like to the others: everything stops at once, nothing is said.
    async fn crash(self) {
        self.cluster.stop();
        self.remote.shutdown().await;
        self.system.shutdown().await;
    }
}

async fn bind(net: &MemoryNetwork) -> Remote {
    let config = EndpointConfig::new("singleton-test", ClusterSecret::new("0123456789abcdef"));
    Remote::bind(net.transport(), "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// `roles[i]` are node i's roles; the first node is the only seed, so it becomes `Up` first
/// and is the oldest.
async fn start(
    net: &MemoryNetwork,
    roles: &[&[&str]],
    registry: &Shared,
    settings: SingletonSettings,
) -> Vec<Node> {
    let mut remotes = Vec::new();
    for _ in roles {
        remotes.push(bind(net).await);
    }
    let seeds = vec![remotes[0].local().addr];
    let mut nodes = Vec::new();
    for (i, remote) in remotes.into_iter().enumerate() {
        let (link, inbox) = RemoteLink::register(&remote, 4096).unwrap();
        let cluster = Cluster::start(
            fast(&seeds, roles[i]),
            remote.local(),
            Arc::new(link),
            inbox,
            None,
            i as u64,
        )
        .unwrap();
        let system = ActorSystem::new(&format!("node-{i}"));
        let (node, reg) = (remote.local(), registry.clone());
        let proxy =
            ClusterSingleton::start(&cluster, &remote, &system, settings.clone(), move || {
                let registry = reg.clone();
                Props::new(move || Counter {
                    node,
                    value: 0,
                    registry: registry.clone(),
                })
            })
            .unwrap();
        nodes.push(Node {
            cluster,
            remote,
            system,
            proxy,
        });
        if i == 0 {
            // Let the first seed form the cluster alone, so it is the oldest.
            wait(&nodes[0], "first node up", |s| {
                s.self_status == Some(MemberStatus::Up)
            })
            .await;
        }
    }
    nodes
}

async fn wait(node: &Node, what: &str, pred: impl FnMut(&ClusterState) -> bool) {
    let mut state = node.cluster.state();
    let reached = matches!(
        tokio::time::timeout(WAIT, state.wait_for(pred)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "{}: {what} not reached; state: {:?}",
        node.me(),
        *state.borrow()
    );
}

/// The oldest member among `among`, as `node` sees it: where the singleton goes next.
fn oldest_of(node: &Node, among: &[UniqueAddress]) -> UniqueAddress {
    let state = node.cluster.state().borrow().clone();
    state
        .members
        .iter()
        .filter(|m| among.contains(&m.address))
        .min_by(|a, b| a.age_cmp(b))
        .expect("listed")
        .address
}

fn all_up(n: usize) -> impl FnMut(&ClusterState) -> bool {
    move |s| {
        s.converged
            && s.unreachable.is_empty()
            && s.members.len() == n
            && s.members.iter().all(|m| m.status == MemberStatus::Up)
    }
}

/// Ask through `proxy` until the singleton answers from `expected` (it may still be moving).
async fn answer_from(proxy: &SingletonProxy<CounterMsg>, expected: UniqueAddress) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((node, value)) = proxy.ask(CounterMsg::Get, ASK).await
            && node == expected
        {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the singleton never answered from {expected}"
        );
        tokio::time::sleep(ms(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_singleton_on_the_oldest_node_reached_from_every_proxy() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let nodes = start(&net, &[&[], &[], &[]], &registry, settings()).await;
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let oldest = nodes[0].me();
    for (i, node) in nodes.iter().enumerate() {
        node.proxy.tell(CounterMsg::Add(i as u64 + 1)).unwrap();
    }
    // Tells from each proxy arrive (at most once, but nothing is lost on a healthy cluster).
    let deadline = tokio::time::Instant::now() + WAIT;
    while answer_from(&nodes[2].proxy, oldest).await != 6 {
        assert!(tokio::time::Instant::now() < deadline, "tells were lost");
        tokio::time::sleep(ms(20)).await;
    }
    for node in &nodes {
        assert_eq!(answer_from(&node.proxy, oldest).await, 6);
        assert_eq!(node.proxy.location(), Some(oldest));
    }
    let r = registry.lock().unwrap();
    assert_eq!(r.starts, vec![oldest]);
    assert_eq!(r.max_running, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_told_before_the_singleton_exists_are_buffered_and_delivered() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let remote = bind(&net).await;
    let (link, inbox) = RemoteLink::register(&remote, 4096).unwrap();
    // Not joined yet: no singleton anywhere.
    let cluster = Cluster::start(
        fast(&[], &[]),
        remote.local(),
        Arc::new(link),
        inbox,
        None,
        1,
    )
    .unwrap();
    let system = ActorSystem::new("alone");
    let (me, reg) = (remote.local(), registry.clone());
    let proxy = ClusterSingleton::start(&cluster, &remote, &system, settings(), move || {
        let registry = reg.clone();
        Props::new(move || Counter {
            node: me,
            value: 0,
            registry: registry.clone(),
        })
    })
    .unwrap();
    for _ in 0..10 {
        proxy.tell(CounterMsg::Add(1)).unwrap();
    }
    tokio::time::sleep(ms(200)).await;
    assert!(registry.lock().unwrap().starts.is_empty());
    assert_eq!(proxy.location(), None);
    cluster.join(me.addr);
    assert_eq!(answer_from(&proxy, me).await, 10);
    assert_eq!(proxy.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_oldest_hands_over_to_the_next_oldest() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let nodes = start(&net, &[&[], &[], &[]], &registry, settings()).await;
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let first = nodes[0].me();
    let second = oldest_of(&nodes[0], &[nodes[1].me(), nodes[2].me()]);
    nodes[0].proxy.tell(CounterMsg::Add(5)).unwrap();
    // Asked through the proxy that sent the Add (another node's Get could overtake it).
    assert_eq!(answer_from(&nodes[0].proxy, first).await, 5);

    nodes[1].cluster.leave(first.addr);
    let value = answer_from(&nodes[2].proxy, second).await;
    assert_eq!(
        value, 0,
        "a new instance (state lives in persistence, not here)"
    );
    for node in &nodes[1..] {
        wait(node, "the old oldest removed", |s| {
            s.members.iter().all(|m| m.address != first)
        })
        .await;
    }
    let r = registry.lock().unwrap();
    assert_eq!(r.starts, vec![first, second]);
    assert_eq!(r.max_running, 1, "never two at once during the hand-over");
    assert_eq!(r.running, vec![second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_oldest_is_replaced_after_it_is_removed() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let mut nodes = start(&net, &[&[], &[], &[]], &registry, settings()).await;
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let first = nodes[0].me();
    let second = oldest_of(&nodes[0], &[nodes[1].me(), nodes[2].me()]);
    assert_eq!(answer_from(&nodes[2].proxy, first).await, 0);
    nodes.remove(0).crash().await;
    assert_eq!(answer_from(&nodes[1].proxy, second).await, 0);
    assert_eq!(answer_from(&nodes[0].proxy, second).await, 0);
    let r = registry.lock().unwrap();
    assert_eq!(r.starts, vec![first, second]);
    // The crashed instance's stop hook ran when its system shut down, after the crash.
    assert_eq!(r.running, vec![second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_oldest_stops_before_the_majority_starts_another() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let nodes = start(&net, &[&[], &[], &[], &[], &[]], &registry, settings()).await;
    for node in &nodes {
        wait(node, "5 up", all_up(5)).await;
    }
    let oldest = nodes[0].me();
    let majority: Vec<_> = nodes[2..].iter().map(Node::me).collect();
    let third = oldest_of(&nodes[0], &majority);
    assert_eq!(answer_from(&nodes[4].proxy, oldest).await, 0);
    // {0, 1} | {2, 3, 4}: keep-majority downs the minority, which downs itself.
    for a in &nodes[..2] {
        for b in &nodes[2..] {
            net.cut(a.me().addr, b.me().addr);
        }
    }
    assert_eq!(answer_from(&nodes[4].proxy, third).await, 0);
    let mut stopped = nodes[0].cluster.stopped();
    let downed = tokio::time::timeout(WAIT, stopped.wait_for(Option::is_some)).await;
    assert!(matches!(downed, Ok(Ok(_))), "the minority downed itself");
    let r = registry.lock().unwrap();
    assert_eq!(r.starts, vec![oldest, third]);
    assert_eq!(
        r.max_running, 1,
        "the minority's singleton stopped before the majority started its own"
    );
    assert_eq!(r.running, vec![third]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_limits_where_it_runs_and_proxies_work_everywhere() {
    let net = MemoryNetwork::new();
    let registry = Shared::default();
    let settings = settings().with_role("worker");
    // Node 0 (the oldest) has no role: the singleton runs on the older worker.
    let nodes = start(&net, &[&[], &["worker"], &["worker"]], &registry, settings).await;
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let worker = oldest_of(&nodes[0], &[nodes[1].me(), nodes[2].me()]);
    for node in &nodes {
        assert_eq!(answer_from(&node.proxy, worker).await, 0);
    }
    assert_eq!(registry.lock().unwrap().starts, vec![worker]);
}

#[tokio::test]
async fn settings_out_of_range_are_refused() {
    let net = MemoryNetwork::new();
    let remote = bind(&net).await;
    let (link, inbox) = RemoteLink::register(&remote, 16).unwrap();
    let cluster = Cluster::start(
        fast(&[], &[]),
        remote.local(),
        Arc::new(link),
        inbox,
        None,
        1,
    )
    .unwrap();
    let mut s = settings();
    s.buffer_size = 0;
    let err = ClusterSingleton::proxy::<CounterMsg>(&cluster, &remote, s).unwrap_err();
    assert!(err.to_string().contains("buffer_size"), "{err}");
    let err = ClusterSingleton::proxy::<CounterMsg>(&cluster, &remote, SingletonSettings::new(""))
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}
