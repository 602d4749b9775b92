//! Randomized faults from a seed: partitions, crashes, restarts as new incarnations and
//! leaves, then a fault-free phase that must converge. Every input checks that no member
//! moves backwards in any node's view; a failing seed is printed and reproduces.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Sim, addr, config, n};
use shoal_cluster::{Input, UniqueAddress};

const NODES: u16 = 5;

fn run(seed: u64) {
    let trace = std::env::var("SHOAL_SIM_TRACE").is_ok();
    let mut rng = fastrand::Rng::with_seed(seed);
    let all_seeds: Vec<u16> = (1..=NODES).collect();
    let mut sim = Sim::new();
    let mut incarnation = [1u64; NODES as usize + 1];
    for i in 1..=NODES {
        sim.start(n(i), config(&all_seeds), seed * 100 + u64::from(i));
    }
    let current = |inc: &[u64], i: u16| UniqueAddress::new(addr(i), inc[i as usize]);

    // Faulty phase: 60 s, one random event every 1–6 s.
    let end = sim.now + Duration::from_secs(60);
    while sim.now < end {
        let wait = Duration::from_millis(rng.u64(1000..6000));
        sim.run_for(wait);
        let action = rng.u8(0..10);
        if trace {
            eprintln!("{:?}: action {action}", sim.now);
        }
        match action {
            0..=2 => {
                let mut side: Vec<UniqueAddress> = Vec::new();
                let mut other: Vec<UniqueAddress> = Vec::new();
                for i in 1..=NODES {
                    if rng.bool() {
                        side.push(current(&incarnation, i))
                    } else {
                        other.push(current(&incarnation, i))
                    }
                }
                if trace {
                    eprintln!("  partition {side:?} | {other:?}");
                }
                sim.partition(&side, &other);
            }
            3..=4 => sim.heal_all(),
            5..=6 => {
                let i = rng.u16(1..=NODES);
                let id = current(&incarnation, i);
                if sim.node(id).alive {
                    sim.kill(id);
                }
            }
            7..=8 => {
                let i = rng.u16(1..=NODES);
                let id = current(&incarnation, i);
                if !sim.node(id).alive {
                    // As in Akka, a first seed node that cannot reach the existing cluster
                    // forms a new one: restarts happen on a healed network, left alone for
                    // longer than the seed-node timeout.
                    sim.heal_all();
                    incarnation[i as usize] += 1;
                    sim.start(current(&incarnation, i), config(&all_seeds), rng.u64(..));
                    sim.run_for(Duration::from_secs(6));
                }
            }
            _ => {
                let i = rng.u16(1..=NODES);
                sim.input(current(&incarnation, i), Input::Leave(addr(i)));
            }
        }
    }

    // Fault-free phase: heal, restart whatever is not running (also nodes that finish leaving
    // or get downed meanwhile), and converge.
    sim.heal_all();
    let limit = Duration::from_secs(90);
    let start = sim.now;
    loop {
        for i in 1..=NODES {
            if !sim.node(current(&incarnation, i)).alive {
                incarnation[i as usize] += 1;
                sim.start(current(&incarnation, i), config(&all_seeds), rng.u64(..));
            }
        }
        let everyone: Vec<UniqueAddress> = (1..=NODES).map(|i| current(&incarnation, i)).collect();
        if sim.converged_on(&everyone) {
            break;
        }
        if sim.now - start > limit {
            let views: Vec<String> = everyone
                .iter()
                .map(|id| format!("{id}: {:?}", sim.node(*id).core.state()))
                .collect();
            if trace {
                for id in sim.nodes.keys() {
                    for (at, e) in &sim.node(*id).events {
                        eprintln!("{id} {at:?} {e:?}");
                    }
                    eprintln!("{id} shutdown {:?}", sim.node(*id).shutdown);
                }
            }
            panic!(
                "seed {seed}: no convergence after the fault-free phase:\n{}",
                views.join("\n")
            );
        }
        sim.step();
    }
    let everyone: Vec<UniqueAddress> = (1..=NODES).map(|i| current(&incarnation, i)).collect();
    // One cluster, and it is this one.
    let members: BTreeSet<UniqueAddress> = sim
        .members_of(everyone[0])
        .iter()
        .map(|m| m.address)
        .collect();
    assert_eq!(members, everyone.iter().copied().collect(), "seed {seed}");
}

#[test]
fn random_partitions_crashes_and_restarts_then_convergence() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // A quick sweep by default; SHOAL_SIM_FIRST_SEED / SHOAL_SIM_SEEDS for a long search.
    let first = env("SHOAL_SIM_FIRST_SEED", 0);
    for seed in first..first + env("SHOAL_SIM_SEEDS", 24) {
        let outcome = std::panic::catch_unwind(|| run(seed));
        if let Err(e) = outcome {
            eprintln!(
                "failing seed: {seed} (reproduce: SHOAL_SIM_FIRST_SEED={seed} SHOAL_SIM_SEEDS=1, \
                 SHOAL_SIM_TRACE=1 for a trace)"
            );
            std::panic::resume_unwind(e);
        }
    }
}
