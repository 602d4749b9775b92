//! What a downing strategy sees: the members, who is unreachable, and who has seen the
//! current gossip.

use std::collections::{BTreeMap, BTreeSet};

use shoal_remote::UniqueAddress;

use crate::gossip::Gossip;
use crate::member::{Member, MemberStatus};
use crate::sbr::Decision;

/// Which members a strategy counts. The default counts `Up` and `Leaving` members; the two
/// flags implement Akka's guard against a membership change racing a partition: a `Joining`
/// member may already be `Up` on the other side, a `Leaving` one already `Exiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counting {
    /// Also count `Joining` members.
    pub including_joining: bool,
    /// Do not count `Leaving` members.
    pub excluding_leaving: bool,
}

/// A side of a partition as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    self_node: UniqueAddress,
    members: BTreeMap<UniqueAddress, Member>,
    observations: BTreeSet<(UniqueAddress, UniqueAddress)>,
    unreachable: BTreeSet<UniqueAddress>,
    seen_by: BTreeSet<UniqueAddress>,
}

impl PartitionView {
    /// A view from live `members`, unreachability `observations` `(observer, subject)`, and
    /// the nodes that have seen the current gossip. Observations not between two members are
    /// ignored; `self_node` never counts itself unreachable.
    pub fn new(
        self_node: UniqueAddress,
        members: impl IntoIterator<Item = Member>,
        observations: impl IntoIterator<Item = (UniqueAddress, UniqueAddress)>,
        seen_by: impl IntoIterator<Item = UniqueAddress>,
    ) -> Self {
        let members: BTreeMap<UniqueAddress, Member> = members
            .into_iter()
            .filter(|m| m.status != MemberStatus::Removed)
            .map(|m| (m.address, m))
            .collect();
        let observations: BTreeSet<(UniqueAddress, UniqueAddress)> = observations
            .into_iter()
            .filter(|(o, s)| o != s && members.contains_key(o) && members.contains_key(s))
            .collect();
        let unreachable = observations
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s != self_node)
            .collect();
        PartitionView {
            self_node,
            members,
            observations,
            unreachable,
            seen_by: seen_by.into_iter().collect(),
        }
    }

    /// The view `self_node` has from its gossip.
    pub fn from_gossip(gossip: &Gossip, self_node: UniqueAddress) -> Self {
        PartitionView::new(
            self_node,
            gossip.members(),
            gossip.unreachable_observations(),
            gossip.seen_by().iter().copied(),
        )
    }

    /// The node deciding.
    pub fn self_node(&self) -> UniqueAddress {
        self.self_node
    }

    /// All live members, in address order.
    pub fn all_members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The members reported unreachable (never `self_node`).
    pub fn unreachable(&self) -> &BTreeSet<UniqueAddress> {
        &self.unreachable
    }

    /// Whether `node` is reported unreachable.
    pub fn is_unreachable(&self, node: &UniqueAddress) -> bool {
        self.unreachable.contains(node)
    }

    /// Counted members (see [`Counting`]) with `role`, in address order.
    pub fn members(&self, role: Option<&str>, counting: Counting) -> Vec<&Member> {
        self.members
            .values()
            .filter(|m| match m.status {
                MemberStatus::Up => true,
                MemberStatus::Leaving => !counting.excluding_leaving,
                MemberStatus::Joining => counting.including_joining,
                _ => false,
            })
            .filter(|m| role.is_none_or(|r| m.has_role(r)))
            .collect()
    }

    /// Counted reachable members with `role`.
    pub fn reachable_members(&self, role: Option<&str>, counting: Counting) -> Vec<&Member> {
        let mut v = self.members(role, counting);
        v.retain(|m| !self.is_unreachable(&m.address));
        v
    }

    /// Counted unreachable members with `role`.
    pub fn unreachable_members(&self, role: Option<&str>, counting: Counting) -> Vec<&Member> {
        let mut v = self.members(role, counting);
        v.retain(|m| self.is_unreachable(&m.address));
        v
    }

    /// Members a decision may down: `Joining`, `Up` and `Leaving` ones.
    pub fn downable(&self) -> BTreeSet<UniqueAddress> {
        self.members
            .values()
            .filter(|m| {
                matches!(
                    m.status,
                    MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving
                )
            })
            .map(|m| m.address)
            .collect()
    }

    /// Nodes that are reported unreachable but still talk to this side through a third node:
    /// both observer and subject of some observation (a cycle), or reported unreachable while
    /// having seen the current gossip. Clean partitions and crashes produce none.
    pub fn indirectly_connected(&self) -> BTreeSet<UniqueAddress> {
        let observers: BTreeSet<UniqueAddress> =
            self.observations.iter().map(|(o, _)| *o).collect();
        let subjects: BTreeSet<UniqueAddress> = self.observations.iter().map(|(_, s)| *s).collect();
        let mut result: BTreeSet<UniqueAddress> =
            observers.intersection(&subjects).copied().collect();
        for (o, s) in &self.observations {
            if self.seen_by.contains(s) {
                result.insert(*o);
                result.insert(*s);
            }
        }
        result
    }

    /// The view without the observations between indirectly connected nodes, so a strategy
    /// can decide on the clean partition that remains.
    pub fn without_indirect_observations(&self) -> PartitionView {
        let ic = self.indirectly_connected();
        let observations = self
            .observations
            .iter()
            .filter(|(o, s)| !(ic.contains(o) && ic.contains(s)))
            .copied()
            .collect::<Vec<_>>();
        PartitionView::new(
            self.self_node,
            self.members.values().cloned(),
            observations,
            self.seen_by.iter().copied(),
        )
    }

    /// Whether every reachable member that counts for convergence (`Up`, `Leaving`,
    /// `Exiting`) has seen the current gossip: the members this side counts on have
    /// acknowledged its latest state, so they really are on this side. A member that stays
    /// silent is on the other side whatever the failure detector says so far.
    pub fn reachable_side_has_seen(&self) -> bool {
        self.members.values().all(|m| {
            m.address == self.self_node
                || self.is_unreachable(&m.address)
                || !m.status.must_see_gossip()
                || self.seen_by.contains(&m.address)
        })
    }

    /// Whether there is something to decide: a downable member is unreachable, or some nodes
    /// are indirectly connected.
    pub fn needs_decision(&self) -> bool {
        let downable = self.downable();
        self.unreachable.iter().any(|u| downable.contains(u))
            || self
                .indirectly_connected()
                .iter()
                .any(|n| downable.contains(n))
    }

    /// The nodes `decision` downs (a lease decision counts as won).
    pub fn nodes_to_down(&self, decision: Decision) -> BTreeSet<UniqueAddress> {
        let downable = self.downable();
        match decision {
            Decision::DownUnreachable | Decision::AcquireLeaseAndDownUnreachable { .. } => {
                downable.intersection(&self.unreachable).copied().collect()
            }
            Decision::DownReachable => downable.difference(&self.unreachable).copied().collect(),
            Decision::DownAll => downable,
        }
    }
}
