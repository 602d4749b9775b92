//! Gossip exchange.
//!
//! * **Receiving**: merge, mark this node as having seen the result, and answer with the
//!   result if the sender does not hold it yet (so a round trip leaves both with the same
//!   state and both in its seen-set; the exchange stops once they agree). Gossip from
//!   non-members is not merged: a removed sender is told it is removed, a joiner this node
//!   never heard of is handled as a join request.
//! * **Pushing**: a change made by this node (join accepted, status change, reachability
//!   observation, leader action, downing) is sent at once to every member it can reach.
//! * **Rounds**: every `gossip_interval`, one member it can reach, chosen at random (seeded)
//!   among those that have not seen the current state, else among all.

use shoal_remote::UniqueAddress;

use super::Membership;
use crate::gossip::Gossip;
use crate::member::MemberStatus;
use crate::message::ClusterMessage;
use crate::time::Timestamp;

impl Membership {
    pub(super) fn on_gossip(&mut self, from: UniqueAddress, remote: Gossip) {
        if !self.gossip.is_live(&from) {
            match self.gossip.status_of(&from) {
                // Tell a removed member so that it stops.
                Some(MemberStatus::Removed) => self.send_gossip(from),
                // A joiner that a member welcomed, but the news never reached this node (the
                // welcoming member went away first): take its gossip as a join request. Its
                // state is not merged: only members' gossip is.
                None => {
                    if let Some(joiner) = remote.member(&from)
                        && joiner.status == MemberStatus::Joining
                        && remote.is_live(&self.self_node)
                    {
                        self.on_join(from, joiner.roles);
                    }
                }
                Some(_) => {}
            }
            return;
        }
        if remote.status_of(&self.self_node).is_none() {
            // Older than this node's membership: nothing to learn.
            return;
        }
        let mut merged = self.gossip.merge(&remote);
        merged.mark_seen(self.self_node);
        if merged != remote {
            // Answered once the input is fully handled, with the state as it is then.
            self.pending_reply = Some(from);
        }
        self.gossip = merged;
    }

    /// A gossip round, if one is due.
    pub(super) fn gossip_tick(&mut self, now: Timestamp) {
        if now < self.next_gossip_at {
            return;
        }
        self.next_gossip_at = now + self.config.gossip_interval;
        let candidates = self.gossip_targets();
        let unseen: Vec<UniqueAddress> = candidates
            .iter()
            .filter(|a| !self.gossip.seen_by().contains(a))
            .copied()
            .collect();
        let pool = if unseen.is_empty() {
            candidates
        } else {
            unseen
        };
        if pool.is_empty() {
            return;
        }
        let target = pool[self.rng.usize(..pool.len())];
        self.send_gossip(target);
    }

    /// After a local change, send the gossip to every reachable member that does not have it;
    /// then answer the sender of received gossip if it has not got the result yet.
    pub(super) fn push_local_changes(&mut self) {
        if self.changed_locally {
            for target in self.gossip_targets() {
                if !self.gossip.seen_by().contains(&target) && !self.already_sent.contains(&target)
                {
                    self.send_gossip(target);
                }
            }
        }
        if let Some(to) = self.pending_reply.take()
            && !self.already_sent.contains(&to)
        {
            self.send_gossip(to);
        }
    }

    /// Live members other than this node that this node itself can reach (gossip flows
    /// around a broken link through third nodes).
    fn gossip_targets(&self) -> Vec<UniqueAddress> {
        let unreachable = self.gossip.reachability().unreachable_by(&self.self_node);
        self.gossip
            .members()
            .map(|m| m.address)
            .filter(|a| *a != self.self_node && !unreachable.contains(a))
            .collect()
    }

    pub(super) fn send_gossip(&mut self, to: UniqueAddress) {
        self.already_sent.insert(to);
        self.send(
            to,
            ClusterMessage::Gossip {
                gossip: self.gossip.clone(),
            },
        );
    }
}
