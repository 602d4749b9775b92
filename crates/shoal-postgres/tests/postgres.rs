//! Behaviour of the PostgreSQL store beyond the conformance suite: payload storage, the schema
//! for DBAs and its version, failures (uncertain commits, timeouts, bad appends inside a
//! batch, payloads the server refuses, a database that is down), wake-ups of other nodes by
//! `NOTIFY` and by polling, and closing.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, EventStream, Journal, Offset, PersistenceId, QueryMode,
    StoreError,
};
use shoal_postgres::{
    ORDERING_LOCK_CLASS, PayloadStorage, PostgresConfig, PostgresError, PostgresStore, SCHEMA_SQL,
    SCHEMA_VERSION,
};
use shoal_testkit::TempPostgres;
use tokio_postgres::{Client, NoTls};

/// How long a live stream may take to deliver, or a condition to become true.
const WAIT: Duration = Duration::from_secs(20);

fn pid(name: &str) -> PersistenceId {
    PersistenceId::new(name).expect("valid persistence id")
}

fn event(seq_nr: u64, payload: &[u8], tags: &[&str]) -> EventRecord {
    EventRecord {
        seq_nr,
        manifest: "test.Event".into(),
        schema_version: 1,
        payload: payload.to_vec(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        writer_id: "test".into(),
        timestamp_ms: 42,
    }
}

fn write(pid: &PersistenceId, expected: u64, events: Vec<EventRecord>) -> AtomicWrite {
    AtomicWrite {
        persistence_id: pid.clone(),
        expected_seq_nr: expected,
        events,
    }
}

/// A write of `n` events after `expected`, payload `"{pid} {seq}"`.
fn simple(pid: &PersistenceId, expected: u64, n: u64, tags: &[&str]) -> AtomicWrite {
    let events = (expected + 1..=expected + n)
        .map(|s| event(s, format!("{pid} {s}").as_bytes(), tags))
        .collect();
    write(pid, expected, events)
}

fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{:016x}", fastrand::u64(..))
}

async fn raw_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Polls `cond` until it returns true, failing after [`WAIT`].
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_within(
    stream: &mut EventStream,
    what: &str,
) -> shoal_persistence::store::EventEnvelope {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("{what}: stream error {e}"),
        Ok(None) => panic!("{what}: stream ended"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Takes the ordering lock of `schema` in an open transaction of `client`, as a writer of
/// another node in the middle of its commit would.
async fn hold_ordering_lock(client: &Client, schema: &str) {
    let oid: i32 = client
        .query_one(
            &format!("SELECT '{schema}.journal'::regclass::oid::int4"),
            &[],
        )
        .await
        .expect("journal oid")
        .get(0);
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({ORDERING_LOCK_CLASS}, {oid})"
        ))
        .await
        .expect("take the ordering lock");
}

/// Backend pids of store sessions waiting for an advisory lock (seen from `monitor`, which
/// must not be inside a transaction: activity views are a snapshot per transaction).
async fn writers_waiting_for_lock(monitor: &Client) -> Vec<i32> {
    monitor
        .query(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND NOT l.granted \
               AND a.application_name = 'shoal-postgres'",
            &[],
        )
        .await
        .expect("pg_locks")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn wait_for_writer_blocked(monitor: &Client) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(&pid) = writers_waiting_for_lock(monitor).await.first() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the store's writer to wait for the ordering lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_are_queryable_and_every_payload_is_exact() {
    let pg = TempPostgres::shared();
    let schema = fresh_schema("json");
    let store = PostgresStore::connect(PostgresConfig::new(pg.url()).with_schema(schema.clone()))
        .await
        .expect("connect");
    let p = pid("cart|1");
    let payloads: Vec<&[u8]> = vec![
        br#"{"item":"apple","qty":2}"#, // compact, as serde_json writes: jsonb + bytes
        br#"{"qty": 3, "item": "pear"}"#, // already jsonb's own spelling: jsonb alone
        b"\x00\x01binary\xff",          // not JSON: bytes alone
        br#"{"note":"\u0000"}"#,        // JSON that jsonb refuses: bytes alone
        b"  [1.50, 1e2, -0]  ",         // JSON that jsonb respells: jsonb + bytes
    ];
    let events: Vec<EventRecord> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| event(i as u64 + 1, p, &[]))
        .collect();
    store
        .append(write(&p, 0, events.clone()))
        .await
        .expect("append");
    assert_eq!(
        store
            .replay(p.clone(), 1, u64::MAX, usize::MAX)
            .await
            .expect("replay"),
        events,
        "every payload reads back byte for byte"
    );

    let raw = raw_client(&pg.url()).await;
    let rows = raw
        .query(
            &format!(
                "SELECT seq_nr, payload->>'item', payload IS NULL, payload_bytes IS NULL \
                 FROM {schema}.journal WHERE persistence_id = $1 ORDER BY seq_nr"
            ),
            &[&p.as_str()],
        )
        .await
        .expect("query payloads with SQL");
    let got: Vec<(i64, Option<String>, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some("apple".into()), false, false),
            (2, Some("pear".into()), false, true),
            (3, None, true, false),
            (4, None, true, false),
            (5, None, false, false),
        ]
    );
    let qty: i64 = raw
        .query_one(
            &format!("SELECT sum((payload->>'qty')::int8)::int8 FROM {schema}.journal"),
            &[],
        )
        .await
        .expect("aggregate over jsonb")
        .get(0);
    assert_eq!(qty, 5);

    // With PayloadStorage::Bytea nothing goes to jsonb, and everything still round-trips.
    let schema = fresh_schema("bytea");
    let store = PostgresStore::connect(
        PostgresConfig::new(pg.url())
            .with_schema(schema.clone())
            .with_payload_storage(PayloadStorage::Bytea),
    )
    .await
    .expect("connect");
    store
        .append(write(&p, 0, events.clone()))
        .await
        .expect("append");
    assert_eq!(
        store
            .replay(p.clone(), 1, u64::MAX, usize::MAX)
            .await
            .expect("replay"),
        events
    );
    let jsonb: i64 = raw
        .query_one(
            &format!("SELECT count(*) FROM {schema}.journal WHERE payload IS NOT NULL"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(jsonb, 0, "PayloadStorage::Bytea stored jsonb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_file_serves_dbas_and_newer_schemas_are_refused() {
    let pg = TempPostgres::shared();
    let schema = fresh_schema("dba");
    let config = PostgresConfig::new(pg.url())
        .with_schema(schema.clone())
        .with_create_schema(false);
    match PostgresStore::connect(config.clone()).await {
        Err(PostgresError::MissingSchema { schema: s }) => assert_eq!(s, schema),
        other => panic!("connect without tables and create_schema off: {other:?}"),
    }

    // What a DBA runs: the shipped file, in the schema, by hand.
    let raw = raw_client(&pg.url()).await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; {SCHEMA_SQL}; RESET search_path;"
    ))
    .await
    .expect("apply schema.sql");
    let store = PostgresStore::connect(config.clone())
        .await
        .expect("connect to the DBA's schema");
    let p = pid("dba|1");
    store
        .append(simple(&p, 0, 3, &["t"]))
        .await
        .expect("append");
    assert_eq!(store.highest_seq_nr(p.clone()).await.expect("highest"), 3);
    store.close().await;

    raw.batch_execute(&format!("UPDATE {schema}.schema_info SET version = 99"))
        .await
        .expect("pretend a newer version");
    match PostgresStore::connect(config.with_create_schema(true)).await {
        Err(PostgresError::UnsupportedSchemaVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (99, SCHEMA_VERSION)),
        other => panic!("connect to a newer schema: {other:?}"),
    }
    let events: i64 = raw
        .query_one(&format!("SELECT count(*) FROM {schema}.journal"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 3, "a refused start must not touch the data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_nul_and_oversized_sequence_numbers_are_rejected() {
    let pg = TempPostgres::shared();
    let store =
        PostgresStore::connect(PostgresConfig::new(pg.url()).with_schema(fresh_schema("nul")))
            .await
            .expect("connect");
    let p = pid("nul|1");
    let mut bad_manifest = event(1, b"x", &[]);
    bad_manifest.manifest = "a\0b".into();
    let mut bad_writer = event(1, b"x", &[]);
    bad_writer.writer_id = "w\0".into();
    for (what, w) in [
        ("manifest", write(&p, 0, vec![bad_manifest])),
        ("writer id", write(&p, 0, vec![bad_writer])),
        ("tag", write(&p, 0, vec![event(1, b"x", &["t\0"])])),
        (
            "seq_nr beyond i64",
            write(
                &p,
                i64::MAX as u64,
                vec![event(i64::MAX as u64 + 1, b"x", &[])],
            ),
        ),
    ] {
        match store.append(w).await {
            Err(StoreError::Rejected(_)) => {}
            other => panic!("{what}: expected Rejected, got {other:?}"),
        }
    }
    assert_eq!(store.highest_seq_nr(p.clone()).await.expect("highest"), 0);
    let mut snapshot_manifest = shoal_persistence::store::SnapshotRecord {
        persistence_id: p.clone(),
        seq_nr: 1,
        manifest: "s\0".into(),
        schema_version: 1,
        payload: vec![],
        timestamp_ms: 0,
    };
    assert!(matches!(
        shoal_persistence::store::SnapshotStore::save(&store, snapshot_manifest.clone()).await,
        Err(StoreError::Rejected(_))
    ));
    snapshot_manifest.manifest = "s".into();
    snapshot_manifest.seq_nr = u64::MAX;
    assert!(matches!(
        shoal_persistence::store::SnapshotStore::save(&store, snapshot_manifest).await,
        Err(StoreError::Rejected(_))
    ));
}

/// A trigger that makes the server refuse some rows, for the failure paths of a batch.
async fn install_refusals(raw: &Client, schema: &str) {
    raw.batch_execute(&format!(
        "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.payload ? 'poison' THEN
                 RAISE EXCEPTION 'poisoned json' USING ERRCODE = '22023';
             END IF;
             IF NEW.persistence_id = 'bad|x' THEN
                 RAISE EXCEPTION 'this append is refused';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON {schema}.journal
             FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();"
    ))
    .await
    .expect("install the trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_fails_alone_in_its_batch() {
    let pg = TempPostgres::shared();
    let schema = fresh_schema("alone");
    let store = PostgresStore::connect(
        PostgresConfig::new(pg.url())
            .with_schema(schema.clone())
            .with_writer_connections(1),
    )
    .await
    .expect("connect");
    let raw = raw_client(&pg.url()).await;
    let monitor = raw_client(&pg.url()).await;
    install_refusals(&raw, &schema).await;

    // Stall the only writer on the ordering lock, so that the next appends queue up and go
    // out together in the next batch.
    hold_ordering_lock(&raw, &schema).await;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.append(simple(&pid("first|x"), 0, 1, &[])).await }
    });
    wait_for_writer_blocked(&monitor).await;
    let ids = ["good|1", "bad|x", "good|2", "good|3", "good|4"];
    let appends: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = store.clone();
            async move { store.append(simple(&pid(id), 0, 2, &["t"])).await }
        })
        .collect();
    let mut batch = Box::pin(join_all(appends));
    assert!(
        (&mut batch).now_or_never().is_none(),
        "appends answered while the writer was stalled"
    );
    raw.batch_execute("ROLLBACK")
        .await
        .expect("release the lock");
    first
        .await
        .expect("task")
        .expect("the stalled append commits");

    let outcomes = batch.await;
    for (id, outcome) in ids.iter().zip(&outcomes) {
        match (*id, outcome) {
            ("bad|x", Err(StoreError::Unavailable(why))) => {
                assert!(why.contains("this append is refused"), "{why}")
            }
            ("bad|x", other) => panic!("the refused append: {other:?}"),
            (id, Ok(())) => {
                assert_eq!(store.highest_seq_nr(pid(id)).await.expect("highest"), 2)
            }
            (id, other) => panic!("{id} failed with the refused append: {other:?}"),
        }
    }
    assert_eq!(
        store.highest_seq_nr(pid("bad|x")).await.expect("highest"),
        0
    );
    let tagged: Vec<_> = store
        .events_by_tag("t".into(), Offset::START, QueryMode::Current)
        .collect()
        .await;
    assert_eq!(tagged.len(), 8, "the good appends' events, and only those");

    // A JSON payload the server refuses is stored as bytes instead.
    let p = pid("poison|1");
    let poison = br#"{"poison":true}"#;
    store
        .append(write(&p, 0, vec![event(1, poison, &[])]))
        .await
        .expect("append with a payload jsonb refuses");
    let stored = store.replay(p.clone(), 1, 1, 1).await.expect("replay");
    assert_eq!(stored[0].payload, poison);
    let as_bytes: bool = raw
        .query_one(
            &format!(
                "SELECT payload IS NULL AND payload_bytes IS NOT NULL FROM {schema}.journal \
                 WHERE persistence_id = 'poison|1'"
            ),
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert!(as_bytes, "the refused JSON payload went to bytea alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_commit_is_uncertain() {
    // Killing a backend makes the server restart every session: a server of its own.
    let pg = TempPostgres::start();
    let schema = "lost";
    let store = PostgresStore::connect(
        PostgresConfig::new(pg.url())
            .with_schema(schema)
            .with_writer_connections(1),
    )
    .await
    .expect("connect");
    let raw = raw_client(&pg.url()).await;
    let monitor = raw_client(&pg.url()).await;
    let p = pid("lost|1");

    // The writer's transaction is sent, COMMIT included, and waits at the server; then its
    // backend dies without a word (SIGKILL).
    hold_ordering_lock(&raw, schema).await;
    let append = tokio::spawn({
        let store = store.clone();
        let p = p.clone();
        async move { store.append(simple(&p, 0, 1, &[])).await }
    });
    let backend = wait_for_writer_blocked(&monitor).await;
    let status = std::process::Command::new("kill")
        .args(["-9", &backend.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {backend}");
    match append.await.expect("task") {
        Err(StoreError::Uncertain(_)) => {}
        other => panic!("append whose connection died mid-commit: {other:?}"),
    }

    // After the server's crash restart, the store recovers by itself: the writer reconnects.
    let deadline = Instant::now() + WAIT;
    let highest = loop {
        if let Ok(h) = store.highest_seq_nr(p.clone()).await {
            break Some(h);
        }
        assert!(Instant::now() < deadline, "the store did not answer again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(highest, Some(0), "the uncommitted append is not stored");
    store
        .append(simple(&p, 0, 1, &[]))
        .await
        .expect("append after recovery");
    assert_eq!(store.highest_seq_nr(p).await.expect("highest"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_answer_in_time_is_uncertain() {
    let pg = TempPostgres::shared();
    let schema = fresh_schema("timeout");
    let store = PostgresStore::connect(
        PostgresConfig::new(pg.url())
            .with_schema(schema.clone())
            .with_writer_connections(1)
            .with_write_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("connect");
    let raw = raw_client(&pg.url()).await;
    let p = pid("slow|1");
    let monitor = raw_client(&pg.url()).await;
    hold_ordering_lock(&raw, &schema).await;
    let append = tokio::spawn({
        let store = store.clone();
        let p = p.clone();
        async move { store.append(simple(&p, 0, 1, &[])).await }
    });
    let backend = wait_for_writer_blocked(&monitor).await;
    match append.await.expect("task") {
        Err(StoreError::Uncertain(_)) => {}
        other => panic!("append stuck behind the lock past write_timeout: {other:?}"),
    }
    raw.batch_execute("ROLLBACK")
        .await
        .expect("release the lock");
    // The abandoned session goes on without its client until it notices it is gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let alive: i64 = monitor
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&backend],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned session did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The abandoned transaction may or may not have committed once the lock was free: the
    // writer recovers as an entity would, from what is stored.
    let h = store.highest_seq_nr(p.clone()).await.expect("highest");
    assert!(h <= 1);
    store
        .append(simple(&p, h, 1, &[]))
        .await
        .expect("append after recovering from an uncertain write");
    let events = store
        .replay(p.clone(), 1, u64::MAX, usize::MAX)
        .await
        .expect("replay");
    assert_eq!(events.len() as u64, h + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_is_unavailable() {
    let pg = TempPostgres::start();
    let config = PostgresConfig::new(pg.url())
        .with_schema("down")
        .with_connect_timeout(Duration::from_secs(2));
    let store = PostgresStore::connect(config.clone())
        .await
        .expect("connect");
    let p = pid("down|1");
    store.append(simple(&p, 0, 1, &[])).await.expect("append");
    pg.stop();
    match store.append(simple(&p, 1, 1, &[])).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("append with the database down: {other:?}"),
    }
    match store.highest_seq_nr(p.clone()).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("highest_seq_nr with the database down: {other:?}"),
    }
    match PostgresStore::connect(config).await {
        Err(PostgresError::Postgres { .. }) => {}
        other => panic!("connect with the database down: {other:?}"),
    }
    pg.restart();
    store
        .append(simple(&p, 1, 1, &[]))
        .await
        .expect("append after the restart");
    assert_eq!(store.highest_seq_nr(p).await.expect("highest"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_commits_wake_live_streams_by_notify_or_polling() {
    let pg = TempPostgres::shared();
    let schema = fresh_schema("wake");
    let config = PostgresConfig::new(pg.url()).with_schema(schema.clone());
    let writer = PostgresStore::connect(config.clone())
        .await
        .expect("connect");
    let p = pid("wake|1");
    writer
        .append(simple(&p, 0, 1, &["t"]))
        .await
        .expect("append");

    // No polling to speak of: only a notification can wake this node's streams.
    let notified =
        PostgresStore::connect(config.clone().with_poll_interval(Duration::from_secs(3600)))
            .await
            .expect("connect");
    // Polling every 50 ms.
    let polling = PostgresStore::connect(config.with_poll_interval(Duration::from_millis(50)))
        .await
        .expect("connect");
    let mut by_notify = notified.events_by_tag("t".into(), Offset::START, QueryMode::Live);
    let mut by_poll = polling.events_by_tag("t".into(), Offset::START, QueryMode::Live);
    next_within(&mut by_notify, "first event, notified node").await;
    next_within(&mut by_poll, "first event, polling node").await;

    // Every listener has run LISTEN and polled once (its last query is the poll).
    let monitor = raw_client(&pg.url()).await;
    wait_for("three listeners", || {
        let monitor = &monitor;
        let schema = schema.clone();
        async move {
            let n: i64 = monitor
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'shoal-postgres' AND query LIKE $1",
                    &[&format!(
                        "SELECT last_ordering FROM \"{schema}\".journal_offset%"
                    )],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            n == 3
        }
    })
    .await;

    writer
        .append(simple(&p, 1, 1, &["t"]))
        .await
        .expect("append");
    let e = next_within(&mut by_notify, "an event committed by another node").await;
    assert_eq!(e.event.seq_nr, 2);
    let e = next_within(&mut by_poll, "an event committed by another node").await;
    assert_eq!(e.event.seq_nr, 2);

    // A commit that notifies nobody (a tool following the ordering protocol without NOTIFY)
    // is found by polling.
    let raw = raw_client(&pg.url()).await;
    hold_ordering_lock(&raw, &schema).await;
    raw.batch_execute(&format!(
        "WITH o AS (UPDATE {schema}.journal_offset SET last_ordering = last_ordering + 1
                    WHERE id = 1 RETURNING last_ordering),
              j AS (INSERT INTO {schema}.journal (ordering, persistence_id, seq_nr, manifest,
                        schema_version, payload_bytes, tags, writer_id, timestamp_ms)
                    SELECT last_ordering, 'wake|1', 3, 'm', 1, '\\x33', '{{t}}', 'raw', 0 FROM o
                    RETURNING ordering)
         INSERT INTO {schema}.event_tags (tag, ordering) SELECT 't', ordering FROM j;
         UPDATE {schema}.persistence_ids SET highest_seq_nr = 3 WHERE persistence_id = 'wake|1';
         COMMIT;"
    ))
    .await
    .expect("a commit without NOTIFY");
    let e = next_within(&mut by_poll, "a commit without notification").await;
    assert_eq!((e.event.seq_nr, e.event.payload.as_slice()), (3, &b"3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_work_and_ends_its_streams() {
    let pg = TempPostgres::shared();
    let store =
        PostgresStore::connect(PostgresConfig::new(pg.url()).with_schema(fresh_schema("closed")))
            .await
            .expect("connect");
    let p = pid("closed|1");
    store
        .append(simple(&p, 0, 1, &["t"]))
        .await
        .expect("append");
    let mut live = store.events_by_tag("t".into(), Offset::START, QueryMode::Live);
    next_within(&mut live, "before close").await;
    let waiting = tokio::spawn(async move {
        let first = live.next().await;
        let second = live.next().await;
        (first, second)
    });
    store.close().await;
    store.close().await;
    match tokio::time::timeout(WAIT, waiting).await {
        Ok(Ok((Some(Err(StoreError::Closed)), None))) => {}
        other => panic!("a live stream across close: {other:?}"),
    }
    assert_eq!(
        store.append(simple(&p, 1, 1, &[])).await,
        Err(StoreError::Closed)
    );
    assert_eq!(
        store.highest_seq_nr(p.clone()).await,
        Err(StoreError::Closed)
    );
    let mut after = store.events_by_tag("t".into(), Offset::START, QueryMode::Live);
    assert!(matches!(after.next().await, Some(Err(StoreError::Closed))));
    assert!(after.next().await.is_none());
}
