//! The PostgreSQL store against a server the bench starts for itself (`TempPostgres`, with
//! `fsync` and `synchronous_commit` on, like the store's sessions):
//!
//! * persisted events/s with N busy entities (the `Counter` of [`crate::persist`]) vs a bare
//!   multi-row `INSERT` loop into the same table shape from 16 connections, same durability;
//! * lag from commit to delivery on a live tag stream at a paced write rate, on the writing
//!   node (woken by its own writers) and on another node (woken by `NOTIFY`);
//! * events/s read by a tag query catching up from offset 0, vs one bare `SELECT` streaming
//!   the same rows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, Journal, Offset, PersistenceId, QueryMode, Store,
};
use shoal_postgres::{PostgresConfig, PostgresStore};
use shoal_testkit::TempPostgres;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::measure::{Latencies, flush_rate};
use crate::persist::entity_rate;

/// Connections of the bare INSERT loop.
const BARE_CONNECTIONS: usize = 16;

pub(crate) async fn run(
    entities: usize,
    seconds: u64,
    lag_rate: u64,
    catchup_events: u64,
) -> anyhow::Result<()> {
    let pg = tokio::task::spawn_blocking(|| {
        TempPostgres::builder()
            .setting("shared_buffers", "'1GB'")
            .setting("max_wal_size", "'8GB'")
            .setting("checkpoint_timeout", "'30min'")
            .start()
    })
    .await?;
    let dir = pg
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .to_owned();
    let version = {
        let (client, conn) = tokio_postgres::connect(&pg.url(), NoTls).await?;
        tokio::spawn(conn);
        let v: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        v
    };
    let config = |schema: &str| PostgresConfig::new(pg.url()).with_schema(schema);

    // Throughput.
    let probe = flush_rate(&dir)?;
    let store = PostgresStore::connect(config("bench")).await?;
    let (rate, mut lat) =
        entity_rate(Arc::new(store.clone()) as Arc<dyn Store>, entities, seconds).await?;
    store.close().await;
    let probe_bare = flush_rate(&dir)?;
    PostgresStore::connect(config("bare")).await?.close().await;
    let rows = entities.div_ceil(BARE_CONNECTIONS).max(1);
    let (bare, mut bare_lat) = bare_insert_rate(&pg.url(), rows, seconds).await?;
    println!(
        "## PostgreSQL store: persisted events/s ({seconds} s per phase, PostgreSQL {version}, \
         fsync=on, synchronous_commit=on, loopback)\n"
    );
    println!("| case | flush probe /s | events/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|");
    println!(
        "| Shoal: {entities} busy entities (Counter, one event per command) | {probe:.0} | {rate:.0} | {:.2} | {:.2} |",
        lat.percentile_ms(50.0),
        lat.percentile_ms(99.0)
    );
    println!(
        "| bare: {BARE_CONNECTIONS} connections × INSERT of {rows} rows per transaction | {probe_bare:.0} | {bare:.0} | {:.2} | {:.2} |",
        bare_lat.percentile_ms(50.0),
        bare_lat.percentile_ms(99.0)
    );
    println!(
        "\nShoal / bare: {:.0} % (latencies: per command for Shoal, per transaction for bare)\n",
        100.0 * rate / bare
    );

    // Lag.
    let probe = flush_rate(&dir)?;
    let (achieved, mut local, mut remote, mut end_to_end) =
        lag(config("lag"), lag_rate, seconds).await?;
    println!(
        "## PostgreSQL store: live tag stream lag at {achieved:.0} events/s ({seconds} s, flush \
         probe {probe:.0}/s)\n"
    );
    println!("| reader | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|");
    for (name, l) in [
        (
            "same node (woken by its writers), ack → delivery",
            &mut local,
        ),
        ("other node (woken by NOTIFY), ack → delivery", &mut remote),
        ("other node, append call → delivery", &mut end_to_end),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            l.percentile_ms(50.0),
            l.percentile_ms(99.0),
            l.percentile_ms(100.0)
        );
    }
    println!();

    // Catch-up.
    let (load_rate, read_rate, bare_read_rate) =
        catch_up(config("catchup"), &pg.url(), catchup_events).await?;
    println!("## PostgreSQL store: tag query catching up over {catchup_events} events\n");
    println!("| case | events/s |\n|---|---:|");
    println!("| loading them (appends of 500 events from 16 tasks) | {load_rate:.0} |");
    println!("| events_by_tag, Current, from offset 0 (pages of 1000) | {read_rate:.0} |");
    println!("| bare: one SELECT of the same join, streamed | {bare_read_rate:.0} |");
    println!();
    drop(pg);
    Ok(())
}

/// Rows/s and per-transaction latency of `BEGIN; INSERT … VALUES (…) × rows; COMMIT` (one
/// round trip, pipelined like the store's) from [`BARE_CONNECTIONS`] connections, into the
/// store's own `journal` table shape (payload in `jsonb` and, as the store keeps compact JSON,
/// in `payload_bytes`).
async fn bare_insert_rate(
    url: &str,
    rows: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Latencies)> {
    let mut sql = String::from(
        "INSERT INTO bare.journal (ordering, persistence_id, seq_nr, manifest, schema_version, \
         payload, payload_bytes, tags, writer_id, timestamp_ms) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        let b = i * 5;
        sql.push_str(&format!(
            "(${}, ${}, ${}, 'Added', 1, ${}::text::jsonb, ${}, '{{}}', 'bare', 0)",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..BARE_CONNECTIONS {
        let url = url.to_owned();
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(conn);
            let insert = client.prepare(&sql).await?;
            let begin = client.prepare("BEGIN").await?;
            let commit = client.prepare("COMMIT").await?;
            let pids: Vec<String> = (0..rows).map(|i| format!("Bare|{c}-{i}")).collect();
            let payload = r#"{"n":1}"#.to_owned();
            let bytes = payload.as_bytes().to_vec();
            let mut lat = Latencies::default();
            let mut ordering = c as i64 * 1_000_000_000_000;
            let mut seq = 0i64;
            let mut total = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let mut orderings = Vec::with_capacity(rows);
                for _ in 0..rows {
                    ordering += 1;
                    orderings.push(ordering);
                }
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 5);
                for (i, pid) in pids.iter().enumerate() {
                    params.push(&orderings[i]);
                    params.push(pid);
                    params.push(&seq);
                    params.push(&payload);
                    params.push(&bytes);
                }
                let t = Instant::now();
                let (b, i, c) = tokio::join!(
                    client.execute(&begin, &[]),
                    client.execute(&insert, &params),
                    client.execute(&commit, &[]),
                );
                b?;
                i?;
                c?;
                lat.record(t.elapsed());
                total += rows as u64;
            }
            anyhow::Ok((total, lat))
        }));
    }
    let mut total = 0;
    let mut all = Latencies::default();
    for t in tasks {
        let (n, lat) = t.await??;
        total += n;
        all.merge(lat);
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), all))
}

fn record(seq_nr: u64, tag: &str) -> EventRecord {
    EventRecord {
        seq_nr,
        manifest: "Added".into(),
        schema_version: 1,
        payload: br#"{"n":1}"#.to_vec(),
        tags: vec![tag.to_owned()],
        writer_id: "bench".into(),
        timestamp_ms: 0,
    }
}

/// Delivery instants of a live tag stream, by (persistence id, seq_nr).
type Deliveries = Arc<Mutex<HashMap<(PersistenceId, u64), Instant>>>;

fn follow(store: &PostgresStore, tag: &str) -> (Deliveries, tokio::task::JoinHandle<()>) {
    let seen: Deliveries = Arc::default();
    let mut stream = store.events_by_tag(tag.to_owned(), Offset::START, QueryMode::Live);
    let out = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            let now = Instant::now();
            out.lock()
                .unwrap()
                .insert((e.persistence_id, e.event.seq_nr), now);
        }
    });
    (seen, task)
}

/// Paced single-event appends at `rate`/s for `seconds`; returns the achieved rate and the
/// lag of a reader on the writing store, of one on another store, and end to end.
async fn lag(
    config: PostgresConfig,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(f64, Latencies, Latencies, Latencies)> {
    const TASKS: u64 = 200;
    const TAG: &str = "lag";
    let writer = PostgresStore::connect(config.clone()).await?;
    let other = PostgresStore::connect(config).await?;
    let (local_seen, local_task) = follow(&writer, TAG);
    let (remote_seen, remote_task) = follow(&other, TAG);

    let period = Duration::from_secs_f64(TASKS as f64 / rate.max(1) as f64);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let writer = writer.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let pid = PersistenceId::of("Lag", &format!("w{t}")).expect("valid id");
            let mut times = Vec::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let called = Instant::now();
                writer
                    .append(AtomicWrite {
                        persistence_id: pid.clone(),
                        expected_seq_nr: seq,
                        events: vec![record(seq + 1, TAG)],
                    })
                    .await?;
                seq += 1;
                times.push(((pid.clone(), seq), called, Instant::now()));
            }
            anyhow::Ok(times)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await??);
    }
    let achieved = acks.len() as f64 / elapsed.as_secs_f64();
    // Let both readers deliver everything (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while (local_seen.lock().unwrap().len() < acks.len()
        || remote_seen.lock().unwrap().len() < acks.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    local_task.abort();
    remote_task.abort();
    let (mut local, mut remote, mut end_to_end) = (
        Latencies::default(),
        Latencies::default(),
        Latencies::default(),
    );
    {
        let local_seen = local_seen.lock().unwrap();
        let remote_seen = remote_seen.lock().unwrap();
        anyhow::ensure!(
            local_seen.len() == acks.len() && remote_seen.len() == acks.len(),
            "readers delivered {} and {} of {} events",
            local_seen.len(),
            remote_seen.len(),
            acks.len()
        );
        for (key, called, acked) in &acks {
            let l = local_seen[key];
            let r = remote_seen[key];
            local.record(l.saturating_duration_since(*acked));
            remote.record(r.saturating_duration_since(*acked));
            end_to_end.record(r.saturating_duration_since(*called));
        }
    }
    writer.close().await;
    other.close().await;
    Ok((achieved, local, remote, end_to_end))
}

/// Loads `events` tagged events, then reads them back with a catching-up tag query and with
/// one bare streamed SELECT. Returns (load rate, query rate, bare rate) in events/s.
async fn catch_up(
    config: PostgresConfig,
    url: &str,
    events: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    const TAG: &str = "catchup";
    const TASKS: u64 = 16;
    const BATCH: u64 = 500;
    let schema = config.schema.clone();
    let store = PostgresStore::connect(config).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let share = events / TASKS + u64::from(t < events % TASKS);
        tasks.push(tokio::spawn(async move {
            let pid = PersistenceId::of("CatchUp", &format!("p{t}")).expect("valid id");
            let mut seq = 0;
            while seq < share {
                let n = BATCH.min(share - seq);
                store
                    .append(AtomicWrite {
                        persistence_id: pid.clone(),
                        expected_seq_nr: seq,
                        events: (seq + 1..=seq + n).map(|s| record(s, TAG)).collect(),
                    })
                    .await?;
                seq += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_rate = events as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let read = store
        .events_by_tag(TAG.into(), Offset::START, QueryMode::Current)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await?;
    let read_rate = read as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        read == events,
        "the tag query read {read} of {events} events"
    );
    store.close().await;

    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    let sql = format!(
        "SELECT j.ordering, j.persistence_id, j.seq_nr, j.manifest, j.schema_version, \
         COALESCE(j.payload_bytes, convert_to(j.payload::text, 'UTF8')), j.tags, j.writer_id, \
         j.timestamp_ms FROM {schema}.event_tags t JOIN {schema}.journal j \
         ON j.ordering = t.ordering WHERE t.tag = $1 AND t.ordering > 0 ORDER BY t.ordering"
    );
    let start = Instant::now();
    let rows = client.query_raw(&sql, [TAG]).await?;
    let bare = rows
        .try_fold(0u64, |n, row| async move {
            // Decode every column, as the store does.
            let _: (i64, &str, i64, &str, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let _: (&[u8], Vec<&str>, &str, i64) = (row.get(5), row.get(6), row.get(7), row.get(8));
            Ok(n + 1)
        })
        .await?;
    let bare_rate = bare as f64 / start.elapsed().as_secs_f64();
    Ok((load_rate, read_rate, bare_rate))
}
