//! Seed 001's multi-JVM test, with real processes: three nodes of the real binary on
//! loopback sharing one PostgreSQL store — one endpoint-only node (HTTP and a shard region
//! proxy), and two entity nodes, the second of which also serves HTTP. The whole API is used
//! through the endpoint node; values set through one node are read through the other; when
//! an entity node leaves, or is killed, its entities move and keep their state.

mod common;

use std::net::SocketAddr;

use common::{Binary, all_up, args, states_when_available, wait_until_serving};
use hyper::StatusCode;
use serde_json::json;
use shoal_testkit::{TempPostgres, free_port};

fn node_args(
    cluster: SocketAddr,
    seeds: &[SocketAddr],
    roles: &[&str],
    store: &str,
) -> Vec<String> {
    let mut a = args(&[
        "--cluster",
        &cluster.to_string(),
        "--http",
        "127.0.0.1:0",
        "--management",
        "127.0.0.1:0",
        "--store",
        store,
    ]);
    for seed in seeds {
        a.push("--seed".into());
        a.push(seed.to_string());
    }
    for role in roles {
        a.push("--role".into());
        a.push((*role).to_owned());
    }
    a
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_entity_nodes_share_the_state() {
    let pg = TempPostgres::start();
    let store = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (c_entity1, c_entity2, c_endpoint) = (loopback(), loopback(), loopback());
    let seeds = [c_entity1, c_entity2];

    let entity1 = Binary::start(
        "entity-1",
        &node_args(c_entity1, &seeds, &["entity"], &store),
        &dir.path().join("entity-1.log"),
    );
    assert!(
        entity1.http.is_none(),
        "an entity-only node serves no HTTP API"
    );
    let entity2 = Binary::start(
        "entity-2",
        &node_args(c_entity2, &seeds, &["entity", "endpoint"], &store),
        &dir.path().join("entity-2.log"),
    );
    let endpoint = Binary::start(
        "endpoint",
        &node_args(c_endpoint, &seeds, &["endpoint"], &store),
        &dir.path().join("endpoint.log"),
    );
    for node in [&entity1, &entity2, &endpoint] {
        node.wait_members("three nodes up", all_up(3)).await;
    }
    let members = endpoint.members().await;
    let roles: Vec<_> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["address"].as_str().unwrap().to_owned(),
                m["roles"].clone(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(c_entity1.to_string(), json!(["entity"]))),
        "{members}"
    );
    assert!(
        roles.contains(&(c_endpoint.to_string(), json!(["endpoint"]))),
        "{members}"
    );

    let front = endpoint.client();
    let back = entity2.client();
    wait_until_serving(&front, "endpoint").await;
    wait_until_serving(&back, "entity-2").await;

    // The whole API through the endpoint-only node (which hosts no entity).
    let users = ["Michael", "Ann", "Bob", "Eve", "a:b"];
    for (i, user) in users.iter().enumerate() {
        let artifact = i as u64 + 1;
        assert!(!front.is("isArtifactReadByUser", artifact, user).await);
        assert!(!front.is("isArtifactInUserFeed", artifact, user).await);
        front.set("setArtifactReadByUser", artifact, user).await;
        front
            .set("setArtifactAddedToUserFeed", artifact, user)
            .await;
        assert!(front.is("isArtifactReadByUser", artifact, user).await);
        assert!(front.is("isArtifactInUserFeed", artifact, user).await);
        assert_eq!(front.states(artifact, user).await, (true, true));
        front
            .set("setArtifactRemovedFromUserFeed", artifact, user)
            .await;
        assert!(!front.is("isArtifactInUserFeed", artifact, user).await);
    }
    assert_eq!(front.states_by_get(1, "Michael").await, (true, false));
    front
        .call("getAllStates", 1, "")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    front
        .get("/artifactState/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND);

    // Set through one node, read through the other — both ways.
    for (i, user) in users.iter().enumerate() {
        let artifact = i as u64 + 1;
        assert_eq!(back.states(artifact, user).await, (true, false), "{user}");
        back.set("setArtifactAddedToUserFeed", artifact + 100, user)
            .await;
        assert_eq!(
            front.states(artifact + 100, user).await,
            (false, true),
            "{user}"
        );
    }

    // The second entity node leaves gracefully: its entities move to the first one and keep
    // their state (read back from the shared journal).
    let status = entity2.terminate();
    assert!(status.success(), "{status:?}");
    endpoint.wait_members("two nodes up", all_up(2)).await;
    for (i, user) in users.iter().enumerate() {
        let artifact = i as u64 + 1;
        assert_eq!(
            states_when_available(&front, artifact, user).await,
            (true, false),
            "{user}; endpoint log:\n{}",
            endpoint.log()
        );
        assert_eq!(
            states_when_available(&front, artifact + 100, user).await,
            (false, true),
            "{user}"
        );
    }
    front.set("setArtifactReadByUser", 1000, "after").await;
    assert_eq!(front.states(1000, "after").await, (true, false));

    // A new entity node joins; then the first one (hosting every entity and the
    // coordinator) is killed: the cluster downs it, and its entities restart on the new node
    // from the shared journal.
    let c_entity3 = loopback();
    let entity3 = Binary::start(
        "entity-3",
        &node_args(c_entity3, &seeds, &["entity"], &store),
        &dir.path().join("entity-3.log"),
    );
    for node in [&entity3, &endpoint] {
        node.wait_members("three nodes up again", all_up(3)).await;
    }
    entity1.kill();
    endpoint.wait_members("entity-1 removed", all_up(2)).await;
    for (i, user) in users.iter().enumerate() {
        let artifact = i as u64 + 1;
        assert_eq!(
            states_when_available(&front, artifact, user).await,
            (true, false),
            "{user}; endpoint log:\n{}\nentity-3 log:\n{}",
            endpoint.log(),
            entity3.log()
        );
        assert_eq!(
            states_when_available(&front, artifact + 100, user).await,
            (false, true),
            "{user}"
        );
    }
    assert_eq!(
        states_when_available(&front, 1000, "after").await,
        (true, false)
    );
    front.set("setArtifactAddedToUserFeed", 1000, "after").await;
    assert_eq!(front.states(1000, "after").await, (true, true));
    drop(endpoint);
    drop(entity3);
}
