use std::collections::BTreeSet;

use super::*;
use crate::membership::{Effect, Input};
use crate::reachability::ReachabilityStatus;

fn init_join_to(i: u16) -> Effect {
    Effect::SendToAddress {
        to: addr(i),
        message: ClusterMessage::InitJoin,
    }
}

fn join_msg() -> ClusterMessage {
    ClusterMessage::Join {
        roles: BTreeSet::new(),
    }
}

fn formed_events(i: u16) -> Vec<Effect> {
    vec![
        publish(ClusterEvent::MemberJoined(member(i, MemberStatus::Joining))),
        publish(ClusterEvent::LeaderChanged(Some(n(i)))),
        publish(ClusterEvent::MemberUp(Member {
            up_number: Some(1),
            ..member(i, MemberStatus::Up)
        })),
    ]
}

#[test]
fn the_only_seed_forms_a_cluster_at_once() {
    let mut core = node(1);
    assert_eq!(
        core.handle(t(0), Input::JoinSeedNodes(vec![addr(1)])),
        formed_events(1)
    );
    let state = core.state();
    assert_eq!(state.self_status, Some(MemberStatus::Up));
    assert_eq!(state.leader, Some(n(1)));
    assert!(state.converged);
}

#[test]
fn first_seed_forms_a_cluster_when_every_other_seed_says_no() {
    let mut core = node(1);
    let seeds = vec![addr(1), addr(2), addr(3)];
    assert_eq!(
        core.handle(t(0), Input::JoinSeedNodes(seeds)),
        vec![init_join_to(2), init_join_to(3)]
    );
    assert_eq!(
        core.handle(t(10), received(n(2), ClusterMessage::InitJoinNack)),
        vec![]
    );
    // A Nack from a node that is not a seed counts for nothing.
    assert_eq!(
        core.handle(t(15), received(n(9), ClusterMessage::InitJoinNack)),
        vec![]
    );
    assert_eq!(
        core.handle(t(20), received(n(3), ClusterMessage::InitJoinNack)),
        formed_events(1)
    );
}

#[test]
fn first_seed_retries_then_forms_a_cluster_after_the_seed_node_timeout() {
    let mut core = node(1);
    core.handle(t(0), Input::JoinSeedNodes(vec![addr(1), addr(2)]));
    assert_eq!(core.handle(t(900), Input::Tick), vec![]);
    assert_eq!(core.handle(t(1000), Input::Tick), vec![init_join_to(2)]);
    assert_eq!(core.handle(t(1500), Input::Tick), vec![]);
    assert_eq!(core.handle(t(2000), Input::Tick), vec![init_join_to(2)]);
    assert_eq!(core.handle(t(4900), Input::Tick), vec![init_join_to(2)]);
    assert_eq!(core.handle(t(5000), Input::Tick), formed_events(1));
}

#[test]
fn first_seed_joins_the_existing_cluster_when_another_seed_answers() {
    let mut core = node(1);
    core.handle(t(0), Input::JoinSeedNodes(vec![addr(1), addr(2)]));
    assert_eq!(
        core.handle(t(10), received(n(2), ClusterMessage::InitJoinAck)),
        vec![send(n(2), join_msg())]
    );
    // It no longer forms a cluster on timeout.
    assert_eq!(
        core.handle(t(1010), Input::Tick),
        vec![send(n(2), join_msg())]
    );
    assert_eq!(
        core.handle(t(6000), Input::Tick),
        vec![send(n(2), join_msg())]
    );
    assert!(!core.is_member());
}

#[test]
fn other_nodes_never_form_a_cluster() {
    let mut core = node(2);
    assert_eq!(
        core.handle(t(0), Input::JoinSeedNodes(vec![addr(1), addr(2)])),
        vec![init_join_to(1)]
    );
    assert_eq!(
        core.handle(t(50), received(n(1), ClusterMessage::InitJoinNack)),
        vec![]
    );
    for s in 1..=30 {
        assert_eq!(
            core.handle(t(s * 1000), Input::Tick),
            vec![init_join_to(1)],
            "at {s} s"
        );
    }
    assert!(!core.is_member());
    // Joining a second time while joining restarts the process with the new seeds.
    assert_eq!(
        core.handle(t(30_500), Input::JoinSeedNodes(vec![addr(3)])),
        vec![init_join_to(3)]
    );
}

#[test]
fn init_join_is_acknowledged_only_by_members() {
    let mut joining = node(2);
    joining.handle(t(0), Input::JoinSeedNodes(vec![addr(1), addr(2)]));
    assert_eq!(
        joining.handle(t(1), received(n(3), ClusterMessage::InitJoin)),
        vec![send(n(3), ClusterMessage::InitJoinNack)]
    );
    let mut up = member_core(1, cluster(&[(1, MemberStatus::Up)], &[1]));
    assert_eq!(
        up.handle(t(1), received(n(3), ClusterMessage::InitJoin)),
        vec![send(n(3), ClusterMessage::InitJoinAck)]
    );
    let mut leaving = member_core(1, cluster(&[(1, MemberStatus::Leaving)], &[1]));
    assert_eq!(
        leaving.handle(t(1), received(n(3), ClusterMessage::InitJoin)),
        vec![
            send(n(3), ClusterMessage::InitJoinNack),
            // Alone and converged, the leaving leader also moves itself on.
            publish(ClusterEvent::MemberExited(member(1, MemberStatus::Exiting))),
        ]
    );
}

#[test]
fn a_member_accepts_a_join_and_the_leader_moves_it_up() {
    let mut core = member_core(1, cluster(&[(1, MemberStatus::Up)], &[1]));
    let effects = core.handle(t(0), received(n(2), join_msg()));
    let welcome_gossip = cluster(&[(1, MemberStatus::Up), (2, MemberStatus::Joining)], &[1]);
    assert_eq!(
        effects,
        vec![
            send(
                n(2),
                ClusterMessage::Welcome {
                    gossip: welcome_gossip
                }
            ),
            publish(ClusterEvent::MemberJoined(member(2, MemberStatus::Joining))),
            // Only n1 must have seen it, so it has converged: the leader moves n2 up at once.
            publish(ClusterEvent::MemberUp(member(2, MemberStatus::Up))),
            gossip_to(n(2), &core),
            // Monitored at once, not at the next heartbeat slot.
            send(n(2), ClusterMessage::Heartbeat { sequence_nr: 1 }),
        ]
    );
    assert_eq!(
        statuses(&core),
        vec![(1, MemberStatus::Up), (2, MemberStatus::Up)]
    );
    // A retried Join gets another Welcome and changes nothing.
    assert_eq!(
        core.handle(t(10), received(n(2), join_msg())),
        vec![send(
            n(2),
            ClusterMessage::Welcome {
                gossip: core.gossip().clone()
            }
        )]
    );
}

#[test]
fn a_new_incarnation_gets_the_old_one_downed_before_it_is_welcomed() {
    let mut core = member_core(
        1,
        cluster(
            &[
                (1, MemberStatus::Up),
                (2, MemberStatus::Up),
                (3, MemberStatus::Up),
            ],
            &[1, 2, 3],
        ),
    );
    let new2 = UniqueAddress::new(addr(2), 2);
    let effects = core.handle(t(0), received(new2, join_msg()));
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberDowned(member(2, MemberStatus::Down))),
            publish(ClusterEvent::UnreachableMember(member(
                2,
                MemberStatus::Down
            ))),
            gossip_to(n(3), &core),
        ]
    );
    assert_eq!(
        core.gossip().reachability().status(&n(1), &n(2)),
        Some(ReachabilityStatus::Terminated)
    );
    // n3 confirms: converged (n2 is Down and unreachable), the leader removes n2.
    let from3 = core.gossip().clone().with_seen([n(3)]);
    let effects = core.handle(
        t(10),
        received(n(3), ClusterMessage::Gossip { gossip: from3 }),
    );
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberRemoved {
                member: member(2, MemberStatus::Removed),
                previous_status: MemberStatus::Down
            }),
            gossip_to(n(3), &core),
        ]
    );
    // The new incarnation's retry is welcomed now.
    let effects = core.handle(t(20), received(new2, join_msg()));
    assert!(
        matches!(&effects[0], Effect::Send { to, message: ClusterMessage::Welcome { .. } } if *to == new2)
    );
    assert_eq!(core.gossip().status_of(&new2), Some(MemberStatus::Joining));
}

#[test]
fn a_joiner_adopts_the_welcome_gossip() {
    let mut core = node(2);
    core.handle(t(0), Input::JoinSeedNodes(vec![addr(1)]));
    core.handle(t(5), received(n(1), ClusterMessage::InitJoinAck));
    let welcome = cluster(&[(1, MemberStatus::Up), (2, MemberStatus::Joining)], &[1]);
    let effects = core.handle(
        t(10),
        received(n(1), ClusterMessage::Welcome { gossip: welcome }),
    );
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberUp(member(1, MemberStatus::Up))),
            publish(ClusterEvent::MemberJoined(member(2, MemberStatus::Joining))),
            publish(ClusterEvent::LeaderChanged(Some(n(1)))),
            // The new member monitors its receivers at once.
            send(n(1), ClusterMessage::Heartbeat { sequence_nr: 1 }),
        ]
    );
    assert!(core.is_member());
    assert_eq!(core.gossip().seen_by(), &BTreeSet::from([n(1), n(2)]));
}

#[test]
fn a_welcome_that_does_not_include_the_joiner_is_ignored() {
    let mut core = node(2);
    core.handle(t(0), Input::Join(addr(1)));
    let welcome = cluster(&[(1, MemberStatus::Up)], &[1]);
    assert_eq!(
        core.handle(
            t(10),
            received(n(1), ClusterMessage::Welcome { gossip: welcome })
        ),
        vec![]
    );
    assert!(!core.is_member());
}

#[test]
fn programmatic_join_retries_until_welcomed() {
    let mut core = node(2);
    let join_addr = Effect::SendToAddress {
        to: addr(1),
        message: join_msg(),
    };
    assert_eq!(
        core.handle(t(0), Input::Join(addr(1))),
        vec![join_addr.clone()]
    );
    assert_eq!(core.handle(t(500), Input::Tick), vec![]);
    assert_eq!(core.handle(t(1000), Input::Tick), vec![join_addr.clone()]);
    // No seeds to start over with: it keeps trying the same contact.
    assert_eq!(core.handle(t(20_000), Input::Tick), vec![join_addr]);
    // Joining one's own address forms a cluster.
    let mut alone = node(3);
    assert_eq!(alone.handle(t(0), Input::Join(addr(3))), formed_events(3));
}

#[test]
fn without_a_welcome_the_joiner_starts_over_with_the_seeds() {
    let mut core = node(2);
    core.handle(t(0), Input::JoinSeedNodes(vec![addr(1), addr(3)]));
    core.handle(t(100), received(n(1), ClusterMessage::InitJoinAck));
    assert_eq!(
        core.handle(t(9_100), Input::Tick),
        vec![send(n(1), join_msg())]
    );
    assert_eq!(
        core.handle(t(10_100), Input::Tick),
        vec![init_join_to(1), init_join_to(3)]
    );
    // An Ack from the other seed leads there.
    assert_eq!(
        core.handle(t(10_200), received(n(3), ClusterMessage::InitJoinAck)),
        vec![send(n(3), join_msg())]
    );
}

#[test]
fn join_inputs_are_ignored_once_a_member() {
    let mut core = member_core(1, cluster(&[(1, MemberStatus::Up)], &[1]));
    assert_eq!(
        core.handle(t(0), Input::JoinSeedNodes(vec![addr(2)])),
        vec![]
    );
    assert_eq!(core.handle(t(0), Input::Join(addr(2))), vec![]);
    assert_eq!(
        core.handle(t(0), received(n(2), ClusterMessage::InitJoinAck)),
        vec![]
    );
}

#[test]
fn roles_travel_with_the_join() {
    let config = ClusterConfig {
        roles: BTreeSet::from(["endpoint".to_string()]),
        ..ClusterConfig::default()
    };
    let mut joiner = node_with(2, config);
    let roles = BTreeSet::from(["endpoint".to_string()]);
    assert_eq!(
        joiner.handle(t(0), Input::Join(addr(1))),
        vec![Effect::SendToAddress {
            to: addr(1),
            message: ClusterMessage::Join {
                roles: roles.clone()
            }
        }]
    );
    let mut core = member_core(1, cluster(&[(1, MemberStatus::Up)], &[1]));
    core.handle(
        t(0),
        received(
            n(2),
            ClusterMessage::Join {
                roles: roles.clone(),
            },
        ),
    );
    assert_eq!(core.gossip().member(&n(2)).unwrap().roles, roles);
}
