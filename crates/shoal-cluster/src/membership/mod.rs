//! The membership core: one node's view of the cluster, driven by inputs, answering with
//! effects. No I/O, no clock, no `.await`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_remote::UniqueAddress;

use crate::config::{ClusterConfig, ConfigError};
use crate::event::{ClusterEvent, Observed, diff};
use crate::gossip::Gossip;
use crate::heartbeat::Monitor;
use crate::member::{Member, MemberStatus};
use crate::message::ClusterMessage;
use crate::sbr::{DowningStrategy, SplitBrainResolver};
use crate::time::Timestamp;

mod commands;
mod exchange;
mod failure;
mod join;
mod leader;

#[cfg(test)]
mod tests;

/// Something that happened, fed to [`Membership::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed. The runner sends one every `tick_interval`; heartbeats, gossip rounds,
    /// failure detection, join retries and timeouts (the seed-node timeout among them) and the
    /// split-brain resolver's timers all run on ticks.
    Tick,
    /// A message from another node (gossip, heartbeat, heartbeat response, join request,
    /// welcome, …). `from` is the sender's identity as the transport established it.
    Received {
        /// The sender.
        from: UniqueAddress,
        /// What it said.
        message: ClusterMessage,
    },
    /// Join through these seed nodes (normally the configured ones, at start). Ignored once
    /// the node is a member.
    JoinSeedNodes(Vec<SocketAddr>),
    /// Join the cluster that the node at this address belongs to (this node's own address:
    /// form a new cluster). Ignored once the node is a member.
    Join(SocketAddr),
    /// Ask the member at this address (this node included) to leave gracefully.
    Leave(SocketAddr),
    /// Declare the member at this address dead (operator decision).
    Down(SocketAddr),
    /// The outcome of [`Effect::AcquireLease`] (`false` also when the lease failed).
    LeaseResult {
        /// Whether this node now holds the lease.
        granted: bool,
    },
}

/// Something the runner must do, returned by [`Membership::handle`] in the order produced.
/// [`Effect::Shutdown`], when present, is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `message` to this incarnation.
    Send {
        /// The receiving incarnation.
        to: UniqueAddress,
        /// The message.
        message: ClusterMessage,
    },
    /// Send `message` to whatever incarnation listens at this address (seed nodes and join
    /// contacts, whose incarnation is not known yet).
    SendToAddress {
        /// The address.
        to: SocketAddr,
        /// The message.
        message: ClusterMessage,
    },
    /// Publish to cluster-event subscribers.
    Publish(ClusterEvent),
    /// Acquire the split-brain lease and report with [`Input::LeaseResult`].
    AcquireLease,
    /// Release the split-brain lease (no answer needed).
    ReleaseLease,
    /// This node is out of the cluster: stop its work (shards, singletons) and the runner.
    /// The core ignores every input from now on.
    Shutdown(ShutdownReason),
}

/// Why a node shuts itself down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShutdownReason {
    /// It was marked `Down` (by an operator or the split-brain resolver).
    Downed,
    /// It was removed after leaving gracefully.
    Removed,
    /// It was asked to leave before it had joined.
    LeftBeforeJoining,
}

/// One node's view of the cluster, for the `watch` channel and management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// This node.
    pub self_node: UniqueAddress,
    /// This node's status (`None` until it has joined).
    pub self_status: Option<MemberStatus>,
    /// Live members, in address order.
    pub members: Vec<Member>,
    /// Members some other member reports unreachable.
    pub unreachable: BTreeSet<UniqueAddress>,
    /// The leader as this node sees it.
    pub leader: Option<UniqueAddress>,
    /// Whether the gossip has converged (every reachable member has seen it).
    pub converged: bool,
    /// Whether the core has shut down.
    pub terminated: bool,
}

/// How far this node is in joining.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Not asked to join yet.
    Idle,
    /// Asking the seed nodes who is a member.
    Seeds(join::SeedProcess),
    /// Sent `Join`, waiting for `Welcome`.
    AwaitingWelcome(join::AwaitingWelcome),
    /// A member: `gossip` contains this node.
    Member,
    /// Shut down: every input is ignored.
    Terminated,
}

/// The membership core of one node. See the [crate docs](crate) for the protocol.
#[derive(Debug)]
pub struct Membership {
    config: ClusterConfig,
    self_node: UniqueAddress,
    rng: fastrand::Rng,
    phase: Phase,
    gossip: Gossip,
    monitor: Monitor,
    resolver: Option<SplitBrainResolver>,
    observed: Observed,
    next_gossip_at: Timestamp,
    /// Effects of the input being handled.
    out: Vec<Effect>,
    /// This node changed the gossip while handling the input: push it.
    changed_locally: bool,
    /// Nodes that already got the current gossip while handling the input.
    already_sent: BTreeSet<UniqueAddress>,
    /// The sender of gossip received with this input, if it lacks the merged result.
    pending_reply: Option<UniqueAddress>,
}

impl Membership {
    /// A core for `self_node` that has not joined yet. `rng_seed` drives the choice of gossip
    /// partners (use a random seed in production, a fixed one in tests).
    pub fn new(
        config: ClusterConfig,
        self_node: UniqueAddress,
        rng_seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let resolver = config
            .split_brain_resolver
            .as_ref()
            .map(SplitBrainResolver::new);
        Ok(Membership {
            monitor: Monitor::new(config.failure_detector.clone()),
            config,
            self_node,
            rng: fastrand::Rng::with_seed(rng_seed),
            phase: Phase::Idle,
            gossip: Gossip::new(),
            resolver,
            observed: Observed::default(),
            next_gossip_at: Timestamp::ZERO,
            out: Vec::new(),
            changed_locally: false,
            already_sent: BTreeSet::new(),
            pending_reply: None,
        })
    }

    /// Replace the configured downing strategy by a custom one (keeping the resolver's
    /// timings; turns the resolver on with default timings if it was off).
    pub fn with_downing_strategy(mut self, strategy: Box<dyn DowningStrategy>) -> Self {
        let config = self.config.split_brain_resolver.clone().unwrap_or_default();
        self.resolver = Some(SplitBrainResolver::with_strategy(&config, strategy));
        self
    }

    /// This node.
    pub fn self_node(&self) -> UniqueAddress {
        self.self_node
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The current gossip (empty until joined).
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Whether this node is a member (joined and not shut down).
    pub fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    /// Whether the core has shut down.
    pub fn is_terminated(&self) -> bool {
        self.phase == Phase::Terminated
    }

    /// The nodes this node currently sends heartbeats to.
    pub fn monitored_nodes(&self) -> &BTreeSet<UniqueAddress> {
        self.monitor.receivers()
    }

    /// phi of a monitored node at `now` (`None` if not monitored or not yet heard from).
    pub fn phi(&self, node: &UniqueAddress, now: Timestamp) -> Option<f64> {
        self.monitor
            .detector_of(node)
            .filter(|d| d.is_monitoring())
            .map(|d| d.phi(now))
    }

    /// The current view, for the `watch` channel.
    pub fn state(&self) -> ClusterState {
        let observed = Observed::of(&self.gossip, &self.self_node);
        ClusterState {
            self_node: self.self_node,
            self_status: self.gossip.status_of(&self.self_node),
            members: observed.members.into_values().collect(),
            unreachable: observed.unreachable,
            leader: observed.leader,
            converged: self.is_member() && self.gossip.is_converged(&self.self_node),
            terminated: self.is_terminated(),
        }
    }

    /// Handle one input at `now`; returns what the runner must do.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Effect> {
        if self.phase == Phase::Terminated {
            return Vec::new();
        }
        self.changed_locally = false;
        self.already_sent.clear();
        self.pending_reply = None;
        match input {
            Input::Tick => self.on_tick(now),
            Input::Received { from, message } => self.on_message(now, from, message),
            Input::JoinSeedNodes(seeds) => self.join_seed_nodes(now, seeds),
            Input::Join(address) => self.join(now, address),
            Input::Leave(address) => self.leave(address),
            Input::Down(address) => self.down_address(address),
            Input::LeaseResult { granted } => self.on_lease_result(now, granted),
        }
        if self.phase == Phase::Member {
            self.after_input(now);
        }
        std::mem::take(&mut self.out)
    }

    fn on_tick(&mut self, now: Timestamp) {
        match self.phase {
            Phase::Member => {
                self.heartbeat_tick(now);
                self.gossip_tick(now);
            }
            Phase::Seeds(_) | Phase::AwaitingWelcome(_) => self.join_tick(now),
            Phase::Idle | Phase::Terminated => {}
        }
    }

    fn on_message(&mut self, now: Timestamp, from: UniqueAddress, message: ClusterMessage) {
        match message {
            ClusterMessage::Heartbeat { sequence_nr } => {
                self.send(from, ClusterMessage::HeartbeatResponse { sequence_nr });
            }
            ClusterMessage::HeartbeatResponse { .. } => {
                if self.phase == Phase::Member {
                    self.monitor.on_response(&from, now);
                }
            }
            ClusterMessage::InitJoin => self.on_init_join(from),
            ClusterMessage::InitJoinAck => self.on_init_join_ack(now, from),
            ClusterMessage::InitJoinNack => self.on_init_join_nack(now, from),
            ClusterMessage::Join { roles } => self.on_join(from, roles),
            ClusterMessage::Welcome { gossip } => self.on_welcome(now, from, gossip),
            ClusterMessage::Gossip { gossip } => {
                if self.phase == Phase::Member {
                    self.on_gossip(from, gossip);
                }
            }
        }
    }

    /// Everything that follows any input once this node is a member: events, the resolver,
    /// leader actions, pushing local changes, first heartbeats to new members, and stopping if
    /// this node is out.
    fn after_input(&mut self, now: Timestamp) {
        let status_before = self.observed.members.get(&self.self_node).map(|m| m.status);
        // Members this node did not know before this input (all of them when it just joined).
        let new_members = self
            .gossip
            .members()
            .any(|m| !self.observed.members.contains_key(&m.address));
        self.publish_changes();
        self.run_resolver(now);
        let removed = self.leader_actions();
        self.publish_changes();
        self.push_local_changes();
        for node in removed {
            self.send_gossip(node);
        }
        if new_members {
            self.heartbeat_new_receivers(now);
        }
        let reason = match self.gossip.status_of(&self.self_node) {
            Some(MemberStatus::Down) => Some(ShutdownReason::Downed),
            // Removed without having seen itself Down: it was downed unless it was leaving.
            Some(MemberStatus::Removed) | None => Some(match status_before {
                Some(MemberStatus::Leaving | MemberStatus::Exiting) => ShutdownReason::Removed,
                _ => ShutdownReason::Downed,
            }),
            _ => None,
        };
        if let Some(reason) = reason {
            self.terminate(reason);
        }
    }

    fn publish_changes(&mut self) {
        let now = Observed::of(&self.gossip, &self.self_node);
        for event in diff(&self.observed, &now) {
            self.out.push(Effect::Publish(event));
        }
        self.observed = now;
    }

    fn terminate(&mut self, reason: ShutdownReason) {
        tracing::info!(node = %self.self_node, ?reason, "leaving the cluster: shutting down");
        self.phase = Phase::Terminated;
        self.out.push(Effect::Shutdown(reason));
    }

    /// Record that this node changed the gossip: only it has seen the new content.
    fn local_change(&mut self) {
        self.gossip.seen_only_by(self.self_node);
        self.changed_locally = true;
        self.already_sent.clear();
    }

    fn send(&mut self, to: UniqueAddress, message: ClusterMessage) {
        self.out.push(Effect::Send { to, message });
    }

    fn send_to_address(&mut self, to: SocketAddr, message: ClusterMessage) {
        self.out.push(Effect::SendToAddress { to, message });
    }
}
