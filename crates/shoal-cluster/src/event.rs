//! Cluster events: what changed in the membership, derived from state differences.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_remote::UniqueAddress;

use crate::gossip::Gossip;
use crate::member::{Member, MemberStatus};

/// A change in the membership as one node sees it. Events are derived by comparing the
/// state before and after each input, so a subscriber that applies them to the previous
/// [`ClusterState`](crate::ClusterState) gets the current one. A member whose status moves
/// several steps between two observations produces one event, for the status it reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterEvent {
    /// A member was added as `Joining`.
    MemberJoined(Member),
    /// A member became `Up`.
    MemberUp(Member),
    /// A member started leaving (`Leaving`).
    MemberLeft(Member),
    /// A member became `Exiting`.
    MemberExited(Member),
    /// A member was marked `Down`.
    MemberDowned(Member),
    /// A member is gone (its status as last seen before the tombstone is kept).
    MemberRemoved {
        /// The member, with status `Removed`.
        member: Member,
        /// Its status before removal.
        previous_status: MemberStatus,
    },
    /// Some member's failure detector reports this member unreachable.
    UnreachableMember(Member),
    /// No member reports this member unreachable any more.
    ReachableMember(Member),
    /// The leader (as this node sees it) changed.
    LeaderChanged(Option<UniqueAddress>),
}

/// The part of the state events are derived from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) members: BTreeMap<UniqueAddress, Member>,
    pub(crate) unreachable: BTreeSet<UniqueAddress>,
    pub(crate) leader: Option<UniqueAddress>,
}

impl Observed {
    pub(crate) fn of(gossip: &Gossip, self_node: &UniqueAddress) -> Self {
        Observed {
            members: gossip.members().map(|m| (m.address, m)).collect(),
            // This node's own observations count for it even once it is Down.
            unreachable: gossip
                .unreachable()
                .into_iter()
                .chain(gossip.reachability().unreachable_by(self_node))
                .filter(|a| a != self_node && gossip.is_live(a))
                .collect(),
            leader: gossip.leader(self_node),
        }
    }
}

/// The events that lead from `before` to `after`, in this order: status changes and new
/// members (address order), removals, unreachable, reachable, leader change.
pub(crate) fn diff(before: &Observed, after: &Observed) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    for (addr, m) in &after.members {
        let previous = before.members.get(addr).map(|p| p.status);
        if previous == Some(m.status) {
            continue;
        }
        let event = match m.status {
            MemberStatus::Joining => ClusterEvent::MemberJoined(m.clone()),
            MemberStatus::Up => ClusterEvent::MemberUp(m.clone()),
            MemberStatus::Leaving => ClusterEvent::MemberLeft(m.clone()),
            MemberStatus::Exiting => ClusterEvent::MemberExited(m.clone()),
            MemberStatus::Down => ClusterEvent::MemberDowned(m.clone()),
            MemberStatus::Removed => continue,
        };
        events.push(event);
    }
    for (addr, m) in &before.members {
        if !after.members.contains_key(addr) {
            let member = Member {
                status: MemberStatus::Removed,
                ..m.clone()
            };
            events.push(ClusterEvent::MemberRemoved {
                member,
                previous_status: m.status,
            });
        }
    }
    for addr in after.unreachable.difference(&before.unreachable) {
        if let Some(m) = after.members.get(addr) {
            events.push(ClusterEvent::UnreachableMember(m.clone()));
        }
    }
    for addr in before.unreachable.difference(&after.unreachable) {
        if let Some(m) = after.members.get(addr) {
            events.push(ClusterEvent::ReachableMember(m.clone()));
        }
    }
    if before.leader != after.leader {
        events.push(ClusterEvent::LeaderChanged(after.leader));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16, status: MemberStatus) -> Member {
        Member {
            address: UniqueAddress::new(format!("127.0.0.1:{port}").parse().unwrap(), 1),
            status,
            roles: BTreeSet::new(),
            up_number: None,
        }
    }

    fn observed(members: &[Member], unreachable: &[u16], leader: Option<u16>) -> Observed {
        let addr = |p: u16| m(p, MemberStatus::Up).address;
        Observed {
            members: members.iter().map(|m| (m.address, m.clone())).collect(),
            unreachable: unreachable.iter().map(|p| addr(*p)).collect(),
            leader: leader.map(addr),
        }
    }

    #[test]
    fn diff_reports_every_kind_of_change_in_a_fixed_order() {
        use MemberStatus::*;
        let before = observed(
            &[m(1, Up), m(2, Up), m(3, Joining), m(4, Up)],
            &[4],
            Some(1),
        );
        let after = observed(
            &[m(2, Leaving), m(3, Up), m(4, Up), m(5, Joining)],
            &[2],
            Some(2),
        );
        assert_eq!(
            diff(&before, &after),
            vec![
                ClusterEvent::MemberLeft(m(2, Leaving)),
                ClusterEvent::MemberUp(m(3, Up)),
                ClusterEvent::MemberJoined(m(5, Joining)),
                ClusterEvent::MemberRemoved {
                    member: m(1, Removed),
                    previous_status: Up
                },
                ClusterEvent::UnreachableMember(m(2, Leaving)),
                ClusterEvent::ReachableMember(m(4, Up)),
                ClusterEvent::LeaderChanged(Some(m(2, Up).address)),
            ]
        );
        assert_eq!(diff(&after, &after), vec![]);
    }

    #[test]
    fn a_removed_unreachable_member_is_not_reported_reachable() {
        use MemberStatus::*;
        let before = observed(&[m(1, Up), m(2, Down)], &[2], Some(1));
        let after = observed(&[m(1, Up)], &[], Some(1));
        assert_eq!(
            diff(&before, &after),
            vec![ClusterEvent::MemberRemoved {
                member: m(2, Removed),
                previous_status: Down
            }]
        );
    }
}
