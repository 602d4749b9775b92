//! The database goes down under load and comes back.
//!
//! Thirty-two writers append continuously while a live tag reader on another store instance
//! (another "node") follows. The server is stopped (`pg_ctl stop -m fast`): appends fail with
//! errors — never `Ok` — and reads too, while the process keeps running. The server is
//! started again: appends succeed again on their own (the store reconnects), and at the end
//! every acknowledged event is stored, nothing is stored twice or torn, and the live reader
//! has seen every event exactly once, in per-id order.
//!
//! A writer that gets [`StoreError::Uncertain`] does what an entity does: it re-reads its
//! highest sequence number before writing again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shoal_persistence::store::{
    AtomicWrite, EventEnvelope, EventQuery, EventRecord, Journal, Offset, PersistenceId, QueryMode,
    StoreError,
};
use shoal_postgres::{PostgresConfig, PostgresStore};
use shoal_testkit::TempPostgres;

const WRITERS: usize = 32;
const EVENTS_PER_APPEND: u64 = 2;
const TAG: &str = "fault";
/// Acknowledged appends before the outage, and again after it.
const ACKS_PER_PHASE: usize = 300;
/// Failed appends to see while the database is down.
const ERRORS_WHILE_DOWN: usize = 64;
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
/// Pause of a writer after a failure (the database is down; this is the load's back-off).
const BACKOFF: Duration = Duration::from_millis(20);

fn pid(i: usize) -> PersistenceId {
    PersistenceId::of("fault", &format!("w{i}")).expect("valid id")
}

fn payload(pid: &PersistenceId, seq_nr: u64) -> Vec<u8> {
    format!("{pid}#{seq_nr}").into_bytes()
}

fn write(pid: &PersistenceId, expected: u64) -> AtomicWrite {
    AtomicWrite {
        persistence_id: pid.clone(),
        expected_seq_nr: expected,
        events: (expected + 1..=expected + EVENTS_PER_APPEND)
            .map(|seq_nr| EventRecord {
                seq_nr,
                manifest: "fault".into(),
                schema_version: 1,
                payload: payload(pid, seq_nr),
                tags: vec![TAG.into()],
                writer_id: "fault-test".into(),
                timestamp_ms: 0,
            })
            .collect(),
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    failed: AtomicUsize,
    uncertain: AtomicUsize,
    /// Appends acknowledged while the database was down, after their writer had already seen
    /// it down (so not the late answer of a commit from before the outage).
    ok_while_down: AtomicUsize,
}

/// Polls `cond` until it holds, failing after [`PHASE_DEADLINE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PHASE_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load() {
    let pg = Arc::new(TempPostgres::start());
    let config = PostgresConfig::new(pg.url())
        .with_schema("fault")
        .with_poll_interval(Duration::from_millis(100))
        .with_connect_timeout(Duration::from_secs(2));
    let store = PostgresStore::connect(config.clone())
        .await
        .expect("connect");
    let reader_store = PostgresStore::connect(config).await.expect("connect");

    // The live reader: records everything, errors included.
    let seen: Arc<Mutex<Vec<EventEnvelope>>> = Arc::default();
    let reader_errors = Arc::new(AtomicUsize::new(0));
    let reader = {
        let mut stream = reader_store.events_by_tag(TAG.into(), Offset::START, QueryMode::Live);
        let seen = Arc::clone(&seen);
        let reader_errors = Arc::clone(&reader_errors);
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(e) => seen.lock().unwrap().push(e),
                    Err(_) => {
                        reader_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = store.clone();
            let counts = Arc::clone(&counts);
            let stop = Arc::clone(&stop);
            let down = Arc::clone(&down);
            tokio::spawn(async move {
                let pid = pid(i);
                let mut highest = 0u64;
                let mut acked = 0u64;
                let mut seen_down = false;
                while !stop.load(Ordering::Relaxed) {
                    match store.append(write(&pid, highest)).await {
                        Ok(()) => {
                            highest += EVENTS_PER_APPEND;
                            acked = highest;
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                            if seen_down && down.load(Ordering::Acquire) {
                                counts.ok_while_down.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(StoreError::Unavailable(_)) => {
                            seen_down |= down.load(Ordering::Acquire);
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(BACKOFF).await;
                        }
                        Err(StoreError::Uncertain(_)) => {
                            seen_down |= down.load(Ordering::Acquire);
                            counts.uncertain.fetch_add(1, Ordering::Relaxed);
                            // Recover: read what is stored before writing again.
                            loop {
                                match store.highest_seq_nr(pid.clone()).await {
                                    Ok(h) => {
                                        highest = h;
                                        break;
                                    }
                                    Err(_) => tokio::time::sleep(BACKOFF).await,
                                }
                            }
                        }
                        Err(other) => panic!("{pid}: append after {highest} failed: {other:?}"),
                    }
                }
                (pid, acked)
            })
        })
        .collect();

    wait_until("acknowledged appends before the outage", || {
        counts.ok.load(Ordering::Relaxed) >= ACKS_PER_PHASE
    })
    .await;

    let server = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop the server");
    down.store(true, Ordering::Release);
    let failed_at_stop =
        counts.failed.load(Ordering::Relaxed) + counts.uncertain.load(Ordering::Relaxed);
    wait_until("appends failing while the database is down", || {
        counts.failed.load(Ordering::Relaxed) + counts.uncertain.load(Ordering::Relaxed)
            >= failed_at_stop + ERRORS_WHILE_DOWN
    })
    .await;
    assert_eq!(
        counts.ok_while_down.load(Ordering::Relaxed),
        0,
        "appends were acknowledged while the database was down"
    );
    match store.highest_seq_nr(pid(0)).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("highest_seq_nr with the database down: {other:?}"),
    }
    match store.replay(pid(0), 1, u64::MAX, 10).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("replay with the database down: {other:?}"),
    }

    down.store(false, Ordering::Release);
    let server = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || server.restart())
        .await
        .expect("restart the server");
    let ok_at_restart = counts.ok.load(Ordering::Relaxed);
    wait_until("acknowledged appends after the outage", || {
        counts.ok.load(Ordering::Relaxed) >= ok_at_restart + ACKS_PER_PHASE
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashMap::new();
    for w in writers {
        let (pid, a) = w.await.expect("writer failed (see above)");
        acked.insert(pid, a);
    }

    // Every acknowledged event is stored, once, whole, in order.
    let mut want: HashSet<(PersistenceId, u64)> = HashSet::new();
    for (pid, &acked) in &acked {
        let events = store
            .replay(pid.clone(), 1, u64::MAX, usize::MAX)
            .await
            .expect("replay after the outage");
        let n = events.len() as u64;
        assert!(n >= acked, "{pid}: {acked} acknowledged, {n} stored");
        assert!(n.is_multiple_of(EVENTS_PER_APPEND), "{pid}: torn write");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq_nr, i as u64 + 1, "{pid}: gap or duplicate");
            assert_eq!(e.payload, payload(pid, e.seq_nr), "{pid}: wrong payload");
        }
        assert_eq!(
            store.highest_seq_nr(pid.clone()).await.expect("highest"),
            n,
            "{pid}: fence and events disagree"
        );
        want.extend((1..=n).map(|s| (pid.clone(), s)));
    }
    let current: Vec<EventEnvelope> = store
        .events_by_tag(TAG.into(), Offset::START, QueryMode::Current)
        .map(|e| e.expect("tag query after the outage"))
        .collect()
        .await;
    assert_eq!(current.len(), want.len(), "tag query: wrong count");

    // The live reader caught up across the outage: each event exactly once, in order.
    wait_until("the live reader to catch up", || {
        seen.lock().unwrap().len() >= want.len()
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let mut keys = HashSet::new();
    let mut last: HashMap<PersistenceId, u64> = HashMap::new();
    for pair in seen.windows(2) {
        assert!(pair[0].offset < pair[1].offset, "live reader went back");
    }
    for e in &seen {
        let key = (e.persistence_id.clone(), e.event.seq_nr);
        assert!(keys.insert(key.clone()), "live reader: {key:?} twice");
        let prev = last.insert(key.0.clone(), key.1).unwrap_or(0);
        assert_eq!(prev + 1, key.1, "live reader: {key:?} out of order");
    }
    assert_eq!(keys, want, "live reader: not exactly the stored events");
    reader.abort();
    eprintln!(
        "fault test: {} ok, {} failed, {} uncertain, {} reader errors",
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.uncertain.load(Ordering::Relaxed),
        reader_errors.load(Ordering::Relaxed)
    );
}
