//! Real processes on loopback: three `shoal-node` processes over TCP form a cluster; one is
//! killed with SIGKILL; the others down and remove it and carry on; it restarts on the same
//! address and rejoins as a new incarnation. Default cluster settings throughout.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{NodeProcess, free_port, up_members};

const SECRET: &str = "processes-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(60);

fn addresses(members: &Value) -> Vec<String> {
    members["members"]
        .as_array()
        .expect("members array")
        .iter()
        .map(|m| m["address"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_removed_and_rejoins_as_a_new_incarnation() {
    let bin = Path::new(env!("CARGO_BIN_EXE_shoal-node"));
    let seeds: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let a = NodeProcess::start(bin, seeds[0], &seeds, SECRET);
    let b = NodeProcess::start(bin, seeds[1], &seeds, SECRET);
    let mut c = NodeProcess::start(bin, seeds[2], &seeds, SECRET);

    for node in [&a, &b, &c] {
        node.wait_members(WAIT, |m| up_members(m).len() == 3).await;
    }
    let before = a.members().await;
    let c_addr = seeds[2].to_string();
    let old_incarnation = up_members(&before)
        .into_iter()
        .find(|(addr, _)| *addr == c_addr)
        .map(|(_, inc)| inc)
        .expect("c is a member");

    // SIGKILL: no leave, no goodbye. The survivors detect, down and remove it.
    c.kill();
    let (after, took) = a
        .wait_members(WAIT, |m| !addresses(m).contains(&c_addr))
        .await;
    eprintln!("SIGKILL to removal seen by a survivor: {took:?}");
    assert_eq!(
        up_members(&after).len(),
        2,
        "the survivors carry on: {after:#}"
    );
    b.wait_members(WAIT, |m| {
        !addresses(m).contains(&c_addr) && up_members(m).len() == 2
    })
    .await;

    // Restarted on the same address: a new member, with a new incarnation.
    let c2 = NodeProcess::start(bin, seeds[2], &seeds, SECRET);
    let (rejoined, _) = a
        .wait_members(WAIT, |m| {
            up_members(m)
                .iter()
                .any(|(addr, inc)| *addr == c_addr && *inc != old_incarnation)
                && up_members(m).len() == 3
        })
        .await;
    assert!(
        !up_members(&rejoined).contains(&(c_addr.clone(), old_incarnation)),
        "the old incarnation is gone: {rejoined:#}"
    );
    c2.wait_members(WAIT, |m| up_members(m).len() == 3).await;
}
