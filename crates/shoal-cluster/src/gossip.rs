//! The gossiped membership state and its merge.
//!
//! A [`Gossip`] is a state-based CRDT:
//!
//! * **members** — per incarnation, a record whose fields each merge in their own
//!   semilattice: the status by maximum (the lifecycle only moves up, see [`MemberStatus`]),
//!   the roles by union (they never change for an incarnation), the up-number by minimum of
//!   the assigned ones. `Removed` members stay as tombstones so old gossip cannot resurrect
//!   them.
//! * **reachability** — one versioned row per observer ([`Reachability`]).
//! * **seen** — the nodes known to hold exactly this content. It is not part of the content:
//!   merging keeps the seen-sets of the inputs whose content equals the merged content, and a
//!   local change resets it to the changing node.
//!
//! After every merge and change the state is *normalized*: observations by and about removed
//! members are dropped, and only live members stay in `seen`. Merge is commutative,
//! associative and idempotent (property-tested below), so every node that has received the
//! same updates holds the same state, in whatever order and however often they arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_remote::UniqueAddress;

use crate::member::{IllegalTransition, Member, MemberStatus};
use crate::reachability::{ObserverRow, Reachability, ReachabilityStatus};

/// What the gossip holds about one incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MemberRecord {
    pub(crate) status: MemberStatus,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) up_number: Option<u64>,
}

impl MemberRecord {
    fn merge(&self, other: &MemberRecord) -> MemberRecord {
        MemberRecord {
            status: self.status.max(other.status),
            roles: self.roles.union(&other.roles).cloned().collect(),
            up_number: match (self.up_number, other.up_number) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// The versioned membership state every node gossips. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "GossipWire", into = "GossipWire")]
pub struct Gossip {
    members: BTreeMap<UniqueAddress, MemberRecord>,
    reachability: Reachability,
    seen: BTreeSet<UniqueAddress>,
}

impl Gossip {
    /// An empty state: no members.
    pub fn new() -> Self {
        Self::default()
    }

    /// The merge of `self` and `other`: the least state that contains both.
    pub fn merge(&self, other: &Gossip) -> Gossip {
        let mut members = self.members.clone();
        for (node, theirs) in &other.members {
            members
                .entry(*node)
                .and_modify(|mine| *mine = mine.merge(theirs))
                .or_insert_with(|| theirs.clone());
        }
        let mut merged = Gossip {
            members,
            reachability: self.reachability.merge(&other.reachability),
            seen: BTreeSet::new(),
        };
        merged.normalize();
        let mut seen = BTreeSet::new();
        for input in [self, other] {
            if input.same_content(&merged) {
                seen.extend(input.seen.iter().copied());
            }
        }
        merged.seen = seen;
        merged.normalize();
        merged
    }

    /// Whether both hold the same members and reachability (`seen` is not compared).
    pub fn same_content(&self, other: &Gossip) -> bool {
        self.members == other.members && self.reachability == other.reachability
    }

    /// Live members (everything but tombstones), in address order.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.members
            .iter()
            .filter(|(_, r)| r.status != MemberStatus::Removed)
            .map(|(a, r)| to_member(a, r))
    }

    /// The member, tombstones included.
    pub fn member(&self, node: &UniqueAddress) -> Option<Member> {
        self.members.get(node).map(|r| to_member(node, r))
    }

    /// The member's status, `Removed` for tombstones, `None` if unknown.
    pub fn status_of(&self, node: &UniqueAddress) -> Option<MemberStatus> {
        self.members.get(node).map(|r| r.status)
    }

    /// The live incarnation at `addr`, if any.
    pub fn live_member_at(&self, addr: SocketAddr) -> Option<Member> {
        self.members().find(|m| m.address.addr == addr)
    }

    /// Whether `node` is a member and not removed.
    pub fn is_live(&self, node: &UniqueAddress) -> bool {
        self.status_of(node)
            .is_some_and(|s| s != MemberStatus::Removed)
    }

    /// The nodes known to hold exactly this content.
    pub fn seen_by(&self) -> &BTreeSet<UniqueAddress> {
        &self.seen
    }

    /// The gossiped failure-detector observations.
    pub fn reachability(&self) -> &Reachability {
        &self.reachability
    }

    /// Whether `node` is reachable for the cluster: no live member that is not `Down`
    /// reports it unreachable.
    pub fn is_reachable(&self, node: &UniqueAddress) -> bool {
        !self
            .reachability
            .observations()
            .any(|(observer, subject, _)| {
                subject == *node && observer != *node && self.counts_as_observer(&observer)
            })
    }

    /// Live members reported unreachable by a live member that is not `Down`.
    pub fn unreachable(&self) -> BTreeSet<UniqueAddress> {
        self.reachability
            .observations()
            .filter(|(o, s, _)| o != s && self.counts_as_observer(o) && self.is_live(s))
            .map(|(_, s, _)| s)
            .collect()
    }

    /// Unreachability records `(observer, subject)` that count: both live, observer not
    /// `Down`.
    pub fn unreachable_observations(&self) -> BTreeSet<(UniqueAddress, UniqueAddress)> {
        self.reachability
            .observations()
            .filter(|(o, s, _)| o != s && self.counts_as_observer(o) && self.is_live(s))
            .map(|(o, s, _)| (o, s))
            .collect()
    }

    fn counts_as_observer(&self, observer: &UniqueAddress) -> bool {
        matches!(self.status_of(observer), Some(s) if s != MemberStatus::Down && s != MemberStatus::Removed)
    }

    /// The leader as `self_node` sees it: the first member in address order that is `Up` or
    /// `Leaving` and reachable (`self_node` always counts itself reachable); failing that the
    /// first such `Joining` member, then the first `Exiting` one.
    pub fn leader(&self, self_node: &UniqueAddress) -> Option<UniqueAddress> {
        let candidates: Vec<Member> = self
            .members()
            .filter(|m| m.status != MemberStatus::Down)
            .filter(|m| m.address == *self_node || self.is_reachable(&m.address))
            .collect();
        let first = |pred: &dyn Fn(MemberStatus) -> bool| {
            candidates
                .iter()
                .find(|m| pred(m.status))
                .map(|m| m.address)
        };
        first(&|s| matches!(s, MemberStatus::Up | MemberStatus::Leaving))
            .or_else(|| first(&|s| s == MemberStatus::Joining))
            .or_else(|| first(&|s| s == MemberStatus::Exiting))
    }

    /// Convergence as `self_node` sees it: every member unreachable (for others than itself)
    /// is `Down` or `Exiting`, and every reachable `Up`, `Leaving` or `Exiting` member has
    /// seen this content. Only on convergence does the leader move members.
    pub fn is_converged(&self, self_node: &UniqueAddress) -> bool {
        self.members().all(|m| {
            let unreachable = m.address != *self_node && !self.is_reachable(&m.address);
            if unreachable {
                matches!(m.status, MemberStatus::Down | MemberStatus::Exiting)
            } else {
                !m.status.must_see_gossip() || self.seen.contains(&m.address)
            }
        })
    }

    /// The highest up-number ever assigned, tombstones included (0 if none).
    pub(crate) fn max_up_number(&self) -> u64 {
        self.members
            .values()
            .filter_map(|r| r.up_number)
            .max()
            .unwrap_or(0)
    }

    /// Add `node` as `Joining`. Returns false if the incarnation is already known.
    pub(crate) fn add_joining(&mut self, node: UniqueAddress, roles: BTreeSet<String>) -> bool {
        if self.members.contains_key(&node) {
            return false;
        }
        self.members.insert(
            node,
            MemberRecord {
                status: MemberStatus::Joining,
                roles,
                up_number: None,
            },
        );
        true
    }

    /// Move `node` along its lifecycle (`up_number` is used when moving to `Up`).
    pub(crate) fn move_to(
        &mut self,
        node: UniqueAddress,
        status: MemberStatus,
        up_number: Option<u64>,
    ) -> Result<(), IllegalTransition> {
        let Some(record) = self.members.get_mut(&node) else {
            // An unknown node has no lifecycle to move along.
            return Err(IllegalTransition {
                node,
                from: MemberStatus::Removed,
                to: status,
            });
        };
        record.status = record.status.transition(node, status)?;
        if status == MemberStatus::Up {
            record.up_number = record.up_number.or(up_number);
        }
        self.normalize();
        Ok(())
    }

    /// Record `observer`'s view of `subject`. Returns whether anything changed.
    pub(crate) fn observe(
        &mut self,
        observer: UniqueAddress,
        subject: UniqueAddress,
        status: Option<ReachabilityStatus>,
    ) -> bool {
        self.reachability.observe(observer, subject, status)
    }

    /// After a local change: only `node` holds this content.
    pub(crate) fn seen_only_by(&mut self, node: UniqueAddress) {
        self.seen = BTreeSet::from([node]);
        self.normalize();
    }

    /// `node` holds this content.
    pub(crate) fn mark_seen(&mut self, node: UniqueAddress) {
        if self.is_live(&node) {
            self.seen.insert(node);
        }
    }

    /// Test helper: the gossip with `member` put in as given (no lifecycle check).
    #[cfg(test)]
    pub(crate) fn with_member(mut self, member: Member) -> Self {
        let record = MemberRecord {
            status: member.status,
            roles: member.roles,
            up_number: member.up_number,
        };
        self.members.insert(member.address, record);
        self.normalize();
        self
    }

    /// Test helper: the gossip with exactly these nodes in its seen-set.
    #[cfg(test)]
    pub(crate) fn with_seen(mut self, nodes: impl IntoIterator<Item = UniqueAddress>) -> Self {
        self.seen = nodes.into_iter().collect();
        self.normalize();
        self
    }

    fn normalize(&mut self) {
        let removed: BTreeSet<UniqueAddress> = self
            .members
            .iter()
            .filter(|(_, r)| r.status == MemberStatus::Removed)
            .map(|(a, _)| *a)
            .collect();
        if !removed.is_empty() {
            self.reachability.prune(|a| removed.contains(a));
        }
        let members = &self.members;
        self.seen.retain(|a| {
            members
                .get(a)
                .is_some_and(|r| r.status != MemberStatus::Removed)
        });
    }
}

fn to_member(address: &UniqueAddress, r: &MemberRecord) -> Member {
    Member {
        address: *address,
        status: r.status,
        roles: r.roles.clone(),
        up_number: r.up_number,
    }
}

/// Wire form: sequences instead of maps keyed by structs, so any serde format can carry it.
#[derive(Serialize, Deserialize)]
struct GossipWire {
    members: Vec<Member>,
    reachability: Vec<WireRow>,
    seen: Vec<UniqueAddress>,
}

#[derive(Serialize, Deserialize)]
struct WireRow {
    observer: UniqueAddress,
    version: u64,
    subjects: Vec<(UniqueAddress, ReachabilityStatus)>,
}

impl From<Gossip> for GossipWire {
    fn from(g: Gossip) -> Self {
        GossipWire {
            members: g.members.iter().map(|(a, r)| to_member(a, r)).collect(),
            reachability: g
                .reachability
                .rows()
                .iter()
                .map(|(o, row)| WireRow {
                    observer: *o,
                    version: row.version,
                    subjects: row.subjects.iter().map(|(s, st)| (*s, *st)).collect(),
                })
                .collect(),
            seen: g.seen.into_iter().collect(),
        }
    }
}

impl From<GossipWire> for Gossip {
    /// Duplicates (which a correct peer never sends) are merged, and the result normalized.
    fn from(w: GossipWire) -> Self {
        let mut members: BTreeMap<UniqueAddress, MemberRecord> = BTreeMap::new();
        for m in w.members {
            let record = MemberRecord {
                status: m.status,
                roles: m.roles,
                up_number: m.up_number,
            };
            members
                .entry(m.address)
                .and_modify(|mine| *mine = mine.merge(&record))
                .or_insert(record);
        }
        let mut rows: BTreeMap<UniqueAddress, ObserverRow> = BTreeMap::new();
        for r in w.reachability {
            let row = ObserverRow {
                version: r.version,
                subjects: r.subjects.into_iter().collect(),
            };
            rows.entry(r.observer)
                .and_modify(|mine| *mine = mine.merge(&row))
                .or_insert(row);
        }
        let mut g = Gossip {
            members,
            reachability: Reachability::from_rows(rows),
            seen: w.seen.into_iter().collect(),
        };
        g.normalize();
        g
    }
}

#[cfg(test)]
mod tests;
