//! Leaving, downing, and running the split-brain resolver.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use shoal_remote::UniqueAddress;

use super::{Effect, Membership, Phase, ShutdownReason};
use crate::member::MemberStatus;
use crate::sbr::{PartitionView, ResolverAction};
use crate::time::Timestamp;

impl Membership {
    pub(super) fn leave(&mut self, address: SocketAddr) {
        if self.phase != Phase::Member {
            if address == self.self_node.addr {
                self.terminate(ShutdownReason::LeftBeforeJoining);
            }
            return;
        }
        let Some(member) = self.gossip.live_member_at(address) else {
            return;
        };
        if matches!(member.status, MemberStatus::Joining | MemberStatus::Up)
            && self
                .gossip
                .move_to(member.address, MemberStatus::Leaving, None)
                .is_ok()
        {
            tracing::info!(node = %self.self_node, leaving = %member.address, "member leaving");
            self.local_change();
        }
    }

    pub(super) fn down_address(&mut self, address: SocketAddr) {
        if self.phase != Phase::Member {
            return;
        }
        if let Some(member) = self.gossip.live_member_at(address) {
            self.down_nodes(&BTreeSet::from([member.address]));
        }
    }

    /// Mark these members `Down` (this node last). Moves the lifecycle refuses are skipped.
    fn down_nodes(&mut self, nodes: &BTreeSet<UniqueAddress>) {
        let me = self.self_node;
        let mut changed = false;
        let ordered = nodes
            .iter()
            .filter(|n| **n != me)
            .chain(nodes.iter().filter(|n| **n == me));
        for node in ordered {
            if self.gossip.move_to(*node, MemberStatus::Down, None).is_ok() {
                tracing::warn!(node = %me, downed = %node, "member downed");
                changed = true;
            }
        }
        if changed {
            self.local_change();
        }
    }

    /// Let the resolver look at the current view and apply what it decides.
    pub(super) fn run_resolver(&mut self, now: Timestamp) {
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        let me = self.self_node;
        let view = PartitionView::from_gossip(&self.gossip, me);
        let responsible = self.gossip.leader(&me) == Some(me)
            && matches!(
                self.gossip.status_of(&me),
                Some(MemberStatus::Up | MemberStatus::Leaving)
            );
        let actions = resolver.on_view(now, &view, responsible);
        self.apply_resolver_actions(actions);
    }

    pub(super) fn on_lease_result(&mut self, now: Timestamp, granted: bool) {
        if self.phase != Phase::Member {
            return;
        }
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        let view = PartitionView::from_gossip(&self.gossip, self.self_node);
        let actions = resolver.on_lease_result(now, &view, granted);
        self.apply_resolver_actions(actions);
    }

    fn apply_resolver_actions(&mut self, actions: Vec<ResolverAction>) {
        for action in actions {
            match action {
                ResolverAction::Down(nodes) => {
                    tracing::warn!(node = %self.self_node, ?nodes, "split-brain resolver decided");
                    self.down_nodes(&nodes);
                }
                ResolverAction::AcquireLease => self.out.push(Effect::AcquireLease),
                ResolverAction::ReleaseLease => self.out.push(Effect::ReleaseLease),
            }
        }
    }
}
