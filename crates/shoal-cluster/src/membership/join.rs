//! Joining: through seed nodes, programmatically, and accepting joiners.
//!
//! * **First seed node** (this node's address is the first in the list): asks the other
//!   seeds `InitJoin` every `join_retry_interval`. If one answers `InitJoinAck` it joins
//!   that cluster (it restarted and the cluster lives on). If all others answer
//!   `InitJoinNack`, or none answers within `seed_node_timeout`, it forms a new cluster.
//! * **Other nodes** ask every seed (but themselves) `InitJoin` every `join_retry_interval`
//!   until one acknowledges; they never form a cluster on their own.
//! * After an acknowledgement: `Join` to that member, repeated every `join_retry_interval`
//!   until `Welcome`; without a welcome for `retry_unsuccessful_join_after` they start over
//!   with the seeds.
//! * **A member receiving `Join`** adds the joiner as `Joining` and answers `Welcome`. If a
//!   live member has the same address with another incarnation, that one has restarted: it
//!   is marked terminated and `Down` right away, and the new incarnation is welcomed once the
//!   old one is removed (it keeps retrying meanwhile).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use shoal_remote::UniqueAddress;

use super::{Membership, Phase};
use crate::gossip::Gossip;
use crate::member::MemberStatus;
use crate::message::ClusterMessage;
use crate::reachability::ReachabilityStatus;
use crate::time::Timestamp;

/// State of the seed-node process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SeedProcess {
    /// All seed nodes, as given (to start over with).
    seeds: Vec<SocketAddr>,
    /// The seeds other than this node.
    others: Vec<SocketAddr>,
    /// Whether this node is the first seed (the one that may form a cluster).
    first_seed: bool,
    started_at: Timestamp,
    next_attempt_at: Timestamp,
    nacked: BTreeSet<SocketAddr>,
}

/// Where `Join` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contact {
    Node(UniqueAddress),
    Address(SocketAddr),
}

/// State while waiting for `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AwaitingWelcome {
    contact: Contact,
    /// The seeds to start over with, if joining through seeds.
    seeds: Option<Vec<SocketAddr>>,
    since: Timestamp,
    next_attempt_at: Timestamp,
}

impl Membership {
    pub(super) fn join_seed_nodes(&mut self, now: Timestamp, seeds: Vec<SocketAddr>) {
        if matches!(self.phase, Phase::Member | Phase::Terminated) {
            return;
        }
        let mut unique = Vec::new();
        for s in seeds {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        let me = self.self_node.addr;
        let others: Vec<SocketAddr> = unique.iter().copied().filter(|s| *s != me).collect();
        if unique.is_empty() {
            return;
        }
        if others.is_empty() {
            self.form_cluster(now);
            return;
        }
        let process = SeedProcess {
            first_seed: unique[0] == me,
            seeds: unique,
            others,
            started_at: now,
            next_attempt_at: now + self.config.join_retry_interval,
            nacked: BTreeSet::new(),
        };
        tracing::debug!(node = %self.self_node, first_seed = process.first_seed, "joining through seed nodes");
        for seed in process.others.clone() {
            self.send_to_address(seed, ClusterMessage::InitJoin);
        }
        self.phase = Phase::Seeds(process);
    }

    pub(super) fn join(&mut self, now: Timestamp, address: SocketAddr) {
        if matches!(self.phase, Phase::Member | Phase::Terminated) {
            return;
        }
        if address == self.self_node.addr {
            self.form_cluster(now);
            return;
        }
        self.send_join(Contact::Address(address));
        self.phase = Phase::AwaitingWelcome(AwaitingWelcome {
            contact: Contact::Address(address),
            seeds: None,
            since: now,
            next_attempt_at: now + self.config.join_retry_interval,
        });
    }

    /// Retries and timeouts while joining.
    pub(super) fn join_tick(&mut self, now: Timestamp) {
        match &mut self.phase {
            Phase::Seeds(p) => {
                if p.first_seed && now >= p.started_at + self.config.seed_node_timeout {
                    tracing::info!(node = %self.self_node, "no other seed node answered: forming a new cluster");
                    self.form_cluster(now);
                } else if now >= p.next_attempt_at {
                    p.next_attempt_at = now + self.config.join_retry_interval;
                    for seed in p.others.clone() {
                        self.send_to_address(seed, ClusterMessage::InitJoin);
                    }
                }
            }
            Phase::AwaitingWelcome(w) => {
                if let Some(seeds) = &w.seeds
                    && now >= w.since + self.config.retry_unsuccessful_join_after
                {
                    let seeds = seeds.clone();
                    tracing::info!(node = %self.self_node, "no welcome: starting over with the seed nodes");
                    self.phase = Phase::Idle;
                    self.join_seed_nodes(now, seeds);
                } else if now >= w.next_attempt_at {
                    w.next_attempt_at = now + self.config.join_retry_interval;
                    let contact = w.contact;
                    self.send_join(contact);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_init_join(&mut self, from: UniqueAddress) {
        let accepting = self.phase == Phase::Member && self.accepts_joins();
        let answer = if accepting {
            ClusterMessage::InitJoinAck
        } else {
            ClusterMessage::InitJoinNack
        };
        self.send(from, answer);
    }

    pub(super) fn on_init_join_ack(&mut self, now: Timestamp, from: UniqueAddress) {
        let Phase::Seeds(p) = &self.phase else { return };
        let seeds = p.seeds.clone();
        self.send_join(Contact::Node(from));
        self.phase = Phase::AwaitingWelcome(AwaitingWelcome {
            contact: Contact::Node(from),
            seeds: Some(seeds),
            since: now,
            next_attempt_at: now + self.config.join_retry_interval,
        });
    }

    pub(super) fn on_init_join_nack(&mut self, now: Timestamp, from: UniqueAddress) {
        let Phase::Seeds(p) = &mut self.phase else {
            return;
        };
        if !p.first_seed || !p.others.contains(&from.addr) {
            return;
        }
        p.nacked.insert(from.addr);
        if p.others.iter().all(|s| p.nacked.contains(s)) {
            tracing::info!(node = %self.self_node, "no other seed node is a member: forming a new cluster");
            self.form_cluster(now);
        }
    }

    pub(super) fn on_join(&mut self, from: UniqueAddress, roles: BTreeSet<String>) {
        if self.phase != Phase::Member || !self.accepts_joins() {
            return;
        }
        match self.gossip.status_of(&from) {
            Some(MemberStatus::Removed) => {}
            Some(_) => self.welcome(from),
            None => {
                if let Some(old) = self.gossip.live_member_at(from.addr) {
                    tracing::info!(node = %self.self_node, old = %old.address, new = %from,
                        "new incarnation is joining: downing the old one first");
                    let me = self.self_node;
                    let mut changed =
                        self.gossip
                            .observe(me, old.address, Some(ReachabilityStatus::Terminated));
                    if old.status.can_move_to(MemberStatus::Down) {
                        changed |= self
                            .gossip
                            .move_to(old.address, MemberStatus::Down, None)
                            .is_ok();
                    }
                    if changed {
                        self.local_change();
                    }
                    return;
                }
                self.gossip.add_joining(from, roles);
                self.local_change();
                tracing::info!(node = %self.self_node, joining = %from, "member joining");
                self.welcome(from);
            }
        }
    }

    pub(super) fn on_welcome(&mut self, now: Timestamp, from: UniqueAddress, gossip: Gossip) {
        match self.phase {
            Phase::Seeds(_) | Phase::AwaitingWelcome(_) => {}
            Phase::Member => return self.on_gossip(from, gossip),
            Phase::Idle | Phase::Terminated => return,
        }
        let welcomed = gossip.is_live(&self.self_node) && gossip.is_live(&from);
        if !welcomed {
            return;
        }
        self.gossip = Gossip::new().merge(&gossip);
        self.gossip.mark_seen(self.self_node);
        self.become_member(now);
        tracing::info!(node = %self.self_node, contact = %from, "welcomed into the cluster");
    }

    fn form_cluster(&mut self, now: Timestamp) {
        let mut gossip = Gossip::new();
        gossip.add_joining(self.self_node, self.config.roles.clone());
        self.gossip = gossip;
        self.become_member(now);
        self.local_change();
    }

    fn become_member(&mut self, now: Timestamp) {
        self.phase = Phase::Member;
        self.next_gossip_at = now + self.config.gossip_interval;
    }

    fn accepts_joins(&self) -> bool {
        matches!(
            self.gossip.status_of(&self.self_node),
            Some(MemberStatus::Joining | MemberStatus::Up)
        )
    }

    fn welcome(&mut self, to: UniqueAddress) {
        self.already_sent.insert(to);
        self.send(
            to,
            ClusterMessage::Welcome {
                gossip: self.gossip.clone(),
            },
        );
    }

    fn send_join(&mut self, contact: Contact) {
        let message = ClusterMessage::Join {
            roles: self.config.roles.clone(),
        };
        match contact {
            Contact::Node(node) => self.send(node, message),
            Contact::Address(addr) => self.send_to_address(addr, message),
        }
    }
}
