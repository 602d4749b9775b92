//! The runner over the in-memory transport of `shoal-remote`: real tasks, real endpoints
//! (framing, handshake), fast timings. Every wait is on the `watch` state with a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_cluster::runner::decode_inbound;
use shoal_cluster::{
    Cluster, ClusterConfig, ClusterEvent, ClusterState, EndpointLink, MemberStatus, ShutdownReason,
};
use shoal_remote::{ClusterSecret, Endpoint, EndpointConfig, MemoryNetwork};

const WAIT: Duration = Duration::from_secs(20);

fn fast(seeds: &[SocketAddr]) -> ClusterConfig {
    ClusterConfig::scaled_for_tests(seeds)
}

struct Node {
    cluster: Cluster,
    endpoint: Endpoint,
}

async fn bind(
    net: &MemoryNetwork,
) -> (
    Endpoint,
    tokio::sync::mpsc::Receiver<shoal_remote::Incoming>,
) {
    let config = EndpointConfig::new("runner-test", ClusterSecret::new("0123456789abcdef"));
    Endpoint::bind_with_channel(
        net.transport(),
        "127.0.0.1:0".parse().unwrap(),
        config,
        4096,
    )
    .await
    .unwrap()
}

/// `size` nodes, all seeds, started together.
async fn start(net: &MemoryNetwork, size: usize) -> Vec<Node> {
    let mut bound = Vec::new();
    for _ in 0..size {
        bound.push(bind(net).await);
    }
    let seeds: Vec<SocketAddr> = bound.iter().map(|(e, _)| e.local().addr).collect();
    bound
        .into_iter()
        .enumerate()
        .map(|(i, (endpoint, inbox))| {
            let link = Arc::new(EndpointLink::new(endpoint.clone()));
            let cluster = Cluster::start(
                fast(&seeds),
                endpoint.local(),
                link,
                decode_inbound(inbox, 4096),
                None,
                i as u64,
            )
            .unwrap();
            Node { cluster, endpoint }
        })
        .collect()
}

async fn wait(node: &Node, what: &str, pred: impl FnMut(&ClusterState) -> bool) {
    let mut state = node.cluster.state();
    let reached = matches!(
        tokio::time::timeout(WAIT, state.wait_for(pred)).await,
        Ok(Ok(_))
    );
    if !reached {
        panic!(
            "{}: {what} not reached; state: {:?}",
            node.cluster.self_node(),
            *state.borrow()
        );
    }
}

fn all_up(n: usize) -> impl FnMut(&ClusterState) -> bool {
    move |s| {
        s.converged
            && s.unreachable.is_empty()
            && s.members.len() == n
            && s.members.iter().all(|m| m.status == MemberStatus::Up)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_over_the_in_memory_transport() {
    let net = MemoryNetwork::new();
    let nodes = start(&net, 3).await;
    for node in &nodes {
        wait(node, "3 members up", all_up(3)).await;
    }
    let leaders: Vec<_> = nodes
        .iter()
        .map(|n| n.cluster.state().borrow().leader)
        .collect();
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && l.is_some()),
        "{leaders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_downed_and_removed() {
    let net = MemoryNetwork::new();
    let mut nodes = start(&net, 3).await;
    for node in &nodes {
        wait(node, "3 members up", all_up(3)).await;
    }
    let mut events = nodes[0].cluster.subscribe();
    let crashed = nodes.pop().unwrap();
    let gone = crashed.cluster.self_node();
    crashed.cluster.stop();
    crashed.endpoint.shutdown().await;
    for node in &nodes {
        wait(node, "crashed node removed", all_up(2)).await;
    }
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let about_gone: Vec<(MemberStatus, Option<MemberStatus>)> = seen
        .iter()
        .filter_map(|e| match e {
            ClusterEvent::UnreachableMember(m) if m.address == gone => Some((m.status, None)),
            ClusterEvent::MemberDowned(m) if m.address == gone => Some((m.status, None)),
            ClusterEvent::MemberRemoved {
                member,
                previous_status,
            } if member.address == gone => Some((member.status, Some(*previous_status))),
            _ => None,
        })
        .collect();
    assert_eq!(
        about_gone,
        vec![
            (MemberStatus::Up, None),
            (MemberStatus::Down, None),
            (MemberStatus::Removed, Some(MemberStatus::Down)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minority_of_a_partition_stops_itself() {
    let net = MemoryNetwork::new();
    let nodes = start(&net, 3).await;
    for node in &nodes {
        wait(node, "3 members up", all_up(3)).await;
    }
    let lone = nodes[2].endpoint.local().addr;
    let others: Vec<SocketAddr> = nodes[..2].iter().map(|n| n.endpoint.local().addr).collect();
    net.partition(&[lone], &others);
    let mut stopped = nodes[2].cluster.stopped();
    tokio::time::timeout(WAIT, stopped.wait_for(|s| s.is_some()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*stopped.borrow(), Some(ShutdownReason::Downed));
    for node in &nodes[..2] {
        wait(node, "majority alone", all_up(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaves_gracefully() {
    let net = MemoryNetwork::new();
    let nodes = start(&net, 3).await;
    for node in &nodes {
        wait(node, "3 members up", all_up(3)).await;
    }
    let leaving = nodes[1].endpoint.local().addr;
    nodes[0].cluster.leave(leaving);
    let mut stopped = nodes[1].cluster.stopped();
    tokio::time::timeout(WAIT, stopped.wait_for(|s| s.is_some()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*stopped.borrow(), Some(ShutdownReason::Removed));
    for node in [&nodes[0], &nodes[2]] {
        wait(node, "the others alone", all_up(2)).await;
    }
}
