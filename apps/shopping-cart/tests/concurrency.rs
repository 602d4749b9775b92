//! Many clients writing to one cart at once: every write lands, exactly once, in one order,
//! and the journal agrees with the cart.

mod common;

use std::collections::BTreeMap;

use common::{Http, config, count_tagged, journal};
use shoal::persistence::EventSourced;
use shoal::store_url::StoreUrl;
use shopping_cart::cart::{CART_TAG, CartEntity, CartEvent, CartState};

const TASKS: u32 = 32;
const ROUNDS: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_to_one_cart_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreUrl::Sqlite(dir.path().join("carts.db"));
    let server = shopping_cart::start(config(store)).await.expect("starts");
    let http = Http::new(common::http_addr(&server));

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for round in 1..=ROUNDS {
                // Its own item: the answer must show this task's own last write.
                let cart = http.set_item("hot", &format!("sku-{t}"), round).await;
                assert_eq!(cart["items"][format!("sku-{t}")], round, "{cart}");
                // A shared item, fought over by every task; every value is unique.
                let shared = t * 10 + round;
                let cart = http.set_item("hot", "shared", shared).await;
                answers.push(cart["items"]["shared"].as_u64().unwrap());
            }
            answers
        }));
    }
    for task in tasks {
        let answers = task.await.expect("task");
        assert_eq!(answers.len(), ROUNDS as usize);
    }

    let items: BTreeMap<String, u32> =
        serde_json::from_value(http.items("hot").await).expect("items");
    assert_eq!(items.len(), TASKS as usize + 1);
    for t in 0..TASKS {
        assert_eq!(items[&format!("sku-{t}")], ROUNDS, "sku-{t}");
    }

    // Every request changed the cart, so every request is exactly one event.
    let events = journal(server.store(), "hot").await;
    assert_eq!(events.len(), (TASKS * ROUNDS * 2) as usize);
    let seq_nrs: Vec<u64> = events.iter().map(|e| e.seq_nr).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seq_nrs, expected, "one gapless log");
    assert_eq!(count_tagged(server.store(), CART_TAG).await, events.len());

    // Replaying the journal gives exactly the cart the service answers.
    let mut replayed = CartState::default();
    for record in &events {
        let event: CartEvent = serde_json::from_slice(&record.payload).expect("event");
        CartEntity::on_event(&mut replayed, &event);
    }
    assert_eq!(replayed.items, items);
    // The shared item holds the value of the last write in the log.
    let last_shared = events
        .iter()
        .rev()
        .find_map(|r| match serde_json::from_slice(&r.payload).unwrap() {
            CartEvent::ItemAdded { item_id, quantity } if item_id == "shared" => Some(quantity),
            _ => None,
        })
        .expect("a shared write");
    assert_eq!(items["shared"], last_shared);

    server.shutdown().await.unwrap();
}
