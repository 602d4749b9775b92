//! Members and their lifecycle.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_remote::UniqueAddress;

/// Where a member is in its lifecycle.
///
/// ```text
///   join accepted
///        │
///        ▼
///     Joining ──── leader, converged ────► Up
///        │                                 │
///        │ leave                     leave │
///        ▼                                 │
///     Leaving ◄────────────────────────────┘
///        │ leader, converged
///        ▼
///     Exiting ──── leader, converged ────► Removed   (tombstone: the
///                                             ▲         incarnation never returns)
///     Down ────── leader, converged ──────────┘
///       ▲
///       └── down (operator or split-brain resolver) from Joining, Up, Leaving or Exiting
/// ```
///
/// Every allowed move goes strictly *up* in the declaration order (`Joining < Up < Leaving <
/// Exiting < Down < Removed`), which is what lets gossip merge statuses by taking the
/// maximum: no member ever moves backwards, whatever order gossip arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Accepted by a member; waits for the leader to move it to `Up`.
    Joining,
    /// A full member.
    Up,
    /// Asked to leave; the leader moves it to `Exiting` once everybody has seen that.
    Leaving,
    /// About to be removed; it hands its work over and stops.
    Exiting,
    /// Declared dead (by an operator or the split-brain resolver); it stops its work if it
    /// is still running. The leader removes it.
    Down,
    /// No longer part of the cluster. Kept as a tombstone so that old gossip cannot bring the
    /// incarnation back.
    Removed,
}

impl MemberStatus {
    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_move_to(self, next: MemberStatus) -> bool {
        use MemberStatus::*;
        matches!(
            (self, next),
            (Joining, Up | Leaving | Down)
                | (Up, Leaving | Down)
                | (Leaving, Exiting | Down)
                | (Exiting, Removed | Down)
                | (Down, Removed)
        )
    }

    /// `next` if the lifecycle allows the move, else the refusal.
    pub fn transition(
        self,
        node: UniqueAddress,
        next: MemberStatus,
    ) -> Result<MemberStatus, IllegalTransition> {
        if self.can_move_to(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                node,
                from: self,
                to: next,
            })
        }
    }

    /// Statuses whose members must have seen the gossip before it counts as converged.
    pub(crate) fn must_see_gossip(self) -> bool {
        matches!(
            self,
            MemberStatus::Up | MemberStatus::Leaving | MemberStatus::Exiting
        )
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A refused lifecycle move: the member keeps its status. Retrying is pointless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("member {node} cannot move from {from} to {to}")]
pub struct IllegalTransition {
    /// The member.
    pub node: UniqueAddress,
    /// Its status, unchanged.
    pub from: MemberStatus,
    /// The refused status.
    pub to: MemberStatus,
}

/// One incarnation of a node as seen by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its identity (address + incarnation).
    pub address: UniqueAddress,
    /// Where it is in its lifecycle.
    pub status: MemberStatus,
    /// Roles it declared when joining; they never change for an incarnation.
    pub roles: BTreeSet<String>,
    /// Assigned by the leader when the member became `Up`; a lower number is older. `None`
    /// for members that never were `Up`.
    pub up_number: Option<u64>,
}

impl Member {
    /// Whether the member declared `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// Oldest first: by `up_number` (members never `Up` are the youngest), then by address.
    /// The oldest member is where singletons run.
    pub fn age_cmp(&self, other: &Member) -> Ordering {
        let key = |m: &Member| (m.up_number.unwrap_or(u64::MAX), m.address);
        key(self).cmp(&key(other))
    }
}

#[cfg(test)]
mod tests {
    use super::MemberStatus::*;
    use super::*;

    const ALL: [MemberStatus; 6] = [Joining, Up, Leaving, Exiting, Down, Removed];

    fn node() -> UniqueAddress {
        UniqueAddress::new("127.0.0.1:1".parse().unwrap(), 1)
    }

    #[test]
    fn allowed_transitions_are_exactly_the_lifecycle() {
        let allowed: Vec<(MemberStatus, MemberStatus)> = ALL
            .iter()
            .flat_map(|&a| ALL.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a.can_move_to(b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Joining, Up),
                (Joining, Leaving),
                (Joining, Down),
                (Up, Leaving),
                (Up, Down),
                (Leaving, Exiting),
                (Leaving, Down),
                (Exiting, Down),
                (Exiting, Removed),
                (Down, Removed),
            ]
        );
    }

    #[test]
    fn every_allowed_move_goes_up_and_backwards_moves_are_refused() {
        for a in ALL {
            for b in ALL {
                if a.can_move_to(b) {
                    assert!(b > a, "{a} -> {b} must go up");
                }
                if b <= a {
                    assert_eq!(
                        a.transition(node(), b),
                        Err(IllegalTransition {
                            node: node(),
                            from: a,
                            to: b
                        })
                    );
                }
            }
        }
        assert_eq!(Up.transition(node(), Leaving), Ok(Leaving));
        let err = Removed.transition(node(), Up).unwrap_err();
        assert_eq!(
            err.to_string(),
            "member 127.0.0.1:1#1 cannot move from Removed to Up"
        );
    }

    #[test]
    fn age_order_puts_lowest_up_number_first_and_never_up_last() {
        let m = |port: u16, up: Option<u64>| Member {
            address: UniqueAddress::new(format!("127.0.0.1:{port}").parse().unwrap(), 1),
            status: Up,
            roles: BTreeSet::new(),
            up_number: up,
        };
        let mut v = [m(1, None), m(2, Some(3)), m(3, Some(1)), m(4, Some(3))];
        v.sort_by(Member::age_cmp);
        let ports: Vec<u16> = v.iter().map(|m| m.address.addr.port()).collect();
        assert_eq!(ports, vec![3, 2, 4, 1]);
    }
}
