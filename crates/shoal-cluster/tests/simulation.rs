//! Whole clusters of membership cores in one deterministic simulation: forming, crashes,
//! partitions, leave, restarts. Every step checks that no member moves backwards in any
//! node's view.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Sim, addr, config, formed_cluster, n};
use shoal_cluster::{
    ClusterConfig, ClusterEvent, DowningStrategyConfig, Input, MemberStatus, ShutdownReason,
    SplitBrainResolverConfig, Timestamp, UniqueAddress,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn three_seeds(_: u16) -> ClusterConfig {
    config(&[1, 2, 3])
}

fn ids(range: std::ops::RangeInclusive<u16>) -> Vec<UniqueAddress> {
    range.map(n).collect()
}

#[test]
fn three_seed_nodes_started_together_form_one_cluster() {
    let sim = formed_cluster(3, three_seeds);
    // The first seed formed it as soon as the others said they were not members yet.
    assert!(sim.now < secs(3), "formed after {:?}", sim.now);
    for id in ids(1..=3) {
        let state = sim.node(id).core.state();
        assert_eq!(state.leader, Some(n(1)));
        let up: Vec<Option<u64>> = state.members.iter().map(|m| m.up_number).collect();
        assert_eq!(up, vec![Some(1), Some(2), Some(3)], "{id}");
    }
    // Every node published Up for every node.
    for id in ids(1..=3) {
        let ups: BTreeSet<UniqueAddress> = sim
            .node(id)
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                ClusterEvent::MemberUp(m) => Some(m.address),
                _ => None,
            })
            .collect();
        assert_eq!(ups, ids(1..=3).into_iter().collect());
    }
}

#[test]
fn five_nodes_join_through_seeds_that_start_later() {
    let mut sim = Sim::new();
    // Non-seed nodes first: they wait for a seed to answer.
    for i in 4..=5 {
        sim.start(n(i), config(&[1, 2]), u64::from(i));
    }
    sim.run_for(secs(3));
    assert!(sim.members_of(n(4)).is_empty());
    for i in 1..=3 {
        sim.start(n(i), config(&[1, 2]), u64::from(i));
    }
    let all = ids(1..=5);
    sim.run_until(secs(20), |s| s.converged_on(&all));
}

#[test]
fn first_seed_alone_forms_the_cluster_after_the_seed_node_timeout() {
    let mut sim = Sim::new();
    sim.start(n(1), config(&[1, 2]), 1);
    let formed = sim.run_until(secs(10), |s| s.converged_on(&[n(1)]));
    assert!(formed >= secs(5) && formed < secs(6), "{formed:?}");
    sim.start(n(2), config(&[1, 2]), 2);
    sim.run_until(secs(10), |s| s.converged_on(&[n(1), n(2)]));
}

#[test]
fn a_crashed_node_is_removed_within_ten_seconds_with_default_settings() {
    let mut worst = Duration::ZERO;
    // Crash at different phases of the heartbeat cycle.
    for offset in [0, 300, 700, 900] {
        let mut sim = formed_cluster(3, three_seeds);
        sim.run_for(secs(20));
        let crash = sim.now + Duration::from_millis(offset);
        sim.run_until(secs(2), |s| s.now >= crash);
        sim.kill(n(3));
        sim.run_until(secs(15), |s| {
            s.removed_at(n(1), n(3)).is_some() && s.removed_at(n(2), n(3)).is_some()
        });
        for observer in [n(1), n(2)] {
            let took = sim.removed_at(observer, n(3)).unwrap() - crash;
            assert!(took < secs(10), "removal took {took:?}");
            worst = worst.max(took);
        }
        assert!(sim.converged_on(&[n(1), n(2)]));
    }
    // The budget in the config docs: about 8.2 s in the worst case.
    assert!(worst > Duration::from_millis(7000), "{worst:?}");
    eprintln!("worst time from crash to removal: {worst:?}");
}

#[test]
fn a_node_killed_as_soon_as_it_is_up_is_removed_within_ten_seconds() {
    // As in the fail-over benchmark: the third node is killed the moment the first one sees
    // it `Up`, so the survivors have at most one answer from it (a cold failure detector).
    for delay in [0, 100, 300, 500, 700, 900] {
        let mut sim = Sim::new();
        sim.start(n(1), three_seeds(1), 1);
        sim.start(n(2), three_seeds(2), 2);
        sim.run_for(Duration::from_millis(delay));
        sim.start(n(3), three_seeds(3), 3);
        sim.run_until(secs(10), |s| {
            s.members_of(n(1))
                .iter()
                .filter(|m| m.status == MemberStatus::Up)
                .count()
                == 3
        });
        let crash = sim.now;
        // Both survivors got an answer from n3 before it died: it was heartbeated as soon as
        // it joined, not at the next heartbeat slot.
        for observer in [n(1), n(2)] {
            let phi = sim
                .node(observer)
                .core
                .phi(&n(3), Timestamp::from_duration(crash));
            assert!(phi.is_some_and(|phi| phi < 1.0), "{observer}: {phi:?}");
        }
        sim.kill(n(3));
        sim.run_until(secs(15), |s| {
            s.removed_at(n(1), n(3)).is_some() && s.removed_at(n(2), n(3)).is_some()
        });
        for observer in [n(1), n(2)] {
            let took = sim.removed_at(observer, n(3)).unwrap() - crash;
            // At worst one answer, at the crash: phi reaches 8 after 1 s + 3 s pause + 5.2 x
            // 250 ms (the first estimate's deviation) = 5.3 s, then stable_after 3.5 s: 8.8 s.
            // Without the first heartbeat at once: the next slot, 1 s of
            // expected_response_after without an answer, then 5.3 s: 9.9 s.
            assert!(
                took > Duration::from_millis(7_500) && took < Duration::from_millis(9_000),
                "delay {delay} ms: removal took {took:?}"
            );
        }
    }
}

#[test]
fn a_two_three_partition_keeps_the_three() {
    let mut sim = formed_cluster(5, three_seeds);
    sim.run_for(secs(10));
    sim.partition(&ids(1..=2), &ids(3..=5));
    sim.run_until(secs(20), |s| s.converged_on(&ids(3..=5)));
    for id in ids(1..=2) {
        let (_, reason) = sim.node(id).shutdown.expect("minority stopped");
        assert_eq!(reason, ShutdownReason::Downed);
    }
    // The minority stopped before the majority removed it.
    let removal = sim.removed_at(n(3), n(1)).unwrap();
    let stopped = sim.node(n(1)).shutdown.unwrap().0;
    assert!(
        stopped <= removal,
        "stopped {stopped:?}, removed {removal:?}"
    );
}

#[test]
fn a_three_three_partition_keeps_the_side_with_the_lowest_address() {
    let mut sim = formed_cluster(6, three_seeds);
    sim.run_for(secs(10));
    sim.partition(&[n(2), n(4), n(6)], &[n(1), n(3), n(5)]);
    sim.run_until(secs(20), |s| s.converged_on(&[n(1), n(3), n(5)]));
    for id in [n(2), n(4), n(6)] {
        assert_eq!(
            sim.node(id).shutdown.map(|s| s.1),
            Some(ShutdownReason::Downed)
        );
    }
}

#[test]
fn a_short_partition_heals_without_downing_anybody() {
    let mut sim = formed_cluster(5, three_seeds);
    sim.run_for(secs(10));
    sim.partition(&ids(1..=2), &ids(3..=5));
    // Long enough to be detected (≈ 4.5 s), shorter than detection + stable_after.
    sim.run_for(Duration::from_millis(6500));
    assert!(
        !sim.node(n(3)).core.state().unreachable.is_empty(),
        "detected"
    );
    sim.heal_all();
    let all = ids(1..=5);
    sim.run_until(secs(10), |s| s.converged_on(&all));
    assert!(sim.nodes.values().all(|n| n.shutdown.is_none()));
}

#[test]
fn a_broken_link_downs_the_indirectly_connected_nodes() {
    let mut sim = formed_cluster(3, three_seeds);
    sim.run_for(secs(10));
    // 1 and 2 cannot talk; both still talk to 3.
    sim.partition(&[n(1)], &[n(2)]);
    sim.run_until(secs(20), |s| s.converged_on(&[n(3)]));
    for id in [n(1), n(2)] {
        assert_eq!(
            sim.node(id).shutdown.map(|s| s.1),
            Some(ShutdownReason::Downed)
        );
    }
}

#[test]
fn graceful_leave_removes_the_member_and_stops_it() {
    let mut sim = formed_cluster(3, three_seeds);
    sim.input(n(2), Input::Leave(addr(2)));
    sim.run_until(secs(10), |s| s.converged_on(&[n(1), n(3)]));
    assert_eq!(
        sim.node(n(2)).shutdown.map(|s| s.1),
        Some(ShutdownReason::Removed)
    );
    let statuses: Vec<MemberStatus> = sim
        .node(n(1))
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            ClusterEvent::MemberLeft(m) | ClusterEvent::MemberExited(m) if m.address == n(2) => {
                Some(m.status)
            }
            ClusterEvent::MemberRemoved { member, .. } if member.address == n(2) => {
                Some(member.status)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            MemberStatus::Leaving,
            MemberStatus::Exiting,
            MemberStatus::Removed
        ]
    );
}

#[test]
fn the_leader_leaving_hands_over_to_the_next() {
    let mut sim = formed_cluster(3, three_seeds);
    sim.input(n(1), Input::Leave(addr(1)));
    sim.run_until(secs(10), |s| s.converged_on(&[n(2), n(3)]));
    assert_eq!(sim.node(n(2)).core.state().leader, Some(n(2)));
    assert_eq!(
        sim.node(n(1)).shutdown.map(|s| s.1),
        Some(ShutdownReason::Removed)
    );
}

#[test]
fn a_restarted_node_rejoins_as_a_new_incarnation() {
    let mut sim = formed_cluster(3, three_seeds);
    sim.run_for(secs(5));
    sim.kill(n(3));
    let reborn = UniqueAddress::new(addr(3), 2);
    sim.start(reborn, config(&[1, 2, 3]), 33);
    let started = sim.now;
    sim.run_until(secs(10), |s| s.converged_on(&[n(1), n(2), reborn]));
    // The old incarnation was downed and removed without waiting for the failure detector.
    assert!(
        sim.now - started < secs(4),
        "rejoined after {:?}",
        sim.now - started
    );
    assert!(sim.removed_at(n(1), n(3)).is_some());
}

#[test]
fn roles_are_visible_to_every_member() {
    let sim = formed_cluster(3, |i| {
        let mut c = config(&[1, 2, 3]);
        c.roles
            .insert(if i == 1 { "endpoint" } else { "entity" }.to_string());
        c
    });
    for id in ids(1..=3) {
        let roles: Vec<Vec<String>> = sim
            .members_of(id)
            .iter()
            .map(|m| m.roles.iter().cloned().collect())
            .collect();
        assert_eq!(
            roles,
            vec![vec!["endpoint"], vec!["entity"], vec!["entity"]]
        );
    }
}

#[test]
fn lease_majority_keeps_the_side_that_holds_the_lease() {
    let lease_config = |i: u16| {
        let mut c = config(&[1, 2, 3]);
        c.split_brain_resolver = Some(SplitBrainResolverConfig {
            strategy: DowningStrategyConfig::LeaseMajority {
                role: None,
                acquire_lease_delay_for_minority: secs(2),
                release_after: secs(40),
            },
            ..SplitBrainResolverConfig::default()
        });
        let _ = i;
        c
    };
    let mut sim = formed_cluster(5, lease_config);
    sim.run_for(secs(10));
    sim.partition(&ids(1..=2), &ids(3..=5));
    sim.run_until(secs(25), |s| s.converged_on(&ids(3..=5)));
    assert_eq!(sim.lease.holder(), Some(n(3).to_string()));
    sim.run_until(secs(5), |s| {
        s.node(n(1)).shutdown.is_some() && s.node(n(2)).shutdown.is_some()
    });
}

#[test]
fn keep_oldest_keeps_the_oldest_even_in_the_minority() {
    let oldest_config = |_: u16| {
        let mut c = config(&[1, 2, 3]);
        c.split_brain_resolver = Some(SplitBrainResolverConfig {
            strategy: DowningStrategyConfig::KeepOldest {
                down_if_alone: false,
                role: None,
            },
            ..SplitBrainResolverConfig::default()
        });
        c
    };
    let mut sim = formed_cluster(5, oldest_config);
    sim.run_for(secs(5));
    sim.partition(&ids(1..=2), &ids(3..=5));
    sim.run_until(secs(20), |s| s.converged_on(&ids(1..=2)));
    for id in ids(3..=5) {
        assert_eq!(
            sim.node(id).shutdown.map(|s| s.1),
            Some(ShutdownReason::Downed)
        );
    }
}

#[test]
fn runs_are_reproducible() {
    let run = || {
        let mut sim = formed_cluster(5, three_seeds);
        sim.run_for(secs(5));
        sim.kill(n(5));
        sim.partition(&[n(1)], &ids(2..=4));
        sim.run_for(secs(20));
        let events: Vec<_> = sim.nodes.values().map(|n| n.events.clone()).collect();
        (events, sim.delivered)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_steady_cluster_stays_quiet() {
    // Gossip must settle: a converged cluster of 9 sends heartbeats and one gossip per node
    // per second, no storms.
    let mut sim = formed_cluster(9, three_seeds);
    sim.run_for(secs(5));
    let before = sim.delivered;
    sim.run_for(secs(10));
    let per_second = (sim.delivered - before) / 10;
    // 9 nodes × 8 receivers × (heartbeat + answer) = 144, plus ≤ 9 × 2 gossip messages.
    assert!(per_second <= 144 + 18, "{per_second} messages per second");
    assert!(sim.converged_on(&ids(1..=9)));
}
