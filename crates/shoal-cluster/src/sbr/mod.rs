//! Split-brain resolution: which side of a partition survives.
//!
//! A failure detector cannot tell a crashed node from a partitioned one, so when members
//! become unreachable each side must decide, on its own and without talking to the other,
//! which side keeps running. Strategies are pure ([`DowningStrategy::decide`] returns a
//! [`Decision`] value computed from a [`PartitionView`]); the [`SplitBrainResolver`] around
//! them adds the timing rules:
//!
//! * only the leader of a side decides, and only after the view has been **stable** for
//!   `stable_after` (no member became unreachable or reachable again, none became `Up`) and
//!   every member it counts as reachable has **seen its current gossip** (an addition to
//!   Akka's rules: a member whose failure detector lags but that stopped acknowledging is
//!   not counted on, so two sides never both count the same node);
//! * if reachability keeps changing for `stable_after + down_all_when_unstable`, every node
//!   downs every node (on all nodes, leader or not);
//! * **indirectly connected** nodes (reported unreachable but still talking through a third
//!   node) are always downed; the strategy then decides on the clean partition that remains;
//! * a lease decision waits for the [`Lease`] outcome: acquired → down the unreachable side;
//!   refused or failed → down this side.
//!
//! The side that is downed stops itself: a node that sees itself `Down` shuts down.
//!
//! | strategy | 2 \| 3 split | 3 \| 3 split | oldest alone (1 \| 4) |
//! |---|---|---|---|
//! | [`KeepMajority`] (default) | 3 survive | side with lowest address | 4 survive |
//! | [`StaticQuorum`] (quorum 3) | 3 survive | (6 > 2·3−1) all down | 4 survive |
//! | [`KeepOldest`] | side with oldest | side with oldest | oldest survives alone, or the 4 with `down_if_alone` |
//! | [`DownAllNodes`] | all down | all down | all down |
//! | [`LeaseMajority`] | lease holder (majority first) | lease holder | lease holder |

use std::fmt;
use std::time::Duration;

use crate::config::DowningStrategyConfig;

mod lease;
mod resolver;
mod strategies;
mod view;

#[cfg(test)]
mod tests;

pub use lease::{InMemoryLease, Lease, LeaseError};
pub use resolver::{ResolverAction, SplitBrainResolver};
pub use strategies::{DownAllNodes, KeepMajority, KeepOldest, LeaseMajority, StaticQuorum};
pub use view::{Counting, PartitionView};

/// What a strategy decided, as seen from the deciding side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This side survives: down the unreachable members.
    DownUnreachable,
    /// This side loses: down the reachable members, this node included.
    DownReachable,
    /// Nobody survives.
    DownAll,
    /// Acquire the lease (after `acquire_delay`); if acquired, down the unreachable members,
    /// otherwise down this side.
    AcquireLeaseAndDownUnreachable {
        /// Wait this long before trying (the minority's handicap).
        acquire_delay: Duration,
    },
}

/// A policy that picks the surviving side of a partition. Implementations must be pure and
/// deterministic: the same view gives the same decision, on every node.
///
/// The view given is *clean*: observations between indirectly connected nodes were removed
/// (those nodes are downed anyway), and [`PartitionView::needs_decision`] holds.
pub trait DowningStrategy: fmt::Debug + Send {
    /// The decision for this side.
    fn decide(&self, view: &PartitionView) -> Decision;
}

impl DowningStrategyConfig {
    /// The strategy these settings describe.
    pub fn build(&self) -> Box<dyn DowningStrategy> {
        match self {
            DowningStrategyConfig::KeepMajority { role } => {
                Box::new(KeepMajority { role: role.clone() })
            }
            DowningStrategyConfig::StaticQuorum { quorum_size, role } => Box::new(StaticQuorum {
                quorum_size: *quorum_size,
                role: role.clone(),
            }),
            DowningStrategyConfig::KeepOldest {
                down_if_alone,
                role,
            } => Box::new(KeepOldest {
                down_if_alone: *down_if_alone,
                role: role.clone(),
            }),
            DowningStrategyConfig::DownAll => Box::new(DownAllNodes),
            DowningStrategyConfig::LeaseMajority {
                role,
                acquire_lease_delay_for_minority,
                ..
            } => Box::new(LeaseMajority {
                role: role.clone(),
                acquire_lease_delay_for_minority: *acquire_lease_delay_for_minority,
            }),
        }
    }
}
