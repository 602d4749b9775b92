use super::*;
use crate::member::MemberStatus::*;
use crate::membership::Input;

fn no_resolver() -> ClusterConfig {
    ClusterConfig {
        split_brain_resolver: None,
        ..ClusterConfig::default()
    }
}

fn gossip_msg(g: Gossip) -> ClusterMessage {
    ClusterMessage::Gossip { gossip: g }
}

/// The gossip sends among `effects`, as (target, gossip).
fn gossip_sends(effects: &[Effect]) -> Vec<UniqueAddress> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: ClusterMessage::Gossip { .. },
            } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn received_gossip_is_merged_and_answered_when_the_sender_lacks_the_result() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Joining)], &[1]));
    let from2 = cluster(&[(1, Up), (2, Up), (3, Up)], &[2]);
    let effects = core.handle(t(0), received(n(2), gossip_msg(from2.clone())));
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberUp(member(3, Up))),
            gossip_to(n(2), &core)
        ]
    );
    assert_eq!(core.gossip(), &from2.with_seen([n(1), n(2)]));
}

#[test]
fn gossip_equal_to_ours_is_not_answered() {
    let g = cluster(&[(1, Up), (2, Up)], &[1, 2]);
    let mut core = member_core(1, g.clone());
    assert_eq!(core.handle(t(0), received(n(2), gossip_msg(g))), vec![]);
}

#[test]
fn the_answer_carries_the_state_after_the_leader_acted_and_is_sent_once() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Joining)], &[1]));
    // n2 has the same content: now both have seen it, it converged, n3 moves up.
    let from2 = cluster(&[(1, Up), (2, Up), (3, Joining)], &[2]);
    let effects = core.handle(t(0), received(n(2), gossip_msg(from2)));
    assert_eq!(
        effects,
        vec![
            publish(ClusterEvent::MemberUp(member(3, Up))),
            gossip_to(n(2), &core),
            gossip_to(n(3), &core),
        ]
    );
}

#[test]
fn gossip_from_strangers_stale_senders_and_before_joining_is_ignored() {
    let g = cluster(&[(1, Up), (2, Up)], &[1, 2]);
    let mut core = member_core(1, g.clone());
    // A node that is not a member.
    let from9 = g.clone().with_member(member(9, Up)).with_seen([n(9)]);
    assert_eq!(core.handle(t(0), received(n(9), gossip_msg(from9))), vec![]);
    // Gossip from before this node joined.
    let old = cluster(&[(2, Up)], &[2]);
    assert_eq!(core.handle(t(0), received(n(2), gossip_msg(old))), vec![]);
    // A node that has not joined ignores gossip.
    let mut idle = node(1);
    assert_eq!(idle.handle(t(0), received(n(2), gossip_msg(g))), vec![]);
}

#[test]
fn a_joiner_whose_welcome_never_spread_is_taken_as_joining() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up)], &[1, 2]));
    // n3 was welcomed by n2, which died before telling n1.
    let from3 = cluster(&[(1, Up), (2, Up), (3, Joining)], &[2, 3]);
    let effects = core.handle(t(0), received(n(3), gossip_msg(from3)));
    assert!(
        matches!(&effects[0], Effect::Send { to, message: ClusterMessage::Welcome { .. } } if *to == n(3))
    );
    assert_eq!(core.gossip().status_of(&n(3)), Some(Joining));
    // An unknown sender that is not joining (a member of some other cluster) is ignored.
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up)], &[1, 2]));
    let other = cluster(&[(1, Up), (4, Up)], &[4]);
    assert_eq!(core.handle(t(0), received(n(4), gossip_msg(other))), vec![]);
}

#[test]
fn a_removed_member_that_gossips_is_told_it_is_removed() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Removed)], &[1]));
    let from2 = cluster(&[(1, Up), (2, Exiting)], &[2]);
    assert_eq!(
        core.handle(t(0), received(n(2), gossip_msg(from2))),
        vec![gossip_to(n(2), &core)]
    );
}

#[test]
fn a_gossip_round_every_interval_prefers_members_that_have_not_seen() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Up)], &[1, 2]));
    assert_eq!(gossip_sends(&core.handle(t(0), Input::Tick)), vec![n(3)]);
    assert_eq!(gossip_sends(&core.handle(t(500), Input::Tick)), vec![]);
    assert_eq!(gossip_sends(&core.handle(t(1000), Input::Tick)), vec![n(3)]);
    // Everybody has seen it: any reachable member, picked by the seeded generator.
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up), (3, Up)], &[1, 2, 3]));
    let mut targets = BTreeSet::new();
    for s in 0..20 {
        let sends = gossip_sends(&tick_answered(&mut core, s * 1000));
        assert_eq!(sends.len(), 1);
        targets.extend(sends);
    }
    assert_eq!(targets, BTreeSet::from([n(2), n(3)]));
}

#[test]
fn the_seeded_choice_of_gossip_partners_is_reproducible() {
    let run = || {
        let mut core = member_core(
            1,
            cluster(&[(1, Up), (2, Up), (3, Up), (4, Up)], &[1, 2, 3, 4]),
        );
        (0..10)
            .flat_map(|s| gossip_sends(&tick_answered(&mut core, s * 1000)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn gossip_is_not_sent_to_members_this_node_cannot_reach() {
    let mut g = cluster(&[(1, Up), (2, Up), (3, Up)], &[1]);
    g.observe(
        n(1),
        n(3),
        Some(crate::reachability::ReachabilityStatus::Unreachable),
    );
    let mut core = member_core_with(1, g, no_resolver());
    for s in 0..10 {
        let effects = tick_answered_by(&mut core, s * 1000, |to| *to == n(2));
        assert_eq!(gossip_sends(&effects), vec![n(2)]);
    }
    // n3 never answered, so monitoring it from scratch did not make it reachable.
    assert_eq!(core.state().unreachable, BTreeSet::from([n(3)]));
}
