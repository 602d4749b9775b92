//! The split-brain resolver: timing rules around a [`DowningStrategy`].

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_remote::UniqueAddress;

use crate::config::{DowningStrategyConfig, SplitBrainResolverConfig};
use crate::sbr::{Decision, DowningStrategy, PartitionView};
use crate::time::Timestamp;

/// What the resolver asks its runner (the membership core) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverAction {
    /// Mark these members `Down` (this node possibly included).
    Down(BTreeSet<UniqueAddress>),
    /// Try to acquire the lease; report with [`SplitBrainResolver::on_lease_result`].
    AcquireLease,
    /// Release the lease.
    ReleaseLease,
}

/// The part of the view whose change restarts the stable-after period.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    unreachable: BTreeSet<UniqueAddress>,
    indirectly_connected: BTreeSet<UniqueAddress>,
    up: BTreeSet<UniqueAddress>,
}

impl Fingerprint {
    fn of(view: &PartitionView) -> Self {
        Fingerprint {
            unreachable: view.unreachable().clone(),
            indirectly_connected: view.indirectly_connected(),
            up: view
                .members(None, Default::default())
                .iter()
                .map(|m| m.address)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LeaseState {
    NotHeld,
    /// Decided to acquire; waiting out the minority's delay.
    WaitingToAcquire {
        at: Timestamp,
        indirectly_connected: BTreeSet<UniqueAddress>,
    },
    /// `AcquireLease` emitted; waiting for the result.
    Acquiring {
        indirectly_connected: BTreeSet<UniqueAddress>,
    },
    /// Held until these downed members are removed.
    Held {
        pending_removal: BTreeSet<UniqueAddress>,
    },
    /// Held until this time.
    HeldUntil(Timestamp),
}

/// The resolver: feed it the current view on every step; it answers with actions. Pure.
#[derive(Debug)]
pub struct SplitBrainResolver {
    strategy: Box<dyn DowningStrategy>,
    stable_after: Duration,
    down_all_when_unstable: Option<Duration>,
    lease_release_after: Duration,
    fingerprint: Option<Fingerprint>,
    stable_since: Timestamp,
    unstable_since: Option<Timestamp>,
    lease: LeaseState,
}

impl SplitBrainResolver {
    /// The resolver described by `config`.
    pub fn new(config: &SplitBrainResolverConfig) -> Self {
        Self::with_strategy(config, config.strategy.build())
    }

    /// The resolver with `config`'s timings and a custom `strategy`.
    pub fn with_strategy(
        config: &SplitBrainResolverConfig,
        strategy: Box<dyn DowningStrategy>,
    ) -> Self {
        let lease_release_after = match config.strategy {
            DowningStrategyConfig::LeaseMajority { release_after, .. } => release_after,
            _ => Duration::from_secs(40),
        };
        SplitBrainResolver {
            strategy,
            stable_after: config.stable_after,
            down_all_when_unstable: config.down_all_when_unstable,
            lease_release_after,
            fingerprint: None,
            stable_since: Timestamp::ZERO,
            unstable_since: None,
            lease: LeaseState::NotHeld,
        }
    }

    /// Since when the view has been unchanged.
    pub fn stable_since(&self) -> Timestamp {
        self.stable_since
    }

    /// Whether the lease is held (or being acquired).
    pub fn is_lease_pending_or_held(&self) -> bool {
        self.lease != LeaseState::NotHeld
    }

    /// Observe the view at `now`. `responsible` is true on the leader of this side, if it is
    /// `Up` or `Leaving`: only it takes decisions (down-all-when-unstable excepted).
    pub fn on_view(
        &mut self,
        now: Timestamp,
        view: &PartitionView,
        responsible: bool,
    ) -> Vec<ResolverAction> {
        let mut actions = Vec::new();
        self.track_lease_release(now, view, &mut actions);

        let fingerprint = Fingerprint::of(view);
        if self.fingerprint.as_ref() != Some(&fingerprint) {
            let reachability_changed = self.fingerprint.as_ref().is_none_or(|old| {
                old.unreachable != fingerprint.unreachable
                    || old.indirectly_connected != fingerprint.indirectly_connected
            });
            if reachability_changed && self.unstable_since.is_none() && view.needs_decision() {
                self.unstable_since = Some(now);
            }
            self.stable_since = now;
            self.fingerprint = Some(fingerprint);
        }
        if !view.needs_decision() {
            self.unstable_since = None;
            return actions;
        }
        match &self.lease {
            LeaseState::WaitingToAcquire {
                at,
                indirectly_connected,
            } => {
                if now >= *at {
                    actions.push(ResolverAction::AcquireLease);
                    self.lease = LeaseState::Acquiring {
                        indirectly_connected: indirectly_connected.clone(),
                    };
                }
                return actions;
            }
            LeaseState::Acquiring { .. } => return actions,
            _ => {}
        }
        if let (Some(extra), Some(since)) = (self.down_all_when_unstable, self.unstable_since)
            && now.saturating_since(since) > self.stable_after + extra
        {
            self.down(now, view.nodes_to_down(Decision::DownAll), &mut actions);
            return actions;
        }
        if responsible
            && now.saturating_since(self.stable_since) >= self.stable_after
            && view.reachable_side_has_seen()
        {
            self.decide(now, view, &mut actions);
        }
        actions
    }

    /// The outcome of the `AcquireLease` action (`false` also for errors). Ignored unless
    /// an acquisition is under way.
    pub fn on_lease_result(
        &mut self,
        now: Timestamp,
        view: &PartitionView,
        granted: bool,
    ) -> Vec<ResolverAction> {
        let LeaseState::Acquiring {
            indirectly_connected,
        } = &self.lease
        else {
            return Vec::new();
        };
        let indirectly_connected = indirectly_connected.clone();
        let clean = clean_view(view, &indirectly_connected);
        let decision = if granted {
            Decision::DownUnreachable
        } else {
            Decision::DownReachable
        };
        let nodes = with_indirect(view, clean.nodes_to_down(decision), &indirectly_connected);
        self.lease = if !granted {
            LeaseState::NotHeld
        } else if nodes.is_empty() {
            LeaseState::HeldUntil(now + self.lease_release_after)
        } else {
            LeaseState::Held {
                pending_removal: nodes.clone(),
            }
        };
        let mut actions = Vec::new();
        self.down(now, nodes, &mut actions);
        actions
    }

    fn decide(&mut self, now: Timestamp, view: &PartitionView, actions: &mut Vec<ResolverAction>) {
        let downable = view.downable();
        let indirectly_connected: BTreeSet<UniqueAddress> = view
            .indirectly_connected()
            .intersection(&downable)
            .copied()
            .collect();
        let clean = clean_view(view, &indirectly_connected);
        if !indirectly_connected.is_empty() && !clean.needs_decision() {
            self.down(now, indirectly_connected, actions);
            return;
        }
        match self.strategy.decide(&clean) {
            Decision::AcquireLeaseAndDownUnreachable { acquire_delay } => match &mut self.lease {
                LeaseState::Held { .. } | LeaseState::HeldUntil(_) => {
                    let nodes = with_indirect(
                        view,
                        clean.nodes_to_down(Decision::DownUnreachable),
                        &indirectly_connected,
                    );
                    let mut pending = match &self.lease {
                        LeaseState::Held { pending_removal } => pending_removal.clone(),
                        _ => BTreeSet::new(),
                    };
                    pending.extend(nodes.iter().copied());
                    self.lease = LeaseState::Held {
                        pending_removal: pending,
                    };
                    self.down(now, nodes, actions);
                }
                _ if acquire_delay.is_zero() => {
                    actions.push(ResolverAction::AcquireLease);
                    self.lease = LeaseState::Acquiring {
                        indirectly_connected,
                    };
                }
                _ => {
                    self.lease = LeaseState::WaitingToAcquire {
                        at: now + acquire_delay,
                        indirectly_connected,
                    };
                }
            },
            decision => {
                let nodes =
                    with_indirect(view, clean.nodes_to_down(decision), &indirectly_connected);
                self.down(now, nodes, actions);
            }
        }
    }

    fn down(
        &mut self,
        now: Timestamp,
        nodes: BTreeSet<UniqueAddress>,
        actions: &mut Vec<ResolverAction>,
    ) {
        self.stable_since = now;
        self.unstable_since = None;
        if !nodes.is_empty() {
            actions.push(ResolverAction::Down(nodes));
        }
    }

    fn track_lease_release(
        &mut self,
        now: Timestamp,
        view: &PartitionView,
        actions: &mut Vec<ResolverAction>,
    ) {
        match &self.lease {
            LeaseState::Held { pending_removal } => {
                let remaining = pending_removal
                    .iter()
                    .any(|n| view.all_members().any(|m| m.address == *n));
                if !remaining {
                    self.lease = LeaseState::HeldUntil(now + self.lease_release_after);
                }
            }
            LeaseState::HeldUntil(at) if now >= *at => {
                actions.push(ResolverAction::ReleaseLease);
                self.lease = LeaseState::NotHeld;
            }
            _ => {}
        }
    }
}

fn clean_view(
    view: &PartitionView,
    indirectly_connected: &BTreeSet<UniqueAddress>,
) -> PartitionView {
    if indirectly_connected.is_empty() {
        view.clone()
    } else {
        view.without_indirect_observations()
    }
}

fn with_indirect(
    view: &PartitionView,
    mut nodes: BTreeSet<UniqueAddress>,
    indirectly_connected: &BTreeSet<UniqueAddress>,
) -> BTreeSet<UniqueAddress> {
    let downable = view.downable();
    nodes.extend(
        indirectly_connected
            .iter()
            .filter(|n| downable.contains(n))
            .copied(),
    );
    nodes
}
