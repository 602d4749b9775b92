//! The shard coordinator's state as an event-sourced model.
//!
//! The coordinator (one per entity type, run as a cluster singleton) will persist every
//! change as a [`CoordinatorEvent`] in the journal before acting on it, and rebuild
//! [`CoordinatorState`] by replaying them. Because the journal fences writers, two
//! coordinators in a split brain cannot both persist: the loser gets a conflict and stops, so
//! it can never hand the same shard to two regions.
//!
//! [`CoordinatorState::apply`] refuses impossible events (allocating to an unknown region,
//! allocating a shard that already has a home, terminating an unknown region, …) with an
//! [`InvalidEvent`] and leaves the state unchanged. The coordinator checks an event with
//! [`CoordinatorState::validate`] before persisting it, so a refused event in a replay means
//! a corrupt or foreign journal, and recovery fails instead of guessing.
//!
//! Invariants (kept by `apply`, checked by the property tests):
//! * every shard has at most one home; `shard_home` and `regions` describe the same
//!   allocation (`shard_home[s] == r` ⇔ `s ∈ regions[r]`);
//! * every home is a registered region;
//! * a shard is never both allocated and in `unallocated`;
//! * no identity is both a region and a proxy.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{RegionId, ShardId};

/// A change of the coordinator's state, as persisted in the journal.
///
/// Serialized as JSON objects tagged by `"type"` with the variant name
/// (`{"type":"ShardHomeAllocated","shard":"17","region":{…}}`); the names and fields are part of
/// the stored format and must not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CoordinatorEvent {
    /// A shard region (a node hosting shards of this entity type) registered.
    RegionRegistered {
        /// The region's node incarnation.
        region: RegionId,
    },
    /// A region proxy (a node that sends to this entity type but hosts none) registered.
    RegionProxyRegistered {
        /// The proxy's node incarnation.
        proxy: RegionId,
    },
    /// A region is gone (its node was removed or it stopped); its shards lose their home.
    RegionTerminated {
        /// The region's node incarnation.
        region: RegionId,
    },
    /// A region proxy is gone.
    RegionProxyTerminated {
        /// The proxy's node incarnation.
        proxy: RegionId,
    },
    /// `shard` now lives in `region`.
    ShardHomeAllocated {
        /// The shard.
        shard: ShardId,
        /// Its new home, a registered region.
        region: RegionId,
    },
    /// `shard` was handed off (rebalance) and has no home until allocated again.
    ShardHomeDeallocated {
        /// The shard.
        shard: ShardId,
    },
}

/// An event that cannot happen in the current state; the state was left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidEvent {
    /// The region is already registered.
    #[error("region {0} is already registered")]
    RegionAlreadyRegistered(RegionId),
    /// The proxy is already registered.
    #[error("region proxy {0} is already registered")]
    ProxyAlreadyRegistered(RegionId),
    /// The identity is registered as a proxy and cannot also be a region (or the reverse).
    #[error("{0} is registered as the other kind (region or proxy)")]
    RegionProxyClash(RegionId),
    /// The region is not registered.
    #[error("region {0} is not registered")]
    UnknownRegion(RegionId),
    /// The proxy is not registered.
    #[error("region proxy {0} is not registered")]
    UnknownProxy(RegionId),
    /// The shard already has a home.
    #[error("shard {shard} is already allocated to {home}")]
    ShardAlreadyAllocated {
        /// The shard.
        shard: ShardId,
        /// Its current home.
        home: RegionId,
    },
    /// The shard has no home to deallocate.
    #[error("shard {0} is not allocated")]
    ShardNotAllocated(ShardId),
}

/// Which shard lives where, which regions and proxies are registered, and which shards lost
/// their home.
///
/// Built only by [`apply`](Self::apply)ing events (or by deserializing a snapshot, which is
/// checked the same way), so the invariants in the [module docs](self) always hold.
///
/// Serializable as a snapshot: `{"regions":[{"region":…,"shards":[…]}],"proxies":[…],
/// "unallocated":[…]}`. Deserializing refuses a snapshot that breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Snapshot", into = "Snapshot")]
pub struct CoordinatorState {
    regions: BTreeMap<RegionId, BTreeSet<ShardId>>,
    proxies: BTreeSet<RegionId>,
    shard_home: BTreeMap<ShardId, RegionId>,
    unallocated: BTreeSet<ShardId>,
}

impl CoordinatorState {
    /// The empty state: no regions, no proxies, no shards.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every registered region with the shards it hosts (possibly none). This is what an
    /// allocation strategy reads ([`Allocations::new`](crate::allocation::Allocations::new)).
    pub fn regions(&self) -> &BTreeMap<RegionId, BTreeSet<ShardId>> {
        &self.regions
    }

    /// The registered region proxies.
    pub fn proxies(&self) -> &BTreeSet<RegionId> {
        &self.proxies
    }

    /// The home of every allocated shard.
    pub fn shard_home(&self) -> &BTreeMap<ShardId, RegionId> {
        &self.shard_home
    }

    /// Shards that had a home and lost it (their region terminated, or they were handed off)
    /// and have not been allocated since. With remember-entities the coordinator allocates
    /// these at once so their entities restart; otherwise they wait for the next message.
    /// At most one entry per shard, so bounded by the number of shards.
    pub fn unallocated(&self) -> &BTreeSet<ShardId> {
        &self.unallocated
    }

    /// The home of `shard`, if it has one.
    pub fn home_of(&self, shard: &ShardId) -> Option<&RegionId> {
        self.shard_home.get(shard)
    }

    /// The shards of `region`, or `None` when it is not registered.
    pub fn shards_of(&self, region: &RegionId) -> Option<&BTreeSet<ShardId>> {
        self.regions.get(region)
    }

    /// Checks that `event` can be applied to this state, without applying it.
    pub fn validate(&self, event: &CoordinatorEvent) -> Result<(), InvalidEvent> {
        use CoordinatorEvent as E;
        match event {
            E::RegionRegistered { region } => {
                if self.regions.contains_key(region) {
                    return Err(InvalidEvent::RegionAlreadyRegistered(*region));
                }
                if self.proxies.contains(region) {
                    return Err(InvalidEvent::RegionProxyClash(*region));
                }
            }
            E::RegionProxyRegistered { proxy } => {
                if self.proxies.contains(proxy) {
                    return Err(InvalidEvent::ProxyAlreadyRegistered(*proxy));
                }
                if self.regions.contains_key(proxy) {
                    return Err(InvalidEvent::RegionProxyClash(*proxy));
                }
            }
            E::RegionTerminated { region } => {
                if !self.regions.contains_key(region) {
                    return Err(InvalidEvent::UnknownRegion(*region));
                }
            }
            E::RegionProxyTerminated { proxy } => {
                if !self.proxies.contains(proxy) {
                    return Err(InvalidEvent::UnknownProxy(*proxy));
                }
            }
            E::ShardHomeAllocated { shard, region } => {
                if !self.regions.contains_key(region) {
                    return Err(InvalidEvent::UnknownRegion(*region));
                }
                if let Some(home) = self.shard_home.get(shard) {
                    return Err(InvalidEvent::ShardAlreadyAllocated {
                        shard: shard.clone(),
                        home: *home,
                    });
                }
            }
            E::ShardHomeDeallocated { shard } => {
                if !self.shard_home.contains_key(shard) {
                    return Err(InvalidEvent::ShardNotAllocated(shard.clone()));
                }
            }
        }
        Ok(())
    }

    /// Applies `event`, or refuses it with the state unchanged when it cannot happen here
    /// (see [`InvalidEvent`]). A terminated region's shards, and a deallocated shard, become
    /// [`unallocated`](Self::unallocated); an allocated shard leaves it.
    pub fn apply(&mut self, event: &CoordinatorEvent) -> Result<(), InvalidEvent> {
        use CoordinatorEvent as E;
        self.validate(event)?;
        match event {
            E::RegionRegistered { region } => {
                self.regions.insert(*region, BTreeSet::new());
            }
            E::RegionProxyRegistered { proxy } => {
                self.proxies.insert(*proxy);
            }
            E::RegionTerminated { region } => {
                let shards = self.regions.remove(region).unwrap_or_default();
                for shard in shards {
                    self.shard_home.remove(&shard);
                    self.unallocated.insert(shard);
                }
            }
            E::RegionProxyTerminated { proxy } => {
                self.proxies.remove(proxy);
            }
            E::ShardHomeAllocated { shard, region } => {
                if let Some(shards) = self.regions.get_mut(region) {
                    shards.insert(shard.clone());
                }
                self.shard_home.insert(shard.clone(), *region);
                self.unallocated.remove(shard);
            }
            E::ShardHomeDeallocated { shard } => {
                if let Some(home) = self.shard_home.remove(shard)
                    && let Some(shards) = self.regions.get_mut(&home)
                {
                    shards.remove(shard);
                }
                self.unallocated.insert(shard.clone());
            }
        }
        Ok(())
    }

    /// Checks every invariant from the module docs; `Err` describes the first one broken.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (shard, home) in &self.shard_home {
            match self.regions.get(home) {
                None => return Err(format!("shard {shard} lives in unregistered {home}")),
                Some(shards) if !shards.contains(shard) => {
                    return Err(format!("shard {shard}: home {home} does not list it"));
                }
                Some(_) => {}
            }
            if self.unallocated.contains(shard) {
                return Err(format!("shard {shard} is allocated and unallocated"));
            }
        }
        let mut seen = BTreeSet::new();
        for (region, shards) in &self.regions {
            for shard in shards {
                if !seen.insert(shard) {
                    return Err(format!("shard {shard} has two homes"));
                }
                if self.shard_home.get(shard) != Some(region) {
                    return Err(format!("{region} lists {shard}, shard_home disagrees"));
                }
            }
            if self.proxies.contains(region) {
                return Err(format!("{region} is both region and proxy"));
            }
        }
        if seen.len() != self.shard_home.len() {
            return Err("shard_home and regions differ in size".to_owned());
        }
        Ok(())
    }
}

/// The stored form of [`CoordinatorState`] (maps keyed by a struct are not JSON objects).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    regions: Vec<RegionSnapshot>,
    proxies: Vec<RegionId>,
    unallocated: Vec<ShardId>,
}

#[derive(Serialize, Deserialize)]
struct RegionSnapshot {
    region: RegionId,
    shards: Vec<ShardId>,
}

impl From<CoordinatorState> for Snapshot {
    fn from(state: CoordinatorState) -> Self {
        Snapshot {
            regions: state
                .regions
                .into_iter()
                .map(|(region, shards)| RegionSnapshot {
                    region,
                    shards: shards.into_iter().collect(),
                })
                .collect(),
            proxies: state.proxies.into_iter().collect(),
            unallocated: state.unallocated.into_iter().collect(),
        }
    }
}

impl TryFrom<Snapshot> for CoordinatorState {
    type Error = InvalidEvent;

    /// Rebuilds the state through `apply`, so a snapshot that breaks an invariant (a shard
    /// in two regions, a region that is also a proxy, …) is refused.
    fn try_from(snapshot: Snapshot) -> Result<Self, InvalidEvent> {
        let mut state = CoordinatorState::new();
        for entry in &snapshot.regions {
            state.apply(&CoordinatorEvent::RegionRegistered {
                region: entry.region,
            })?;
            for shard in &entry.shards {
                state.apply(&CoordinatorEvent::ShardHomeAllocated {
                    shard: shard.clone(),
                    region: entry.region,
                })?;
            }
        }
        for proxy in snapshot.proxies {
            state.apply(&CoordinatorEvent::RegionProxyRegistered { proxy })?;
        }
        for shard in snapshot.unallocated {
            if let Some(home) = state.shard_home.get(&shard) {
                return Err(InvalidEvent::ShardAlreadyAllocated { shard, home: *home });
            }
            state.unallocated.insert(shard);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CoordinatorEvent as E;
    use proptest::prelude::*;
    use shoal_remote::UniqueAddress;

    fn node(n: u16) -> RegionId {
        UniqueAddress::new(([10, 0, 0, 1], 7000 + n).into(), 1)
    }

    fn shard(n: u32) -> ShardId {
        ShardId::from_number(n)
    }

    fn alloc(s: u32, r: u16) -> CoordinatorEvent {
        E::ShardHomeAllocated {
            shard: shard(s),
            region: node(r),
        }
    }

    fn state_of(events: &[CoordinatorEvent]) -> CoordinatorState {
        let mut state = CoordinatorState::new();
        for e in events {
            state.apply(e).unwrap();
        }
        state.check_invariants().unwrap();
        state
    }

    /// Applies an event that must be refused with `err`, and checks nothing changed.
    fn refused(state: &mut CoordinatorState, event: CoordinatorEvent, err: InvalidEvent) {
        let before = state.clone();
        assert_eq!(state.validate(&event), Err(err.clone()));
        assert_eq!(state.apply(&event), Err(err));
        assert_eq!(*state, before);
    }

    #[test]
    fn allocation_and_deallocation() {
        let mut state = state_of(&[
            E::RegionRegistered { region: node(1) },
            E::RegionRegistered { region: node(2) },
            alloc(1, 1),
            alloc(2, 2),
            alloc(3, 1),
        ]);
        assert_eq!(state.home_of(&shard(1)), Some(&node(1)));
        assert_eq!(
            state.shards_of(&node(1)),
            Some(&BTreeSet::from([shard(1), shard(3)]))
        );
        state
            .apply(&E::ShardHomeDeallocated { shard: shard(1) })
            .unwrap();
        assert_eq!(state.home_of(&shard(1)), None);
        assert_eq!(state.shards_of(&node(1)), Some(&BTreeSet::from([shard(3)])));
        assert_eq!(state.unallocated(), &BTreeSet::from([shard(1)]));
        state.apply(&alloc(1, 2)).unwrap();
        assert_eq!(state.home_of(&shard(1)), Some(&node(2)));
        assert!(state.unallocated().is_empty());
        state.check_invariants().unwrap();
    }

    #[test]
    fn terminated_region_shards_become_unallocated() {
        let mut state = state_of(&[
            E::RegionRegistered { region: node(1) },
            E::RegionRegistered { region: node(2) },
            alloc(1, 1),
            alloc(2, 2),
            alloc(3, 1),
        ]);
        state
            .apply(&E::RegionTerminated { region: node(1) })
            .unwrap();
        assert_eq!(state.shards_of(&node(1)), None);
        assert_eq!(state.home_of(&shard(1)), None);
        assert_eq!(state.home_of(&shard(3)), None);
        assert_eq!(state.home_of(&shard(2)), Some(&node(2)));
        assert_eq!(state.unallocated(), &BTreeSet::from([shard(1), shard(3)]));
        state.check_invariants().unwrap();
        // The shards can be allocated again, to the surviving region.
        state.apply(&alloc(1, 2)).unwrap();
        assert_eq!(state.unallocated(), &BTreeSet::from([shard(3)]));
    }

    #[test]
    fn impossible_events_are_refused_without_change() {
        let mut state = state_of(&[
            E::RegionRegistered { region: node(1) },
            E::RegionProxyRegistered { proxy: node(9) },
            alloc(1, 1),
        ]);
        refused(
            &mut state,
            alloc(2, 5),
            InvalidEvent::UnknownRegion(node(5)),
        );
        refused(
            &mut state,
            alloc(2, 9),
            InvalidEvent::UnknownRegion(node(9)),
        );
        refused(
            &mut state,
            alloc(1, 1),
            InvalidEvent::ShardAlreadyAllocated {
                shard: shard(1),
                home: node(1),
            },
        );
        refused(
            &mut state,
            E::RegionRegistered { region: node(1) },
            InvalidEvent::RegionAlreadyRegistered(node(1)),
        );
        refused(
            &mut state,
            E::RegionRegistered { region: node(9) },
            InvalidEvent::RegionProxyClash(node(9)),
        );
        refused(
            &mut state,
            E::RegionProxyRegistered { proxy: node(9) },
            InvalidEvent::ProxyAlreadyRegistered(node(9)),
        );
        refused(
            &mut state,
            E::RegionProxyRegistered { proxy: node(1) },
            InvalidEvent::RegionProxyClash(node(1)),
        );
        refused(
            &mut state,
            E::RegionTerminated { region: node(9) },
            InvalidEvent::UnknownRegion(node(9)),
        );
        refused(
            &mut state,
            E::RegionProxyTerminated { proxy: node(1) },
            InvalidEvent::UnknownProxy(node(1)),
        );
        refused(
            &mut state,
            E::ShardHomeDeallocated { shard: shard(2) },
            InvalidEvent::ShardNotAllocated(shard(2)),
        );
    }

    #[test]
    fn another_incarnation_is_another_region() {
        let old = node(1);
        let new = UniqueAddress::new(old.addr, 2);
        let mut state = state_of(&[E::RegionRegistered { region: old }, alloc(1, 1)]);
        state.apply(&E::RegionRegistered { region: new }).unwrap();
        refused(
            &mut state,
            E::ShardHomeAllocated {
                shard: shard(1),
                region: new,
            },
            InvalidEvent::ShardAlreadyAllocated {
                shard: shard(1),
                home: old,
            },
        );
    }

    /// The stored names: changing any of these breaks existing journals.
    #[test]
    fn event_json_is_stable() {
        let region = UniqueAddress::new(([127, 0, 0, 1], 2552).into(), 7);
        let r = r#"{"addr":"127.0.0.1:2552","incarnation":7}"#;
        let cases = [
            (
                E::RegionRegistered { region },
                format!(r#"{{"type":"RegionRegistered","region":{r}}}"#),
            ),
            (
                E::RegionProxyRegistered { proxy: region },
                format!(r#"{{"type":"RegionProxyRegistered","proxy":{r}}}"#),
            ),
            (
                E::RegionTerminated { region },
                format!(r#"{{"type":"RegionTerminated","region":{r}}}"#),
            ),
            (
                E::RegionProxyTerminated { proxy: region },
                format!(r#"{{"type":"RegionProxyTerminated","proxy":{r}}}"#),
            ),
            (
                E::ShardHomeAllocated {
                    shard: shard(17),
                    region,
                },
                format!(r#"{{"type":"ShardHomeAllocated","shard":"17","region":{r}}}"#),
            ),
            (
                E::ShardHomeDeallocated { shard: shard(17) },
                r#"{"type":"ShardHomeDeallocated","shard":"17"}"#.to_owned(),
            ),
        ];
        for (event, json) in cases {
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(
                serde_json::from_str::<CoordinatorEvent>(&json).unwrap(),
                event
            );
        }
        assert!(
            serde_json::from_str::<CoordinatorEvent>(
                r#"{"type":"ShardHomeDeallocated","shard":""}"#
            )
            .is_err()
        );
    }

    #[test]
    fn snapshot_round_trips_and_bad_snapshots_are_refused() {
        let mut state = state_of(&[
            E::RegionRegistered { region: node(1) },
            E::RegionRegistered { region: node(2) },
            E::RegionProxyRegistered { proxy: node(3) },
            alloc(1, 1),
            alloc(2, 2),
        ]);
        state
            .apply(&E::ShardHomeDeallocated { shard: shard(2) })
            .unwrap();
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            serde_json::from_str::<CoordinatorState>(&json).unwrap(),
            state
        );

        let r = |n: u16| format!(r#"{{"addr":"10.0.0.1:{}","incarnation":1}}"#, 7000 + n);
        let two_homes = format!(
            r#"{{"regions":[{{"region":{},"shards":["1"]}},{{"region":{},"shards":["1"]}}],"proxies":[],"unallocated":[]}}"#,
            r(1),
            r(2)
        );
        assert!(serde_json::from_str::<CoordinatorState>(&two_homes).is_err());
        let clash = format!(
            r#"{{"regions":[{{"region":{},"shards":[]}}],"proxies":[{}],"unallocated":[]}}"#,
            r(1),
            r(1)
        );
        assert!(serde_json::from_str::<CoordinatorState>(&clash).is_err());
        let both = format!(
            r#"{{"regions":[{{"region":{},"shards":["1"]}}],"proxies":[],"unallocated":["1"]}}"#,
            r(1)
        );
        assert!(serde_json::from_str::<CoordinatorState>(&both).is_err());
    }

    #[test]
    fn the_invariant_checker_catches_breakage() {
        // Guards the property tests: a checker that accepts everything would make them vacuous.
        let good = state_of(&[E::RegionRegistered { region: node(1) }, alloc(1, 1)]);
        let mut bad = good.clone();
        bad.shard_home.insert(shard(2), node(1));
        assert!(bad.check_invariants().is_err());
        let mut bad = good.clone();
        bad.regions.insert(node(2), BTreeSet::from([shard(1)]));
        assert!(bad.check_invariants().is_err());
        let mut bad = good.clone();
        bad.unallocated.insert(shard(1));
        assert!(bad.check_invariants().is_err());
        let mut bad = good.clone();
        bad.proxies.insert(node(1));
        assert!(bad.check_invariants().is_err());
        let mut bad = good;
        bad.shard_home.insert(shard(1), node(7));
        assert!(bad.check_invariants().is_err());
    }

    /// Any event over a small universe (4 node identities, 6 shards), valid or not.
    fn arb_event() -> impl Strategy<Value = CoordinatorEvent> {
        let n = || (0u16..4).prop_map(node);
        let s = || (0u32..6).prop_map(shard);
        prop_oneof![
            n().prop_map(|region| E::RegionRegistered { region }),
            n().prop_map(|proxy| E::RegionProxyRegistered { proxy }),
            n().prop_map(|region| E::RegionTerminated { region }),
            n().prop_map(|proxy| E::RegionProxyTerminated { proxy }),
            (s(), n()).prop_map(|(shard, region)| E::ShardHomeAllocated { shard, region }),
            (s(), n()).prop_map(|(shard, region)| E::ShardHomeAllocated { shard, region }),
            s().prop_map(|shard| E::ShardHomeDeallocated { shard }),
        ]
    }

    /// A naive reference model written independently of `apply`: which events are possible,
    /// and what the allocation is afterwards.
    #[derive(Default)]
    struct Model {
        regions: BTreeSet<RegionId>,
        proxies: BTreeSet<RegionId>,
        home: BTreeMap<ShardId, RegionId>,
        lost: BTreeSet<ShardId>,
    }

    impl Model {
        /// Applies the event if possible; answers whether it was.
        fn step(&mut self, event: &CoordinatorEvent) -> bool {
            match event {
                E::RegionRegistered { region } => {
                    !self.proxies.contains(region) && self.regions.insert(*region)
                }
                E::RegionProxyRegistered { proxy } => {
                    !self.regions.contains(proxy) && self.proxies.insert(*proxy)
                }
                E::RegionTerminated { region } => {
                    if !self.regions.remove(region) {
                        return false;
                    }
                    let gone: Vec<ShardId> = self
                        .home
                        .iter()
                        .filter(|(_, r)| *r == region)
                        .map(|(s, _)| s.clone())
                        .collect();
                    for s in gone {
                        self.home.remove(&s);
                        self.lost.insert(s);
                    }
                    true
                }
                E::RegionProxyTerminated { proxy } => self.proxies.remove(proxy),
                E::ShardHomeAllocated { shard, region } => {
                    if !self.regions.contains(region) || self.home.contains_key(shard) {
                        return false;
                    }
                    self.home.insert(shard.clone(), *region);
                    self.lost.remove(shard);
                    true
                }
                E::ShardHomeDeallocated { shard } => {
                    if self.home.remove(shard).is_none() {
                        return false;
                    }
                    self.lost.insert(shard.clone());
                    true
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_event_sequence_keeps_the_invariants(events in proptest::collection::vec(arb_event(), 0..80)) {
            let mut state = CoordinatorState::new();
            let mut model = Model::default();
            let mut accepted = 0usize;
            for event in &events {
                let before = state.clone();
                let checked = state.validate(event);
                let result = state.apply(event);
                prop_assert_eq!(&checked, &result, "validate and apply disagree on {:?}", event);
                prop_assert_eq!(result.is_ok(), model.step(event), "model disagrees on {:?} in {:?}", event, before);
                match result {
                    Ok(()) => accepted += 1,
                    Err(_) => prop_assert_eq!(&state, &before, "refused {:?} changed the state", event),
                }
                if let Err(broken) = state.check_invariants() {
                    prop_assert!(false, "after {:?}: {}", event, broken);
                }
                prop_assert_eq!(state.shard_home(), &model.home);
                prop_assert_eq!(state.unallocated(), &model.lost);
                prop_assert_eq!(state.proxies(), &model.proxies);
                prop_assert!(state.regions().keys().eq(model.regions.iter()));
            }
            prop_assert!(accepted <= events.len());
            let json = serde_json::to_string(&state).unwrap();
            prop_assert_eq!(serde_json::from_str::<CoordinatorState>(&json).unwrap(), state);
        }
    }
}
