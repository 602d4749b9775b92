//! A whole node (TCP remoting, membership, sharding) serves its shard distribution on its
//! management HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal::node::{Node, NodeConfig};
use shoal::persistence::memory::MemoryStore;
use shoal::prelude::*;
use shoal::sharding::{Entity, EntityContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

struct Sink;

impl Actor for Sink {
    type Msg = String;

    async fn handle(&mut self, _: &mut Context<Self>, _: String) -> Result<(), ActorError> {
        Ok(())
    }
}

/// `GET path` over a plain HTTP/1.1 connection: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_management_serves_its_shards() {
    let mut config = NodeConfig::new(Arc::new(MemoryStore::new()));
    config.cluster_addr = "127.0.0.1:0".parse().unwrap();
    config.management = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(config).await.unwrap();
    assert!(node.wait_until_up(WAIT).await);
    let region = node
        .sharding()
        .init(Entity::new("Sink", |_: EntityContext<String>| {
            Props::new(|| Sink)
        }))
        .unwrap();
    region
        .entity_ref("one")
        .unwrap()
        .tell("hello".into())
        .unwrap();
    let management = node.management_addr().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(management, "/cluster/shards/Sink").await;
        if status.contains("200") && body.contains("\"entities\":1") {
            assert!(body.contains("\"type\":\"Sink\""), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entity shown: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get(management, "/cluster/shards/Nope").await;
    assert!(status.contains("404"), "{status}");
    node.stop().await;
}
