//! SIGKILL of a writer process during group commit: no acknowledged append is lost, no write
//! is torn — and then a crash of the database server itself, recovered from its WAL.
//!
//! [`sigkill_loses_no_acknowledged_append`] re-executes this test binary, running only
//! [`crash_child_writer`] with `SHOAL_PG_CRASH_CHILD` set to the server's URL. The child
//! appends 3-event batches from many concurrent tasks to many ids, printing one line per
//! acknowledged append. The parent reads lines until it has seen enough acknowledgements,
//! kills the child with SIGKILL in the middle of its stream of commits, reads the lines still
//! in the pipe, stops the server abruptly (`pg_ctl stop -m immediate`, as in a crash),
//! restarts it, and checks every promise of the store. Without the variable,
//! `crash_child_writer` returns at once.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shoal_persistence::store::{
    AtomicWrite, EventRecord, Journal, Offset, PersistenceId, QueryMode, Store, StoreError,
};
use shoal_postgres::{PostgresConfig, PostgresStore};
use shoal_testkit::TempPostgres;

/// The server's URL; set only for the child process.
const CHILD_ENV: &str = "SHOAL_PG_CRASH_CHILD";
const SCHEMA: &str = "crash";
/// Events per append.
const BATCH: u64 = 3;
/// Concurrent appending tasks in the child.
const TASKS: usize = 128;
/// Persistence ids each task writes to, in turn.
const IDS_PER_TASK: usize = 4;
/// Acknowledgements the parent waits for before killing the child.
const ACKS_BEFORE_KILL: usize = 2_000;
/// How long the parent waits for them.
const ACK_DEADLINE: Duration = Duration::from_secs(120);
/// The child gives up on its own after this long (if the parent vanished).
const CHILD_LIFETIME: Duration = Duration::from_secs(300);
const TAG: &str = "crash";

fn pid(task: usize, k: usize) -> PersistenceId {
    PersistenceId::of("crash", &format!("t{task}-{k}")).expect("valid persistence id")
}

fn payload(pid: &PersistenceId, seq_nr: u64) -> Vec<u8> {
    format!("{{\"pid\":\"{pid}\",\"seq_nr\":{seq_nr}}}").into_bytes()
}

fn batch(pid: &PersistenceId, expected: u64) -> AtomicWrite {
    AtomicWrite {
        persistence_id: pid.clone(),
        expected_seq_nr: expected,
        events: (expected + 1..=expected + BATCH)
            .map(|seq_nr| EventRecord {
                seq_nr,
                manifest: "crash.Event".into(),
                schema_version: 1,
                payload: payload(pid, seq_nr),
                tags: vec![TAG.into()],
                writer_id: "crash-child".into(),
                timestamp_ms: 0,
            })
            .collect(),
    }
}

fn config(url: String) -> PostgresConfig {
    PostgresConfig::new(url).with_schema(SCHEMA)
}

/// The writer process. Does nothing unless started by the parent test.
#[test]
fn crash_child_writer() {
    let Some(url) = std::env::var(CHILD_ENV).ok() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let store = PostgresStore::connect(config(url))
            .await
            .expect("child: connect");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let ids: Vec<PersistenceId> = (0..IDS_PER_TASK).map(|k| pid(task, k)).collect();
                let mut highest = [0u64; IDS_PER_TASK];
                for round in 0usize.. {
                    if started.elapsed() > CHILD_LIFETIME {
                        return;
                    }
                    let k = round % IDS_PER_TASK;
                    match store.append(batch(&ids[k], highest[k])).await {
                        Ok(()) => highest[k] += BATCH,
                        Err(e) => panic!("child: append to {} failed: {e}", ids[k]),
                    }
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "ack {} {}", ids[k], highest[k])
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        std::process::exit(0); // the parent is gone
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("child task");
        }
    });
}

/// Kills the child if the parent test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_loses_no_acknowledged_append() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // never recurse from inside a child
    }
    let pg = TempPostgres::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Create the schema before the child writes, so that its start is quick.
    runtime.block_on(async {
        PostgresStore::connect(config(pg.url()))
            .await
            .expect("create the schema")
            .close()
            .await;
    });

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary path"))
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, pg.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child writer"),
    );

    let stdout = child.0.stdout.take().expect("child stdout");
    let (lines_tx, lines) = sync_channel::<String>(1024);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut acks = 0usize;
    let mut record = |line: &str| {
        // Lines of the test harness ("running 1 test", …) are not acknowledgements.
        let Some(rest) = line.strip_prefix("ack ") else {
            return;
        };
        let (id, seq) = rest.rsplit_once(' ').expect("ack line: id and seq_nr");
        let seq: u64 = seq.parse().expect("ack line: seq_nr");
        let highest = acked.entry(id.to_owned()).or_default();
        *highest = (*highest).max(seq);
        acks += 1;
    };

    let deadline = Instant::now() + ACK_DEADLINE;
    let mut seen = 0usize;
    while seen < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let is_ack = line.starts_with("ack ");
                record(&line);
                seen += usize::from(is_ack);
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("the child acknowledged only {seen} appends within {ACK_DEADLINE:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the child exited after {seen} acknowledgements (see its stderr above)")
            }
        }
    }
    // SIGKILL: no destructor, no clean close of the connections; batches are in flight.
    child.0.kill().expect("kill the child");
    let status = child.0.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child should have died of SIGKILL, got {status}"
    );
    // Acknowledgements the child printed before it died are still in the pipe.
    for line in lines.iter() {
        record(&line);
    }
    reader.join().expect("reader thread");
    eprintln!(
        "crash test: {acks} acknowledged appends to {} ids before SIGKILL",
        acked.len()
    );

    // And the database crashes too: no shutdown checkpoint, recovery from the WAL.
    pg.kill();
    pg.restart();

    runtime.block_on(verify(pg.url(), &acked));
}

async fn verify(url: String, acked: &HashMap<String, u64>) {
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(config(url))
            .await
            .expect("connect after the crash"),
    );

    let ids = collect(store.persistence_ids(QueryMode::Current)).await;
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for id in &ids {
        let events = store
            .replay(id.clone(), 1, u64::MAX, usize::MAX)
            .await
            .expect("replay after crash");
        let n = events.len() as u64;
        assert!(
            n.is_multiple_of(BATCH),
            "{id}: {n} events stored, not whole batches of {BATCH}: torn write"
        );
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.seq_nr,
                i as u64 + 1,
                "{id}: sequence numbers have a gap"
            );
            assert_eq!(
                event.payload,
                payload(id, event.seq_nr),
                "{id}: wrong payload"
            );
            assert_eq!(event.tags, vec![TAG.to_owned()], "{id}: tags lost");
        }
        assert_eq!(
            store.highest_seq_nr(id.clone()).await.expect("highest"),
            n,
            "{id}: the fence disagrees with the stored events"
        );
        stored.insert(id.as_str().to_owned(), n);
        total += n;
    }
    for (id, &highest) in acked {
        let have = stored.get(id).copied().unwrap_or(0);
        assert!(
            have >= highest,
            "{id}: append up to {highest} was acknowledged but only {have} events are stored"
        );
    }

    // The tag index matches the events exactly, in offset order.
    let tagged = collect(store.events_by_tag(TAG.into(), Offset::START, QueryMode::Current)).await;
    assert_eq!(
        tagged.len() as u64,
        total,
        "the tag index disagrees with the events"
    );
    for pair in tagged.windows(2) {
        assert!(
            pair[0].offset < pair[1].offset,
            "tag offsets not increasing"
        );
    }
    let mut last: HashMap<PersistenceId, u64> = HashMap::new();
    for envelope in &tagged {
        let prev = last.insert(envelope.persistence_id.clone(), envelope.event.seq_nr);
        assert_eq!(
            prev.unwrap_or(0) + 1,
            envelope.event.seq_nr,
            "tag stream out of order for {}",
            envelope.persistence_id
        );
    }

    // The store accepts further appends, fenced at what is stored.
    for id in &ids {
        let n = stored[id.as_str()];
        store
            .append(batch(id, n))
            .await
            .expect("append after the crash");
        match store.append(batch(id, n)).await {
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!((expected, actual), (n, n + BATCH), "{id}: conflict values");
            }
            other => panic!("{id}: stale append after the crash returned {other:?}"),
        }
    }
}

async fn collect<T>(
    stream: futures_util::stream::BoxStream<'static, Result<T, StoreError>>,
) -> Vec<T> {
    stream
        .map(|item| item.expect("query after crash"))
        .collect()
        .await
}
