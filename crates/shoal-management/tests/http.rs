//! The management routes over real HTTP, fed by a cluster state the test controls.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_cluster::{ClusterState, Member, MemberStatus, UniqueAddress};
use shoal_testkit::HttpClient;
use tokio::sync::watch;

fn node(port: u16, incarnation: u64) -> UniqueAddress {
    UniqueAddress::new(SocketAddr::from(([127, 0, 0, 1], port)), incarnation)
}

fn member(address: UniqueAddress, status: MemberStatus, roles: &[&str], up: Option<u64>) -> Member {
    Member {
        address,
        status,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        up_number: up,
    }
}

/// One request (bounded by the testkit client's deadline) and its JSON answer.
async fn call(addr: SocketAddr, method: Method, path: &str) -> (StatusCode, Value) {
    let reply = HttpClient::new(addr)
        .send(method, path, None, Vec::new())
        .await;
    (reply.status, reply.json())
}

#[tokio::test]
async fn members_ready_and_alive_follow_the_cluster_state() {
    let me = node(2551, 7);
    let other = node(2552, 9);
    let (tx, rx) = watch::channel(ClusterState {
        self_node: me,
        self_status: None,
        members: vec![],
        unreachable: BTreeSet::new(),
        leader: None,
        converged: false,
        terminated: false,
    });
    let addr = shoal_management::serve("127.0.0.1:0".parse().unwrap(), rx)
        .await
        .unwrap();

    // Not joined yet: alive, not ready.
    let (code, body) = call(addr, Method::GET, "/ready").await;
    assert_eq!(
        (code, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "status": null})
        )
    );
    assert_eq!(call(addr, Method::GET, "/alive").await.0, StatusCode::OK);

    tx.send_modify(|s| {
        s.self_status = Some(MemberStatus::Up);
        s.members = vec![
            member(me, MemberStatus::Up, &["entity"], Some(1)),
            member(other, MemberStatus::Joining, &["endpoint", "entity"], None),
        ];
        s.unreachable.insert(other);
        s.leader = Some(me);
        s.converged = true;
    });
    let (code, body) = call(addr, Method::GET, "/cluster/members").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "selfNode": me.to_string(),
            "selfStatus": "Up",
            "leader": me.to_string(),
            "converged": true,
            "members": [
                {"address": "127.0.0.1:2551", "incarnation": 7, "status": "Up",
                 "roles": ["entity"], "reachable": true, "upNumber": 1, "leader": true},
                {"address": "127.0.0.1:2552", "incarnation": 9, "status": "Joining",
                 "roles": ["endpoint", "entity"], "reachable": false, "upNumber": null,
                 "leader": false},
            ]
        })
    );
    let (code, body) = call(addr, Method::GET, "/ready").await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!({"ready": true, "status": "Up"}))
    );

    // Downed and shut down: neither ready nor alive.
    tx.send_modify(|s| {
        s.self_status = Some(MemberStatus::Down);
        s.terminated = true;
    });
    assert_eq!(
        call(addr, Method::GET, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (code, body) = call(addr, Method::GET, "/alive").await;
    assert_eq!(
        (code, body),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"alive": false}))
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (_tx, rx) = watch::channel(ClusterState {
        self_node: node(2551, 1),
        self_status: None,
        members: vec![],
        unreachable: BTreeSet::new(),
        leader: None,
        converged: false,
        terminated: false,
    });
    let addr = shoal_management::serve("127.0.0.1:0".parse().unwrap(), rx)
        .await
        .unwrap();
    let (code, body) = call(addr, Method::GET, "/cluster/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let (code, body) = call(addr, Method::POST, "/cluster/members").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].as_str().unwrap().contains("read-only"));
}
