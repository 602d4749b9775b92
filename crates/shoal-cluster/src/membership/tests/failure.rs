//! Heartbeats, failure detection, and the split-brain resolver inside the core.

use std::time::Duration;

use super::*;
use crate::config::{DowningStrategyConfig, SplitBrainResolverConfig};
use crate::member::MemberStatus::*;
use crate::membership::{Input, ShutdownReason};
use crate::reachability::ReachabilityStatus;

fn heartbeats(effects: &[Effect]) -> Vec<(UniqueAddress, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: ClusterMessage::Heartbeat { sequence_nr },
            } => Some((*to, *sequence_nr)),
            _ => None,
        })
        .collect()
}

fn without_heartbeats_and_rounds(effects: Vec<Effect>, round: bool) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|e| match e {
            Effect::Send {
                message: ClusterMessage::Heartbeat { .. },
                ..
            } => false,
            Effect::Send {
                message: ClusterMessage::Gossip { .. },
                ..
            } => !round,
            _ => true,
        })
        .collect()
}

#[test]
fn heartbeats_are_answered_in_every_phase_but_terminated() {
    let hb = ClusterMessage::Heartbeat { sequence_nr: 9 };
    let rsp = send(n(2), ClusterMessage::HeartbeatResponse { sequence_nr: 9 });
    let mut idle = node(1);
    assert_eq!(
        idle.handle(t(0), received(n(2), hb.clone())),
        vec![rsp.clone()]
    );
    let mut member = member_core(1, cluster(&[(1, Up)], &[1]));
    assert_eq!(member.handle(t(0), received(n(2), hb)), vec![rsp]);
}

#[test]
fn heartbeats_go_to_every_other_live_member_each_interval() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Joining)], &[1, 2]));
    assert_eq!(
        heartbeats(&core.handle(t(0), Input::Tick)),
        vec![(n(2), 1), (n(3), 1)]
    );
    assert_eq!(core.monitored_nodes(), &BTreeSet::from([n(2), n(3)]));
    for ms in (100..1000).step_by(100) {
        assert_eq!(heartbeats(&core.handle(t(ms), Input::Tick)), vec![]);
    }
    assert_eq!(
        heartbeats(&core.handle(t(1000), Input::Tick)),
        vec![(n(2), 2), (n(3), 2)]
    );
}

fn join() -> ClusterMessage {
    ClusterMessage::Join {
        roles: BTreeSet::new(),
    }
}

#[test]
fn a_member_that_joins_gets_its_first_heartbeat_at_once_then_every_interval() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up)], &[1, 2]));
    assert_eq!(heartbeats(&core.handle(t(0), Input::Tick)), vec![(n(2), 1)]);
    // n3 joins between two heartbeat slots: it gets a heartbeat with the welcome, not at the
    // next slot (1 s), so a crash right after joining is timed from a real answer.
    let effects = core.handle(t(450), received(n(3), join()));
    assert_eq!(heartbeats(&effects), vec![(n(3), 2)]);
    assert_eq!(core.monitored_nodes(), &BTreeSet::from([n(2), n(3)]));
    core.handle(
        t(455),
        received(n(3), ClusterMessage::HeartbeatResponse { sequence_nr: 2 }),
    );
    assert!(core.phi(&n(3), t(455)).is_some_and(|phi| phi < 0.01));
    // Each receiver keeps its own phase: the intervals the detector learns stay 1 s.
    let mut sent = Vec::new();
    for ms in (500..=2500).step_by(100) {
        for hb in heartbeats(&core.handle(t(ms), Input::Tick)) {
            sent.push((ms, hb));
        }
    }
    assert_eq!(
        sent,
        vec![
            (1000, (n(2), 3)),
            (1500, (n(3), 4)),
            (2000, (n(2), 5)),
            (2500, (n(3), 6)),
        ]
    );
    // Other inputs send no further heartbeats to members already monitored.
    let join_retry = core.handle(t(2510), received(n(3), join()));
    assert_eq!(heartbeats(&join_retry), vec![]);
}

#[test]
fn monitoring_is_bounded_by_monitored_by_nr_of_members() {
    let mut config = ClusterConfig::default();
    config.failure_detector.monitored_by_nr_of_members = 3;
    let members: Vec<(u16, MemberStatus)> = (1..=10).map(|i| (i, Up)).collect();
    let all: Vec<u16> = (1..=10).collect();
    let mut core = member_core_with(1, cluster(&members, &all), config);
    assert_eq!(heartbeats(&core.handle(t(0), Input::Tick)).len(), 3);
    assert_eq!(core.monitored_nodes().len(), 3);
}

/// Drive `core` (node 1) with a tick every 100 ms from `from` to `to` (exclusive); every
/// heartbeat to a node for which `answers(node, time)` holds is answered 10 ms later.
/// Returns the non-heartbeat effects per input time (gossip rounds left out).
fn drive(
    core: &mut Membership,
    from: u64,
    to: u64,
    answers: impl Fn(u16, u64) -> bool,
) -> Vec<(u64, Vec<Effect>)> {
    let mut log = Vec::new();
    for ms in (from..to).step_by(100) {
        let effects = core.handle(t(ms), Input::Tick);
        let round = ms % 1000 == 0;
        let mut responses = Vec::new();
        for (to, seq) in heartbeats(&effects) {
            if answers(to.addr.port() - 2550, ms) {
                responses.push(received(
                    to,
                    ClusterMessage::HeartbeatResponse { sequence_nr: seq },
                ));
            }
        }
        let rest = without_heartbeats_and_rounds(effects, round);
        if !rest.is_empty() {
            log.push((ms, rest));
        }
        for r in responses {
            let effects = core.handle(t(ms + 10), r);
            if !effects.is_empty() {
                log.push((ms + 10, effects));
            }
        }
    }
    log
}

#[test]
fn a_silent_node_becomes_unreachable_when_phi_crosses_the_threshold_and_is_removed() {
    let g = cluster(&[(1, Up), (2, Up), (3, Up)], &[1, 2, 3]);
    let mut core = member_core(1, g);
    // n3 answers until t = 5 s (last answer at 5.01 s), n2 always.
    let log = drive(&mut core, 0, 13_300, |node, at| node == 2 || at <= 5000);
    // History {750, 1250, 1000 × 5}: mean 1 s, std ≈ 133.6 ms; phi reaches 8 at
    // 1 s + 3 s pause + 5.226 std ≈ 4.698 s after 5.01 s = 9.708 s: the 9.8 s tick.
    let unreachable_gossip = core.gossip().clone();
    assert_eq!(
        log,
        vec![(
            9800,
            vec![
                publish(ClusterEvent::UnreachableMember(member(3, Up))),
                send(
                    n(2),
                    ClusterMessage::Gossip {
                        gossip: unreachable_gossip
                    }
                ),
            ]
        )]
    );
    assert_eq!(
        core.gossip().reachability().status(&n(1), &n(3)),
        Some(ReachabilityStatus::Unreachable)
    );
    assert!(core.phi(&n(3), t(9800)).unwrap() >= 8.0);
    assert!(core.phi(&n(2), t(9800)).unwrap() < 1.0);

    // n2 acknowledges the observation (the resolver counts on n2 only once it has).
    let ack = core.gossip().clone().with_seen([n(2)]);
    assert_eq!(
        core.handle(
            t(9810),
            received(n(2), ClusterMessage::Gossip { gossip: ack })
        ),
        vec![gossip_to(n(2), &core)]
    );
    // stable_after (3.5 s) after the observation the leader (n1) downs n3 and tells n2.
    let effects = without_heartbeats_and_rounds(core.handle(t(13_200), Input::Tick), false);
    assert_eq!(effects, vec![]);
    let effects = without_heartbeats_and_rounds(core.handle(t(13_300), Input::Tick), false);
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberDowned(member(3, Down))),
            gossip_to(n(2), &core)
        ]
    );
    // n2 acknowledges: converged (n3 is Down and unreachable), n3 is removed 8.3 s after its
    // last answer.
    let ack = core.gossip().clone().with_seen([n(2)]);
    assert_eq!(
        core.handle(
            t(13_310),
            received(n(2), ClusterMessage::Gossip { gossip: ack })
        ),
        vec![
            publish(ClusterEvent::MemberRemoved {
                member: member(3, Removed),
                previous_status: Down
            }),
            gossip_to(n(2), &core),
        ]
    );
    assert_eq!(statuses(&core), vec![(1, Up), (2, Up)]);
}

#[test]
fn a_node_that_answers_again_becomes_reachable() {
    let g = cluster(&[(1, Up), (2, Up), (3, Up)], &[1, 2, 3]);
    let mut core = member_core(1, g);
    drive(&mut core, 0, 9_900, |node, at| node == 2 || at <= 5000);
    assert_eq!(core.state().unreachable, BTreeSet::from([n(3)]));
    // n3 answers the 10 s heartbeat.
    let log = drive(&mut core, 9_900, 10_200, |_, _| true);
    let reachable = core.gossip().clone();
    assert_eq!(
        log,
        vec![(
            10_100,
            vec![
                publish(ClusterEvent::ReachableMember(member(3, Up))),
                send(
                    n(2),
                    ClusterMessage::Gossip {
                        gossip: reachable.clone()
                    }
                ),
                send(n(3), ClusterMessage::Gossip { gossip: reachable }),
            ]
        )]
    );
    // Nothing was downed: the view changed before stable_after.
    assert_eq!(statuses(&core), vec![(1, Up), (2, Up), (3, Up)]);
}

#[test]
fn a_node_that_never_answers_is_monitored_from_expected_response_after() {
    let g = cluster(&[(1, Up), (2, Up)], &[1, 2]);
    let mut core = member_core(1, g);
    // First heartbeat at 0; monitoring starts at 1 s; phi reaches 8 at 1 s + 4 s + 5.226 ×
    // 250 ms (first-estimate history) ≈ 6.31 s: the 6.4 s tick.
    let log = drive(&mut core, 0, 7000, |_, _| false);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].0, 6400);
    assert_eq!(
        log[0].1[0],
        publish(ClusterEvent::UnreachableMember(member(2, Up)))
    );
}

fn with_strategy(strategy: DowningStrategyConfig) -> ClusterConfig {
    ClusterConfig {
        split_brain_resolver: Some(SplitBrainResolverConfig {
            strategy,
            ..SplitBrainResolverConfig::default()
        }),
        ..ClusterConfig::default()
    }
}

/// Node `me` of a 5-node cluster that has observed `unreachable` (its own row), and whose
/// side has seen that.
fn partitioned(me: u16, unreachable: &[u16], config: ClusterConfig) -> Membership {
    let members: Vec<(u16, MemberStatus)> = (1..=5).map(|i| (i, Up)).collect();
    let mut g = cluster(&members, &[]);
    for u in unreachable {
        g.observe(n(me), n(*u), Some(ReachabilityStatus::Unreachable));
    }
    let side = (1..=5).filter(|i| !unreachable.contains(i)).map(n);
    member_core_with(me, g.with_seen(side), config)
}

fn nudge() -> Input {
    Input::LeaseResult { granted: false }
}

#[test]
fn the_minority_side_downs_itself_after_stable_after() {
    let mut core = partitioned(1, &[3, 4, 5], ClusterConfig::default());
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(core.handle(t(3499), nudge()), vec![]);
    assert_eq!(
        core.handle(t(3500), nudge()),
        vec![
            publish(ClusterEvent::MemberDowned(member(1, Down))),
            publish(ClusterEvent::MemberDowned(member(2, Down))),
            // Down members never lead, and a Down observer's reports no longer count for the
            // others: n3 would lead.
            publish(ClusterEvent::LeaderChanged(Some(n(3)))),
            gossip_to(n(2), &core),
            Effect::Shutdown(ShutdownReason::Downed),
        ]
    );
}

#[test]
fn the_majority_side_downs_the_minority_after_stable_after() {
    let mut core = partitioned(3, &[1, 2], ClusterConfig::default());
    // n3 leads its side (n1, n2 unreachable).
    assert_eq!(core.state().leader, Some(n(3)));
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(
        core.handle(t(3500), nudge()),
        vec![
            publish(ClusterEvent::MemberDowned(member(1, Down))),
            publish(ClusterEvent::MemberDowned(member(2, Down))),
            gossip_to(n(4), &core),
            gossip_to(n(5), &core),
        ]
    );
}

#[test]
fn a_non_leader_does_not_decide() {
    let mut core = partitioned(4, &[1, 2], ClusterConfig::default());
    assert_eq!(core.state().leader, Some(n(3)));
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(core.handle(t(5000), nudge()), vec![]);
}

#[test]
fn lease_majority_asks_the_runner_for_the_lease_and_acts_on_the_answer() {
    let config = with_strategy(DowningStrategyConfig::LeaseMajority {
        role: None,
        acquire_lease_delay_for_minority: Duration::from_secs(2),
        release_after: Duration::from_secs(40),
    });
    let mut core = partitioned(3, &[1, 2], config.clone());
    core.handle(t(0), nudge());
    assert_eq!(
        core.handle(t(3500), Input::Tick)
            .iter()
            .filter(|e| **e == Effect::AcquireLease)
            .count(),
        1
    );
    assert_eq!(
        core.handle(t(3600), Input::LeaseResult { granted: true }),
        vec![
            publish(ClusterEvent::MemberDowned(member(1, Down))),
            publish(ClusterEvent::MemberDowned(member(2, Down))),
            gossip_to(n(4), &core),
            gossip_to(n(5), &core),
        ]
    );
    // The minority side waits 2 s more, and downs itself when refused.
    let mut minority = partitioned(1, &[3, 4, 5], config);
    minority.handle(t(0), nudge());
    assert_eq!(minority.handle(t(3500), nudge()), vec![]);
    assert_eq!(
        minority.handle(t(5500), nudge()),
        vec![Effect::AcquireLease]
    );
    let effects = minority.handle(t(5600), Input::LeaseResult { granted: false });
    assert_eq!(
        effects.last(),
        Some(&Effect::Shutdown(ShutdownReason::Downed))
    );
}

#[test]
fn with_the_resolver_off_nobody_is_downed() {
    let config = ClusterConfig {
        split_brain_resolver: None,
        ..ClusterConfig::default()
    };
    let mut core = partitioned(3, &[1, 2], config);
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(core.handle(t(60_000), nudge()), vec![]);
}

#[test]
fn a_custom_strategy_can_replace_the_configured_one() {
    let mut core = partitioned(3, &[1, 2], ClusterConfig::default())
        .with_downing_strategy(Box::new(crate::sbr::DownAllNodes));
    core.handle(t(0), nudge());
    let effects = core.handle(t(3500), nudge());
    assert_eq!(
        effects.last(),
        Some(&Effect::Shutdown(ShutdownReason::Downed))
    );
    assert_eq!(
        statuses(&core).iter().filter(|(_, s)| *s == Down).count(),
        5
    );
}
