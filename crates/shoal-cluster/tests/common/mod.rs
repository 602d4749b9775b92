//! A deterministic multi-node harness for the membership core: nodes are `Membership` cores,
//! the network is a FIFO queue with cuttable links and zero latency, time advances in ticks.
//! No threads, no clocks, no I/O: a run is a pure function of its inputs.

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::FutureExt;
use shoal_cluster::sbr::{InMemoryLease, Lease};
use shoal_cluster::{
    ClusterConfig, ClusterEvent, ClusterMessage, Effect, Input, Member, MemberStatus, Membership,
    ShutdownReason, Timestamp, UniqueAddress,
};

/// Messages one step may deliver before the harness calls it a storm.
const MAX_MESSAGES_PER_STEP: usize = 100_000;

pub(crate) fn addr(i: u16) -> SocketAddr {
    format!("127.0.0.1:{}", 2550 + i).parse().unwrap()
}

/// Node `i`, incarnation 1.
pub(crate) fn n(i: u16) -> UniqueAddress {
    UniqueAddress::new(addr(i), 1)
}

enum Destination {
    Node(UniqueAddress),
    Address(SocketAddr),
}

pub(crate) struct SimNode {
    pub(crate) core: Membership,
    pub(crate) alive: bool,
    pub(crate) events: Vec<(Duration, ClusterEvent)>,
    pub(crate) shutdown: Option<(Duration, ShutdownReason)>,
    /// Highest status seen per member, and members seen removed: the no-backwards check.
    highest: BTreeMap<UniqueAddress, MemberStatus>,
    removed: BTreeSet<UniqueAddress>,
}

pub(crate) struct Sim {
    pub(crate) now: Duration,
    pub(crate) tick: Duration,
    pub(crate) nodes: BTreeMap<UniqueAddress, SimNode>,
    queue: VecDeque<(UniqueAddress, Destination, ClusterMessage)>,
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    pub(crate) lease: InMemoryLease,
    pub(crate) delivered: usize,
}

impl Sim {
    pub(crate) fn new() -> Self {
        Sim {
            now: Duration::ZERO,
            tick: ClusterConfig::default().tick_interval,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            lease: InMemoryLease::new(),
            delivered: 0,
        }
    }

    /// Start node `id` (any incarnation) with `config`, joining through `config.seed_nodes`.
    pub(crate) fn start(&mut self, id: UniqueAddress, config: ClusterConfig, seed: u64) {
        let seeds = config.seed_nodes.clone();
        let core = Membership::new(config, id, seed).expect("valid config");
        self.nodes.insert(
            id,
            SimNode {
                core,
                alive: true,
                events: Vec::new(),
                shutdown: None,
                highest: BTreeMap::new(),
                removed: BTreeSet::new(),
            },
        );
        if !seeds.is_empty() {
            self.input(id, Input::JoinSeedNodes(seeds));
        }
    }

    /// Feed `input` to node `id` now and carry out the effects.
    pub(crate) fn input(&mut self, id: UniqueAddress, input: Input) {
        let now = Timestamp::from_duration(self.now);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.alive {
            return;
        }
        let effects = node.core.handle(now, input);
        self.apply(id, effects);
        self.check_no_backwards(id);
    }

    fn apply(&mut self, id: UniqueAddress, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, message } => {
                    self.queue.push_back((id, Destination::Node(to), message))
                }
                Effect::SendToAddress { to, message } => {
                    self.queue
                        .push_back((id, Destination::Address(to), message))
                }
                Effect::Publish(event) => {
                    let now = self.now;
                    self.nodes.get_mut(&id).unwrap().events.push((now, event));
                }
                Effect::AcquireLease => {
                    let owner = id.to_string();
                    let granted = self
                        .lease
                        .acquire(&owner)
                        .now_or_never()
                        .unwrap()
                        .unwrap_or(false);
                    self.input(id, Input::LeaseResult { granted });
                }
                Effect::ReleaseLease => {
                    let owner = id.to_string();
                    let _ = self.lease.release(&owner).now_or_never();
                }
                Effect::Shutdown(reason) => {
                    let node = self.nodes.get_mut(&id).unwrap();
                    node.shutdown = Some((self.now, reason));
                    node.alive = false;
                }
            }
        }
    }

    fn check_no_backwards(&mut self, id: UniqueAddress) {
        let node = self.nodes.get_mut(&id).unwrap();
        let live: BTreeMap<UniqueAddress, MemberStatus> = node
            .core
            .gossip()
            .members()
            .map(|m| (m.address, m.status))
            .collect();
        for (member, status) in &live {
            assert!(
                !node.removed.contains(member),
                "{id}: removed member {member} came back as {status}"
            );
            let highest = node.highest.entry(*member).or_insert(*status);
            assert!(
                *status >= *highest,
                "{id}: {member} moved back from {highest} to {status}"
            );
            *highest = *status;
        }
        let gone: Vec<UniqueAddress> = node
            .highest
            .keys()
            .filter(|m| !live.contains_key(m))
            .copied()
            .collect();
        for m in gone {
            node.highest.remove(&m);
            node.removed.insert(m);
        }
    }

    fn live_incarnation_at(&self, addr: SocketAddr) -> Option<UniqueAddress> {
        self.nodes
            .iter()
            .find(|(id, n)| id.addr == addr && n.alive)
            .map(|(id, _)| *id)
    }

    fn link_up(&self, a: SocketAddr, b: SocketAddr) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Deliver everything in flight (and what that causes) at the current instant.
    pub(crate) fn deliver(&mut self) {
        let mut count = 0;
        while let Some((from, to, message)) = self.queue.pop_front() {
            count += 1;
            assert!(
                count < MAX_MESSAGES_PER_STEP,
                "message storm at {:?}",
                self.now
            );
            let target = match to {
                Destination::Node(node) => Some(node),
                Destination::Address(addr) => self.live_incarnation_at(addr),
            };
            let Some(target) = target else { continue };
            if !self.link_up(from.addr, target.addr) {
                continue;
            }
            self.delivered += 1;
            self.input(target, Input::Received { from, message });
        }
    }

    /// One tick: deliver, tick every live node (in address order), deliver.
    pub(crate) fn step(&mut self) {
        self.deliver();
        let ids: Vec<UniqueAddress> = self.nodes.keys().copied().collect();
        for id in ids {
            self.input(id, Input::Tick);
        }
        self.deliver();
        self.now += self.tick;
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Run until `pred` holds (checked after every step); panics after `limit`.
    pub(crate) fn run_until(&mut self, limit: Duration, pred: impl Fn(&Sim) -> bool) -> Duration {
        let start = self.now;
        while !pred(self) {
            assert!(
                self.now - start < limit,
                "condition not reached within {limit:?}"
            );
            self.step();
        }
        self.now
    }

    pub(crate) fn kill(&mut self, id: UniqueAddress) {
        self.nodes.get_mut(&id).unwrap().alive = false;
    }

    /// Cut every link between the two groups (both directions).
    pub(crate) fn partition(&mut self, a: &[UniqueAddress], b: &[UniqueAddress]) {
        for x in a {
            for y in b {
                self.cut.insert((x.addr.min(y.addr), x.addr.max(y.addr)));
            }
        }
    }

    pub(crate) fn heal_all(&mut self) {
        self.cut.clear();
    }

    pub(crate) fn node(&self, id: UniqueAddress) -> &SimNode {
        &self.nodes[&id]
    }

    /// The live members as `id` sees them.
    pub(crate) fn members_of(&self, id: UniqueAddress) -> Vec<Member> {
        self.node(id).core.state().members
    }

    /// Every node in `ids` is alive, sees exactly `ids` as `Up` members, reachable, and
    /// agrees on the leader, with converged gossip.
    pub(crate) fn converged_on(&self, ids: &[UniqueAddress]) -> bool {
        let expected: BTreeSet<UniqueAddress> = ids.iter().copied().collect();
        let mut leaders = BTreeSet::new();
        for id in ids {
            let node = self.node(*id);
            if !node.alive {
                return false;
            }
            let state = node.core.state();
            let up: BTreeSet<UniqueAddress> = state
                .members
                .iter()
                .filter(|m| m.status == MemberStatus::Up)
                .map(|m| m.address)
                .collect();
            if up != expected
                || state.members.len() != ids.len()
                || !state.unreachable.is_empty()
                || !state.converged
            {
                return false;
            }
            leaders.insert(state.leader);
        }
        leaders.len() == 1
    }

    /// When `observer` published the removal of `subject`, if it did.
    pub(crate) fn removed_at(
        &self,
        observer: UniqueAddress,
        subject: UniqueAddress,
    ) -> Option<Duration> {
        self.node(observer)
            .events
            .iter()
            .find_map(|(at, e)| match e {
                ClusterEvent::MemberRemoved { member, .. } if member.address == subject => {
                    Some(*at)
                }
                _ => None,
            })
    }
}

/// Settings for node `i` of a cluster seeded by nodes `seeds`.
pub(crate) fn config(seeds: &[u16]) -> ClusterConfig {
    ClusterConfig {
        seed_nodes: seeds.iter().map(|s| addr(*s)).collect(),
        ..ClusterConfig::default()
    }
}

/// Start nodes `1..=size` with the first three (or fewer) as seeds and run until they form
/// one converged cluster.
pub(crate) fn formed_cluster(size: u16, config_of: impl Fn(u16) -> ClusterConfig) -> Sim {
    let mut sim = Sim::new();
    for i in 1..=size {
        sim.start(n(i), config_of(i), u64::from(i));
    }
    let ids: Vec<UniqueAddress> = (1..=size).map(n).collect();
    sim.run_until(Duration::from_secs(30), |s| s.converged_on(&ids));
    sim
}
