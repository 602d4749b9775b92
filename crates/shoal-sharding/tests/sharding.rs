//! Sharding across in-process nodes: real remotes over the in-memory transport, real
//! cluster membership with fast timings, singletons, and one shared in-memory store (what
//! PostgreSQL is for real nodes). A registry records every entity start and stop.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::*;
use shoal_actor::{Props, TellError};
use shoal_cluster::UniqueAddress;
use shoal_sharding::{Entity, EntityContext, ShardingSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entity_runs_on_one_node_and_answers_every_node() {
    let mut setup = Setup::new(settings());
    let nodes = setup.nodes(3).await;
    let ids: Vec<String> = (0..40).map(|i| format!("probe-{i}")).collect();
    let mut homes = BTreeMap::new();
    for id in &ids {
        let mut seen = BTreeSet::new();
        for node in &nodes {
            seen.insert(where_is(node, id).await);
        }
        assert_eq!(seen.len(), 1, "{id} answered from {seen:?}");
        homes.insert(id.clone(), *seen.iter().next().unwrap());
    }
    let used: BTreeSet<_> = homes.values().collect();
    assert!(
        used.len() >= 2,
        "40 entities over 30 shards all on one node: {used:?}"
    );
    let r = setup.registry.lock().unwrap();
    assert_eq!(r.max_copies, 1);
    for id in &ids {
        assert_eq!(r.starts[id], 1, "{id} started more than once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_receive_shards_by_rebalance() {
    let mut setup = Setup::new(settings());
    let first = setup.nodes(1).await.remove(0);
    for i in 0..60 {
        where_is(&first, &format!("p{i}")).await;
    }
    let mut nodes = vec![first];
    nodes.push(setup.node().await);
    nodes.push(setup.node().await);
    for node in &nodes {
        wait(node, "3 up", all_up(3)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // A handed-off shard gets its new home when a message for it arrives (as in Akka).
        for i in 0..60 {
            where_is(&nodes[0], &format!("p{i}")).await;
        }
        let dist = nodes[0]
            .sharding
            .shard_distribution("Probe", ASK)
            .await
            .unwrap();
        let counts: Vec<usize> = dist.iter().map(|r| r.shards.len()).collect();
        if counts.len() == 3 && counts.iter().all(|c| *c >= 5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rebalanced: {counts:?}"
        );
        tokio::time::sleep(ms(200)).await;
    }
    // Entities still answer, one copy each.
    for i in 0..60 {
        let id = format!("p{i}");
        let a = where_is(&nodes[1], &id).await;
        assert_eq!(a, where_is(&nodes[2], &id).await);
    }
    assert_eq!(setup.registry.lock().unwrap().max_copies, 1);
}

/// Increments from every node while one node hands off its shards and leaves: the counters
/// end exactly at the number of acknowledged increments (none lost, none applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_off_without_losing_acknowledged_increments() {
    let mut setup = Setup::new(settings());
    let mut nodes = setup.nodes(3).await;
    let ids: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    // Make sure every counter has a home, some of them on the node that will leave.
    for id in &ids {
        get(&nodes[0], id).await;
    }
    let leaver = nodes.remove(2);
    let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for node in &nodes {
        for id in &ids {
            let counter = node.counters.entity_ref(id.as_str()).unwrap();
            let (acked, stop, id) = (acked.clone(), stop.clone(), id.clone());
            load.push(tokio::spawn(async move {
                let mut failures = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match counter.ask(CounterCmd::Add, ASK).await {
                        Ok(_) => *acked.lock().unwrap().entry(id.clone()).or_default() += 1,
                        Err(_) => failures += 1,
                    }
                }
                failures
            }));
        }
    }
    tokio::time::sleep(ms(500)).await;
    assert!(leaver.sharding.shutdown(WAIT).await, "hand-off finished");
    leaver.cluster.leave(leaver.me().addr);
    for node in &nodes {
        let gone = leaver.me();
        wait(node, "the leaver removed", move |s| {
            s.members.iter().all(|m| m.address != gone)
        })
        .await;
    }
    tokio::time::sleep(ms(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failures = 0;
    for task in load {
        failures += task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    for id in &ids {
        let (value, home) = get(&nodes[0], id).await;
        assert_ne!(home, leaver.me());
        assert_eq!(
            value,
            acked.get(id).copied().unwrap_or(0),
            "{id}: stored increments differ from acknowledged ones ({failures} asks failed)"
        );
    }
    assert!(acked.values().sum::<u64>() > 100, "the load ran: {acked:?}");
}

/// Tells from the hosting node keep their order and none is lost while shards start here
/// (the first messages go through the region, later ones straight to the shard) and while
/// a joining node takes shards over by rebalance (the direct route is withdrawn, messages
/// wait in the region and follow the shard to its new home).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_keep_their_order_across_direct_routes_and_hand_offs() {
    let mut setup = Setup::new(settings());
    let first = setup.nodes(1).await.remove(0);
    let ids: Vec<String> = (0..60).map(|i| format!("o{i}")).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let probe = first.probes.entity_ref(id.as_str()).unwrap();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut msg = ProbeMsg::Seen {
                    sender: n as u32,
                    seq,
                };
                // As fast as the region and shards take them: a full queue is retried.
                loop {
                    match probe.tell(msg) {
                        Ok(()) => break,
                        Err(TellError::Full(back)) => msg = back,
                        Err(TellError::Closed(_)) => panic!("tell {seq}: closed"),
                    }
                    tokio::task::yield_now().await;
                }
                seq += 1;
                if seq.is_multiple_of(256) {
                    tokio::time::sleep(ms(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            seq
        }));
    }
    tokio::time::sleep(ms(300)).await;
    let second = setup.node().await;
    wait(&first, "2 up", all_up(2)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dist = first
            .sharding
            .shard_distribution("Probe", ASK)
            .await
            .unwrap();
        let moved: usize = dist
            .iter()
            .filter(|r| r.region == second.me())
            .map(|r| r.shards.len())
            .sum();
        if moved >= 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rebalance: {dist:?}"
        );
        tokio::time::sleep(ms(100)).await;
    }
    tokio::time::sleep(ms(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.unwrap());
    }
    // Let the last messages arrive.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = {
            let r = setup.registry.lock().unwrap();
            ids.iter().enumerate().all(|(n, id)| {
                r.seen.get(&(id.clone(), n as u32)).map_or(0, Vec::len) as u64 == sent[n]
            })
        };
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    let r = setup.registry.lock().unwrap();
    let mut on_second = 0;
    for (n, id) in ids.iter().enumerate() {
        let seen = r
            .seen
            .get(&(id.clone(), n as u32))
            .cloned()
            .unwrap_or_default();
        let expected: Vec<u64> = (0..sent[n]).collect();
        assert!(
            seen == expected,
            "{id}: {} received of {} sent, first out of place at {:?}",
            seen.len(),
            sent[n],
            seen.iter().zip(&expected).position(|(a, b)| a != b)
        );
        assert!(sent[n] > 1000, "{id}: the load ran");
        if r.running
            .get(id)
            .is_some_and(|at| at.contains(&second.me()))
        {
            on_second += 1;
        }
    }
    assert!(on_second > 0, "some entities moved to the second node");
    assert_eq!(r.max_copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_entities_recover_elsewhere() {
    let mut setup = Setup::new(settings());
    let mut nodes = setup.nodes(3).await;
    // Find a counter that lives on node 2 and give it some increments.
    let mut victim = None;
    for i in 0..200 {
        let id = format!("k{i}");
        if get(&nodes[0], &id).await.1 == nodes[2].me() {
            victim = Some(id);
            break;
        }
    }
    let id = victim.expect("some counter lives on node 2");
    let counter = nodes[0].counters.entity_ref(id.as_str()).unwrap();
    for _ in 0..5 {
        counter.ask(CounterCmd::Add, ASK).await.unwrap();
    }
    let crashed = nodes.remove(2);
    let crashed_at = crashed.me();
    crashed.crash().await;
    for node in &nodes {
        wait(node, "the crashed node removed", move |s| {
            s.members.iter().all(|m| m.address != crashed_at)
        })
        .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((value, home)) = counter.ask(CounterCmd::Get, ms(2000)).await {
            assert_eq!(value, 5, "recovered from the journal");
            assert_ne!(home, crashed_at);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_number_of_shards_is_refused() {
    let mut setup = Setup::new(settings());
    let nodes = setup.nodes(1).await;
    where_is(&nodes[0], "x").await;
    setup.settings.number_of_shards = 31;
    let odd = setup.node().await;
    wait(&odd, "2 up", all_up(2)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while odd.probes.refused().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(ms(50)).await;
    }
    let reason = odd.probes.refused().unwrap();
    assert!(reason.contains("31") && reason.contains("30"), "{reason}");
    let answer = odd
        .probes
        .entity_ref("x")
        .unwrap()
        .ask(ProbeMsg::Where, ms(500))
        .await;
    // The refused region drops the message (counted) instead of routing it.
    assert!(
        matches!(answer, Err(shoal_actor::AskError::Timeout)),
        "{answer:?}"
    );
    assert!(odd.probes.dropped() >= 1);
    // "x" still runs once, on the first node: the refused region started nothing.
    assert_eq!(setup.registry.lock().unwrap().starts["x"], 1);
}

#[tokio::test]
async fn bad_ids_and_settings_are_refused() {
    let mut setup = Setup::new(settings());
    let node = setup.node().await;
    assert!(node.counters.entity_ref("").is_err());
    assert!(node.counters.entity_ref("a\0b").is_err());
    assert!(node.counters.entity_ref("x".repeat(2000)).is_err());
    let bad = ShardingSettings {
        number_of_shards: 0,
        ..settings()
    };
    let err = node
        .sharding
        .init(
            Entity::new("Other", |_: EntityContext<ProbeMsg>| {
                Props::new(|| Probe {
                    id: String::new(),
                    node: UniqueAddress::new("127.0.0.1:1".parse().unwrap(), 1),
                    registry: Shared::default(),
                })
            })
            .with_settings(bad),
        )
        .unwrap_err();
    assert!(err.to_string().contains("number_of_shards"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_entities_restart_after_a_full_cluster_restart() {
    let mut setup = Setup::new(ShardingSettings {
        remember_entities: true,
        ..settings()
    });
    let nodes = setup.nodes(2).await;
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for id in &ids {
        where_is(&nodes[0], id).await;
    }
    for node in nodes {
        node.crash().await;
    }
    {
        let r = setup.registry.lock().unwrap();
        assert!(
            r.running.values().all(Vec::is_empty),
            "all stopped: {:?}",
            r.running
        );
        assert!(ids.iter().all(|id| r.starts[id] == 1));
    }
    // A new cluster on the same store: nobody sends anything, the entities come back.
    setup.seeds.clear();
    let _nodes = setup.nodes(2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let restarted = {
            let r = setup.registry.lock().unwrap();
            ids.iter().filter(|id| r.starts[*id] == 2).count()
        };
        if restarted == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{restarted} of {} remembered entities restarted",
            ids.len()
        );
        tokio::time::sleep(ms(100)).await;
    }
    assert_eq!(setup.registry.lock().unwrap().max_copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_entities_are_passivated_and_come_back_on_the_next_message() {
    let mut setup = Setup::new(ShardingSettings {
        passivation_idle_timeout: Some(ms(300)),
        ..settings()
    });
    let nodes = setup.nodes(1).await;
    let home = where_is(&nodes[0], "sleepy").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !setup.registry.lock().unwrap().running["sleepy"].is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never passivated");
        tokio::time::sleep(ms(50)).await;
    }
    assert_eq!(where_is(&nodes[0], "sleepy").await, home);
    assert_eq!(setup.registry.lock().unwrap().starts["sleepy"], 2);
}
