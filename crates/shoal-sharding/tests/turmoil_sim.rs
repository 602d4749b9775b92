//! Deterministic simulation of sharded, event-sourced entities with turmoil: every host runs
//! the real stack (`shoal_remote::Remote` over turmoil's simulated TCP, `RemoteLink`, the
//! `Cluster` runner, an `ActorSystem` and `Sharding` with an event-sourced counter entity) and
//! a client task that increments a few counters through entity refs. One `u64` seed drives
//! everything: the cluster size (3–5), the seed nodes, random partitions, crashes and
//! restarts (a restart is a new incarnation), then a fault-free phase.
//!
//! The journal is one shared `MemoryStore` **outside the simulation**: the database is always
//! reachable from every host, whatever the network between the hosts does (as PostgreSQL
//! reached over another network would be). Partitions and crashes only hit the hosts.
//!
//! Each increment's reply reports `(value, seq_nr, incarnation)`: the counter's value after
//! it, the sequence number of its event (the persistence `EntityContext`'s `seq_nr` + 1) and
//! the incarnation of the node that ran the entity. Every acknowledged increment is recorded
//! outside the simulation.
//!
//! * After **every** step: no `(entity, seq_nr)` was acknowledged twice — in particular never
//!   by two incarnations (two writers of one entity that both acknowledged the same slot).
//! * At the end (fault-free phase, cluster converged, clients quiet): every entity answers
//!   from every running host with the same value; that value equals the number of events in
//!   the journal (and its highest sequence number); every acknowledged `seq_nr` ≤ the value
//!   and each acknowledged increment's `seq_nr` is distinct: every acknowledged increment is
//!   in the journal.
//!
//! `SHOAL_SIM_SEED=<seed>` runs one seed (with `SHOAL_SIM_TRACE=1` the whole trace is
//! printed); a failure names its seed and the command that reproduces it;
//! `a_seed_reproduces_the_same_trace` runs a seed twice and compares every acknowledgement
//! and view change with its simulated time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_actor::ActorSystem;
use shoal_cluster::{Cluster, ClusterConfig, ClusterState, MemberStatus, RemoteLink};
use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::{Journal, PersistenceId, Store};
use shoal_persistence::{
    Effect, EntityContext as PersistenceContext, EntitySettings, Event, EventSourced, Persistence,
};
use shoal_remote::{ClusterSecret, EndpointConfig, Remote, RemoteReplyTo, TurmoilNetwork};
use shoal_sharding::{Entity, EntityContext, Sharding, ShardingSettings};

const PORT: u16 = 2552;
const STEP: Duration = Duration::from_millis(10);
/// How long convergence must hold to count (failure detection plus the largest reconnect
/// delay, as in the cluster simulation).
const STABLE: Duration = Duration::from_secs(12);
/// The counters the clients increment.
const ENTITIES: usize = 5;
/// Sharded-ask timeout (simulated time).
const ASK: Duration = Duration::from_secs(3);
/// The seeds run when `SHOAL_SIM_SEED` is not set (≈ 20–30 s in a debug build on two cores;
/// 1–40 all pass). In each, every counter is acknowledged by two or more incarnations (its
/// shard moves after crashes, downing and restarts).
const SEEDS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic RNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn host_name(i: usize) -> String {
    format!("n{i}")
}

fn entity_id(i: usize) -> String {
    format!("c{i}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- the entity ----

/// What the counter answers: its value, the sequence number of the (last) event, and the
/// incarnation of the node it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Ack {
    value: u64,
    seq_nr: u64,
    incarnation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum CounterCmd {
    Add(RemoteReplyTo<Ack>),
    Get(RemoteReplyTo<Ack>),
}

#[derive(Serialize, Deserialize)]
struct Added;

impl Event for Added {
    const MANIFEST: &'static str = "Added";
}

struct Counter {
    incarnation: u64,
}

impl EventSourced for Counter {
    type Command = CounterCmd;
    type Event = Added;
    type State = u64;
    const TYPE_NAME: &'static str = "Counter";

    fn on_command(&self, ctx: &PersistenceContext, state: &u64, cmd: CounterCmd) -> Effect<Self> {
        let incarnation = self.incarnation;
        match cmd {
            CounterCmd::Add(reply) => {
                let seq_nr = ctx.seq_nr + 1;
                Effect::persist(Added).then_reply(reply, move |value: &u64| Ack {
                    value: *value,
                    seq_nr,
                    incarnation,
                })
            }
            CounterCmd::Get(reply) => Effect::reply(
                reply,
                Ack {
                    value: *state,
                    seq_nr: ctx.seq_nr,
                    incarnation,
                },
            ),
        }
    }

    fn on_event(state: &mut u64, _: &Added) {
        *state += 1;
    }
}

// ---- shared with the driver (outside the simulation) ----

#[derive(Debug, Clone, PartialEq)]
struct Observed {
    state: ClusterState,
    stopped: bool,
}

/// Client phases: increment, stay quiet, read every counter.
const INCREMENT: u8 = 0;
const QUIET: u8 = 1;
const READ: u8 = 2;

#[derive(Default)]
struct Shared {
    views: BTreeMap<usize, Observed>,
    /// Acknowledged increments not yet checked by the driver: (entity, ack, client host).
    acks: Vec<(usize, Ack, usize)>,
    /// The final reads: (host, entity) → answer.
    reads: BTreeMap<(usize, usize), Ack>,
}

type Board = Arc<Mutex<Shared>>;

#[derive(Clone)]
struct HostSpec {
    index: usize,
    sim_seed: u64,
    net: TurmoilNetwork,
    cluster: ClusterConfig,
    board: Board,
    phase: Arc<AtomicU8>,
    store: Arc<MemoryStore>,
    restarts: Arc<AtomicU64>,
}

impl HostSpec {
    async fn run(self) -> Result<(), Box<dyn std::error::Error>> {
        let restart = self.restarts.fetch_add(1, Ordering::SeqCst);
        let incarnation = mix(self.sim_seed ^ ((self.index as u64) << 48) ^ restart) | 1;
        let ip = turmoil::lookup(host_name(self.index).as_str());
        let mut config =
            EndpointConfig::new("sharding-sim", ClusterSecret::new("0123456789abcdef"));
        config.incarnation = Some(incarnation);
        config.seed = mix(incarnation ^ 0xE);
        config.advertised_addr = Some(SocketAddr::new(ip, PORT));
        let remote = Remote::bind(
            self.net.transport(),
            SocketAddr::from(([0, 0, 0, 0], PORT)),
            config,
        )
        .await?;
        let (link, inbox) = RemoteLink::register(&remote, 4096)?;
        let cluster = Cluster::start(
            self.cluster.clone(),
            remote.local(),
            Arc::new(link),
            inbox,
            None,
            mix(incarnation ^ 0xC),
        )?;
        let system = ActorSystem::with_seed(&host_name(self.index), mix(incarnation ^ 0xA));
        let store: Arc<dyn Store> = self.store.clone();
        let sharding = Sharding::new(&cluster, &remote, &system, store.clone());
        let persistence = Persistence::new(store);
        let counters = sharding.init(
            Entity::event_sourced(
                &persistence,
                move |_: &EntityContext<CounterCmd>| Counter { incarnation },
                EntitySettings::default(),
            )
            .with_settings(ShardingSettings {
                number_of_shards: 10,
                ..ShardingSettings::default()
            }),
        )?;

        // The client: increments random counters, one ask at a time; then reads them all.
        let (board, phase, host) = (self.board.clone(), self.phase.clone(), self.index);
        let client = tokio::spawn(async move {
            let mut rng = Rng(mix(incarnation ^ 0x5));
            loop {
                match phase.load(Ordering::SeqCst) {
                    INCREMENT => {
                        let entity = rng.range(0, ENTITIES as u64) as usize;
                        let target = counters.entity_ref(entity_id(entity)).expect("valid id");
                        if let Ok(ack) = target.ask(CounterCmd::Add, ASK).await {
                            lock(&board).acks.push((entity, ack, host));
                        }
                        tokio::time::sleep(Duration::from_millis(rng.range(100, 400))).await;
                    }
                    QUIET => tokio::time::sleep(Duration::from_millis(100)).await,
                    _ => {
                        for entity in 0..ENTITIES {
                            if lock(&board).reads.contains_key(&(host, entity)) {
                                continue;
                            }
                            let target = counters.entity_ref(entity_id(entity)).expect("valid id");
                            if let Ok(ack) = target.ask(CounterCmd::Get, ASK).await {
                                lock(&board).reads.insert((host, entity), ack);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });

        let mut state = cluster.state();
        let mut stopped = cluster.stopped();
        loop {
            let observed = Observed {
                state: state.borrow_and_update().clone(),
                stopped: stopped.borrow_and_update().is_some(),
            };
            let done = observed.stopped;
            lock(&self.board).views.insert(self.index, observed);
            if done {
                break;
            }
            tokio::select! {
                biased;
                r = stopped.changed() => if r.is_err() { break },
                r = state.changed() => if r.is_err() { break },
            }
        }
        // A downed node: linger as a process finishing its shutdown, then exit (nothing of it
        // may keep running: turmoil leaves a finished host's tasks alive until a restart).
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.abort();
        remote.shutdown().await;
        system.shutdown().await;
        drop(sharding);
        drop(cluster);
        Ok(())
    }
}

struct Run<'a> {
    sim: turmoil::Sim<'a>,
    net: TurmoilNetwork,
    board: Board,
    phase: Arc<AtomicU8>,
    store: Arc<MemoryStore>,
    rng: Rng,
    nodes: usize,
    seed_hosts: usize,
    fault_phase: Duration,
    ips: Vec<IpAddr>,
    cuts: BTreeSet<(usize, usize)>,
    last: BTreeMap<usize, Observed>,
    /// Every acknowledged (entity, seq_nr) → its acknowledgement.
    acked: BTreeMap<(usize, u64), Ack>,
    trace: Vec<String>,
    print_trace: bool,
}

type Failure = String;

impl<'a> Run<'a> {
    fn new(seed: u64) -> Run<'a> {
        let mut rng = Rng(seed);
        let nodes = rng.range(3, 6) as usize;
        let seed_hosts = rng.range(1, 3) as usize;
        let fault_phase = Duration::from_secs(rng.range(20, 41));
        let sim = turmoil::Builder::new()
            .rng_seed(seed)
            .tick_duration(STEP)
            .simulation_duration(Duration::from_secs(3600))
            .build();
        let mut run = Run {
            sim,
            net: TurmoilNetwork::new(),
            board: Board::default(),
            phase: Arc::new(AtomicU8::new(INCREMENT)),
            store: Arc::new(MemoryStore::new()),
            rng,
            nodes,
            seed_hosts,
            fault_phase,
            ips: Vec::new(),
            cuts: BTreeSet::new(),
            last: BTreeMap::new(),
            acked: BTreeMap::new(),
            trace: Vec::new(),
            print_trace: std::env::var("SHOAL_SIM_TRACE").is_ok(),
        };
        let seeds = (0..seed_hosts)
            .map(|i| SocketAddr::new(run.sim.lookup(host_name(i)), PORT))
            .collect();
        let config = ClusterConfig {
            seed_nodes: seeds,
            ..ClusterConfig::default()
        };
        config.validate().expect("valid cluster config");
        for index in 0..nodes {
            let spec = HostSpec {
                index,
                sim_seed: seed,
                net: run.net.clone(),
                cluster: config.clone(),
                board: run.board.clone(),
                phase: run.phase.clone(),
                store: run.store.clone(),
                restarts: Arc::new(AtomicU64::new(0)),
            };
            run.sim.host(host_name(index), move || spec.clone().run());
        }
        run.ips = (0..nodes).map(|i| run.sim.lookup(host_name(i))).collect();
        run.log(format!(
            "{nodes} nodes, seed nodes n0..n{}, fault phase {fault_phase:?}",
            seed_hosts - 1
        ));
        run
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>7} {line}", self.sim.elapsed().as_millis());
        if self.print_trace {
            eprintln!("{line}");
        }
        self.trace.push(line);
    }

    /// One step, then the invariant on every new acknowledgement.
    fn step(&mut self) -> Result<(), Failure> {
        self.sim
            .step()
            .map_err(|e| format!("host software failed: {e}"))?;
        let (views, acks) = {
            let mut shared = lock(&self.board);
            (shared.views.clone(), std::mem::take(&mut shared.acks))
        };
        for (host, observed) in views {
            if self.last.get(&host) == Some(&observed) {
                continue;
            }
            self.log(format!("n{host} {}", describe(&observed)));
            self.last.insert(host, observed);
        }
        for (entity, ack, client) in acks {
            self.log(format!(
                "c{entity} seq {} value {} acknowledged by #{:x} to n{client}",
                ack.seq_nr, ack.value, ack.incarnation
            ));
            if ack.value != ack.seq_nr {
                return Err(format!(
                    "c{entity}: an increment answered value {} at seq_nr {}",
                    ack.value, ack.seq_nr
                ));
            }
            if let Some(before) = self.acked.insert((entity, ack.seq_nr), ack) {
                let who = if before.incarnation == ack.incarnation {
                    "twice by the same incarnation".to_string()
                } else {
                    format!(
                        "by two incarnations, #{:x} and #{:x}",
                        before.incarnation, ack.incarnation
                    )
                };
                return Err(format!(
                    "c{entity} seq_nr {} acknowledged {who}",
                    ack.seq_nr
                ));
            }
        }
        Ok(())
    }

    fn run_for(&mut self, duration: Duration) -> Result<(), Failure> {
        let end = self.sim.elapsed() + duration;
        while self.sim.elapsed() < end {
            self.step()?;
        }
        Ok(())
    }

    fn running(&mut self) -> BTreeMap<usize, ClusterState> {
        let views = lock(&self.board).views.clone();
        let mut running = BTreeMap::new();
        for (host, observed) in views {
            if !observed.stopped
                && !observed.state.terminated
                && self.sim.is_host_running(host_name(host))
            {
                running.insert(host, observed.state);
            }
        }
        running
    }

    fn members(&mut self) -> BTreeSet<usize> {
        self.running()
            .into_iter()
            .filter(|(_, s)| {
                matches!(
                    s.self_status,
                    Some(MemberStatus::Joining | MemberStatus::Up)
                )
            })
            .map(|(h, _)| h)
            .collect()
    }

    /// Akka's seed-node rules (see the cluster simulation).
    fn may_restart(&mut self, host: usize) -> bool {
        let members = self.members();
        members.iter().any(|m| *m < self.seed_hosts) || (members.is_empty() && host == 0)
    }

    fn is_down(&mut self, host: usize) -> bool {
        !self.sim.is_host_running(host_name(host))
    }

    fn crash(&mut self, host: usize) {
        self.log(format!("crash n{host}"));
        self.quietly(host, |sim, name| sim.crash(name));
        lock(&self.board).views.remove(&host);
        self.last.remove(&host);
    }

    fn restart(&mut self, host: usize) {
        self.log(format!("restart n{host}"));
        self.quietly(host, |sim, name| sim.bounce(name));
    }

    /// Crash or bounce with the links cut, then break the peers' connections (see the cluster
    /// simulation: keeps the dropped connections' segments out of the RNG).
    fn quietly(&mut self, host: usize, f: impl FnOnce(&mut turmoil::Sim<'a>, String)) {
        let ip = self.ips[host];
        let open: Vec<IpAddr> = (0..self.nodes)
            .filter(|o| *o != host && !self.cuts.contains(&(host.min(*o), host.max(*o))))
            .map(|o| self.ips[o])
            .collect();
        for peer in &open {
            self.sim.partition(ip, *peer);
        }
        f(&mut self.sim, host_name(host));
        for peer in &open {
            self.sim.repair(ip, *peer);
        }
        for peer in (0..self.nodes).filter(|o| *o != host) {
            self.net.break_connections(ip, self.ips[peer]);
        }
    }

    fn partition(&mut self, side: &BTreeSet<usize>) {
        self.log(format!("partition {side:?} from the rest"));
        for a in side.iter().copied() {
            for b in (0..self.nodes).filter(|b| !side.contains(b)) {
                let cut = (a.min(b), a.max(b));
                if self.cuts.insert(cut) {
                    self.net
                        .partition(&self.sim, self.ips[cut.0], self.ips[cut.1]);
                }
            }
        }
    }

    fn heal_all(&mut self) {
        if self.cuts.is_empty() {
            return;
        }
        self.log("heal all partitions".to_string());
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.net.repair(&self.sim, self.ips[a], self.ips[b]);
        }
    }

    fn scenario(&mut self) -> Result<(), Failure> {
        let nodes = self.nodes;
        self.converge(Duration::from_secs(30), &BTreeSet::new())
            .map_err(|e| format!("the cluster did not form: {e}"))?;
        self.log("formed".to_string());

        let end = self.sim.elapsed() + self.fault_phase;
        while self.sim.elapsed() < end {
            let wait = Duration::from_millis(self.rng.range(1000, 6000));
            self.run_for(wait)?;
            match self.rng.range(0, 10) {
                0..=3 => {
                    let side: BTreeSet<usize> = (0..nodes).filter(|_| self.rng.bool()).collect();
                    if !side.is_empty() && side.len() < nodes {
                        self.partition(&side);
                    }
                }
                4..=5 => self.heal_all(),
                6..=7 => {
                    let host = self.rng.range(0, nodes as u64) as usize;
                    if !self.is_down(host) {
                        self.crash(host);
                    }
                }
                _ => {
                    let host = self.rng.range(0, nodes as u64) as usize;
                    if self.is_down(host) && self.may_restart(host) {
                        self.heal_all();
                        self.restart(host);
                        self.run_for(Duration::from_secs(8))?;
                    }
                }
            }
        }

        // Fault-free phase: heal, restart what may be restarted, converge.
        self.heal_all();
        self.log("fault-free phase".to_string());
        self.converge(Duration::from_secs(120), &BTreeSet::new())
            .map_err(|e| format!("no convergence after the fault-free phase: {e}"))?;
        self.log("converged".to_string());
        self.final_check()
    }

    /// Quiet the clients (asks in flight time out), then every running host reads every
    /// counter, and the answers are compared with the journal and the acknowledgements.
    fn final_check(&mut self) -> Result<(), Failure> {
        self.phase.store(QUIET, Ordering::SeqCst);
        self.run_for(ASK + Duration::from_secs(1))?;
        self.phase.store(READ, Ordering::SeqCst);
        let hosts: Vec<usize> = self.running().into_keys().collect();
        let deadline = self.sim.elapsed() + Duration::from_secs(60);
        loop {
            let reads = lock(&self.board).reads.clone();
            let missing: Vec<(usize, usize)> = hosts
                .iter()
                .flat_map(|h| (0..ENTITIES).map(move |e| (*h, e)))
                .filter(|k| !reads.contains_key(k))
                .collect();
            if missing.is_empty() {
                break;
            }
            if self.sim.elapsed() > deadline {
                return Err(format!("entities unreachable (host, entity): {missing:?}"));
            }
            self.step()?;
        }
        let reads = lock(&self.board).reads.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        for entity in 0..ENTITIES {
            let answers: BTreeSet<u64> = hosts.iter().map(|h| reads[&(*h, entity)].value).collect();
            let [value] = answers.iter().copied().collect::<Vec<_>>()[..] else {
                return Err(format!(
                    "c{entity} answers differ between hosts: {answers:?}"
                ));
            };
            let pid = PersistenceId::of("Counter", &entity_id(entity)).expect("valid id");
            let (events, highest) = runtime.block_on(async {
                let events = self
                    .store
                    .replay(pid.clone(), 1, u64::MAX, usize::MAX)
                    .await
                    .expect("replay");
                let highest = self.store.highest_seq_nr(pid).await.expect("highest");
                (events, highest)
            });
            let seq_nrs: Vec<u64> = events.iter().map(|e| e.seq_nr).collect();
            if value != events.len() as u64
                || highest != value
                || seq_nrs != (1..=value).collect::<Vec<_>>()
            {
                return Err(format!(
                    "c{entity}: value {value}, but the journal holds {} events (highest \
                     seq_nr {highest})",
                    events.len()
                ));
            }
            let acked: Vec<u64> = self
                .acked
                .keys()
                .filter(|(e, _)| *e == entity)
                .map(|(_, s)| *s)
                .collect();
            if acked.is_empty() {
                return Err(format!(
                    "c{entity}: no increment was ever acknowledged: the run checked nothing"
                ));
            }
            if let Some(beyond) = acked.iter().find(|s| **s > value) {
                return Err(format!(
                    "c{entity}: increment acknowledged at seq_nr {beyond}, but the value is {value}"
                ));
            }
            self.log(format!(
                "c{entity}: value {value}, {} events in the journal, {} acknowledged",
                events.len(),
                acked.len()
            ));
        }
        Ok(())
    }

    fn converge(&mut self, limit: Duration, left_down: &BTreeSet<usize>) -> Result<(), Failure> {
        let mut left_down = left_down.clone();
        let start = self.sim.elapsed();
        let mut next_restart_check = start;
        let mut converged_since = None;
        loop {
            if self.sim.elapsed() >= next_restart_check {
                next_restart_check = self.sim.elapsed() + Duration::from_secs(1);
                let members = self.members();
                if members.is_empty() && !left_down.is_empty() {
                    // No cluster left: the first seed node forms a new one, all join it.
                    self.log("no members left: restarting every host".to_string());
                    left_down.clear();
                }
                if !members.is_empty() && members.iter().all(|m| *m >= self.seed_hosts) {
                    for host in 0..self.nodes {
                        if self.is_down(host) && left_down.insert(host) {
                            self.log(format!(
                                "n{host} left down: no seed node is a member any more"
                            ));
                        }
                    }
                }
                for host in 0..self.nodes {
                    if !left_down.contains(&host) && self.is_down(host) && self.may_restart(host) {
                        self.restart(host);
                    }
                }
            }
            let outcome = self.converged(&left_down);
            match outcome {
                Ok(()) => {
                    let since = *converged_since.get_or_insert(self.sim.elapsed());
                    if self.sim.elapsed() - since >= STABLE {
                        return Ok(());
                    }
                }
                Err(_) => converged_since = None,
            }
            if self.sim.elapsed() - start > limit {
                return outcome;
            }
            self.step()?;
        }
    }

    /// Every host but `left_down` runs and is `Up`; all see the same members (the running
    /// incarnations, all `Up`, none unreachable) and have converged.
    fn converged(&mut self, left_down: &BTreeSet<usize>) -> Result<(), Failure> {
        let running = self.running();
        if let Some(host) =
            (0..self.nodes).find(|h| !left_down.contains(h) && !running.contains_key(h))
        {
            return Err(format!("n{host} is not running a cluster member yet"));
        }
        let expected: BTreeSet<_> = running.values().map(|s| s.self_node).collect();
        for (host, state) in &running {
            let members: BTreeSet<_> = state.members.iter().map(|m| m.address).collect();
            let ok = state.converged
                && state.self_status == Some(MemberStatus::Up)
                && members == expected
                && state.members.iter().all(|m| m.status == MemberStatus::Up)
                && state.unreachable.is_empty();
            if !ok {
                return Err(format!("n{host} sees {}", describe_state(state)));
            }
        }
        Ok(())
    }
}

fn describe(observed: &Observed) -> String {
    if observed.stopped {
        format!("stopped; {}", describe_state(&observed.state))
    } else {
        describe_state(&observed.state)
    }
}

fn describe_state(state: &ClusterState) -> String {
    let members: Vec<String> = state
        .members
        .iter()
        .map(|m| format!("{} {:?}", m.address, m.status))
        .collect();
    format!(
        "{} self {:?} members [{}] unreachable {} converged {}",
        state.self_node,
        state.self_status,
        members.join(", "),
        state.unreachable.len(),
        state.converged
    )
}

fn run_seed(seed: u64) -> Result<Vec<String>, String> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut run = Run::new(seed);
        let result = run.scenario();
        (result, std::mem::take(&mut run.trace))
    }));
    let message = match outcome {
        Ok((Ok(()), trace)) => return Ok(trace),
        Ok((Err(e), trace)) => {
            let tail = trace[trace.len().saturating_sub(40)..].join("\n");
            format!("{e}\nlast trace lines:\n{tail}")
        }
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string()),
    };
    Err(format!(
        "simulation seed {seed} failed: {message}\n\
         reproduce: SHOAL_SIM_SEED={seed} cargo test -p shoal-sharding --test turmoil_sim \
         (SHOAL_SIM_TRACE=1 prints the whole trace)"
    ))
}

#[test]
fn acknowledged_increments_are_never_doubled_and_all_end_in_the_journal() {
    let seeds = match std::env::var("SHOAL_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("SHOAL_SIM_SEED must be a u64")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        let started = std::time::Instant::now();
        match run_seed(seed) {
            Ok(trace) => eprintln!(
                "seed {seed}: ok ({} acknowledged increments, {:?} wall time)",
                trace
                    .iter()
                    .filter(|l| l.contains("acknowledged by"))
                    .count(),
                started.elapsed()
            ),
            Err(message) => panic!("{message}"),
        }
    }
}

#[test]
fn a_seed_reproduces_the_same_trace() {
    let seed = std::env::var("SHOAL_SIM_SEED").map_or(2, |s| s.trim().parse().expect("a u64"));
    let first = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
    let second = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
    if let Some(i) = (0..first.len().min(second.len())).find(|i| first[*i] != second[*i]) {
        panic!(
            "seed {seed}: the runs differ at trace line {i}:\n  {}\n  {}",
            first[i], second[i]
        );
    }
    assert_eq!(
        first.len(),
        second.len(),
        "seed {seed}: traces of different length"
    );
}
