//! The global order never skips (rule 7), across writer connections and processes.
//!
//! [`concurrent_writers_in_processes_and_connections`] appends from several store instances
//! in this process (each with two writer connections) and from several child processes (this
//! test binary re-executed, running only [`ordering_child_writer`] with
//! `SHOAL_PG_ORDERING_CHILD` set), while live tag readers on other store instances — other
//! "nodes", woken by `NOTIFY` — collect. Every reader must see every tagged event exactly
//! once, in per-id sequence order, with strictly increasing offsets, and agree with a final
//! finite query. Without the variable, `ordering_child_writer` returns at once.
//!
//! [`a_paused_commit_holds_back_later_ones`] makes the race deterministic: a transaction that
//! follows the documented writer protocol takes the ordering lock and an ordering, and pauses
//! before committing. A store's append must then wait for the lock; once the paused
//! transaction commits, a reader gets its event first. With orderings from a plain sequence
//! (the design of akka-persistence-jdbc#96) the append would commit first with the higher
//! offset, and the reader would deliver it and then skip the paused event.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shoal_persistence::store::{
    AtomicWrite, EventEnvelope, EventQuery, EventRecord, EventStream, Journal, Offset,
    PersistenceId, QueryMode,
};
use shoal_postgres::{ORDERING_LOCK_CLASS, PostgresConfig, PostgresStore};
use shoal_testkit::TempPostgres;
use tokio_postgres::NoTls;

const CHILD_ENV: &str = "SHOAL_PG_ORDERING_CHILD";
const PROCESSES: usize = 3;
const LOCAL_WRITERS: usize = 2;
const TASKS_PER_WRITER: usize = 12;
const APPENDS_PER_TASK: usize = 20;
const TAG: &str = "all";
/// How long a reader may wait for the next event.
const READ_WAIT: Duration = Duration::from_secs(60);

fn pid(writer: &str, task: usize) -> PersistenceId {
    PersistenceId::of("ord", &format!("{writer}-t{task}")).expect("valid id")
}

/// Append `i` of a task has `1 + i % 3` events.
fn append_len(i: usize) -> u64 {
    1 + (i % 3) as u64
}

/// Every `(pid, seq_nr)` writer `name` writes.
fn plan(name: &str) -> Vec<(PersistenceId, u64)> {
    let mut all = Vec::new();
    for task in 0..TASKS_PER_WRITER {
        let p = pid(name, task);
        let total: u64 = (0..APPENDS_PER_TASK).map(append_len).sum();
        all.extend((1..=total).map(|s| (p.clone(), s)));
    }
    all
}

/// Runs the writer `name`: its tasks append their plan concurrently.
async fn write_plan(store: PostgresStore, name: String) {
    let mut tasks = Vec::new();
    for task in 0..TASKS_PER_WRITER {
        let store = store.clone();
        let p = pid(&name, task);
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            for i in 0..APPENDS_PER_TASK {
                let n = append_len(i);
                let events = (seq + 1..=seq + n)
                    .map(|s| EventRecord {
                        seq_nr: s,
                        manifest: "ord".into(),
                        schema_version: 1,
                        payload: format!("{{\"pid\":\"{p}\",\"seq\":{s}}}").into_bytes(),
                        tags: vec![TAG.into()],
                        writer_id: "ordering-test".into(),
                        timestamp_ms: 0,
                    })
                    .collect();
                let write = AtomicWrite {
                    persistence_id: p.clone(),
                    expected_seq_nr: seq,
                    events,
                };
                if let Err(e) = store.append(write).await {
                    panic!("append to {p} after {seq} failed: {e}");
                }
                seq += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task panicked");
    }
}

/// The writer process. Does nothing unless started by the parent test.
#[test]
fn ordering_child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (url, schema, name) = (
        parts.next().expect("url").to_owned(),
        parts.next().expect("schema").to_owned(),
        parts.next().expect("name").to_owned(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let store = PostgresStore::connect(PostgresConfig::new(url).with_schema(schema))
            .await
            .expect("child: connect");
        write_plan(store.clone(), name).await;
        store.close().await;
    });
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects `want` events from a live tag stream, checking rule 7 on every one.
async fn read_all(
    mut stream: EventStream,
    want: HashSet<(PersistenceId, u64)>,
    who: String,
) -> Vec<EventEnvelope> {
    let mut got = Vec::with_capacity(want.len());
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<PersistenceId, u64> = HashMap::new();
    while got.len() < want.len() {
        let what = format!("{who} after {} of {} events", got.len(), want.len());
        let e = match tokio::time::timeout(READ_WAIT, stream.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => panic!("{what}: stream error {e}"),
            Ok(None) => panic!("{what}: live stream ended"),
            Err(_) => panic!("{what}: nothing within {READ_WAIT:?} (skipped or stuck?)"),
        };
        let key = (e.persistence_id.clone(), e.event.seq_nr);
        assert!(want.contains(&key), "{what}: unexpected event {key:?}");
        assert!(seen.insert(key.clone()), "{what}: {key:?} delivered twice");
        let prev = last_seq.insert(key.0.clone(), key.1).unwrap_or(0);
        assert_eq!(
            prev + 1,
            key.1,
            "{what}: {} #{} after #{prev}: per-id order broken or an event skipped",
            key.0,
            key.1
        );
        if let Some(before) = got.last() {
            let before: &EventEnvelope = before;
            assert!(
                before.offset < e.offset,
                "{what}: offset {:?} after {:?}",
                e.offset,
                before.offset
            );
        }
        got.push(e);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_in_processes_and_connections() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // never recurse from inside a child
    }
    let pg = TempPostgres::start();
    let schema = "ordering";
    let config = || PostgresConfig::new(pg.url()).with_schema(schema);
    // Creates the schema before anyone else connects.
    let reader_stores: Vec<PostgresStore> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(PostgresStore::connect(config()).await.expect("connect"));
        }
        v
    };

    let names: Vec<String> = (0..LOCAL_WRITERS)
        .map(|i| format!("local{i}"))
        .chain((0..PROCESSES).map(|i| format!("proc{i}")))
        .collect();
    let want: HashSet<(PersistenceId, u64)> = names.iter().flat_map(|n| plan(n)).collect();

    let early: Vec<_> = reader_stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stream = s.events_by_tag(TAG.into(), Offset::START, QueryMode::Live);
            tokio::spawn(read_all(stream, want.clone(), format!("early reader {i}")))
        })
        .collect();

    let exe = std::env::current_exe().expect("test binary path");
    let children: Vec<KillOnDrop> = (0..PROCESSES)
        .map(|i| {
            KillOnDrop(
                Command::new(&exe)
                    .args([
                        "ordering_child_writer",
                        "--exact",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, format!("{} {schema} proc{i}", pg.url()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("start a child writer"),
            )
        })
        .collect();
    let mut local = Vec::new();
    for i in 0..LOCAL_WRITERS {
        let store = PostgresStore::connect(config().with_writer_connections(2))
            .await
            .expect("connect");
        local.push(tokio::spawn(write_plan(store, format!("local{i}"))));
    }
    // A reader that starts while everyone writes.
    let late_store = PostgresStore::connect(config()).await.expect("connect");
    let late_stream = late_store.events_by_tag(TAG.into(), Offset::START, QueryMode::Live);
    let late = tokio::spawn(read_all(late_stream, want.clone(), "late reader".into()));

    for w in local {
        w.await.expect("local writer failed (see above)");
    }
    for mut child in children {
        let status = tokio::task::spawn_blocking(move || {
            let status = child.0.wait();
            (status, child)
        })
        .await
        .expect("wait for child");
        let (status, _child) = status;
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "a child writer failed: {status:?}"
        );
    }

    let mut results = Vec::new();
    for r in early {
        results.push(r.await.expect("early reader failed (see above)"));
    }
    results.push(late.await.expect("late reader failed (see above)"));

    let current: Vec<EventEnvelope> = reader_stores[0]
        .events_by_tag(TAG.into(), Offset::START, QueryMode::Current)
        .map(|e| e.expect("current query"))
        .collect()
        .await;
    let key = |v: &[EventEnvelope]| {
        v.iter()
            .map(|e| (e.offset, e.persistence_id.clone(), e.event.seq_nr))
            .collect::<Vec<_>>()
    };
    assert_eq!(current.len(), want.len(), "finite query after the run");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            key(r),
            key(&current),
            "live reader {i} and the finite query disagree"
        );
    }
}

/// The second key of the ordering lock: the OID of the schema's journal table.
async fn journal_oid(client: &tokio_postgres::Client, schema: &str) -> i32 {
    client
        .query_one(
            &format!("SELECT '{schema}.journal'::regclass::oid::int4"),
            &[],
        )
        .await
        .expect("journal oid")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_commit_holds_back_later_ones() {
    let pg = TempPostgres::shared();
    let schema = format!("paused_{:016x}", fastrand::u64(..));
    let config = PostgresConfig::new(pg.url()).with_schema(schema.clone());
    let writer = PostgresStore::connect(config.clone().with_writer_connections(1))
        .await
        .expect("connect");
    let reader = PostgresStore::connect(config).await.expect("connect");
    let (raw, connection) = tokio_postgres::connect(&pg.url(), NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    // Activity views are a snapshot per transaction: watch from another session.
    let (monitor, connection) = tokio_postgres::connect(&pg.url(), NoTls)
        .await
        .expect("monitor connection");
    tokio::spawn(connection);
    let oid = journal_oid(&raw, &schema).await;

    let mut live = reader.events_by_tag("t".into(), Offset::START, QueryMode::Live);

    // Another writer, mid-commit: lock, ordering, event, fence row; not committed yet.
    raw.batch_execute(&format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock({ORDERING_LOCK_CLASS}, {oid});
         WITH o AS (UPDATE {schema}.journal_offset SET last_ordering = last_ordering + 1
                    WHERE id = 1 RETURNING last_ordering)
         INSERT INTO {schema}.journal (ordering, persistence_id, seq_nr, manifest,
             schema_version, payload_bytes, tags, writer_id, timestamp_ms)
         SELECT last_ordering, 'raw|paused', 1, 'm', 1, '\\x01', '{{t}}', 'raw', 0 FROM o;
         INSERT INTO {schema}.event_tags (tag, ordering)
         SELECT 't', ordering FROM {schema}.journal WHERE persistence_id = 'raw|paused';
         INSERT INTO {schema}.persistence_ids (persistence_id, highest_seq_nr, first_ordering)
         SELECT 'raw|paused', 1, ordering FROM {schema}.journal
         WHERE persistence_id = 'raw|paused';"
    ))
    .await
    .expect("paused transaction");

    let a = PersistenceId::new("store|a").unwrap();
    let append = tokio::spawn({
        let writer = writer.clone();
        let a = a.clone();
        async move {
            writer
                .append(AtomicWrite {
                    persistence_id: a,
                    expected_seq_nr: 0,
                    events: vec![EventRecord {
                        seq_nr: 1,
                        manifest: "m".into(),
                        schema_version: 1,
                        payload: b"later".to_vec(),
                        tags: vec!["t".into()],
                        writer_id: "store".into(),
                        timestamp_ms: 0,
                    }],
                })
                .await
        }
    });

    // The store's writer must now wait for the lock (bounded polling for that state).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            !append.is_finished(),
            "the append committed while an earlier ordering was uncommitted: {:?}",
            append.await
        );
        let waiting: i64 = monitor
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND NOT l.granted \
                   AND a.application_name = 'shoal-postgres'",
                &[],
            )
            .await
            .expect("pg_locks")
            .get(0);
        if waiting == 1 {
            break;
        }
        if Instant::now() >= deadline {
            let rows = monitor
                .query(
                    "SELECT a.application_name, a.state, a.wait_event_type, a.wait_event, \
                            left(a.query, 60) FROM pg_stat_activity a WHERE a.datname IS NOT NULL",
                    &[],
                )
                .await
                .expect("pg_stat_activity");
            let sessions: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {:?} {:?} {:?} {:?}",
                        r.get::<_, Option<String>>(0),
                        r.get::<_, Option<String>>(1),
                        r.get::<_, Option<String>>(2),
                        r.get::<_, Option<String>>(3),
                        r.get::<_, Option<String>>(4)
                    )
                })
                .collect();
            panic!(
                "the store's writer never waited for the ordering lock; sessions: {sessions:#?}"
            );
        }
        tokio::task::yield_now().await;
    }
    assert!(
        futures_util::FutureExt::now_or_never(live.next()).is_none(),
        "a reader saw an event while an earlier ordering was uncommitted"
    );

    raw.batch_execute("COMMIT")
        .await
        .expect("commit the paused transaction");
    append
        .await
        .expect("append task")
        .expect("append after the lock was released");

    let first = tokio::time::timeout(READ_WAIT, live.next())
        .await
        .expect("first event in time")
        .expect("live")
        .expect("no error");
    let second = tokio::time::timeout(READ_WAIT, live.next())
        .await
        .expect("second event in time")
        .expect("live")
        .expect("no error");
    assert_eq!(
        (
            first.persistence_id.as_str(),
            second.persistence_id.as_str()
        ),
        ("raw|paused", "store|a"),
        "the paused commit holds the lower offset and is delivered first"
    );
    assert!(first.offset < second.offset);
}
