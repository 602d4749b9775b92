//! Seed 000's scenario, on a real cluster: two cart processes share one PostgreSQL journal
//! and form a cluster (the second seeds from the first); requests alternate between them.
//! In the seed (no sharding) each node kept its own copy of the cart and the journal
//! interleaved both; here the cart lives on one node, so both answer the same cart every
//! time, before and after both are stopped and started again, and the journal holds exactly
//! one event per change.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{Binary, Http};
use serde_json::{Value, json};
use shoal::persistence::EventSourced;
use shoal::persistence::store::{PersistenceId, Store};
use shoal_testkit::{TempPostgres, up_members};
use shopping_cart::cart::{CartEntity, CartEvent, CartState};

const SECRET: &str = "two-nodes-test-secret-0123456789";

/// The first node: forms the cluster.
fn first(store: &str, log: &Path) -> Binary {
    Binary::start_with(
        &[
            "--store",
            store,
            "--cluster",
            "127.0.0.1:0",
            "--management",
            "127.0.0.1:0",
            "--secret",
            SECRET,
        ],
        log,
    )
}

/// The second node: joins through the first.
fn second(store: &str, seed: SocketAddr, log: &Path) -> Binary {
    let seed = seed.to_string();
    Binary::start_with(
        &[
            "--store",
            store,
            "--cluster",
            "127.0.0.1:0",
            "--seed",
            &seed,
            "--management",
            "127.0.0.1:0",
            "--secret",
            SECRET,
        ],
        log,
    )
}

/// Waits (bounded) until both nodes' management HTTP lists both nodes, and only them, `Up`.
async fn wait_until_clustered(a: &Binary, b: &Binary) {
    let want = {
        let mut both = vec![a.cluster.to_string(), b.cluster.to_string()];
        both.sort();
        both
    };
    for node in [a, b] {
        node.wait_members("both nodes Up, no other", |members| {
            let mut up: Vec<String> = up_members(members).into_iter().map(|m| m.0).collect();
            up.sort();
            up == want
        })
        .await;
    }
}

/// One request of the scenario, sent to one node.
enum Step {
    /// The seed's `POST /cart?id=…&quantity=…` (sets the quantity).
    SeedSet(&'static str, u32),
    /// The seed's `DELETE /cart?id=…`.
    SeedRemove(&'static str),
    /// `POST /carts/{cart}/items`.
    Set(&'static str, &'static str, u32),
    /// `DELETE /carts/{cart}/items/{item}`.
    Remove(&'static str, &'static str),
}

/// The carts as they must be: cart id → items.
type Model = BTreeMap<String, BTreeMap<String, u32>>;

/// Sends `step` to `http`, checks the answered cart against the model (updated first), and
/// returns whether the request changed the cart (a change is exactly one event).
async fn apply(http: &Http, model: &mut Model, step: &Step) -> bool {
    let (cart, reply) = match step {
        Step::SeedSet(item, quantity) => (
            "default",
            http.post(&format!("/cart?id={item}&quantity={quantity}"))
                .await
                .ok_json(),
        ),
        Step::SeedRemove(item) => (
            "default",
            http.delete(&format!("/cart?id={item}")).await.ok_json(),
        ),
        Step::Set(cart, item, quantity) => {
            let reply = http
                .post_json(
                    &format!("/carts/{cart}/items"),
                    &json!({ "itemId": item, "quantity": quantity }),
                )
                .await
                .ok_json();
            (*cart, reply)
        }
        Step::Remove(cart, item) => (
            *cart,
            http.delete(&format!("/carts/{cart}/items/{item}"))
                .await
                .ok_json(),
        ),
    };
    let items = model.entry(cart.to_owned()).or_default();
    let changed = match step {
        Step::SeedSet(item, quantity) | Step::Set(_, item, quantity) => {
            items.insert((*item).to_owned(), *quantity) != Some(*quantity)
        }
        Step::SeedRemove(item) | Step::Remove(_, item) => items.remove(*item).is_some(),
    };
    assert_eq!(
        reply,
        json!({ "cartId": cart, "items": items }),
        "the answer to a write"
    );
    changed
}

/// Both nodes answer every cart of the model, identically.
async fn both_answer(a: &Http, b: &Http, model: &Model) {
    for (cart, items) in model {
        let expected = json!({ "cartId": cart, "items": items });
        let path = if cart == "default" {
            "/cart".to_owned()
        } else {
            format!("/carts/{cart}")
        };
        let from_a: Value = a.get(&path).await.ok_json();
        let from_b: Value = b.get(&path).await.ok_json();
        assert_eq!(from_a, expected, "node A's {cart}");
        assert_eq!(from_b, expected, "node B's {cart}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_journal_answer_the_same_cart() {
    let pg = TempPostgres::start();
    let store = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));

    let a = first(&store, &log_a);
    let b = second(&store, a.cluster, &log_b);
    wait_until_clustered(&a, &b).await;
    let (http_a, http_b) = (Http::new(a.addr), Http::new(b.addr));

    // Seed 000's session: add items, change quantities, remove, alternating nodes; plus a
    // second cart through the JSON routes, and requests that change nothing.
    let steps = [
        Step::SeedSet("apple", 2),
        Step::SeedSet("pear", 1),
        Step::SeedSet("apple", 5),
        Step::Set("c-000", "sku-a", 1),
        Step::Set("c-000", "sku-b", 4),
        Step::SeedRemove("pear"),
        Step::Set("c-000", "sku-a", 3),
        Step::SeedSet("plum", 7),
        Step::Remove("c-000", "sku-b"),
        // Changes nothing, on either node: no event.
        Step::SeedSet("plum", 7),
        Step::SeedRemove("pear"),
        Step::SeedSet("apple", 1),
    ];
    let mut model = Model::new();
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let node = if i % 2 == 0 { &http_a } else { &http_b };
        if apply(node, &mut model, step).await {
            let cart = match step {
                Step::SeedSet(..) | Step::SeedRemove(_) => "default",
                Step::Set(cart, ..) | Step::Remove(cart, _) => cart,
            };
            *changes.entry(cart.to_owned()).or_default() += 1;
        }
        both_answer(&http_a, &http_b, &model).await;
    }

    // Stop both: one gracefully (it hands its carts to the other and leaves), one killed.
    let status = a.terminate();
    assert!(
        status.success(),
        "SIGTERM exit {status:?}; log:\n{}",
        common::read(&log_a)
    );
    both_answer(&http_b, &http_b, &model).await;
    b.kill();

    // Start both again (a new cluster on the same journal): both answer the same carts.
    let a = first(&store, &log_a);
    let b = second(&store, a.cluster, &log_b);
    wait_until_clustered(&a, &b).await;
    let (http_a, http_b) = (Http::new(a.addr), Http::new(b.addr));
    both_answer(&http_a, &http_b, &model).await;
    // And they take writes again, still on one log per cart.
    for (i, step) in [Step::SeedSet("fig", 2), Step::Set("c-000", "sku-c", 9)]
        .iter()
        .enumerate()
    {
        let node = if i % 2 == 0 { &http_b } else { &http_a };
        assert!(apply(node, &mut model, step).await);
        let cart = if i == 0 { "default" } else { "c-000" };
        *changes.entry(cart.to_owned()).or_default() += 1;
        both_answer(&http_a, &http_b, &model).await;
    }
    b.kill();
    a.kill();

    // The journal, as PostgreSQL holds it: exactly one event per change, one gapless log per
    // cart, and replaying it gives the carts both nodes answered.
    let journal: Arc<dyn Store> = shoal::store_url::open_store(&store).await.unwrap();
    for (cart, items) in &model {
        let pid = PersistenceId::of(shopping_cart::cart::ENTITY_TYPE, cart).unwrap();
        let events = journal.replay(pid, 1, u64::MAX, 1000).await.unwrap();
        let seq_nrs: Vec<u64> = events.iter().map(|e| e.seq_nr).collect();
        let expected: Vec<u64> = (1..=changes[cart] as u64).collect();
        assert_eq!(seq_nrs, expected, "cart {cart}: one event per change");
        let mut replayed = CartState::default();
        for record in &events {
            let event: CartEvent = serde_json::from_slice(&record.payload).expect("an event");
            CartEntity::on_event(&mut replayed, &event);
        }
        assert_eq!(&replayed.items, items, "cart {cart} replayed");
    }
    assert_eq!(model.len(), 2);
}
