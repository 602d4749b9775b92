//! Persisted commands/s into the SQLite store vs a bare multi-row INSERT loop, and recovery
//! speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_actor::{ActorSystem, ReplyTo};
use shoal_persistence::store::{
    AtomicWrite, EventRecord, Journal, PersistenceId, SnapshotRecord, Store,
};
use shoal_persistence::{
    Effect, Entities, EntityContext, EntitySettings, Event, EventSourced, Persistence,
};
use shoal_sqlite::SqliteStore;

use crate::measure::{Latencies, flush_rate};

const ASK: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Added {
    n: u64,
}

impl Event for Added {
    const MANIFEST: &'static str = "Added";
}

enum Cmd {
    Add(u64, ReplyTo<u64>),
    Get(ReplyTo<u64>),
}

struct Counter;

impl EventSourced for Counter {
    type Command = Cmd;
    type Event = Added;
    type State = u64;
    const TYPE_NAME: &'static str = "Counter";

    fn on_command(&self, _: &EntityContext, state: &u64, cmd: Cmd) -> Effect<Self> {
        match cmd {
            Cmd::Add(n, reply) => Effect::persist(Added { n }).then_reply(reply, |s: &u64| *s),
            Cmd::Get(reply) => Effect::reply(reply, *state),
        }
    }

    fn on_event(state: &mut u64, event: &Added) {
        *state += event.n;
    }
}

/// Rows/s of a bare loop: `BEGIN; INSERT … VALUES (…) × rows; COMMIT` on one connection,
/// into the store's own `events` table, WAL and `synchronous=FULL` like the store.
fn bare_insert_rate(path: &std::path::Path, rows: usize, seconds: u64) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let mut sql = String::from(
        "INSERT INTO events (persistence_id, seq_nr, manifest, schema_version, payload, tags, \
         writer_id, timestamp_ms) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        let b = i * 4;
        sql.push_str(&format!(
            "(?{}, ?{}, 'Added', 1, ?{}, NULL, 'bare', ?{})",
            b + 1,
            b + 2,
            b + 3,
            b + 4
        ));
    }
    let mut stmt = conn.prepare(&sql)?;
    let payload = br#"{"n":1}"#.to_vec();
    let pids: Vec<String> = (0..rows).map(|i| format!("Bare|{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut seq = 0i64;
    let mut total = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let mut params: Vec<rusqlite::types::Value> = Vec::with_capacity(rows * 4);
        for pid in &pids {
            params.push(pid.clone().into());
            params.push(seq.into());
            params.push(payload.clone().into());
            params.push(0i64.into());
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        stmt.execute(rusqlite::params_from_iter(params))?;
        conn.execute_batch("COMMIT")?;
        total += rows as u64;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub(crate) async fn entity_rate(
    store: Arc<dyn Store>,
    entities: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Latencies)> {
    let system = ActorSystem::new("bench");
    let persistence = Persistence::new(store);
    let counters = Arc::new(Entities::new(
        &system,
        &persistence,
        || Counter,
        EntitySettings::default(),
    ));
    // Start (recover) every entity before measuring.
    for i in 0..entities {
        counters
            .entity_ref(&format!("c{i}"))?
            .ask(Cmd::Get, ASK)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..entities)
        .map(|i| {
            let entity = counters.entity_ref(&format!("c{i}")).expect("valid id");
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    entity
                        .ask(|r| Cmd::Add(1, r), ASK)
                        .await
                        .expect("persisted");
                    lat.record(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await?);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    system.shutdown().await;
    Ok((rate, all))
}

pub(crate) async fn sqlite(entities: &[usize], seconds: u64) -> anyhow::Result<()> {
    println!("## Persisted commands/s into SQLite ({seconds} s per phase, synchronous=FULL)\n");
    println!(
        "| busy entities | flush probe /s | bare INSERT rows/s (rows/txn = entities) | Shoal commands/s | ratio | p50 ms | p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in entities {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.db");
        let store = SqliteStore::open(&path)?;
        let probe = flush_rate(dir.path())?;
        let (rate, mut lat) = entity_rate(Arc::new(store.clone()), n, seconds).await?;
        store.close().await?;
        let bare = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || bare_insert_rate(&path, n, seconds)).await??
        };
        println!(
            "| {n} | {probe:.0} | {bare:.0} | {rate:.0} | {:.0} % | {:.2} | {:.2} |",
            100.0 * rate / bare,
            lat.percentile_ms(50.0),
            lat.percentile_ms(99.0)
        );
    }
    println!();
    Ok(())
}

pub(crate) async fn recovery(events: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("recovery.db"))?;
    let pid = PersistenceId::of("Counter", "r")?;
    let mut seq = 0;
    while seq < events {
        let batch = (events - seq).min(1000);
        let records = (1..=batch)
            .map(|i| EventRecord {
                seq_nr: seq + i,
                manifest: "Added".into(),
                schema_version: 1,
                payload: br#"{"n":1}"#.to_vec(),
                tags: vec![],
                writer_id: "bench".into(),
                timestamp_ms: 0,
            })
            .collect();
        store
            .append(AtomicWrite {
                persistence_id: pid.clone(),
                expected_seq_nr: seq,
                events: records,
            })
            .await?;
        seq += batch;
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let probe = flush_rate(dir.path())?;

    let time_recovery = |store: Arc<dyn Store>| async move {
        let system = ActorSystem::new("recovery");
        let persistence = Persistence::new(store);
        let start = Instant::now();
        let entity = persistence.spawn(&system, "r", || Counter, EntitySettings::default())?;
        let total = entity.ask(Cmd::Get, ASK).await?;
        let took = start.elapsed();
        system.shutdown().await;
        anyhow::ensure!(total == events, "recovered {total}, expected {events}");
        anyhow::Ok(took)
    };
    let without = time_recovery(store.clone()).await?;
    store
        .save(SnapshotRecord {
            persistence_id: pid.clone(),
            seq_nr: events,
            manifest: "Counter".into(),
            schema_version: 1,
            payload: serde_json::to_vec(&events)?,
            timestamp_ms: 0,
        })
        .await?;
    let with = time_recovery(store.clone()).await?;

    println!("## Recovery of one entity with {events} events (SQLite, flush probe {probe:.0}/s)\n");
    println!("| case | time | events replayed/s |");
    println!("|---|---:|---:|");
    println!(
        "| no snapshot | {:.1} ms | {:.0} |",
        without.as_secs_f64() * 1000.0,
        events as f64 / without.as_secs_f64()
    );
    println!(
        "| snapshot at the last event | {:.2} ms | (0 events replayed) |",
        with.as_secs_f64() * 1000.0
    );
    println!();
    Ok(())
}
