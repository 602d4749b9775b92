//! The event-sourced entity runtime on the in-memory store: replies after commit, atomic
//! multi-event persists, recovery from snapshots and events, snapshot retention, tags,
//! upcasting, persist failures, fencing conflicts, and the recovery limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_actor::{ActorSystem, AskError, Backoff, ReplyTo, StopReason};
use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, Journal, Offset, PersistenceId, QueryMode,
    SnapshotSelection, SnapshotStore, Store, StoreError,
};
use shoal_persistence::testing::{Fault, FaultyStore, Op};
use shoal_persistence::{
    Effect, Entities, EntityContext, EntitySettings, Event, EventSourced, Persistence,
    PersistenceError, PersistenceSettings, Upcasters,
};
use tokio::sync::Notify;

const T: Duration = Duration::from_secs(5);

// ---- a counter entity ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { n: u64 },
    Reset,
}

impl Event for CounterEvent {
    const MANIFEST: &'static str = "CounterEvent";
    const VERSION: u32 = 2;
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct CounterState {
    total: u64,
    events: u64,
}

enum Cmd {
    Add(u64, ReplyTo<u64>),
    AddMany(Vec<u64>, ReplyTo<u64>),
    Get(ReplyTo<CounterState>),
    Ignored(#[allow(dead_code)] ReplyTo<()>),
    Stop,
    AddThenRun(u64, Arc<AtomicBool>, ReplyTo<u64>),
}

#[derive(Default)]
struct Counter {
    recovered: Option<Arc<Notify>>,
}

impl EventSourced for Counter {
    type Command = Cmd;
    type Event = CounterEvent;
    type State = CounterState;
    const TYPE_NAME: &'static str = "Counter";

    fn on_command(&self, _ctx: &EntityContext, state: &CounterState, cmd: Cmd) -> Effect<Self> {
        match cmd {
            Cmd::Add(n, reply) => Effect::persist(CounterEvent::Added { n })
                .then_reply(reply, |s: &CounterState| s.total),
            Cmd::AddMany(ns, reply) => {
                Effect::persist_all(ns.into_iter().map(|n| CounterEvent::Added { n }).collect())
                    .then_reply(reply, |s: &CounterState| s.total)
            }
            Cmd::Get(reply) => Effect::reply(reply, state.clone()),
            Cmd::Ignored(_) => Effect::unhandled(),
            Cmd::Stop => Effect::stop(),
            Cmd::AddThenRun(n, ran, reply) => Effect::persist(CounterEvent::Added { n })
                .then_run(move |_| ran.store(true, Ordering::SeqCst))
                .then_reply(reply, |s: &CounterState| s.total),
        }
    }

    fn on_event(state: &mut CounterState, event: &CounterEvent) {
        match event {
            CounterEvent::Added { n } => state.total += n,
            CounterEvent::Reset => state.total = 0,
        }
        state.events += 1;
    }

    fn tags(&self, event: &CounterEvent) -> Vec<String> {
        match event {
            CounterEvent::Added { n } if n % 2 == 0 => vec!["even".into(), "all".into()],
            _ => vec!["all".into()],
        }
    }

    async fn on_recovery_completed(&mut self, _ctx: &EntityContext, _state: &CounterState) {
        if let Some(n) = &self.recovered {
            n.notify_one();
        }
    }
}

fn setup(store: Arc<dyn Store>, settings: EntitySettings) -> (ActorSystem, Entities<Counter>) {
    let system = ActorSystem::with_seed("test", 7);
    let persistence = Persistence::new(store);
    let entities = Entities::new(&system, &persistence, Counter::default, settings);
    (system, entities)
}

async fn add(e: &Entities<Counter>, id: &str, n: u64) -> Result<u64, AskError> {
    e.entity_ref(id).unwrap().ask(|r| Cmd::Add(n, r), T).await
}

async fn get(e: &Entities<Counter>, id: &str) -> CounterState {
    e.entity_ref(id).unwrap().ask(Cmd::Get, T).await.unwrap()
}

fn pid(id: &str) -> PersistenceId {
    PersistenceId::of("Counter", id).unwrap()
}

#[tokio::test]
async fn replies_after_commit_and_state_survives_restart() {
    let store = Arc::new(MemoryStore::new());
    let (system, counters) = setup(store.clone(), EntitySettings::default());
    assert_eq!(add(&counters, "a", 2).await.unwrap(), 2);
    assert_eq!(add(&counters, "a", 3).await.unwrap(), 5);
    assert_eq!(add(&counters, "b", 10).await.unwrap(), 10);
    // The acknowledged events are in the journal, with manifest, version and tags.
    let events = store.replay(pid("a"), 1, u64::MAX, 100).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].manifest, "CounterEvent");
    assert_eq!(events[0].schema_version, 2);
    assert_eq!(events[0].tags, vec!["even".to_owned(), "all".to_owned()]);
    assert_eq!(events[1].tags, vec!["all".to_owned()]);
    assert_eq!(events[1].seq_nr, 2);
    system.shutdown().await;

    // A new system on the same store recovers the same state.
    let (system, counters) = setup(store, EntitySettings::default());
    assert_eq!(
        get(&counters, "a").await,
        CounterState {
            total: 5,
            events: 2
        }
    );
    assert_eq!(add(&counters, "a", 1).await.unwrap(), 6);
    assert_eq!(get(&counters, "b").await.total, 10);
    system.shutdown().await;
}

#[tokio::test]
async fn persist_all_is_atomic_and_sequenced() {
    let store = Arc::new(MemoryStore::new());
    let (system, counters) = setup(store.clone(), EntitySettings::default());
    let c = counters.entity_ref("m").unwrap();
    assert_eq!(
        c.ask(|r| Cmd::AddMany(vec![1, 2, 3], r), T).await.unwrap(),
        6
    );
    assert_eq!(c.ask(|r| Cmd::AddMany(vec![], r), T).await.unwrap(), 6);
    let seqs: Vec<u64> = store
        .replay(pid("m"), 1, u64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq_nr)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    system.shutdown().await;
}

#[tokio::test]
async fn unhandled_drops_reply_and_stop_stops() {
    let (system, counters) = setup(Arc::new(MemoryStore::new()), EntitySettings::default());
    let c = counters.entity_ref("u").unwrap();
    assert_eq!(c.ask(Cmd::Ignored, T).await, Err(AskError::NoReply));
    c.tell(Cmd::Stop).unwrap();
    assert_eq!(c.terminated().await, StopReason::Stopped);
    // The directory starts a fresh incarnation on next use.
    assert_eq!(add(&counters, "u", 4).await.unwrap(), 4);
    system.shutdown().await;
}

#[tokio::test]
async fn side_effects_run_after_commit() {
    let (system, counters) = setup(Arc::new(MemoryStore::new()), EntitySettings::default());
    let ran = Arc::new(AtomicBool::new(false));
    let c = counters.entity_ref("s").unwrap();
    let r = ran.clone();
    assert_eq!(
        c.ask(|reply| Cmd::AddThenRun(7, r, reply), T)
            .await
            .unwrap(),
        7
    );
    assert!(ran.load(Ordering::SeqCst));
    system.shutdown().await;
}

#[tokio::test]
async fn snapshots_every_n_keep_m_and_recover_from_latest() {
    let store = Arc::new(MemoryStore::new());
    let settings = EntitySettings {
        delete_events_on_snapshot: true,
        ..EntitySettings::default().with_snapshots(3, 2)
    };
    let (system, counters) = setup(store.clone(), settings.clone());
    for i in 1..=10 {
        assert_eq!(add(&counters, "snap", 1).await.unwrap(), i);
    }
    system.shutdown().await;
    // Snapshots at 3, 6, 9; keep 2 → 6 and 9 remain.
    let latest = store
        .load(pid("snap"), SnapshotSelection::ALL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.seq_nr, 9);
    assert_eq!(latest.manifest, "Counter");
    let older = store
        .load(pid("snap"), SnapshotSelection::up_to(8))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(older.seq_nr, 6);
    assert!(
        store
            .load(pid("snap"), SnapshotSelection::up_to(5))
            .await
            .unwrap()
            .is_none()
    );
    // Events covered by the oldest kept snapshot (6) are deleted; the fence is kept.
    let left: Vec<u64> = store
        .replay(pid("snap"), 1, u64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq_nr)
        .collect();
    assert_eq!(left, vec![7, 8, 9, 10]);
    assert_eq!(store.highest_seq_nr(pid("snap")).await.unwrap(), 10);

    // Recovery = snapshot 9 + event 10. Prove the snapshot is used: doctor it.
    let mut doctored = latest.clone();
    doctored.payload = serde_json::to_vec(&CounterState {
        total: 100,
        events: 9,
    })
    .unwrap();
    store.save(doctored).await.unwrap();
    let (system, counters) = setup(store.clone(), settings);
    assert_eq!(
        get(&counters, "snap").await,
        CounterState {
            total: 101,
            events: 10
        }
    );
    assert_eq!(add(&counters, "snap", 1).await.unwrap(), 102);
    system.shutdown().await;
}

#[tokio::test]
async fn tags_feed_queries() {
    let store = Arc::new(MemoryStore::new());
    let (system, counters) = setup(store.clone(), EntitySettings::default());
    for n in [1, 2, 3, 4] {
        add(&counters, "t", n).await.unwrap();
    }
    let even: Vec<_> = store
        .events_by_tag("even".into(), Offset::START, QueryMode::Current)
        .collect()
        .await;
    let seqs: Vec<u64> = even.into_iter().map(|e| e.unwrap().event.seq_nr).collect();
    assert_eq!(seqs, vec![2, 4]);
    system.shutdown().await;
}

#[tokio::test]
async fn old_event_versions_are_upcast_on_recovery() {
    let store = Arc::new(MemoryStore::new());
    // Version 1 of Added stored the amount as "amount".
    let v1 = |seq: u64, amount: u64| EventRecord {
        seq_nr: seq,
        manifest: "CounterEvent".into(),
        schema_version: 1,
        payload: format!(r#"{{"Added":{{"amount":{amount}}}}}"#).into_bytes(),
        tags: vec![],
        writer_id: "old".into(),
        timestamp_ms: 0,
    };
    store
        .append(AtomicWrite {
            persistence_id: pid("old"),
            expected_seq_nr: 0,
            events: vec![v1(1, 5), v1(2, 6)],
        })
        .await
        .unwrap();
    let upcasters = Upcasters::new().add("CounterEvent", 1, |mut v| {
        let added = v
            .get_mut("Added")
            .and_then(|a| a.as_object_mut())
            .ok_or("not Added")?;
        let amount = added.remove("amount").ok_or("no amount")?;
        added.insert("n".into(), amount);
        Ok(v)
    });
    let (system, counters) = setup(
        store.clone(),
        EntitySettings::default().with_upcasters(upcasters),
    );
    assert_eq!(get(&counters, "old").await.total, 11);
    assert_eq!(add(&counters, "old", 1).await.unwrap(), 12);
    let last = store.replay(pid("old"), 3, 3, 1).await.unwrap();
    assert_eq!(
        last[0].schema_version, 2,
        "new events are written at the current version"
    );
    system.shutdown().await;
}

#[tokio::test]
async fn unreadable_events_fail_recovery_and_never_answer() {
    let store = Arc::new(MemoryStore::new());
    let bad = EventRecord {
        seq_nr: 1,
        manifest: "CounterEvent".into(),
        schema_version: 1, // no upcaster registered for v1
        payload: b"{}".to_vec(),
        tags: vec![],
        writer_id: "old".into(),
        timestamp_ms: 0,
    };
    store
        .append(AtomicWrite {
            persistence_id: pid("bad"),
            expected_seq_nr: 0,
            events: vec![bad],
        })
        .await
        .unwrap();
    let settings = EntitySettings {
        backoff: Backoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
            random_factor: 0.0,
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
        ..EntitySettings::default()
    };
    let (system, counters) = setup(store.clone(), settings);
    let c = counters.entity_ref("bad").unwrap();
    let reason = tokio::time::timeout(T, c.terminated()).await.unwrap();
    assert!(matches!(reason, StopReason::Failed(ref why) if why.contains("recovery failed")));
    // Nothing stored was touched.
    assert_eq!(store.highest_seq_nr(pid("bad")).await.unwrap(), 1);
    system.shutdown().await;
}

// ---- a store whose writes can be made to fail ----

fn faulty() -> FaultyStore {
    FaultyStore::new(Arc::new(MemoryStore::new()))
}

#[tokio::test(start_paused = true)]
async fn persist_failure_fails_the_command_and_restarts_with_backoff() {
    let store = faulty();
    let (system, counters) = setup(Arc::new(store.clone()), EntitySettings::default());
    assert_eq!(add(&counters, "f", 1).await.unwrap(), 1);
    store.set(
        Op::Append,
        Fault::Fail(StoreError::Unavailable("injected".into())),
    );
    let err = add(&counters, "f", 5).await.unwrap_err();
    assert!(
        matches!(err, AskError::Failed(ref why) if why.contains("persist failed")),
        "{err:?}"
    );
    store.set(Op::Append, Fault::Pass);
    // The entity restarts after its backoff, recovers, and the failed command left no trace.
    assert_eq!(
        get(&counters, "f").await,
        CounterState {
            total: 1,
            events: 1
        }
    );
    assert_eq!(add(&counters, "f", 2).await.unwrap(), 3);
    let seqs: Vec<u64> = store
        .replay(pid("f"), 1, u64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq_nr)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    system.shutdown().await;
}

#[tokio::test]
async fn a_second_writer_gets_a_conflict_stops_and_never_acknowledges() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Two nodes' worth of directories on one journal: seed 000's mistake.
    let (system_a, node_a) = setup(store.clone(), EntitySettings::default());
    let (system_b, node_b) = setup(store.clone(), EntitySettings::default());
    assert_eq!(add(&node_a, "cart", 1).await.unwrap(), 1);
    assert_eq!(
        add(&node_b, "cart", 10).await.unwrap(),
        11,
        "b recovers a's event first"
    );
    // a's state is stale (seq 1); its next write is fenced.
    let a = node_a.entity_ref("cart").unwrap();
    let err = a.ask(|r| Cmd::Add(100, r), T).await.unwrap_err();
    assert!(
        matches!(err, AskError::Failed(ref why) if why.contains("conflict")),
        "{err:?}"
    );
    assert_eq!(a.terminated().await, StopReason::Stopped);
    // Exactly the acknowledged events are stored.
    let stored: Vec<u64> = store
        .replay(pid("cart"), 1, u64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq_nr)
        .collect();
    assert_eq!(stored, vec![1, 2]);
    // A fresh incarnation on a recovers both events.
    assert_eq!(get(&node_a, "cart").await.total, 11);
    system_a.shutdown().await;
    system_b.shutdown().await;
}

#[tokio::test]
async fn commands_wait_while_a_write_is_in_flight() {
    let store = Arc::new(MemoryStore::new());
    let (system, counters) = setup(store, EntitySettings::default());
    let c = counters.entity_ref("q").unwrap();
    // Fire many asks at once: each reply must see exactly its own prefix sum, so no command
    // was handled against a state missing an earlier command's event.
    let asks: Vec<_> = (1..=50u64).map(|_| c.ask(|r| Cmd::Add(1, r), T)).collect();
    let mut totals: Vec<u64> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, (1..=50).collect::<Vec<_>>());
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn recovery_is_limited_to_n_entities_at_once() {
    let store = faulty();
    store.set(Op::Load, Fault::Hold);
    let system = ActorSystem::with_seed("limit", 1);
    let persistence = Persistence::with_settings(
        Arc::new(store.clone()),
        PersistenceSettings {
            max_concurrent_recoveries: 2,
            writer_id: Some("w".into()),
        },
    );
    let counters = Entities::new(
        &system,
        &persistence,
        Counter::default,
        EntitySettings::default(),
    );
    let refs: Vec<_> = (0..20)
        .map(|i| counters.entity_ref(&format!("e{i}")).unwrap())
        .collect();
    // With time paused, this sleep returns only once every task is idle: all 20 entities have
    // started and are either recovering (held at the gate) or waiting for a permit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.stats(Op::Load).waiting, 2);
    assert_eq!(persistence.available_recoveries(), 0);
    store.release(Op::Load, 20);
    for r in &refs {
        assert_eq!(r.ask(Cmd::Get, T).await.unwrap().total, 0);
    }
    assert_eq!(store.stats(Op::Load).max_waiting, 2);
    assert_eq!(
        persistence.available_recoveries(),
        2,
        "every permit is returned"
    );
    system.shutdown().await;
}

#[tokio::test]
async fn recovery_completed_hook_runs() {
    let store = Arc::new(MemoryStore::new());
    let system = ActorSystem::with_seed("hook", 1);
    let persistence = Persistence::new(store);
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let c = persistence
        .spawn(
            &system,
            "h",
            move || Counter {
                recovered: Some(n.clone()),
            },
            EntitySettings::default(),
        )
        .unwrap();
    tokio::time::timeout(T, notify.notified())
        .await
        .expect("hook ran");
    assert_eq!(c.ask(Cmd::Get, T).await.unwrap().total, 0);
    system.shutdown().await;
}

#[test]
fn persistence_error_wraps_store_errors() {
    let e: PersistenceError = StoreError::Closed.into();
    assert_eq!(e.to_string(), "store closed");
}
