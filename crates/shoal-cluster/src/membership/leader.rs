//! Leader actions: the only lifecycle moves that need the whole cluster to agree first.
//!
//! When this node is the leader and the gossip has converged (every reachable member that
//! counts has seen it, every unreachable one is `Down` or `Exiting`), it:
//! 1. removes `Down` and `Exiting` members (tombstones),
//! 2. moves `Leaving` members to `Exiting`,
//! 3. moves `Joining` members to `Up`, in address order with increasing up-numbers, once
//!    `min_nr_of_members` (and the per-role minimums) are met.
//!
//! Each step looks at the converged state from before the pass, so a member moves at most
//! one step per convergence: everybody sees `Exiting` before the member is removed.

use shoal_remote::UniqueAddress;

use super::Membership;
use crate::member::{Member, MemberStatus};

impl Membership {
    /// Perform leader actions if due. Returns the members just removed that this node can
    /// reach: they must be told (they are no longer gossip targets) so that they stop.
    pub(super) fn leader_actions(&mut self) -> Vec<UniqueAddress> {
        let me = self.self_node;
        if self.gossip.leader(&me) != Some(me) || !self.gossip.is_converged(&me) {
            return Vec::new();
        }
        let snapshot: Vec<Member> = self.gossip.members().collect();
        let mut changed = false;
        let mut removed = Vec::new();
        let unreachable_by_me = self.gossip.reachability().unreachable_by(&me);

        for m in &snapshot {
            if matches!(m.status, MemberStatus::Down | MemberStatus::Exiting) {
                changed |= self
                    .gossip
                    .move_to(m.address, MemberStatus::Removed, None)
                    .is_ok();
                tracing::info!(node = %me, removed = %m.address, previous = %m.status, "leader removed member");
                if m.address != me && !unreachable_by_me.contains(&m.address) {
                    removed.push(m.address);
                }
            }
        }
        for m in snapshot
            .iter()
            .filter(|m| m.status == MemberStatus::Leaving)
        {
            changed |= self
                .gossip
                .move_to(m.address, MemberStatus::Exiting, None)
                .is_ok();
        }
        if self.min_nr_of_members_reached(&snapshot) {
            let mut up_number = self.gossip.max_up_number();
            for m in snapshot
                .iter()
                .filter(|m| m.status == MemberStatus::Joining)
            {
                up_number += 1;
                changed |= self
                    .gossip
                    .move_to(m.address, MemberStatus::Up, Some(up_number))
                    .is_ok();
                tracing::info!(node = %me, up = %m.address, up_number, "leader moved member up");
            }
        }
        if changed {
            self.local_change();
        }
        removed
    }

    fn min_nr_of_members_reached(&self, members: &[Member]) -> bool {
        members.len() >= self.config.min_nr_of_members
            && self
                .config
                .min_nr_of_members_per_role
                .iter()
                .all(|(role, min)| members.iter().filter(|m| m.has_role(role)).count() >= *min)
    }
}
