//! The sharded daemon process across in-process nodes: workers start without any message,
//! run exactly once, spread when a node joins and run again elsewhere when a node crashes.
//! A registry records every worker start and stop.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, Context, Props, StopReason};
use shoal_cluster::UniqueAddress;
use shoal_remote::RemoteReplyTo;
use shoal_sharding::{DaemonSettings, ShardedDaemonProcess};

const WORKERS: usize = 4;

#[derive(Debug, Serialize, Deserialize)]
enum WorkerMsg {
    Where(RemoteReplyTo<UniqueAddress>),
    Stop,
}

struct Worker {
    index: usize,
    node: UniqueAddress,
    registry: Shared,
}

impl Actor for Worker {
    type Msg = WorkerMsg;

    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        let id = self.index.to_string();
        self.registry.lock().unwrap().started(&id, self.node);
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: WorkerMsg) -> Result<(), ActorError> {
        match msg {
            WorkerMsg::Where(reply) => {
                reply.send(self.node);
            }
            WorkerMsg::Stop => ctx.stop(),
        }
        Ok(())
    }

    async fn stopped(&mut self, _: &mut Context<Self>, _: &StopReason) {
        let id = self.index.to_string();
        self.registry.lock().unwrap().stopped(&id, self.node);
    }
}

fn daemon_settings() -> DaemonSettings {
    DaemonSettings {
        keep_alive_interval: ms(300),
        sharding: settings(),
    }
}

/// Starts the daemon on `node`, its workers recording in `registry`.
fn daemon(node: &Node, registry: &Shared) -> ShardedDaemonProcess<WorkerMsg> {
    let (me, registry) = (node.me(), registry.clone());
    ShardedDaemonProcess::init(
        &node.sharding,
        "projection",
        WORKERS,
        move |index| {
            let registry = registry.clone();
            Props::new(move || Worker {
                index,
                node: me,
                registry: registry.clone(),
            })
        },
        daemon_settings(),
    )
    .unwrap()
}

/// Where each worker runs, once every worker runs exactly once; `None` otherwise.
fn placement(registry: &Shared) -> Option<Vec<UniqueAddress>> {
    let r = registry.lock().unwrap();
    (0..WORKERS)
        .map(|i| match r.running.get(&i.to_string()).map(Vec::as_slice) {
            Some([home]) => Some(*home),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until every worker runs exactly once and `accept` likes the placement.
async fn wait_placement(
    registry: &Shared,
    what: &str,
    mut accept: impl FnMut(&[UniqueAddress]) -> bool,
) -> Vec<UniqueAddress> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(homes) = placement(registry)
            && accept(&homes)
        {
            return homes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached; running: {:?}",
            registry.lock().unwrap().running
        );
        tokio::time::sleep(ms(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_once_and_spread_when_a_node_joins() {
    let mut setup = Setup::new(settings());
    let registry = Shared::default();
    let mut nodes = setup.nodes(2).await;
    let mut daemons: Vec<_> = nodes.iter().map(|n| daemon(n, &registry)).collect();
    assert_eq!(daemons[0].type_name(), "daemon-projection");
    assert_eq!(daemons[0].number_of_instances(), WORKERS);

    // Nobody sends anything: the keep-alive starts every worker, spread over both nodes.
    let homes = wait_placement(&registry, "4 workers on 2 nodes", |homes| {
        homes.iter().collect::<BTreeSet<_>>().len() == 2
    })
    .await;
    for (i, home) in homes.iter().enumerate() {
        for d in &daemons {
            assert_eq!(d.ask(i, WorkerMsg::Where, ASK).await.unwrap(), *home);
        }
    }

    // A third node joins: one worker moves to it (hand-off, then the keep-alive restarts it).
    nodes.push(setup.node().await);
    daemons.push(daemon(&nodes[2], &registry));
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let all: BTreeSet<UniqueAddress> = nodes.iter().map(Node::me).collect();
    let homes = wait_placement(&registry, "4 workers on 3 nodes", |homes| {
        homes.iter().collect::<BTreeSet<_>>().len() == 3
    })
    .await;
    assert!(homes.iter().all(|h| all.contains(h)));
    for (i, home) in homes.iter().enumerate() {
        assert_eq!(
            daemons[2].ask(i, WorkerMsg::Where, ASK).await.unwrap(),
            *home
        );
    }
    let r = registry.lock().unwrap();
    assert_eq!(r.max_copies, 1, "two copies of a worker at once");
    assert!(r.starts.values().sum::<usize>() > WORKERS, "a worker moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_workers_run_again_elsewhere() {
    let mut setup = Setup::new(settings());
    let registry = Shared::default();
    let mut nodes = setup.nodes(3).await;
    let _daemons: Vec<_> = nodes.iter().map(|n| daemon(n, &registry)).collect();
    let homes = wait_placement(&registry, "4 workers on 3 nodes", |homes| {
        homes.iter().collect::<BTreeSet<_>>().len() == 3
    })
    .await;

    let starts_before = registry.lock().unwrap().starts.clone();
    let crashed = nodes.remove(2);
    let crashed_at = crashed.me();
    let moved: Vec<usize> = (0..WORKERS).filter(|i| homes[*i] == crashed_at).collect();
    assert!(!moved.is_empty(), "every node hosts a worker: {homes:?}");
    crashed.crash().await;
    for node in &nodes {
        wait(node, "the crashed node removed", move |s| {
            s.members.iter().all(|m| m.address != crashed_at)
        })
        .await;
    }
    // Nobody sends anything: the keep-alive starts the lost workers on the survivors.
    let removed = tokio::time::Instant::now();
    let after = wait_placement(&registry, "workers back on the survivors", |homes| {
        homes.iter().all(|h| *h != crashed_at)
    })
    .await;
    eprintln!(
        "lost workers running again {:?} after removal",
        removed.elapsed()
    );
    let r = registry.lock().unwrap();
    for i in 0..WORKERS {
        if moved.contains(&i) {
            let id = i.to_string();
            assert_eq!(
                r.starts[&id],
                starts_before[&id] + 1,
                "worker {i} restarted once"
            );
        } else {
            assert_eq!(after[i], homes[i], "worker {i} did not move");
        }
    }
    assert_eq!(r.max_copies, 1, "two copies of a worker at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_is_started_again_by_the_keep_alive() {
    let mut setup = Setup::new(settings());
    let registry = Shared::default();
    let nodes = setup.nodes(1).await;
    let daemon = daemon(&nodes[0], &registry);
    wait_placement(&registry, "4 workers", |_| true).await;
    daemon.tell(1, WorkerMsg::Stop).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let restarted = registry.lock().unwrap().starts["1"] == 2;
        if restarted && placement(&registry).is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker 1 not restarted"
        );
        tokio::time::sleep(ms(50)).await;
    }
    // Out of range: refused, not routed.
    assert!(daemon.tell(WORKERS, WorkerMsg::Stop).is_err());
    let refused = daemon.ask(WORKERS, WorkerMsg::Where, ASK).await;
    assert!(
        matches!(&refused, Err(shoal_actor::AskError::Failed(m)) if m.contains("no worker")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn zero_workers_are_refused() {
    let mut setup = Setup::new(settings());
    let node = setup.node().await;
    let err = ShardedDaemonProcess::init(
        &node.sharding,
        "none",
        0,
        |_| {
            Props::new(|| Worker {
                index: 0,
                node: UniqueAddress::new("127.0.0.1:1".parse().unwrap(), 1),
                registry: Shared::default(),
            })
        },
        daemon_settings(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("number_of_instances"), "{err}");
}
