//! Who can reach whom, as observed by the failure detectors and gossiped.
//!
//! Each observer owns one row: the subjects *it* cannot reach, stamped with a version only
//! that observer increments. Merging two tables keeps, per observer, the row with the higher
//! version, so a row is never mixed from two versions and the merge is a join-semilattice
//! (commutative, associative, idempotent). Two copies of the same version differ only when one
//! of them was pruned of removed members; they are merged subject by subject (the further
//! status wins) and pruned again, which keeps the merge a semilattice. A subject is absent
//! from a row while reachable.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_remote::UniqueAddress;

/// What an observer reports about a subject it cannot reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReachabilityStatus {
    /// The failure detector stopped hearing from the subject; it may come back.
    Unreachable,
    /// The subject is known to be gone for good (a new incarnation of its address joined).
    /// Sticky: never reported reachable again.
    Terminated,
}

/// One observer's row: the subjects it cannot reach, under a version it alone increments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct ObserverRow {
    pub(crate) version: u64,
    pub(crate) subjects: BTreeMap<UniqueAddress, ReachabilityStatus>,
}

impl ObserverRow {
    /// The newer row; for equal versions, the subject-wise union (further status wins).
    pub(crate) fn merge(&self, other: &ObserverRow) -> ObserverRow {
        use std::cmp::Ordering::*;
        match self.version.cmp(&other.version) {
            Greater => self.clone(),
            Less => other.clone(),
            Equal => {
                let mut subjects = self.subjects.clone();
                for (subject, status) in &other.subjects {
                    subjects
                        .entry(*subject)
                        .and_modify(|s| *s = (*s).max(*status))
                        .or_insert(*status);
                }
                ObserverRow {
                    version: self.version,
                    subjects,
                }
            }
        }
    }
}

/// The gossiped reachability table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Reachability {
    rows: BTreeMap<UniqueAddress, ObserverRow>,
}

impl Reachability {
    /// A table with no observations.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nobody reports anybody unreachable.
    pub fn is_all_reachable(&self) -> bool {
        self.rows.values().all(|r| r.subjects.is_empty())
    }

    /// What `observer` reports about `subject` (`None`: reachable, or never observed).
    pub fn status(
        &self,
        observer: &UniqueAddress,
        subject: &UniqueAddress,
    ) -> Option<ReachabilityStatus> {
        self.rows
            .get(observer)
            .and_then(|r| r.subjects.get(subject))
            .copied()
    }

    /// Every observation, as `(observer, subject, status)` in address order.
    pub fn observations(
        &self,
    ) -> impl Iterator<Item = (UniqueAddress, UniqueAddress, ReachabilityStatus)> + '_ {
        self.rows
            .iter()
            .flat_map(|(o, row)| row.subjects.iter().map(move |(s, st)| (*o, *s, *st)))
    }

    /// The subjects `observer` cannot reach.
    pub fn unreachable_by(&self, observer: &UniqueAddress) -> BTreeSet<UniqueAddress> {
        self.rows
            .get(observer)
            .map(|r| r.subjects.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The version of `observer`'s row (0 if it never reported anything).
    pub fn version_of(&self, observer: &UniqueAddress) -> u64 {
        self.rows.get(observer).map_or(0, |r| r.version)
    }

    /// Record `observer`'s view of `subject` (`None`: reachable). Returns whether the row
    /// changed. `Terminated` is sticky: it is never replaced.
    pub(crate) fn observe(
        &mut self,
        observer: UniqueAddress,
        subject: UniqueAddress,
        status: Option<ReachabilityStatus>,
    ) -> bool {
        let row = self.rows.entry(observer).or_default();
        let current = row.subjects.get(&subject).copied();
        if current == status || current == Some(ReachabilityStatus::Terminated) {
            return false;
        }
        match status {
            Some(s) => row.subjects.insert(subject, s),
            None => row.subjects.remove(&subject),
        };
        row.version += 1;
        true
    }

    /// Per observer, the merge of its rows (see [`ObserverRow::merge`]).
    pub(crate) fn merge(&self, other: &Reachability) -> Reachability {
        let mut rows = self.rows.clone();
        for (observer, theirs) in &other.rows {
            rows.entry(*observer)
                .and_modify(|mine| *mine = mine.merge(theirs))
                .or_insert_with(|| theirs.clone());
        }
        Reachability { rows }
    }

    /// Drop every row of, and every observation about, a node for which `gone` holds.
    pub(crate) fn prune(&mut self, gone: impl Fn(&UniqueAddress) -> bool) {
        self.rows.retain(|observer, _| !gone(observer));
        for row in self.rows.values_mut() {
            row.subjects.retain(|subject, _| !gone(subject));
        }
    }

    pub(crate) fn rows(&self) -> &BTreeMap<UniqueAddress, ObserverRow> {
        &self.rows
    }

    pub(crate) fn from_rows(rows: BTreeMap<UniqueAddress, ObserverRow>) -> Self {
        Reachability { rows }
    }
}

#[cfg(test)]
mod tests {
    use super::ReachabilityStatus::*;
    use super::*;

    fn n(port: u16) -> UniqueAddress {
        UniqueAddress::new(format!("127.0.0.1:{port}").parse().unwrap(), 1)
    }

    #[test]
    fn observe_bumps_the_observer_version_only_on_change() {
        let mut r = Reachability::new();
        assert!(r.observe(n(1), n(2), Some(Unreachable)));
        assert!(!r.observe(n(1), n(2), Some(Unreachable)));
        assert_eq!(r.version_of(&n(1)), 1);
        assert!(r.observe(n(1), n(2), None));
        assert_eq!(r.version_of(&n(1)), 2);
        assert!(r.is_all_reachable());
        assert_eq!(r.status(&n(1), &n(2)), None);
    }

    #[test]
    fn terminated_is_sticky() {
        let mut r = Reachability::new();
        assert!(r.observe(n(1), n(2), Some(Terminated)));
        assert!(!r.observe(n(1), n(2), None));
        assert!(!r.observe(n(1), n(2), Some(Unreachable)));
        assert_eq!(r.status(&n(1), &n(2)), Some(Terminated));
    }

    #[test]
    fn merge_keeps_the_newer_row_of_each_observer() {
        let mut a = Reachability::new();
        a.observe(n(1), n(2), Some(Unreachable));
        a.observe(n(3), n(2), Some(Unreachable));
        let mut b = a.clone();
        b.observe(n(1), n(2), None); // n1 sees n2 again: version 2
        a.observe(n(3), n(4), Some(Unreachable)); // n3's row advances on a only
        let m = a.merge(&b);
        assert_eq!(m, b.merge(&a));
        assert_eq!(m.status(&n(1), &n(2)), None);
        assert_eq!(m.status(&n(3), &n(4)), Some(Unreachable));
        assert_eq!(m.status(&n(3), &n(2)), Some(Unreachable));
        let all: Vec<_> = m.observations().collect();
        assert_eq!(
            all,
            vec![(n(3), n(2), Unreachable), (n(3), n(4), Unreachable)]
        );
    }

    #[test]
    fn prune_forgets_rows_and_subjects() {
        let mut r = Reachability::new();
        r.observe(n(1), n(2), Some(Unreachable));
        r.observe(n(2), n(1), Some(Unreachable));
        r.observe(n(3), n(1), Some(Unreachable));
        r.prune(|a| *a == n(2));
        assert_eq!(
            r.observations().collect::<Vec<_>>(),
            vec![(n(3), n(1), Unreachable)]
        );
        assert_eq!(r.unreachable_by(&n(1)), BTreeSet::new());
    }
}
