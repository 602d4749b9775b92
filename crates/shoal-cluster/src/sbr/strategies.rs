//! The built-in downing strategies, after Akka's split-brain resolver.

use std::time::Duration;

use crate::member::Member;
use crate::sbr::{Counting, Decision, DowningStrategy, PartitionView};

const DEFAULT: Counting = Counting {
    including_joining: false,
    excluding_leaving: false,
};
/// Counting for this side in the membership-change edge case: as few as possible.
const THIS_SIDE_FEWEST: Counting = Counting {
    including_joining: false,
    excluding_leaving: true,
};
/// Counting for the other side in that edge case: as many as possible.
const OTHER_SIDE_MOST: Counting = Counting {
    including_joining: true,
    excluding_leaving: false,
};

/// Keep the side with more members (of `role`); on a tie, keep the side with the lowest
/// address. With several sides and no majority, every side downs itself.
///
/// If a membership change may have happened at the same time as the partition (a `Joining`
/// member already `Up` on the other side, a `Leaving` one already `Exiting`) and that would
/// flip the outcome, it downs everything: the safe answer when the sides could disagree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeepMajority {
    /// Count only members with this role.
    pub role: Option<String>,
}

impl KeepMajority {
    fn decide_counted(this_side: usize, other_side: usize, lowest_unreachable: bool) -> Decision {
        use std::cmp::Ordering::*;
        match this_side.cmp(&other_side) {
            Greater => Decision::DownUnreachable,
            Less => Decision::DownReachable,
            Equal if lowest_unreachable => Decision::DownReachable,
            Equal => Decision::DownUnreachable,
        }
    }
}

impl DowningStrategy for KeepMajority {
    fn decide(&self, view: &PartitionView) -> Decision {
        let role = self.role.as_deref();
        let members = view.members(role, DEFAULT);
        let Some(lowest) = members.first() else {
            return Decision::DownAll;
        };
        let decision = Self::decide_counted(
            view.reachable_members(role, DEFAULT).len(),
            view.unreachable_members(role, DEFAULT).len(),
            view.is_unreachable(&lowest.address),
        );
        if decision != Decision::DownUnreachable {
            return decision;
        }
        let fewest = view.members(role, THIS_SIDE_FEWEST);
        let Some(lowest) = fewest.first() else {
            return Decision::DownAll;
        };
        let edge = Self::decide_counted(
            view.reachable_members(role, THIS_SIDE_FEWEST).len(),
            view.unreachable_members(role, OTHER_SIDE_MOST).len(),
            view.is_unreachable(&lowest.address),
        );
        if edge == Decision::DownUnreachable {
            edge
        } else {
            Decision::DownAll
        }
    }
}

/// Keep a side that has at least `quorum_size` members (of `role`), down a side that has
/// fewer. A cluster larger than `2 * quorum_size - 1` could split into two quorate sides, so
/// then everything is downed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticQuorum {
    /// Minimum number of members for a side to survive.
    pub quorum_size: usize,
    /// Count only members with this role.
    pub role: Option<String>,
}

impl DowningStrategy for StaticQuorum {
    fn decide(&self, view: &PartitionView) -> Decision {
        let role = self.role.as_deref();
        if view.members(role, DEFAULT).len() > self.quorum_size.saturating_mul(2).saturating_sub(1)
        {
            Decision::DownAll
        } else if view.reachable_members(role, DEFAULT).len() >= self.quorum_size {
            Decision::DownUnreachable
        } else {
            Decision::DownReachable
        }
    }
}

/// Keep the side with the oldest member (of `role`), where cluster singletons run.
///
/// With `down_if_alone`, an oldest member cut off from all the others downs itself and the
/// others carry on (but two members alone never down the oldest: the other one is no
/// better).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepOldest {
    /// If the oldest is alone on its side, down it instead of everybody else.
    pub down_if_alone: bool,
    /// Consider only members with this role.
    pub role: Option<String>,
}

impl KeepOldest {
    fn decide_counted(&self, oldest_here: bool, this_side: usize, other_side: usize) -> Decision {
        if oldest_here {
            if self.down_if_alone && this_side == 1 && other_side >= 2 {
                Decision::DownReachable
            } else {
                Decision::DownUnreachable
            }
        } else if self.down_if_alone && other_side == 1 && this_side >= 2 {
            Decision::DownUnreachable
        } else {
            Decision::DownReachable
        }
    }

    fn oldest<'a>(members: &[&'a Member]) -> Option<&'a Member> {
        members.iter().copied().min_by(|a, b| a.age_cmp(b))
    }
}

impl DowningStrategy for KeepOldest {
    fn decide(&self, view: &PartitionView) -> Decision {
        let role = self.role.as_deref();
        let Some(oldest) = Self::oldest(&view.members(role, DEFAULT)) else {
            return Decision::DownAll;
        };
        let decision = self.decide_counted(
            !view.is_unreachable(&oldest.address),
            view.reachable_members(role, DEFAULT).len(),
            view.unreachable_members(role, DEFAULT).len(),
        );
        if decision != Decision::DownUnreachable {
            return decision;
        }
        let Some(oldest) = Self::oldest(&view.members(role, THIS_SIDE_FEWEST)) else {
            return Decision::DownAll;
        };
        // Joining members only matter for the "alone" test.
        let counting = Counting {
            including_joining: self.down_if_alone,
            excluding_leaving: true,
        };
        let edge = self.decide_counted(
            !view.is_unreachable(&oldest.address),
            view.reachable_members(role, counting).len(),
            view.unreachable_members(role, counting).len(),
        );
        if edge == Decision::DownUnreachable {
            edge
        } else {
            Decision::DownAll
        }
    }
}

/// Down every node, on both sides. Simple and safe when restarts are cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownAllNodes;

impl DowningStrategy for DownAllNodes {
    fn decide(&self, _view: &PartitionView) -> Decision {
        Decision::DownAll
    }
}

/// Keep the side that acquires the lease. The minority side (by the keep-majority count,
/// ties to the side with the lowest address) waits `acquire_lease_delay_for_minority`
/// before trying, so that the majority normally wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseMajority {
    /// Count only members with this role.
    pub role: Option<String>,
    /// Head start given to the majority side.
    pub acquire_lease_delay_for_minority: Duration,
}

impl LeaseMajority {
    fn is_in_minority(&self, view: &PartitionView) -> bool {
        let role = self.role.as_deref();
        let members = view.members(role, DEFAULT);
        let Some(lowest) = members.first() else {
            return false;
        };
        let unreachable = view.unreachable_members(role, DEFAULT).len();
        match (unreachable * 2).cmp(&members.len()) {
            std::cmp::Ordering::Equal => view.is_unreachable(&lowest.address),
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
        }
    }
}

impl DowningStrategy for LeaseMajority {
    fn decide(&self, view: &PartitionView) -> Decision {
        let acquire_delay = if self.is_in_minority(view) {
            self.acquire_lease_delay_for_minority
        } else {
            Duration::ZERO
        };
        Decision::AcquireLeaseAndDownUnreachable { acquire_delay }
    }
}
