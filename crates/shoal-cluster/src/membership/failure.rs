//! Heartbeats out, failure detection in: this node's row of the reachability table.

use std::collections::BTreeSet;

use shoal_remote::UniqueAddress;

use super::Membership;
use crate::heartbeat::select_receivers;
use crate::member::MemberStatus;
use crate::message::ClusterMessage;
use crate::reachability::ReachabilityStatus;
use crate::time::Timestamp;

impl Membership {
    /// On every tick while a member: refresh who to monitor, send heartbeats when due, and
    /// record which monitored nodes became unreachable or reachable again.
    pub(super) fn heartbeat_tick(&mut self, now: Timestamp) {
        self.refresh_receivers();
        if let Some((sequence_nr, receivers)) = self.monitor.due_heartbeats(now) {
            for to in receivers {
                self.send(to, ClusterMessage::Heartbeat { sequence_nr });
            }
        }
        self.monitor.check_expected_responses(now);

        let me = self.self_node;
        let mut changed = false;
        for (node, available) in self.monitor.availability(now) {
            let current = self.gossip.reachability().status(&me, &node);
            let update = match (available, current) {
                (false, None) => Some(Some(ReachabilityStatus::Unreachable)),
                // Back only on a real answer: a detector that merely started cannot vouch.
                (true, Some(ReachabilityStatus::Unreachable))
                    if self.monitor.has_answered(&node) =>
                {
                    Some(None)
                }
                _ => None,
            };
            if let Some(status) = update {
                tracing::info!(node = %me, subject = %node, reachable = status.is_none(),
                    "failure detector changed its verdict");
                changed |= self.gossip.observe(me, node, status);
            }
        }
        if changed {
            self.local_change();
        }
    }

    /// After an input that added members: monitor them at once, so that the first answer
    /// comes while they are certainly alive (see [`crate::heartbeat`]).
    pub(super) fn heartbeat_new_receivers(&mut self, now: Timestamp) {
        self.refresh_receivers();
        if let Some((sequence_nr, receivers)) = self.monitor.first_heartbeats(now) {
            for to in receivers {
                self.send(to, ClusterMessage::Heartbeat { sequence_nr });
            }
        }
    }

    /// Recompute the receivers from the current gossip.
    fn refresh_receivers(&mut self) {
        let nodes: BTreeSet<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| m.status != MemberStatus::Down || m.address == self.self_node)
            .map(|m| m.address)
            .collect();
        let unreachable_by_me = self.gossip.reachability().unreachable_by(&self.self_node);
        let receivers = select_receivers(
            &self.self_node,
            &nodes,
            self.config.failure_detector.monitored_by_nr_of_members,
            &unreachable_by_me,
        );
        if &receivers != self.monitor.receivers() {
            self.monitor.set_receivers(receivers);
        }
    }
}
