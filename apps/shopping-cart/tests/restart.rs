//! The real binary on a SQLite file: carts survive SIGKILL and restart; SIGTERM shuts down
//! cleanly; a store it cannot use is refused at start.

mod common;

use std::process::Command;

use common::{Binary, Http};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the service creates it.
    let db = dir.path().join("data/nested/carts.db");
    let log = dir.path().join("service.log");

    let first = Binary::start(&db, &log);
    let (url, cluster) = (format!("sqlite:{}", db.display()), first.cluster);
    let http = Http::new(first.addr);
    http.set_item("c1", "sku-a", 2).await;
    http.set_item("c1", "sku-b", 3).await;
    http.set_item("c1", "sku-a", 5).await;
    http.delete("/carts/c1/items/sku-b").await.ok_json();
    http.post("/cart?id=apple&quantity=4").await.ok_json();
    // Acknowledged means stored: SIGKILL right after the answers, no shutdown hook runs.
    first.kill();

    let second = Binary::restart_on(&url, cluster, &log);
    let http = Http::new(second.addr);
    assert_eq!(http.items("c1").await, json!({ "sku-a": 5 }));
    assert_eq!(
        http.get("/cart").await.ok_json(),
        json!({ "cartId": "default", "items": { "apple": 4 } })
    );
    // The recovered carts take new writes (the fence continues after the stored events).
    http.set_item("c1", "sku-c", 1).await;
    http.delete("/cart?id=apple").await.ok_json();
    second.kill();

    let third = Binary::restart_on(&url, cluster, &log);
    let http = Http::new(third.addr);
    assert_eq!(http.items("c1").await, json!({ "sku-a": 5, "sku-c": 1 }));
    assert_eq!(http.get("/cart").await.ok_json()["items"], json!({}));
    third.kill();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("carts.db");
    let log = dir.path().join("service.log");

    let service = Binary::start(&db, &log);
    let http = Http::new(service.addr);
    http.set_item("c1", "sku", 7).await;
    let addr = service.addr;
    let status = service.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        common::read(&log)
    );
    let logged = common::read(&log);
    assert!(logged.contains("shutdown requested"), "log:\n{logged}");
    assert!(logged.contains("stopped"), "log:\n{logged}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after exit"
    );

    let again = Binary::start(&db, &log);
    let http = Http::new(again.addr);
    assert_eq!(http.items("c1").await, json!({ "sku": 7 }));
    let log_text = again.log();
    assert!(log_text.contains("listening"), "log:\n{log_text}");
}

#[test]
fn a_store_it_cannot_use_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_shopping-cart"))
        .args(["--http", "127.0.0.1:0", "--store", "cassandra://db/shoal"])
        .env_remove("SHOAL_HTTP")
        .env_remove("SHOAL_STORE")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown store URL"), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "it never listened");

    // Through the environment: a PostgreSQL server that is not there (nothing listens on
    // port 1) fails the start with the reason, and the password stays out of the message.
    let output = Command::new(env!("CARGO_BIN_EXE_shopping-cart"))
        .env("SHOAL_HTTP", "127.0.0.1:0")
        .env("SHOAL_STORE", "postgresql://app:s3cret@127.0.0.1:1/shoal")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the PostgreSQL store"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "stderr: {stderr}");
}

#[test]
fn an_unusable_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shopping-cart"))
        .args(["--http", "not-an-address", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("x.db").display()))
        .env_remove("SHOAL_HTTP")
        .env_remove("SHOAL_STORE")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen on not-an-address"),
        "stderr: {stderr}"
    );
}
