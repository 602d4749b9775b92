//! When the store fails or stalls: a 503 with a JSON error, never a hang past the ask
//! timeout, never a change acknowledged that was not stored. And a graceful shutdown lets an
//! in-flight request finish.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Http, config, journal};
use hyper::StatusCode;
use hyper::header::RETRY_AFTER;
use serde_json::json;
use shoal::persistence::memory::MemoryStore;
use shoal::persistence::store::Store;
use shoal::persistence::store::StoreError;
use shoal::persistence::testing::{Fault, FaultyStore, Op};
use shoal::store_url::StoreUrl;
use shopping_cart::{Config, Server, start_with_store};

async fn start_faulty(ask_timeout: Duration) -> (Server, Http, FaultyStore) {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let config = Config {
        ask_timeout,
        shutdown_timeout: Duration::from_secs(5),
        ..config(StoreUrl::Memory)
    };
    let server = start_with_store(config, Arc::new(store.clone()) as Arc<dyn Store>)
        .await
        .expect("server starts");
    let http = Http::new(common::http_addr(&server));
    (server, http, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_a_503_and_changes_nothing() {
    let (server, http, store) = start_faulty(Duration::from_secs(5)).await;
    http.set_item("c1", "kept", 1).await;
    // Both carts' shards get their home before the store fails: a shard's first allocation
    // is itself a write (the coordinator's), and a request waiting for it would time out and
    // be applied once the store is back — a 503 that says "may or may not have been applied",
    // not the refused write tested here.
    assert_eq!(http.get("/cart").await.ok_json()["items"], json!({}));

    store.set(
        Op::Append,
        Fault::Fail(StoreError::Unavailable("injected failure".into())),
    );
    let reply = http
        .post_json(
            "/carts/c1/items",
            &json!({ "itemId": "lost", "quantity": 2 }),
        )
        .await;
    let message = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("could not store"), "{message}");
    assert_eq!(
        reply.headers.get(RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let reply = http.delete("/carts/c1/items/kept").await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    let reply = http.post("/cart?id=lost&quantity=1").await;
    let message = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("could not store"), "{message}");

    // The store is back: the entity has restarted and recovered; nothing refused was applied.
    store.set(Op::Append, Fault::Pass);
    assert_eq!(http.items("c1").await, json!({ "kept": 1 }));
    assert_eq!(http.get("/cart").await.ok_json()["items"], json!({}));
    assert_eq!(journal(server.store(), "c1").await.len(), 1);
    assert_eq!(journal(server.store(), "default").await.len(), 0);
    // And it takes writes again.
    let cart = http.set_item("c1", "new", 3).await;
    assert_eq!(cart["items"], json!({ "kept": 1, "new": 3 }));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_is_a_503_within_the_ask_timeout() {
    let ask_timeout = Duration::from_millis(300);
    let (server, http, store) = start_faulty(ask_timeout).await;
    store.set(Op::Append, Fault::Hold);

    let started = Instant::now();
    let reply = http
        .post_json(
            "/carts/c1/items",
            &json!({ "itemId": "slow", "quantity": 4 }),
        )
        .await;
    let elapsed = started.elapsed();
    let message = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("did not answer"), "{message}");
    assert!(
        elapsed >= ask_timeout,
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < ask_timeout + Duration::from_secs(3),
        "took {elapsed:?}, far past the {ask_timeout:?} ask timeout"
    );
    store.wait_for(Op::Append, |s| s.waiting >= 1).await;

    // Reads queue behind the stalled write, and time out too.
    let reply = http.get("/carts/c1").await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);

    // The write was not withdrawn: once the store answers, it is applied (the 503 said it
    // "may or may not have been applied").
    store.set(Op::Append, Fault::Pass);
    store.release(Op::Append, 1);
    let mut items = json!(null);
    for _ in 0..50 {
        let reply = http.get("/carts/c1").await;
        if reply.status == StatusCode::OK {
            items = reply.json()["items"].clone();
            break;
        }
        reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(items, json!({ "slow": 4 }));
    assert_eq!(journal(server.store(), "c1").await.len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    // `Node::shutdown`'s future is not `Send` (it holds a `watch::Ref` across an await), so
    // the shutdown runs as a local task.
    tokio::task::LocalSet::new()
        .run_until(shutdown_with_a_request_in_flight())
        .await;
}

async fn shutdown_with_a_request_in_flight() {
    let (server, http, store) = start_faulty(Duration::from_secs(10)).await;
    let addr = common::http_addr(&server);
    http.set_item("c1", "before", 1).await;

    store.set(Op::Append, Fault::Hold);
    let in_flight = {
        let http = http.clone();
        tokio::spawn(async move { http.set_item("c1", "during", 2).await })
    };
    store.wait_for(Op::Append, |s| s.waiting >= 1).await;

    let shutdown = tokio::task::spawn_local(server.shutdown());
    // New connections are refused once the listener is closed (bounded poll).
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after shutdown began");
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the in-flight request"
    );

    // Later writes (the shard coordinator's, while the node leaves) are not held.
    store.set(Op::Append, Fault::Pass);
    store.release(Op::Append, 1);
    let cart = in_flight.await.expect("in-flight request task");
    assert_eq!(cart["items"], json!({ "before": 1, "during": 2 }));
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task")
        .expect("clean shutdown");
    assert_eq!(
        journal(&(Arc::new(store) as Arc<dyn Store>), "c1")
            .await
            .len(),
        2
    );
}
