//! Leave, down, and refusals of backward moves.

use super::*;
use crate::member::MemberStatus::*;
use crate::membership::{Input, ShutdownReason};

fn gossip_msg(core: &Membership) -> Input {
    received(
        core.self_node(),
        ClusterMessage::Gossip {
            gossip: core.gossip().clone(),
        },
    )
}

#[test]
fn graceful_leave_goes_through_leaving_exiting_removed_and_stops_the_node() {
    let g = cluster(&[(1, Up), (2, Up)], &[1, 2]);
    let mut n1 = member_core(1, g.clone());
    let mut n2 = member_core(2, g);

    // n2 asks to leave: it tells n1.
    assert_eq!(
        n2.handle(t(0), Input::Leave(addr(2))),
        vec![
            publish(ClusterEvent::MemberLeft(member(2, Leaving))),
            gossip_to(n(1), &n2)
        ]
    );
    // n1 (leader) merges; both have seen it: converged, so n2 moves to Exiting.
    assert_eq!(
        n1.handle(t(10), gossip_msg(&n2)),
        vec![
            publish(ClusterEvent::MemberLeft(member(2, Leaving))),
            publish(ClusterEvent::MemberExited(member(2, Exiting))),
            gossip_to(n(2), &n1),
        ]
    );
    // n2 learns it is Exiting and confirms.
    assert_eq!(
        n2.handle(t(20), gossip_msg(&n1)),
        vec![
            publish(ClusterEvent::MemberExited(member(2, Exiting))),
            gossip_to(n(1), &n2)
        ]
    );
    // n2 has seen Exiting: n1 removes it and tells it.
    assert_eq!(
        n1.handle(t(30), gossip_msg(&n2)),
        vec![
            publish(ClusterEvent::MemberRemoved {
                member: member(2, Removed),
                previous_status: Exiting
            }),
            gossip_to(n(2), &n1),
        ]
    );
    // n2 sees its tombstone and shuts down.
    assert_eq!(
        n2.handle(t(40), gossip_msg(&n1)),
        vec![
            publish(ClusterEvent::MemberRemoved {
                member: member(2, Removed),
                previous_status: Exiting
            }),
            Effect::Shutdown(ShutdownReason::Removed),
        ]
    );
    assert!(n2.is_terminated());
    assert_eq!(statuses(&n1), vec![(1, Up)]);
}

#[test]
fn an_operator_downs_a_member_and_the_leader_removes_it_once_everybody_saw() {
    let g = cluster(&[(1, Up), (2, Up), (3, Up)], &[1, 2, 3]);
    let mut n1 = member_core(1, g.clone());
    let mut n2 = member_core(2, g.clone());
    let mut n3 = member_core(3, g);
    assert_eq!(
        n1.handle(t(0), Input::Down(addr(3))),
        vec![
            publish(ClusterEvent::MemberDowned(member(3, Down))),
            gossip_to(n(2), &n1),
            gossip_to(n(3), &n1),
        ]
    );
    let down_gossip = n1.gossip().clone();
    // n3 learns it is down: it acknowledges and stops.
    assert_eq!(
        n3.handle(
            t(5),
            received(
                n(1),
                ClusterMessage::Gossip {
                    gossip: down_gossip.clone()
                }
            )
        ),
        vec![
            publish(ClusterEvent::MemberDowned(member(3, Down))),
            gossip_to(n(1), &n3),
            Effect::Shutdown(ShutdownReason::Downed),
        ]
    );
    // n2 acknowledges: converged, n1 removes n3.
    n2.handle(
        t(5),
        received(
            n(1),
            ClusterMessage::Gossip {
                gossip: down_gossip,
            },
        ),
    );
    assert_eq!(
        n1.handle(t(10), gossip_msg(&n2)),
        vec![
            publish(ClusterEvent::MemberRemoved {
                member: member(3, Removed),
                previous_status: Down
            }),
            gossip_to(n(2), &n1),
            gossip_to(n(3), &n1),
        ]
    );
}

#[test]
fn downing_oneself_tells_the_others_then_shuts_down() {
    let mut core = member_core(1, cluster(&[(1, Up), (2, Up)], &[1, 2]));
    assert_eq!(
        core.handle(t(0), Input::Down(addr(1))),
        vec![
            publish(ClusterEvent::MemberDowned(member(1, Down))),
            publish(ClusterEvent::LeaderChanged(Some(n(2)))),
            gossip_to(n(2), &core),
            Effect::Shutdown(ShutdownReason::Downed),
        ]
    );
}

#[test]
fn leaving_before_joining_just_stops() {
    let mut core = node(1);
    assert_eq!(core.handle(t(0), Input::Leave(addr(2))), vec![]);
    assert_eq!(core.handle(t(0), Input::Down(addr(1))), vec![]);
    assert_eq!(
        core.handle(t(0), Input::Leave(addr(1))),
        vec![Effect::Shutdown(ShutdownReason::LeftBeforeJoining)]
    );
}

#[test]
fn no_member_ever_moves_backwards() {
    // n2's view; n1 leads. n3 is Down, n4 Leaving.
    let g = cluster(&[(1, Up), (2, Up), (3, Down), (4, Leaving)], &[1, 2]);
    let mut core = member_core(2, g.clone());
    // Leave of a Down or Leaving member, Down of a Down member: refused, nothing happens.
    assert_eq!(core.handle(t(0), Input::Leave(addr(3))), vec![]);
    assert_eq!(core.handle(t(0), Input::Leave(addr(4))), vec![]);
    assert_eq!(core.handle(t(0), Input::Down(addr(3))), vec![]);
    assert_eq!(core.handle(t(0), Input::Down(addr(9))), vec![]);
    // Stale gossip (n3 Up, n4 Up) does not move them back; the sender is sent the newer state.
    let stale = cluster(&[(1, Up), (2, Up), (3, Up), (4, Up)], &[1]);
    assert_eq!(
        core.handle(
            t(0),
            received(n(1), ClusterMessage::Gossip { gossip: stale })
        ),
        vec![gossip_to(n(1), &core)]
    );
    assert_eq!(
        statuses(&core),
        vec![(1, Up), (2, Up), (3, Down), (4, Leaving)]
    );
    assert_eq!(core.gossip(), &g.with_seen([n(1), n(2)]));
}
