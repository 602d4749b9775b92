//! Exact effects for inputs, one core at a time.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use shoal_remote::UniqueAddress;

use super::{Effect, Input, Membership, Phase};
use crate::config::ClusterConfig;
use crate::event::{ClusterEvent, Observed};
use crate::gossip::Gossip;
use crate::member::{Member, MemberStatus};
use crate::message::ClusterMessage;
use crate::time::Timestamp;

mod exchange;
mod failure;
mod join;
mod leader;
mod lifecycle;

pub(super) fn addr(i: u16) -> SocketAddr {
    format!("127.0.0.1:{}", 2550 + i).parse().unwrap()
}

/// Node `i`, first incarnation.
pub(super) fn n(i: u16) -> UniqueAddress {
    UniqueAddress::new(addr(i), 1)
}

pub(super) fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub(super) fn node_with(i: u16, config: ClusterConfig) -> Membership {
    Membership::new(config, n(i), 7).unwrap()
}

/// A fresh core for node `i` with the default settings.
pub(super) fn node(i: u16) -> Membership {
    node_with(i, ClusterConfig::default())
}

/// Member `i` with `status`; up-number `i` unless it never was `Up`.
pub(super) fn member(i: u16, status: MemberStatus) -> Member {
    member_of(n(i), status)
}

pub(super) fn member_of(address: UniqueAddress, status: MemberStatus) -> Member {
    let up_number =
        (status != MemberStatus::Joining).then(|| u64::from(address.addr.port() - 2550));
    Member {
        address,
        status,
        roles: BTreeSet::new(),
        up_number,
    }
}

/// A gossip with these members, seen by `seen`.
pub(super) fn cluster(members: &[(u16, MemberStatus)], seen: &[u16]) -> Gossip {
    members
        .iter()
        .fold(Gossip::new(), |g, (i, s)| g.with_member(member(*i, *s)))
        .with_seen(seen.iter().map(|i| n(*i)))
}

/// A member core of node `me` holding `gossip`, as if it had already published it.
pub(super) fn member_core_with(me: u16, gossip: Gossip, config: ClusterConfig) -> Membership {
    let mut core = node_with(me, config);
    core.observed = Observed::of(&gossip, &n(me));
    core.gossip = gossip;
    core.phase = Phase::Member;
    core
}

pub(super) fn member_core(me: u16, gossip: Gossip) -> Membership {
    member_core_with(me, gossip, ClusterConfig::default())
}

pub(super) fn publish(event: ClusterEvent) -> Effect {
    Effect::Publish(event)
}

pub(super) fn received(from: UniqueAddress, message: ClusterMessage) -> Input {
    Input::Received { from, message }
}

/// The gossip `core` holds now, sent to `to`.
pub(super) fn gossip_to(to: UniqueAddress, core: &Membership) -> Effect {
    Effect::Send {
        to,
        message: ClusterMessage::Gossip {
            gossip: core.gossip().clone(),
        },
    }
}

pub(super) fn send(to: UniqueAddress, message: ClusterMessage) -> Effect {
    Effect::Send { to, message }
}

/// A tick at `ms`, every heartbeat it sends answered at once; returns the tick's effects.
pub(super) fn tick_answered(core: &mut Membership, ms: u64) -> Vec<Effect> {
    tick_answered_by(core, ms, |_| true)
}

/// A tick at `ms`, the heartbeats to nodes for which `answers` holds answered at once.
pub(super) fn tick_answered_by(
    core: &mut Membership,
    ms: u64,
    answers: impl Fn(&UniqueAddress) -> bool,
) -> Vec<Effect> {
    let effects = core.handle(t(ms), Input::Tick);
    for e in &effects {
        if let Effect::Send {
            to,
            message: ClusterMessage::Heartbeat { sequence_nr },
        } = e
            && answers(to)
        {
            let answer = ClusterMessage::HeartbeatResponse {
                sequence_nr: *sequence_nr,
            };
            core.handle(t(ms), received(*to, answer));
        }
    }
    effects
}

pub(super) fn statuses(core: &Membership) -> Vec<(u16, MemberStatus)> {
    core.gossip()
        .members()
        .map(|m| (m.address.addr.port() - 2550, m.status))
        .collect()
}

#[test]
fn a_terminated_core_ignores_everything() {
    let mut core = member_core(1, cluster(&[(1, MemberStatus::Up)], &[1]));
    let effects = core.handle(t(0), Input::Down(addr(1)));
    assert_eq!(
        effects.last(),
        Some(&Effect::Shutdown(super::ShutdownReason::Downed))
    );
    assert!(core.is_terminated());
    assert!(core.state().terminated);
    for input in [
        Input::Tick,
        received(n(2), ClusterMessage::Heartbeat { sequence_nr: 1 }),
        received(n(2), ClusterMessage::InitJoin),
        Input::JoinSeedNodes(vec![addr(1)]),
        Input::Join(addr(2)),
        Input::Leave(addr(1)),
        Input::LeaseResult { granted: true },
    ] {
        assert_eq!(core.handle(t(10), input), vec![]);
    }
}

#[test]
fn invalid_config_is_refused_at_construction() {
    let config = ClusterConfig {
        min_nr_of_members: 0,
        ..ClusterConfig::default()
    };
    assert!(Membership::new(config, n(1), 1).is_err());
}
