//! The real binary on a real PostgreSQL server (started from the installed binaries by
//! `shoal-testkit`): carts survive SIGKILL and restart, and the journal holds exactly one event
//! per acknowledged change.

mod common;

use std::sync::Arc;

use common::{Binary, Http};
use serde_json::json;
use shoal::persistence::store::{PersistenceId, Store};
use shoal_testkit::TempPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_live_in_postgres_across_restarts() {
    let pg = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");

    let first = Binary::start_on(&pg.url(), &log);
    let first_cluster = first.cluster;
    let http = Http::new(first.addr);
    http.set_item("pg-1", "sku-a", 2).await;
    http.set_item("pg-1", "sku-b", 3).await;
    http.delete("/carts/pg-1/items/sku-a").await.ok_json();
    // Acknowledged means committed: SIGKILL right after the answers.
    first.kill();

    let second = Binary::restart_on(&pg.url(), first_cluster, &log);
    let http = Http::new(second.addr);
    assert_eq!(http.items("pg-1").await, json!({ "sku-b": 3 }));
    http.set_item("pg-1", "sku-c", 1).await;
    second.kill();

    // Exactly one event per successful change, gapless, as stored in PostgreSQL.
    let store: Arc<dyn Store> = shoal::store_url::open_store(&pg.url()).await.unwrap();
    let pid = PersistenceId::of("ShoppingCart", "pg-1").unwrap();
    let events = store.replay(pid, 1, u64::MAX, 100).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq_nr).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(events.iter().all(|e| e.tags == vec!["cart".to_owned()]));
}
