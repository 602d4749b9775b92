//! Every strategy against the classic partitions, and the resolver's timing rules.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_remote::UniqueAddress;

use super::*;
use crate::config::{DowningStrategyConfig, SplitBrainResolverConfig};
use crate::member::{Member, MemberStatus};
use crate::time::Timestamp;

fn n(i: u16) -> UniqueAddress {
    UniqueAddress::new(format!("127.0.0.1:{}", 2550 + i).parse().unwrap(), 1)
}

fn set(ids: &[u16]) -> BTreeSet<UniqueAddress> {
    ids.iter().map(|i| n(*i)).collect()
}

/// Member `i`, `Up`, with up-number `i` (so lower ids are older).
fn up(i: u16) -> Member {
    Member {
        address: n(i),
        status: MemberStatus::Up,
        roles: BTreeSet::new(),
        up_number: Some(i.into()),
    }
}

fn with_status(mut m: Member, status: MemberStatus) -> Member {
    m.status = status;
    if status == MemberStatus::Joining {
        m.up_number = None;
    }
    m
}

fn with_role(mut m: Member, role: &str) -> Member {
    m.roles.insert(role.into());
    m
}

/// The view of `me` when it cannot reach `unreachable` (a clean partition: every
/// observation is made by `me`, and its side has seen its gossip).
fn view(me: u16, members: Vec<Member>, unreachable: &[u16]) -> PartitionView {
    let obs: Vec<_> = unreachable.iter().map(|u| (n(me), n(*u))).collect();
    let seen: Vec<UniqueAddress> = members
        .iter()
        .map(|m| m.address)
        .filter(|a| !unreachable.contains(&(a.addr.port() - 2550)))
        .collect();
    PartitionView::new(n(me), members, obs, seen)
}

fn cluster(size: u16) -> Vec<Member> {
    (1..=size).map(up).collect()
}

/// Decide from both sides of a two-way split of `members` into `a` and the rest; returns the
/// nodes each side downs.
fn both_sides(
    strategy: &dyn DowningStrategy,
    members: Vec<Member>,
    a: &[u16],
) -> (BTreeSet<UniqueAddress>, BTreeSet<UniqueAddress>) {
    let all: Vec<u16> = members
        .iter()
        .map(|m| m.address.addr.port() - 2550)
        .collect();
    let b: Vec<u16> = all.iter().copied().filter(|i| !a.contains(i)).collect();
    let va = view(a[0], members.clone(), &b);
    let vb = view(b[0], members, a);
    (
        va.nodes_to_down(strategy.decide(&va)),
        vb.nodes_to_down(strategy.decide(&vb)),
    )
}

#[test]
fn keep_majority_two_three_split_keeps_the_three() {
    let s = KeepMajority::default();
    let (a, b) = both_sides(&s, cluster(5), &[1, 2]);
    assert_eq!(a, set(&[1, 2]), "the two down themselves");
    assert_eq!(b, set(&[1, 2]), "the three down the two");
    assert_eq!(
        s.decide(&view(1, cluster(5), &[3, 4, 5])),
        Decision::DownReachable
    );
    assert_eq!(
        s.decide(&view(3, cluster(5), &[1, 2])),
        Decision::DownUnreachable
    );
}

#[test]
fn keep_majority_three_three_tie_keeps_the_side_with_the_lowest_address() {
    let s = KeepMajority::default();
    let (a, b) = both_sides(&s, cluster(6), &[1, 2, 3]);
    assert_eq!(a, set(&[4, 5, 6]));
    assert_eq!(b, set(&[4, 5, 6]));
    // The lowest address does not have to be first on the deciding side.
    let (a, b) = both_sides(&s, cluster(6), &[2, 4, 6]);
    assert_eq!(a, set(&[2, 4, 6]));
    assert_eq!(b, set(&[2, 4, 6]));
}

#[test]
fn keep_majority_crash_of_one_in_three() {
    let s = KeepMajority::default();
    let v = view(1, cluster(3), &[3]);
    assert_eq!(v.nodes_to_down(s.decide(&v)), set(&[3]));
}

#[test]
fn keep_majority_counts_only_the_role() {
    // 1, 2 are "entity" nodes on one side; 3, 4, 5 (one entity) on the other.
    let members = vec![
        with_role(up(1), "entity"),
        with_role(up(2), "entity"),
        with_role(up(3), "entity"),
        up(4),
        up(5),
    ];
    let s = KeepMajority {
        role: Some("entity".into()),
    };
    let (a, b) = both_sides(&s, members, &[1, 2]);
    assert_eq!(a, set(&[3, 4, 5]), "2 of 3 entity nodes: keep");
    assert_eq!(b, set(&[3, 4, 5]));
    // No member with the role at all: nobody survives.
    let s = KeepMajority {
        role: Some("none".into()),
    };
    assert_eq!(s.decide(&view(1, cluster(3), &[3])), Decision::DownAll);
}

#[test]
fn keep_majority_downs_all_when_a_racing_membership_change_could_flip_the_outcome() {
    // This side: 1, 2 Up and 3 Leaving; other side: 4, 5 Up and 6 Joining. Counted normally
    // 3 vs 2; but 3 may already be Exiting and 6 Up over there: 2 vs 3.
    let members = vec![
        up(1),
        up(2),
        with_status(up(3), MemberStatus::Leaving),
        up(4),
        up(5),
        with_status(up(6), MemberStatus::Joining),
    ];
    let s = KeepMajority::default();
    assert_eq!(
        s.decide(&view(1, members.clone(), &[4, 5, 6])),
        Decision::DownAll
    );
    // Without the joining member the conclusion holds (2 vs 2, lowest address here).
    let stable: Vec<Member> = members.into_iter().filter(|m| m.address != n(6)).collect();
    assert_eq!(
        s.decide(&view(1, stable, &[4, 5])),
        Decision::DownUnreachable
    );
}

#[test]
fn static_quorum_keeps_a_quorate_side_and_downs_all_when_oversized() {
    let s = StaticQuorum {
        quorum_size: 3,
        role: None,
    };
    let (a, b) = both_sides(&s, cluster(5), &[1, 2]);
    assert_eq!(a, set(&[1, 2]));
    assert_eq!(b, set(&[1, 2]));
    // 3 | 3 of a 6-node cluster: 6 > 2*3-1, both sides could be quorate: all down.
    let (a, b) = both_sides(&s, cluster(6), &[1, 2, 3]);
    assert_eq!(a, (1..=6).map(n).collect());
    assert_eq!(b, (1..=6).map(n).collect());
    // A three-way split of five: nobody has 3.
    let v = view(1, cluster(5), &[3, 4, 5]);
    assert_eq!(s.decide(&v), Decision::DownReachable);
}

#[test]
fn keep_oldest_keeps_the_side_of_the_oldest() {
    let s = KeepOldest {
        down_if_alone: false,
        role: None,
    };
    let (a, b) = both_sides(&s, cluster(5), &[1, 2]);
    assert_eq!(
        a,
        set(&[3, 4, 5]),
        "1 is the oldest: its side survives, though smaller"
    );
    assert_eq!(b, set(&[3, 4, 5]));
    // Age is the up-number, not the address.
    let members = vec![
        Member {
            up_number: Some(9),
            ..up(1)
        },
        Member {
            up_number: Some(9),
            ..up(2)
        },
        Member {
            up_number: Some(1),
            ..up(3)
        },
    ];
    let (a, b) = both_sides(&s, members, &[1, 2]);
    assert_eq!(a, set(&[1, 2]));
    assert_eq!(b, set(&[1, 2]));
}

#[test]
fn keep_oldest_with_the_oldest_alone() {
    let keep = KeepOldest {
        down_if_alone: false,
        role: None,
    };
    let (a, b) = both_sides(&keep, cluster(5), &[1]);
    assert_eq!(
        a,
        set(&[2, 3, 4, 5]),
        "without down_if_alone the oldest survives alone"
    );
    assert_eq!(b, set(&[2, 3, 4, 5]));

    let alone = KeepOldest {
        down_if_alone: true,
        role: None,
    };
    let (a, b) = both_sides(&alone, cluster(5), &[1]);
    assert_eq!(a, set(&[1]), "the oldest downs itself");
    assert_eq!(b, set(&[1]), "the others down the oldest and carry on");

    // Two members: the other one is no better, keep the oldest.
    let (a, b) = both_sides(&alone, cluster(2), &[1]);
    assert_eq!(a, set(&[2]));
    assert_eq!(b, set(&[2]));
}

#[test]
fn keep_oldest_by_role() {
    let members = vec![
        up(1),
        with_role(up(2), "singleton"),
        with_role(up(3), "singleton"),
        up(4),
    ];
    let s = KeepOldest {
        down_if_alone: false,
        role: Some("singleton".into()),
    };
    let (a, b) = both_sides(&s, members, &[1, 3]);
    assert_eq!(a, set(&[1, 3]), "2 is the oldest with the role");
    assert_eq!(b, set(&[1, 3]));
}

#[test]
fn down_all_downs_both_sides() {
    let (a, b) = both_sides(&DownAllNodes, cluster(5), &[1, 2]);
    assert_eq!(a, (1..=5).map(n).collect());
    assert_eq!(b, (1..=5).map(n).collect());
}

#[test]
fn lease_majority_gives_the_majority_a_head_start() {
    let s = LeaseMajority {
        role: None,
        acquire_lease_delay_for_minority: Duration::from_secs(2),
    };
    let now = Decision::AcquireLeaseAndDownUnreachable {
        acquire_delay: Duration::ZERO,
    };
    let later = Decision::AcquireLeaseAndDownUnreachable {
        acquire_delay: Duration::from_secs(2),
    };
    assert_eq!(s.decide(&view(3, cluster(5), &[1, 2])), now);
    assert_eq!(s.decide(&view(1, cluster(5), &[3, 4, 5])), later);
    // Tie: the side with the lowest address goes first.
    assert_eq!(s.decide(&view(1, cluster(4), &[3, 4])), now);
    assert_eq!(s.decide(&view(3, cluster(4), &[1, 2])), later);
}

#[test]
fn the_deciding_node_never_counts_itself_unreachable() {
    // 2 reports 1 unreachable, but 1 decides: it is on its own side.
    let v = PartitionView::new(n(1), cluster(3), [(n(2), n(1)), (n(1), n(3))], [n(1)]);
    assert_eq!(v.unreachable(), &set(&[3]));
    assert_eq!(v.nodes_to_down(Decision::DownReachable), set(&[1, 2]));
}

#[test]
fn downable_excludes_down_and_exiting_members() {
    let members = vec![
        up(1),
        with_status(up(2), MemberStatus::Down),
        with_status(up(3), MemberStatus::Exiting),
        with_status(up(4), MemberStatus::Joining),
        with_status(up(5), MemberStatus::Leaving),
    ];
    let v = view(1, members, &[2, 3, 4, 5]);
    assert_eq!(v.downable(), set(&[1, 4, 5]));
    assert_eq!(v.nodes_to_down(Decision::DownAll), set(&[1, 4, 5]));
    assert_eq!(v.nodes_to_down(Decision::DownUnreachable), set(&[4, 5]));
    // Only a Down and an Exiting member unreachable: nothing to decide.
    let members = vec![
        up(1),
        with_status(up(2), MemberStatus::Down),
        with_status(up(3), MemberStatus::Exiting),
    ];
    assert!(!view(1, members, &[2, 3]).needs_decision());
}

#[test]
fn indirectly_connected_nodes_are_found_by_cycles_and_by_seen_gossip() {
    // The link 1-2 is down; 3 talks to both.
    let v = PartitionView::new(n(3), cluster(3), [(n(1), n(2)), (n(2), n(1))], [n(3)]);
    assert_eq!(v.indirectly_connected(), set(&[1, 2]));
    // Only one direction observed yet, but 2 has seen the current gossip: it is connected.
    let v = PartitionView::new(n(3), cluster(3), [(n(1), n(2))], [n(2), n(3)]);
    assert_eq!(v.indirectly_connected(), set(&[1, 2]));
    // A crashed node has not seen the current gossip: a clean case.
    let v = PartitionView::new(n(3), cluster(3), [(n(1), n(2))], [n(1), n(3)]);
    assert!(v.indirectly_connected().is_empty());
}

// ---- the resolver ----------------------------------------------------------------------

fn config(strategy: DowningStrategyConfig) -> SplitBrainResolverConfig {
    SplitBrainResolverConfig {
        strategy,
        stable_after: Duration::from_secs(4),
        down_all_when_unstable: Some(Duration::from_secs(3)),
    }
}

fn keep_majority() -> SplitBrainResolver {
    SplitBrainResolver::new(&config(DowningStrategyConfig::KeepMajority { role: None }))
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn resolver_decides_only_after_the_view_is_stable() {
    let mut r = keep_majority();
    let healthy = view(1, cluster(5), &[]);
    let split = view(1, cluster(5), &[4, 5]);
    assert_eq!(r.on_view(t(0), &healthy, true), vec![]);
    assert_eq!(r.on_view(t(1000), &split, true), vec![]);
    assert_eq!(r.on_view(t(4999), &split, true), vec![]);
    assert_eq!(
        r.on_view(t(5000), &split, true),
        vec![ResolverAction::Down(set(&[4, 5]))]
    );
}

#[test]
fn resolver_waits_until_its_side_has_seen_its_gossip() {
    let mut r = keep_majority();
    let obs = [(n(1), n(4)), (n(1), n(5))];
    // n3 has not acknowledged n1's current state: maybe it is on the other side already.
    let unsure = PartitionView::new(n(1), cluster(5), obs, [n(1), n(2)]);
    assert!(!unsure.reachable_side_has_seen());
    r.on_view(t(0), &unsure, true);
    assert_eq!(r.on_view(t(6000), &unsure, true), vec![]);
    let sure = PartitionView::new(n(1), cluster(5), obs, [n(1), n(2), n(3)]);
    assert_eq!(
        r.on_view(t(6100), &sure, true),
        vec![ResolverAction::Down(set(&[4, 5]))]
    );
}

#[test]
fn resolver_restarts_the_stable_period_on_every_change() {
    let mut r = keep_majority();
    assert_eq!(r.on_view(t(0), &view(1, cluster(5), &[5]), true), vec![]);
    assert_eq!(
        r.on_view(t(3000), &view(1, cluster(5), &[4, 5]), true),
        vec![]
    );
    assert_eq!(r.stable_since(), t(3000));
    assert_eq!(
        r.on_view(t(6999), &view(1, cluster(5), &[4, 5]), true),
        vec![]
    );
    assert_eq!(
        r.on_view(t(7000), &view(1, cluster(5), &[4, 5]), true),
        vec![ResolverAction::Down(set(&[4, 5]))]
    );
}

#[test]
fn only_the_responsible_node_decides() {
    let mut r = keep_majority();
    let split = view(2, cluster(5), &[4, 5]);
    r.on_view(t(0), &split, false);
    assert_eq!(r.on_view(t(5000), &split, false), vec![]);
    // Becoming leader after the view is already stable: decides at once.
    assert_eq!(
        r.on_view(t(5100), &split, true),
        vec![ResolverAction::Down(set(&[4, 5]))]
    );
}

#[test]
fn everybody_downs_all_if_no_leader_decided_in_time() {
    // The safety net: a stable view nobody acted on (say the leader is stuck) counts as
    // unresolved instability after stable_after + down_all_when_unstable.
    let mut r = keep_majority();
    let split = view(2, cluster(5), &[4, 5]);
    r.on_view(t(0), &split, false);
    assert_eq!(r.on_view(t(7000), &split, false), vec![]);
    assert_eq!(
        r.on_view(t(7001), &split, false),
        vec![ResolverAction::Down((1..=5).map(n).collect())]
    );
}

#[test]
fn healing_before_stable_after_downs_nobody() {
    let mut r = keep_majority();
    r.on_view(t(0), &view(1, cluster(3), &[3]), true);
    assert_eq!(r.on_view(t(2000), &view(1, cluster(3), &[]), true), vec![]);
    assert_eq!(r.on_view(t(9000), &view(1, cluster(3), &[]), true), vec![]);
}

#[test]
fn resolver_downs_all_when_unstable_too_long_even_when_not_leader() {
    let mut r = keep_majority();
    // Something unreachable all along, but the set keeps changing every 2 s.
    let views = [&[5][..], &[4, 5], &[5], &[3, 5]];
    for (i, u) in views.iter().enumerate() {
        let now = t(i as u64 * 2000);
        assert_eq!(
            r.on_view(now, &view(1, cluster(5), u), false),
            vec![],
            "at {now}"
        );
    }
    // First change at 0; stable_after (4 s) + down_all_when_unstable (3 s) = 7 s.
    assert_eq!(
        r.on_view(t(7000), &view(1, cluster(5), &[3, 5]), false),
        vec![]
    );
    assert_eq!(
        r.on_view(t(7001), &view(1, cluster(5), &[3, 5]), false),
        vec![ResolverAction::Down((1..=5).map(n).collect())]
    );
}

#[test]
fn indirectly_connected_nodes_are_downed_and_the_clean_rest_decided() {
    let mut r = keep_majority();
    // 1-2 link broken (both report each other); 3 and 4 fine; 5 crashed (seen by 3).
    let obs = [(n(1), n(2)), (n(2), n(1))];
    let v = PartitionView::new(n(3), cluster(5), obs, [n(3), n(4), n(5)]);
    r.on_view(t(0), &v, true);
    assert_eq!(
        r.on_view(t(4000), &v, true),
        vec![ResolverAction::Down(set(&[1, 2]))]
    );

    let mut r = keep_majority();
    let obs = [(n(1), n(2)), (n(2), n(1)), (n(3), n(5))];
    let v = PartitionView::new(n(3), cluster(5), obs, [n(3), n(4)]);
    r.on_view(t(0), &v, true);
    assert_eq!(
        r.on_view(t(4000), &v, true),
        vec![ResolverAction::Down(set(&[1, 2, 5]))]
    );
}

fn lease_resolver() -> SplitBrainResolver {
    SplitBrainResolver::new(&config(DowningStrategyConfig::LeaseMajority {
        role: None,
        acquire_lease_delay_for_minority: Duration::from_secs(2),
        release_after: Duration::from_secs(10),
    }))
}

#[test]
fn lease_majority_acquires_then_downs_the_other_side_and_releases_later() {
    let mut r = lease_resolver();
    let split = view(3, cluster(5), &[1, 2]);
    r.on_view(t(0), &split, true);
    assert_eq!(
        r.on_view(t(4000), &split, true),
        vec![ResolverAction::AcquireLease]
    );
    assert_eq!(
        r.on_view(t(4100), &split, true),
        vec![],
        "waits for the result"
    );
    assert_eq!(
        r.on_lease_result(t(4200), &split, true),
        vec![ResolverAction::Down(set(&[1, 2]))]
    );
    // Held until the downed members are removed, then for release_after.
    let downed: Vec<Member> = cluster(5)
        .into_iter()
        .map(|m| {
            if m.address <= n(2) {
                with_status(m, MemberStatus::Down)
            } else {
                m
            }
        })
        .collect();
    assert_eq!(r.on_view(t(4300), &view(3, downed, &[1, 2]), true), vec![]);
    let removed = view(3, (3..=5).map(up).collect(), &[]);
    assert_eq!(r.on_view(t(5000), &removed, true), vec![]);
    assert_eq!(r.on_view(t(14_999), &removed, true), vec![]);
    assert_eq!(
        r.on_view(t(15_000), &removed, true),
        vec![ResolverAction::ReleaseLease]
    );
    assert!(!r.is_lease_pending_or_held());
}

#[test]
fn lease_majority_minority_waits_and_downs_itself_when_refused() {
    let mut r = lease_resolver();
    let split = view(1, cluster(5), &[3, 4, 5]);
    r.on_view(t(0), &split, true);
    assert_eq!(r.on_view(t(4000), &split, true), vec![]);
    assert_eq!(r.on_view(t(5999), &split, true), vec![]);
    assert_eq!(
        r.on_view(t(6000), &split, true),
        vec![ResolverAction::AcquireLease]
    );
    assert_eq!(
        r.on_lease_result(t(6100), &split, false),
        vec![ResolverAction::Down(set(&[1, 2]))]
    );
    assert!(!r.is_lease_pending_or_held());
    // A stray result is ignored.
    assert_eq!(r.on_lease_result(t(6200), &split, true), vec![]);
}

#[test]
fn lease_majority_minority_keeps_running_if_it_gets_the_lease() {
    // The majority side crashed entirely: the minority gets the lease after its delay.
    let mut r = lease_resolver();
    let split = view(1, cluster(5), &[3, 4, 5]);
    r.on_view(t(0), &split, true);
    r.on_view(t(4000), &split, true);
    assert_eq!(
        r.on_view(t(6000), &split, true),
        vec![ResolverAction::AcquireLease]
    );
    assert_eq!(
        r.on_lease_result(t(6050), &split, true),
        vec![ResolverAction::Down(set(&[3, 4, 5]))]
    );
}

#[test]
fn built_strategies_match_their_config() {
    let v = view(1, cluster(5), &[3, 4, 5]);
    let d = |c: DowningStrategyConfig| c.build().decide(&v);
    assert_eq!(
        d(DowningStrategyConfig::KeepMajority { role: None }),
        Decision::DownReachable
    );
    assert_eq!(
        d(DowningStrategyConfig::StaticQuorum {
            quorum_size: 3,
            role: None
        }),
        Decision::DownReachable
    );
    assert_eq!(
        d(DowningStrategyConfig::KeepOldest {
            down_if_alone: true,
            role: None
        }),
        Decision::DownUnreachable
    );
    assert_eq!(d(DowningStrategyConfig::DownAll), Decision::DownAll);
    assert_eq!(
        d(DowningStrategyConfig::LeaseMajority {
            role: None,
            acquire_lease_delay_for_minority: Duration::from_secs(1),
            release_after: Duration::from_secs(1),
        }),
        Decision::AcquireLeaseAndDownUnreachable {
            acquire_delay: Duration::from_secs(1)
        }
    );
}
