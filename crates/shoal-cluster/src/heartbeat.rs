//! Who monitors whom, and the heartbeats that feed the failure detectors.
//!
//! Members are placed on a ring in a stable hashed order (the same on every node, spread so
//! that neighbours in address order do not all watch each other). Each node sends heartbeats
//! to the next `monitored_by_nr_of_members` reachable nodes after itself (its *receivers*),
//! so every node is monitored by that many others; nodes it reports unreachable stay
//! receivers, so it notices when they come back. A receiver's answers feed a
//! [`PhiAccrualFailureDetector`]; one that never answers starts being monitored
//! `expected_response_after` the first heartbeat.
//!
//! Each receiver has its own heartbeat schedule, starting when it becomes a receiver: a member
//! that just joined gets its first heartbeat at once (while it is certainly alive) instead of
//! at the next slot of a shared schedule, up to `heartbeat_interval` later. A crash right
//! after joining then starts from a real answer rather than from `expected_response_after`
//! without one; the intervals the detector learns stay `heartbeat_interval` long.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use shoal_remote::UniqueAddress;

use crate::config::FailureDetectorConfig;
use crate::detector::PhiAccrualFailureDetector;
use crate::time::Timestamp;

/// FNV-1a (64 bit) of the node's address bytes, port and incarnation: stable across
/// releases and platforms.
pub(crate) fn ring_hash(node: &UniqueAddress) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match node.addr {
        SocketAddr::V4(a) => feed(&a.ip().octets()),
        SocketAddr::V6(a) => feed(&a.ip().octets()),
    }
    feed(&node.addr.port().to_be_bytes());
    feed(&node.incarnation.to_be_bytes());
    h
}

/// The receivers of `self_node` among `nodes` (which include it): walking the ring
/// clockwise from it, take nodes until `n` of them are not in `unreachable_by_self`
/// (unreachable ones met on the way are taken too), then add every other node of
/// `unreachable_by_self`.
pub(crate) fn select_receivers(
    self_node: &UniqueAddress,
    nodes: &BTreeSet<UniqueAddress>,
    n: usize,
    unreachable_by_self: &BTreeSet<UniqueAddress>,
) -> BTreeSet<UniqueAddress> {
    if !nodes.contains(self_node) {
        return BTreeSet::new();
    }
    let mut ring: Vec<&UniqueAddress> = nodes.iter().collect();
    ring.sort_by_key(|a| (ring_hash(a), **a));
    let start = ring.iter().position(|a| *a == self_node).unwrap_or(0);
    let mut receivers = BTreeSet::new();
    let mut reachable = 0;
    for i in 1..ring.len() {
        if reachable >= n {
            break;
        }
        let node = ring[(start + i) % ring.len()];
        receivers.insert(*node);
        if !unreachable_by_self.contains(node) {
            reachable += 1;
        }
    }
    receivers.extend(
        unreachable_by_self
            .iter()
            .filter(|a| nodes.contains(a) && *a != self_node),
    );
    receivers
}

/// Heartbeat sending and failure detectors of one node.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    config: FailureDetectorConfig,
    receivers: BTreeSet<UniqueAddress>,
    detectors: BTreeMap<UniqueAddress, PhiAccrualFailureDetector>,
    /// Receivers that really answered since they were last (re)added.
    answered: BTreeSet<UniqueAddress>,
    first_sent: BTreeMap<UniqueAddress, Timestamp>,
    sequence_nr: u64,
    /// When each receiver is due its next heartbeat; absent: never sent one since it was
    /// (re)added.
    next_heartbeat_at: BTreeMap<UniqueAddress, Timestamp>,
}

impl Monitor {
    pub(crate) fn new(config: FailureDetectorConfig) -> Self {
        Monitor {
            config,
            receivers: BTreeSet::new(),
            detectors: BTreeMap::new(),
            answered: BTreeSet::new(),
            first_sent: BTreeMap::new(),
            sequence_nr: 0,
            next_heartbeat_at: BTreeMap::new(),
        }
    }

    pub(crate) fn receivers(&self) -> &BTreeSet<UniqueAddress> {
        &self.receivers
    }

    /// Replace the receivers; detectors of nodes no longer monitored are dropped.
    pub(crate) fn set_receivers(&mut self, receivers: BTreeSet<UniqueAddress>) {
        self.detectors.retain(|a, _| receivers.contains(a));
        self.answered.retain(|a| receivers.contains(a));
        self.first_sent.retain(|a, _| receivers.contains(a));
        self.next_heartbeat_at.retain(|a, _| receivers.contains(a));
        self.receivers = receivers;
    }

    /// The heartbeats due at `now` (every receiver whose `heartbeat_interval` has passed since
    /// its last one, and new receivers): their sequence number and receivers.
    pub(crate) fn due_heartbeats(&mut self, now: Timestamp) -> Option<(u64, Vec<UniqueAddress>)> {
        self.heartbeats_to(now, |next| next.is_none_or(|at| at <= now))
    }

    /// Heartbeats only to receivers that never got one since they were (re)added: sent as soon
    /// as a member appears, not at the next tick.
    pub(crate) fn first_heartbeats(&mut self, now: Timestamp) -> Option<(u64, Vec<UniqueAddress>)> {
        self.heartbeats_to(now, |next| next.is_none())
    }

    fn heartbeats_to(
        &mut self,
        now: Timestamp,
        due: impl Fn(Option<Timestamp>) -> bool,
    ) -> Option<(u64, Vec<UniqueAddress>)> {
        let interval = self.config.heartbeat_interval;
        let to: Vec<UniqueAddress> = self
            .receivers
            .iter()
            .filter(|r| due(self.next_heartbeat_at.get(r).copied()))
            .copied()
            .collect();
        if to.is_empty() {
            return None;
        }
        for r in &to {
            // Keep the receiver's phase unless ticks fell a whole interval behind.
            let next = match self.next_heartbeat_at.get(r) {
                Some(at) if *at + interval > now => *at + interval,
                _ => now + interval,
            };
            self.next_heartbeat_at.insert(*r, next);
            if !self.detectors.contains_key(r) {
                self.first_sent.entry(*r).or_insert(now);
            }
        }
        self.sequence_nr += 1;
        Some((self.sequence_nr, to))
    }

    /// A receiver answered.
    pub(crate) fn on_response(&mut self, from: &UniqueAddress, now: Timestamp) {
        if !self.receivers.contains(from) {
            return;
        }
        self.first_sent.remove(from);
        self.answered.insert(*from);
        self.detector(from).heartbeat(now);
    }

    /// Start monitoring receivers that never answered within `expected_response_after`.
    pub(crate) fn check_expected_responses(&mut self, now: Timestamp) {
        let late: Vec<UniqueAddress> = self
            .first_sent
            .iter()
            .filter(|(_, sent)| now >= **sent + self.config.expected_response_after)
            .map(|(a, _)| *a)
            .collect();
        for a in late {
            self.first_sent.remove(&a);
            self.detector(&a).heartbeat(now);
        }
    }

    /// Every monitored receiver and whether its detector says it is available at `now`.
    pub(crate) fn availability(&self, now: Timestamp) -> Vec<(UniqueAddress, bool)> {
        self.detectors
            .iter()
            .map(|(a, fd)| (*a, fd.is_available(now)))
            .collect()
    }

    /// Whether `node` really answered (not just started being monitored without an answer).
    pub(crate) fn has_answered(&self, node: &UniqueAddress) -> bool {
        self.answered.contains(node)
    }

    /// The detector of `node`, if monitored.
    pub(crate) fn detector_of(&self, node: &UniqueAddress) -> Option<&PhiAccrualFailureDetector> {
        self.detectors.get(node)
    }

    fn detector(&mut self, node: &UniqueAddress) -> &mut PhiAccrualFailureDetector {
        let config = &self.config;
        self.detectors
            .entry(*node)
            .or_insert_with(|| PhiAccrualFailureDetector::new(config))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn n(port: u16) -> UniqueAddress {
        UniqueAddress::new(format!("10.0.0.{}:2552", port).parse().unwrap(), 7)
    }

    #[test]
    fn ring_hash_is_stable() {
        // Pinned: a change would reshuffle who monitors whom across a rolling upgrade.
        assert_eq!(ring_hash(&n(1)), ring_hash(&n(1)));
        assert_ne!(ring_hash(&n(1)), ring_hash(&n(2)));
        let v6 = UniqueAddress::new("[::1]:2552".parse().unwrap(), 7);
        assert_ne!(ring_hash(&v6), ring_hash(&n(1)));
        assert_eq!(
            ring_hash(&n(1)),
            0xea37_bbfe_d17b_8540,
            "{:#x}",
            ring_hash(&n(1))
        );
    }

    #[test]
    fn each_node_monitors_n_others_and_is_monitored_by_n() {
        let nodes: BTreeSet<UniqueAddress> = (1..=12).map(n).collect();
        let mut monitored_by: BTreeMap<UniqueAddress, usize> = BTreeMap::new();
        for node in &nodes {
            let r = select_receivers(node, &nodes, 3, &BTreeSet::new());
            assert_eq!(r.len(), 3);
            assert!(!r.contains(node));
            for x in r {
                *monitored_by.entry(x).or_default() += 1;
            }
        }
        assert!(monitored_by.values().all(|c| *c == 3), "{monitored_by:?}");
    }

    #[test]
    fn small_clusters_monitor_everybody_else() {
        let nodes: BTreeSet<UniqueAddress> = (1..=4).map(n).collect();
        let r = select_receivers(&n(1), &nodes, 9, &BTreeSet::new());
        assert_eq!(r, (2..=4).map(n).collect());
        assert!(select_receivers(&n(9), &nodes, 9, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn unreachable_receivers_are_kept_and_replaced() {
        let nodes: BTreeSet<UniqueAddress> = (1..=12).map(n).collect();
        let before = select_receivers(&n(1), &nodes, 3, &BTreeSet::new());
        let gone = *before.iter().next().unwrap();
        let after = select_receivers(&n(1), &nodes, 3, &BTreeSet::from([gone]));
        assert_eq!(after.len(), 4);
        assert!(after.contains(&gone));
        assert!(before.is_subset(&after));
    }

    #[test]
    fn a_new_receiver_gets_its_first_heartbeat_at_once_and_keeps_its_own_phase() {
        let mut m = Monitor::new(FailureDetectorConfig::default());
        let t = Timestamp::from_millis;
        m.set_receivers(BTreeSet::from([n(2)]));
        assert_eq!(m.due_heartbeats(t(0)), Some((1, vec![n(2)])));
        assert_eq!(m.first_heartbeats(t(10)), None);
        m.set_receivers(BTreeSet::from([n(2), n(3)]));
        assert_eq!(m.first_heartbeats(t(450)), Some((2, vec![n(3)])));
        assert_eq!(m.first_heartbeats(t(460)), None);
        assert_eq!(m.due_heartbeats(t(900)), None);
        assert_eq!(m.due_heartbeats(t(1000)), Some((3, vec![n(2)])));
        assert_eq!(m.due_heartbeats(t(1400)), None);
        assert_eq!(m.due_heartbeats(t(1500)), Some((4, vec![n(3)])));
        // A silent new receiver is monitored expected_response_after its first heartbeat.
        m.check_expected_responses(t(1449));
        assert!(m.detector_of(&n(3)).is_none());
        m.check_expected_responses(t(1450));
        assert!(m.detector_of(&n(3)).is_some_and(|d| d.is_monitoring()));
        // Ticks that fell behind restart the phase instead of sending a burst.
        assert_eq!(m.due_heartbeats(t(4200)), Some((5, vec![n(2), n(3)])));
        assert_eq!(m.due_heartbeats(t(5100)), None);
        assert_eq!(m.due_heartbeats(t(5200)), Some((6, vec![n(2), n(3)])));
        // A receiver dropped and added again starts over.
        m.set_receivers(BTreeSet::from([n(2)]));
        m.set_receivers(BTreeSet::from([n(2), n(3)]));
        assert_eq!(m.first_heartbeats(t(5300)), Some((7, vec![n(3)])));
    }

    #[test]
    fn heartbeats_every_interval_and_silent_receivers_get_monitored() {
        let cfg = FailureDetectorConfig::default();
        let mut m = Monitor::new(cfg);
        m.set_receivers(BTreeSet::from([n(2), n(3)]));
        let t = Timestamp::from_millis;
        assert_eq!(m.due_heartbeats(t(0)), Some((1, vec![n(2), n(3)])));
        assert_eq!(m.due_heartbeats(t(900)), None);
        m.on_response(&n(2), t(5));
        m.check_expected_responses(t(999));
        assert_eq!(m.availability(t(999)), vec![(n(2), true)]);
        assert_eq!(m.due_heartbeats(t(1000)), Some((2, vec![n(2), n(3)])));
        m.check_expected_responses(t(1000));
        // n3 never answered: monitored from t=1000, as if it had answered then.
        assert_eq!(m.availability(t(1000)), vec![(n(2), true), (n(3), true)]);
        assert!(m.detector_of(&n(3)).unwrap().is_monitoring());
        let crossing = t(1000) + Duration::from_millis(4000 + 1500);
        assert_eq!(m.availability(crossing), vec![(n(2), false), (n(3), false)]);
        // Answers from strangers are ignored; dropped receivers lose their detector.
        m.on_response(&n(9), t(1100));
        m.set_receivers(BTreeSet::from([n(3)]));
        assert!(m.detector_of(&n(2)).is_none());
        assert!(m.detector_of(&n(9)).is_none());
    }
}
