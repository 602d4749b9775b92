//! Behaviour of the SQLite store beyond the conformance suite: reopening, schema versions,
//! foreign files, options, failing statements and commits, closing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rusqlite::Connection;
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, Journal, Offset, PersistenceId, QueryMode,
    SnapshotRecord, SnapshotSelection, SnapshotStore, StoreError,
};
use shoal_sqlite::{SCHEMA_VERSION, SqliteError, SqliteOptions, SqliteStore};

fn pid(name: &str) -> PersistenceId {
    PersistenceId::of("test", name).expect("valid persistence id")
}

fn write(pid: &PersistenceId, expected: u64, n: u64, tags: &[&str]) -> AtomicWrite {
    AtomicWrite {
        persistence_id: pid.clone(),
        expected_seq_nr: expected,
        events: (expected + 1..=expected + n)
            .map(|seq_nr| EventRecord {
                seq_nr,
                manifest: "test.Event".into(),
                schema_version: 1,
                payload: format!("{pid} {seq_nr}").into_bytes(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                writer_id: "test".into(),
                timestamp_ms: 42,
            })
            .collect(),
    }
}

fn db_in(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("shoal.db")
}

async fn tagged(store: &SqliteStore, tag: &str) -> Vec<(PersistenceId, u64, Offset)> {
    store
        .events_by_tag(tag.into(), Offset::START, QueryMode::Current)
        .map(|e| {
            let e = e.expect("tag query");
            (e.persistence_id, e.event.seq_nr, e.offset)
        })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_events_snapshots_fences_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pid("a"), pid("b"));
    let store = SqliteStore::open(db_in(&dir)).unwrap();
    store.append(write(&b, 0, 2, &["t"])).await.unwrap();
    store.append(write(&a, 0, 3, &["t", "u"])).await.unwrap();
    store.append(write(&b, 2, 1, &["t"])).await.unwrap();
    let snapshot = SnapshotRecord {
        persistence_id: a.clone(),
        seq_nr: 3,
        manifest: "test.State".into(),
        schema_version: 2,
        payload: b"state".to_vec(),
        timestamp_ms: 7,
    };
    store.save(snapshot.clone()).await.unwrap();
    // Delete the newest events: their offsets must still never be reused.
    store.delete_to(b.clone(), 3).await.unwrap();
    let before = tagged(&store, "t").await;
    let newest = store.events_by_persistence_id(b.clone(), 1, 3, QueryMode::Current);
    assert_eq!(newest.count().await, 0, "deleted events are gone");
    let highest_offset = Offset(6);
    store.close().await.unwrap();

    let store = SqliteStore::open(db_in(&dir)).unwrap();
    assert_eq!(tagged(&store, "t").await, before, "tag query after reopen");
    assert_eq!(store.highest_seq_nr(a.clone()).await.unwrap(), 3);
    assert_eq!(
        store.highest_seq_nr(b.clone()).await.unwrap(),
        3,
        "fence survives delete_to"
    );
    let replayed = store
        .replay(a.clone(), 1, u64::MAX, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        replayed,
        write(&a, 0, 3, &["t", "u"]).events,
        "replay after reopen"
    );
    assert_eq!(
        store.load(a.clone(), SnapshotSelection::ALL).await.unwrap(),
        Some(snapshot)
    );
    let ids: Vec<_> = store
        .persistence_ids(QueryMode::Current)
        .map(|p| p.unwrap())
        .collect()
        .await;
    assert_eq!(
        ids,
        vec![b.clone(), a.clone()],
        "first-write order after reopen"
    );

    match store.append(write(&b, 0, 1, &[])).await {
        Err(StoreError::Conflict { actual: 3, .. }) => {}
        other => panic!("append behind the fence after reopen: {other:?}"),
    }
    store.append(write(&b, 3, 1, &["t"])).await.unwrap();
    let after = tagged(&store, "t").await;
    let (_, seq, offset) = after.last().cloned().unwrap();
    assert_eq!(seq, 4);
    assert!(
        offset > highest_offset,
        "offset {offset:?} reused after deleting the newest events"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn newer_schema_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(db_in(&dir)).unwrap();
    store.close().await.unwrap();
    let conn = Connection::open(db_in(&dir)).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);

    let err = SqliteStore::open(db_in(&dir)).unwrap_err();
    match &err {
        SqliteError::UnsupportedSchemaVersion {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected UnsupportedSchemaVersion, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("newer") && message.contains("upgrade"),
        "unclear: {message}"
    );
    let conn = Connection::open(db_in(&dir)).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1, "the refused file was modified");
}

#[tokio::test]
async fn foreign_sqlite_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other_app = dir.path().join("other.db");
    Connection::open(&other_app)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&other_app),
        Err(SqliteError::ForeignDatabase { .. })
    ));

    let other_id = dir.path().join("other-id.db");
    Connection::open(&other_id)
        .unwrap()
        .pragma_update(None, "application_id", 7)
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&other_id),
        Err(SqliteError::ForeignDatabase { .. })
    ));

    let not_sqlite = dir.path().join("text.db");
    std::fs::write(&not_sqlite, vec![b'x'; 8192]).unwrap();
    assert!(matches!(
        SqliteStore::open(&not_sqlite),
        Err(SqliteError::Sqlite { .. })
    ));
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for options in [
        SqliteOptions::new(db_in(&dir)).with_read_connections(0),
        SqliteOptions::new(db_in(&dir)).with_max_batch_size(0),
        SqliteOptions::new(db_in(&dir)).with_queue_capacity(0),
        SqliteOptions::new(db_in(&dir)).with_query_page_size(0),
    ] {
        assert!(matches!(
            SqliteStore::open_with(options),
            Err(SqliteError::InvalidOptions(_))
        ));
    }
    assert!(
        !db_in(&dir).exists(),
        "refused options must not create the file"
    );
}

#[tokio::test]
async fn sequence_numbers_beyond_i64_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(db_in(&dir)).unwrap();
    let p = pid("big");
    for expected in [i64::MAX as u64, i64::MAX as u64 - 1, u64::MAX - 1] {
        let mut w = write(&p, 0, 2, &[]);
        w.expected_seq_nr = expected;
        for (i, e) in w.events.iter_mut().enumerate() {
            e.seq_nr = expected.wrapping_add(1 + i as u64);
        }
        assert!(
            matches!(store.append(w).await, Err(StoreError::Rejected(_))),
            "{expected}"
        );
    }
    let snapshot = SnapshotRecord {
        persistence_id: p.clone(),
        seq_nr: u64::MAX,
        manifest: String::new(),
        schema_version: 0,
        payload: vec![],
        timestamp_ms: 0,
    };
    assert!(matches!(
        store.save(snapshot).await,
        Err(StoreError::Rejected(_))
    ));
    assert_eq!(store.highest_seq_nr(p).await.unwrap(), 0);
}

/// Holds SQLite's write lock from a second connection, so that the store's writer thread
/// blocks in `BEGIN IMMEDIATE` and everything sent meanwhile lands in one batch.
struct WriteLock(Connection);

impl WriteLock {
    fn take(db: &Path) -> Self {
        let conn = Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Sends `writes` concurrently while the write lock is held, so that the writer takes them
/// in few batches (the requests it had not drained when it blocked on the lock all land in the
/// next one), and returns their outcomes in order.
async fn behind_lock(
    store: &SqliteStore,
    db: &Path,
    writes: Vec<AtomicWrite>,
) -> Vec<Result<(), StoreError>> {
    let lock = WriteLock::take(db);
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { store.append(w).await })
        })
        .collect();
    // On the current-thread runtime one yield lets every task run up to its wait for the
    // writer's answer, i.e. queue its request.
    tokio::task::yield_now().await;
    lock.release();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Every write answered `Ok` is stored whole, every other is not stored at all.
async fn assert_outcomes_match_store(
    store: &SqliteStore,
    writes: &[AtomicWrite],
    outcomes: &[Result<(), StoreError>],
) {
    for (w, outcome) in writes.iter().zip(outcomes) {
        let p = &w.persistence_id;
        let stored = store
            .replay(p.clone(), 1, u64::MAX, usize::MAX)
            .await
            .unwrap();
        let highest = store.highest_seq_nr(p.clone()).await.unwrap();
        match outcome {
            Ok(()) => {
                assert_eq!(stored, w.events, "{p}: answered Ok but not stored");
                assert_eq!(
                    highest,
                    w.last_seq_nr(),
                    "{p}: answered Ok, fence not moved"
                );
            }
            Err(e) => {
                assert!(stored.is_empty(), "{p}: answered {e:?} but stored");
                assert_eq!(highest, 0, "{p}: answered {e:?} but the fence moved");
            }
        }
    }
}

fn store_for_batches(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open_with(
        SqliteOptions::new(db_in(dir)).with_busy_timeout(Duration::from_secs(60)),
    )
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_statement_fails_only_its_own_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_for_batches(&dir);
    Connection::open(db_in(&dir))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison AFTER INSERT ON events WHEN NEW.persistence_id = 'test|poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned event'); END;",
        )
        .unwrap();
    let ids: Vec<PersistenceId> = (0..8).map(|i| pid(&format!("ok{i}"))).collect();
    let mut writes = vec![write(&pid("poison"), 0, 3, &["t"])];
    writes.extend(ids.iter().map(|p| write(p, 0, 2, &["t"])));
    let outcomes = behind_lock(&store, &db_in(&dir), writes).await;

    assert!(
        matches!(outcomes[0], Err(StoreError::Unavailable(_))),
        "{:?}",
        outcomes[0]
    );
    for (p, outcome) in ids.iter().zip(&outcomes[1..]) {
        assert_eq!(
            outcome,
            &Ok(()),
            "{p}: a neighbour's failure failed this write"
        );
        assert_eq!(store.highest_seq_nr(p.clone()).await.unwrap(), 2);
    }
    assert_eq!(
        store.highest_seq_nr(pid("poison")).await.unwrap(),
        0,
        "fence moved"
    );
    assert!(
        store
            .replay(pid("poison"), 1, 9, 9)
            .await
            .unwrap()
            .is_empty(),
        "partial write"
    );
    assert_eq!(
        tagged(&store, "t").await.len(),
        16,
        "tag rows of the failed write remain"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_commit_answers_no_write_of_its_batch_ok() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_for_batches(&dir);
    // A deferred foreign key violated by a poisoned insert makes COMMIT itself fail (and
    // leave the transaction open, which the writer must roll back).
    let admin = Connection::open(db_in(&dir)).unwrap();
    admin
        .execute_batch(
            "CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);
             CREATE TABLE poison_child (
                 parent INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TRIGGER poison AFTER INSERT ON events WHEN NEW.persistence_id = 'test|poison'
             BEGIN INSERT INTO poison_child VALUES (1); END;",
        )
        .unwrap();

    // One poisoned write among others: it fails, and so does every write committed with it;
    // whatever is answered Ok is stored, whatever is not is not.
    let mut writes: Vec<AtomicWrite> = (0..16)
        .map(|i| write(&pid(&format!("n{i}")), 0, 1, &["t"]))
        .collect();
    writes.insert(1, write(&pid("poison"), 0, 1, &["t"]));
    let outcomes = behind_lock(&store, &db_in(&dir), writes.clone()).await;
    assert!(
        matches!(outcomes[1], Err(StoreError::Unavailable(_))),
        "{:?}",
        outcomes[1]
    );
    assert_outcomes_match_store(&store, &writes, &outcomes).await;

    // Every commit fails: no write may be answered Ok, however they were batched.
    admin
        .execute_batch(
            "DROP TRIGGER poison;
             CREATE TRIGGER poison AFTER INSERT ON events
             BEGIN INSERT INTO poison_child VALUES (1); END;",
        )
        .unwrap();
    let writes: Vec<AtomicWrite> = (0..16)
        .map(|i| write(&pid(&format!("all{i}")), 0, 2, &["u"]))
        .collect();
    let outcomes = behind_lock(&store, &db_in(&dir), writes.clone()).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "write {i}: {outcome:?}"
        );
    }
    assert_outcomes_match_store(&store, &writes, &outcomes).await;
    assert!(tagged(&store, "u").await.is_empty());

    // The writer recovers: without the poison the same writes go through.
    admin.execute_batch("DROP TRIGGER poison;").unwrap();
    let outcomes = behind_lock(&store, &db_in(&dir), writes.clone()).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_outcomes_match_store(&store, &writes, &outcomes).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_transaction_rolled_back_by_sqlite_fails_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_for_batches(&dir);
    Connection::open(db_in(&dir))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison AFTER INSERT ON events WHEN NEW.persistence_id = 'test|poison'
             BEGIN SELECT RAISE(ROLLBACK, 'roll everything back'); END;",
        )
        .unwrap();
    let mut writes: Vec<AtomicWrite> = (0..16)
        .map(|i| write(&pid(&format!("r{i}")), 0, 1, &[]))
        .collect();
    writes.insert(1, write(&pid("poison"), 0, 1, &[]));
    let outcomes = behind_lock(&store, &db_in(&dir), writes.clone()).await;
    assert!(
        matches!(outcomes[1], Err(StoreError::Unavailable(_))),
        "{:?}",
        outcomes[1]
    );
    assert_outcomes_match_store(&store, &writes, &outcomes).await;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    assert!(
        failed > 1,
        "the writes batched with the poisoned one must fail too"
    );
    store
        .append(write(&pid("after"), 0, 1, &[]))
        .await
        .expect("writer works after the loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_everything_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(db_in(&dir)).unwrap();
    let p = pid("a");
    store.append(write(&p, 0, 1, &["t"])).await.unwrap();
    let mut live = store.events_by_tag("t".into(), Offset::START, QueryMode::Live);
    assert_eq!(live.next().await.unwrap().unwrap().event.seq_nr, 1);
    let clone = store.clone();

    store.close().await.unwrap();
    store.close().await.unwrap();
    assert_eq!(
        clone.append(write(&p, 1, 1, &[])).await,
        Err(StoreError::Closed)
    );
    assert_eq!(
        clone.highest_seq_nr(p.clone()).await,
        Err(StoreError::Closed)
    );
    assert_eq!(
        live.next().await.map(|r| r.map(|_| ())),
        Some(Err(StoreError::Closed))
    );
    assert!(
        live.next().await.is_none(),
        "a live stream ends after the store closed"
    );

    let store = SqliteStore::open(db_in(&dir)).unwrap();
    assert_eq!(store.highest_seq_nr(p).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(db_in(&dir)).unwrap());
    let mut tasks = Vec::new();
    for i in 0..256 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let p = pid(&format!("w{i}"));
            for round in 0..20u64 {
                store
                    .append(write(&p, round * 2, 2, &["all"]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = tagged(&store, "all").await;
    assert_eq!(all.len(), 256 * 20 * 2);
    assert!(all.windows(2).all(|w| w[0].2 < w[1].2), "offsets increase");
}
