use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_remote::UniqueAddress;

use super::*;
use crate::member::MemberStatus::*;
use crate::reachability::ReachabilityStatus::*;

fn n(port: u16) -> UniqueAddress {
    UniqueAddress::new(format!("127.0.0.1:{port}").parse().unwrap(), 1)
}

fn gossip_with(members: &[(u16, MemberStatus)]) -> Gossip {
    let mut g = Gossip::new();
    let mut up = 0;
    for &(port, status) in members {
        let up_number = if status == Joining {
            None
        } else {
            up += 1;
            Some(up)
        };
        g.members.insert(
            n(port),
            MemberRecord {
                status,
                roles: BTreeSet::new(),
                up_number,
            },
        );
    }
    g
}

#[test]
fn merge_takes_the_furthest_status_and_drops_stale_seen() {
    let mut a = gossip_with(&[(1, Up), (2, Joining)]);
    a.seen_only_by(n(1));
    let mut b = a.clone();
    b.move_to(n(2), Up, Some(2)).unwrap();
    b.seen_only_by(n(2));
    let m = a.merge(&b);
    assert_eq!(m.status_of(&n(2)), Some(Up));
    assert_eq!(m.member(&n(2)).unwrap().up_number, Some(2));
    // Only b held the merged content.
    assert_eq!(m.seen_by(), &BTreeSet::from([n(2)]));
    // Equal contents: seen-sets add up.
    let mut c = b.clone();
    c.mark_seen(n(1));
    assert_eq!(b.merge(&c).seen_by(), &BTreeSet::from([n(1), n(2)]));
}

#[test]
fn tombstones_win_and_prune_observations() {
    let mut a = gossip_with(&[(1, Up), (2, Up), (3, Up)]);
    a.observe(n(1), n(3), Some(Unreachable));
    a.observe(n(3), n(2), Some(Unreachable));
    let mut b = a.clone();
    b.move_to(n(3), Down, None).unwrap();
    b.move_to(n(3), Removed, None).unwrap();
    assert!(b.reachability().is_all_reachable());
    let m = a.merge(&b);
    assert_eq!(m.status_of(&n(3)), Some(Removed));
    assert!(m.reachability().is_all_reachable());
    assert_eq!(m.members().count(), 2);
    assert!(!m.is_live(&n(3)));
}

#[test]
fn leader_is_first_reachable_up_member() {
    let mut g = gossip_with(&[(1, Up), (2, Up), (3, Joining)]);
    assert_eq!(g.leader(&n(2)), Some(n(1)));
    g.observe(n(2), n(1), Some(Unreachable));
    assert_eq!(g.leader(&n(2)), Some(n(2)));
    // n1 counts itself reachable, so it still sees itself as leader.
    assert_eq!(g.leader(&n(1)), Some(n(1)));
    // Only joining members: the first of them leads (a fresh cluster).
    let g = gossip_with(&[(2, Joining), (1, Joining)]);
    assert_eq!(g.leader(&n(2)), Some(n(1)));
    // Down members never lead.
    let g = gossip_with(&[(1, Down), (2, Up)]);
    assert_eq!(g.leader(&n(2)), Some(n(2)));
    assert_eq!(Gossip::new().leader(&n(1)), None);
}

#[test]
fn observations_by_down_members_do_not_count() {
    let mut g = gossip_with(&[(1, Up), (2, Up), (3, Up)]);
    g.observe(n(3), n(1), Some(Unreachable));
    assert!(!g.is_reachable(&n(1)));
    assert_eq!(g.unreachable(), BTreeSet::from([n(1)]));
    g.move_to(n(3), Down, None).unwrap();
    assert!(g.is_reachable(&n(1)));
    assert!(g.unreachable().is_empty());
}

#[test]
fn convergence_needs_every_reachable_up_member_to_have_seen() {
    let mut g = gossip_with(&[(1, Up), (2, Up), (3, Joining)]);
    g.seen_only_by(n(1));
    assert!(!g.is_converged(&n(1)));
    g.mark_seen(n(2));
    // A joining member need not have seen.
    assert!(g.is_converged(&n(1)));
    // An unreachable Up member blocks convergence ...
    g.observe(n(1), n(2), Some(Unreachable));
    g.seen_only_by(n(1));
    assert!(!g.is_converged(&n(1)));
    // ... until it is Down.
    g.move_to(n(2), Down, None).unwrap();
    g.seen_only_by(n(1));
    assert!(g.is_converged(&n(1)));
}

#[test]
fn wire_form_round_trips_through_json() {
    let mut g = gossip_with(&[(1, Up), (2, Leaving), (3, Joining), (4, Removed)]);
    g.members
        .get_mut(&n(1))
        .unwrap()
        .roles
        .insert("entity".into());
    g.observe(n(1), n(3), Some(Unreachable));
    g.observe(n(2), n(3), Some(Terminated));
    g.seen_only_by(n(1));
    g.mark_seen(n(2));
    let json = serde_json::to_string(&g).unwrap();
    let back: Gossip = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
}

// ---- property tests: the merge is a join-semilattice -------------------------------------

const NODES: u16 = 4;

fn arb_status() -> impl Strategy<Value = MemberStatus> {
    prop_oneof![
        Just(Joining),
        Just(Up),
        Just(Leaving),
        Just(Exiting),
        Just(Down),
        Just(Removed)
    ]
}

fn arb_record() -> impl Strategy<Value = MemberRecord> {
    (
        arb_status(),
        proptest::collection::btree_set("[ab]", 0..2),
        proptest::option::of(1u64..4),
    )
        .prop_map(|(status, roles, up_number)| MemberRecord {
            status,
            roles,
            up_number,
        })
}

fn arb_row() -> impl Strategy<Value = ObserverRow> {
    (
        0u64..4,
        proptest::collection::btree_map(
            (1..=NODES).prop_map(n),
            prop_oneof![Just(Unreachable), Just(Terminated)],
            0..3,
        ),
    )
        .prop_map(|(version, subjects)| ObserverRow { version, subjects })
}

fn arb_gossip() -> impl Strategy<Value = Gossip> {
    (
        proptest::collection::btree_map((1..=NODES).prop_map(n), arb_record(), 0..=NODES as usize),
        proptest::collection::btree_map((1..=NODES).prop_map(n), arb_row(), 0..3),
        proptest::collection::btree_set((1..=NODES).prop_map(n), 0..=NODES as usize),
    )
        .prop_map(|(members, rows, seen)| {
            let mut g = Gossip {
                members,
                reachability: Reachability::from_rows(rows),
                seen,
            };
            g.normalize();
            g
        })
}

/// A local change a node can make, applied to a gossip (refused moves are no-ops).
#[derive(Debug, Clone)]
enum Change {
    Join(u16),
    Move(u16, MemberStatus),
    Observe(u16, u16, Option<ReachabilityStatus>),
    See(u16),
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (1..=NODES).prop_map(Change::Join),
        ((1..=NODES), arb_status()).prop_map(|(a, s)| Change::Move(a, s)),
        (
            (1..=NODES),
            (1..=NODES),
            proptest::option::of(Just(Unreachable))
        )
            .prop_map(|(a, b, s)| Change::Observe(a, b, s)),
        (1..=NODES).prop_map(Change::See),
    ]
}

fn apply(g: &mut Gossip, change: &Change) {
    match *change {
        Change::Join(a) => {
            g.add_joining(n(a), BTreeSet::new());
        }
        Change::Move(a, s) => {
            let _ = g.move_to(n(a), s, Some(u64::from(a)));
        }
        Change::Observe(a, b, s) => {
            g.observe(n(a), n(b), s);
        }
        Change::See(a) => g.mark_seen(n(a)),
    }
}

fn statuses(g: &Gossip) -> BTreeMap<UniqueAddress, MemberStatus> {
    g.members.iter().map(|(a, r)| (*a, r.status)).collect()
}

proptest! {
    // 512 cases by default; PROPTEST_CASES raises it for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn merge_is_commutative(a in arb_gossip(), b in arb_gossip()) {
        prop_assert_eq!(a.merge(&b), b.merge(&a));
    }

    #[test]
    fn merge_is_associative(a in arb_gossip(), b in arb_gossip(), c in arb_gossip()) {
        prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
    }

    #[test]
    fn merge_is_idempotent(a in arb_gossip(), b in arb_gossip()) {
        prop_assert_eq!(a.merge(&a), a.clone());
        let ab = a.merge(&b);
        prop_assert_eq!(ab.merge(&b), ab.clone());
    }

    #[test]
    fn merge_never_moves_a_member_backwards(a in arb_gossip(), b in arb_gossip()) {
        let m = a.merge(&b);
        for input in [&a, &b] {
            for (node, status) in statuses(input) {
                prop_assert!(m.status_of(&node).unwrap() >= status);
            }
        }
    }

    #[test]
    fn replicas_receiving_the_same_updates_converge(
        base in arb_gossip(),
        changes in proptest::collection::vec((0usize..3, arb_change()), 0..24),
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut v: Vec<usize> = (0..3).collect();
            for i in (1..v.len()).rev() { v.swap(i, (rng.next_u32() as usize) % (i + 1)); }
            v
        }),
    ) {
        // Three replicas apply their own changes, then exchange states in two different
        // orders (a chain and a star); both must end equal to the merge of all.
        let mut replicas = [base.clone(), base.clone(), base.clone()];
        for (who, change) in &changes {
            let before = statuses(&replicas[*who]);
            apply(&mut replicas[*who], change);
            for (node, status) in before {
                prop_assert!(replicas[*who].status_of(&node).unwrap() >= status);
            }
        }
        let all = replicas[0].merge(&replicas[1]).merge(&replicas[2]);
        let chain = replicas[order[0]].merge(&replicas[order[1]]).merge(&replicas[order[2]]);
        let star = replicas[order[2]].merge(&replicas[order[0]].merge(&replicas[order[1]]));
        prop_assert_eq!(&chain, &all);
        prop_assert_eq!(&star, &all);
    }

    #[test]
    fn wire_form_round_trips(g in arb_gossip()) {
        let json = serde_json::to_vec(&g).unwrap();
        let back: Gossip = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(back, g);
    }
}
