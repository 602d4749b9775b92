use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::member::MemberStatus::*;
use crate::membership::Input;

/// An input that changes nothing by itself, to let the core run its post-input steps.
fn nudge() -> Input {
    Input::LeaseResult { granted: false }
}

#[test]
fn no_leader_action_before_convergence() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Joining)], &[1]));
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(statuses(&core), vec![(1, Up), (2, Up), (3, Joining)]);
}

#[test]
fn only_the_leader_acts() {
    let g = cluster(&[(1, Up), (2, Up), (3, Joining)], &[1, 2]);
    let mut core = member_core(2, g);
    assert_eq!(core.handle(t(0), nudge()), vec![]);
    assert_eq!(statuses(&core), vec![(1, Up), (2, Up), (3, Joining)]);
}

#[test]
fn on_convergence_the_leader_moves_every_member_one_step() {
    let g = cluster(
        &[(1, Up), (2, Leaving), (3, Exiting), (4, Down), (5, Joining)],
        &[1, 2, 3],
    );
    let mut core = member_core(1, g);
    let effects = core.handle(t(0), nudge());
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberExited(member(2, Exiting))),
            publish(ClusterEvent::MemberUp(Member {
                up_number: Some(5),
                ..member(5, Up)
            })),
            publish(ClusterEvent::MemberRemoved {
                member: member(3, Removed),
                previous_status: Exiting
            }),
            publish(ClusterEvent::MemberRemoved {
                member: member(4, Removed),
                previous_status: Down
            }),
            gossip_to(n(2), &core),
            gossip_to(n(5), &core),
            // The removed ones are told, so that they stop.
            gossip_to(n(3), &core),
            gossip_to(n(4), &core),
        ]
    );
    assert_eq!(statuses(&core), vec![(1, Up), (2, Exiting), (5, Up)]);
    assert_eq!(core.gossip().status_of(&n(3)), Some(Removed));
}

#[test]
fn members_wait_for_min_nr_of_members() {
    let config = ClusterConfig {
        min_nr_of_members: 3,
        ..ClusterConfig::default()
    };
    let mut core = node_with(1, config);
    assert_eq!(
        core.handle(t(0), Input::JoinSeedNodes(vec![addr(1)])),
        vec![
            publish(ClusterEvent::MemberJoined(member(1, Joining))),
            publish(ClusterEvent::LeaderChanged(Some(n(1)))),
        ]
    );
    let join = ClusterMessage::Join {
        roles: BTreeSet::new(),
    };
    core.handle(t(10), received(n(2), join.clone()));
    assert_eq!(statuses(&core), vec![(1, Joining), (2, Joining)]);
    let effects = core.handle(t(20), received(n(3), join));
    let ups: Vec<&Effect> = effects
        .iter()
        .filter(|e| matches!(e, Effect::Publish(ClusterEvent::MemberUp(_))))
        .collect();
    assert_eq!(
        ups,
        vec![
            &publish(ClusterEvent::MemberUp(Member {
                up_number: Some(1),
                ..member(1, Up)
            })),
            &publish(ClusterEvent::MemberUp(Member {
                up_number: Some(2),
                ..member(2, Up)
            })),
            &publish(ClusterEvent::MemberUp(Member {
                up_number: Some(3),
                ..member(3, Up)
            })),
        ]
    );
}

#[test]
fn members_wait_for_the_minimum_of_each_role() {
    let config = ClusterConfig {
        min_nr_of_members_per_role: BTreeMap::from([("entity".to_string(), 2)]),
        ..ClusterConfig::default()
    };
    let entity = BTreeSet::from(["entity".to_string()]);
    let mut core = node_with(
        1,
        ClusterConfig {
            roles: entity.clone(),
            ..config
        },
    );
    core.handle(t(0), Input::JoinSeedNodes(vec![addr(1)]));
    core.handle(
        t(10),
        received(
            n(2),
            ClusterMessage::Join {
                roles: BTreeSet::new(),
            },
        ),
    );
    assert_eq!(statuses(&core), vec![(1, Joining), (2, Joining)]);
    core.handle(
        t(20),
        received(n(3), ClusterMessage::Join { roles: entity }),
    );
    assert_eq!(statuses(&core), vec![(1, Up), (2, Up), (3, Up)]);
}

#[test]
fn up_numbers_keep_growing_and_give_the_age_order() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up)], &[1, 2]));
    core.handle(
        t(0),
        received(
            n(3),
            ClusterMessage::Join {
                roles: BTreeSet::new(),
            },
        ),
    );
    assert_eq!(
        core.gossip().member(&n(3)).unwrap().up_number,
        None,
        "n2 has not seen it"
    );
    let ack = core.gossip().clone().with_seen([n(2)]);
    core.handle(
        t(10),
        received(n(2), ClusterMessage::Gossip { gossip: ack }),
    );
    assert_eq!(core.gossip().member(&n(3)).unwrap().up_number, Some(3));
    let mut oldest_first: Vec<Member> = core.gossip().members().collect();
    oldest_first.sort_by(Member::age_cmp);
    let order: Vec<UniqueAddress> = oldest_first.iter().map(|m| m.address).collect();
    assert_eq!(order, vec![n(1), n(2), n(3)]);
}
