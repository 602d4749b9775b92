//! Group commit: the writer tasks that turn queued appends into one transaction per batch.
//!
//! Each writer task owns one connection. It takes a batch from the shared queue (everything
//! queued, up to the limits, at most one append per persistence id) and sends, pipelined in
//! one round trip:
//!
//! ```text
//! BEGIN
//! SELECT pg_advisory_xact_lock(…)        -- the ordering lock, held until COMMIT
//! WITH … one statement for the whole batch …
//! COMMIT
//! ```
//!
//! The batch statement checks every append's fence, assigns orderings, inserts the events of
//! the appends that passed and their tag rows, and notifies listeners (see
//! [`crate::schema`]). A refused append (a conflict) costs only its own events; the others
//! commit. Only after `COMMIT` returns is any append answered.
//!
//! If the batch fails on the server (nothing committed), it is retried once with every
//! payload as `bytea` if the server refused data, and otherwise split into single appends,
//! so that one bad append fails alone. A connection that breaks after the `COMMIT` was sent
//! leaves the outcome unknown: every append of the batch gets [`StoreError::Uncertain`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shoal_persistence::store::{AtomicWrite, PersistenceId, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::error::{self, commit_outcome_unknown, describe, is_connection_error, is_db_error};
use crate::schema::Sql;

/// A validated append waiting for a writer.
pub(crate) struct Request {
    pub(crate) write: AtomicWrite,
    /// Per event: whether its payload goes to `jsonb`.
    pub(crate) json: Vec<bool>,
    /// Per event: its tags as an array literal.
    pub(crate) tags: Vec<String>,
    /// Payload bytes of all events, for the batch limit.
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What every writer task shares.
pub(crate) struct Writers {
    queue: Mutex<Queue>,
    pg: tokio_postgres::Config,
    sql: Arc<Sql>,
    /// Highest committed ordering known, published after each commit (wakes live queries).
    committed: Arc<watch::Sender<u64>>,
    max_events: usize,
    max_bytes: usize,
    write_timeout: Duration,
}

struct Queue {
    rx: mpsc::Receiver<Request>,
    /// Taken from the channel but left for a later batch: a second append to a persistence
    /// id already in the batch, or an append that did not fit.
    deferred: VecDeque<Request>,
}

impl Writers {
    pub(crate) fn new(
        rx: mpsc::Receiver<Request>,
        pg: tokio_postgres::Config,
        sql: Arc<Sql>,
        committed: Arc<watch::Sender<u64>>,
        max_events: usize,
        max_bytes: usize,
        write_timeout: Duration,
    ) -> Self {
        Self {
            queue: Mutex::new(Queue {
                rx,
                deferred: VecDeque::new(),
            }),
            pg,
            sql,
            committed,
            max_events,
            max_bytes,
            write_timeout,
        }
    }

    /// The next batch: deferred appends first, then whatever is queued, without waiting once
    /// the batch has one append. `None` once the channel is closed and drained.
    async fn next_batch(&self) -> Option<Vec<Request>> {
        let mut queue = self.queue.lock().await;
        let mut batch = Batch::new(self.max_events, self.max_bytes);
        let mut deferred = std::mem::take(&mut queue.deferred);
        while let Some(request) = deferred.pop_front() {
            if let Err(request) = batch.add(request) {
                queue.deferred.push_back(request);
            }
        }
        if batch.requests.is_empty() {
            let request = queue.rx.recv().await?;
            if let Err(request) = batch.add(request) {
                queue.deferred.push_back(request);
            }
        }
        while !batch.full() {
            let Ok(request) = queue.rx.try_recv() else {
                break;
            };
            if let Err(request) = batch.add(request) {
                queue.deferred.push_back(request);
            }
        }
        Some(batch.requests)
    }
}

struct Batch {
    requests: Vec<Request>,
    pids: HashSet<PersistenceId>,
    events: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Batch {
    fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            requests: Vec::new(),
            pids: HashSet::new(),
            events: 0,
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    fn full(&self) -> bool {
        self.events >= self.max_events || self.bytes >= self.max_bytes
    }

    /// Adds `request` unless its persistence id is already in the batch or it does not fit
    /// (an empty batch takes anything).
    fn add(&mut self, request: Request) -> Result<(), Request> {
        let events = request.write.events.len();
        let fits = self.requests.is_empty()
            || (self.events + events <= self.max_events
                && self.bytes + request.bytes <= self.max_bytes);
        if !fits || self.pids.contains(&request.write.persistence_id) {
            return Err(request);
        }
        self.pids.insert(request.write.persistence_id.clone());
        self.events += events;
        self.bytes += request.bytes;
        self.requests.push(request);
        Ok(())
    }
}

/// One writer task: runs until the queue is closed and drained.
pub(crate) async fn run(writers: Arc<Writers>, id: usize) {
    let mut task = WriterTask {
        writers: Arc::clone(&writers),
        conn: None,
        id,
    };
    while let Some(batch) = writers.next_batch().await {
        let outcomes = task.commit(&batch).await;
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            let _ = request.reply.send(outcome);
        }
    }
    tracing::debug!(writer = id, "PostgreSQL writer stopped");
}

struct WriterTask {
    writers: Arc<Writers>,
    conn: Option<WriterConn>,
    id: usize,
}

/// A writer's connection and its prepared statements.
struct WriterConn {
    client: Client,
    begin: Statement,
    lock: Statement,
    batch: Statement,
    commit: Statement,
}

/// Why an attempt at committing a batch failed.
enum Failure {
    /// The server refused it; nothing was committed.
    Refused(tokio_postgres::Error),
    /// The outcome is unknown.
    Uncertain(String),
    /// No connection could be had; nothing was sent.
    Unavailable(StoreError),
    /// The statements ran but certainly stored nothing, for a reason other than a server
    /// error (the connection is in an unexpected state).
    NotApplied(String),
}

impl WriterTask {
    /// Commits `batch` and returns every append's outcome, in order.
    async fn commit(&mut self, batch: &[Request]) -> Vec<Result<(), StoreError>> {
        let all: Vec<&Request> = batch.iter().collect();
        let failure = match self.attempt_with_fallback(&all).await {
            Ok(outcomes) => return outcomes,
            Err(failure) => failure,
        };
        let error = match failure {
            Failure::Refused(e) if batch.len() > 1 && !is_connection_error(&e) => {
                // Find the culprit: every append on its own.
                tracing::debug!(writer = self.id, error = %describe(&e), "batch refused; retrying its appends one by one");
                let mut outcomes = Vec::with_capacity(batch.len());
                for request in batch {
                    outcomes.push(match self.attempt_with_fallback(&[request]).await {
                        Ok(mut one) => one.pop().unwrap_or(Ok(())),
                        Err(failure) => Err(self.failure_error(failure)),
                    });
                }
                return outcomes;
            }
            failure => self.failure_error(failure),
        };
        tracing::warn!(writer = self.id, appends = batch.len(), error = %error, "append batch failed");
        vec![Err(error); batch.len()]
    }

    fn failure_error(&self, failure: Failure) -> StoreError {
        match failure {
            Failure::Refused(e) => error::store_error(&e),
            Failure::Uncertain(why) => StoreError::Uncertain(why),
            Failure::Unavailable(e) => e,
            Failure::NotApplied(why) => StoreError::Unavailable(why),
        }
    }

    /// One attempt, and a second with every payload as `bytea` if the server refused data
    /// (a JSON payload `jsonb` would not take).
    async fn attempt_with_fallback(
        &mut self,
        requests: &[&Request],
    ) -> Result<Vec<Result<(), StoreError>>, Failure> {
        match self.attempt(requests, false).await {
            Err(Failure::Refused(e))
                if error::class(&e) == Some("22")
                    && requests.iter().any(|r| r.json.contains(&true)) =>
            {
                tracing::debug!(writer = self.id, error = %describe(&e), "retrying a batch with payloads as bytea");
                self.attempt(requests, true).await
            }
            other => other,
        }
    }

    async fn attempt(
        &mut self,
        requests: &[&Request],
        bytea_only: bool,
    ) -> Result<Vec<Result<(), StoreError>>, Failure> {
        let writers = Arc::clone(&self.writers);
        let conn = self.connection().await.map_err(Failure::Unavailable)?;
        let outcome = tokio::time::timeout(
            writers.write_timeout,
            commit_batch(conn, &writers.sql, requests, bytea_only),
        )
        .await;
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(Failure::Uncertain(format!(
                "no answer to the batch commit within {:?}",
                writers.write_timeout
            ))),
        };
        match &result {
            Ok((_, max_ordering)) => {
                let max = *max_ordering;
                writers.committed.send_if_modified(|known| {
                    let newer = max > *known;
                    if newer {
                        *known = max;
                    }
                    newer
                });
            }
            Err(Failure::Refused(e)) if !is_connection_error(e) => {}
            Err(_) => self.conn = None, // broken, or in an unknown state
        }
        result.map(|(outcomes, _)| outcomes)
    }

    /// The connection, (re)connecting if there is none or it broke.
    async fn connection(&mut self) -> Result<&WriterConn, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(&self.writers.pg, &self.writers.sql).await?);
            tracing::debug!(writer = self.id, "PostgreSQL writer connected");
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }
}

async fn connect(pg: &tokio_postgres::Config, sql: &Sql) -> Result<WriterConn, StoreError> {
    let unavailable = |e: tokio_postgres::Error| StoreError::Unavailable(describe(&e));
    let (client, connection) = pg.connect(NoTls).await.map_err(unavailable)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL writer connection ended");
        }
    });
    let (begin, lock, batch, commit) = tokio::join!(
        client.prepare("BEGIN"),
        client.prepare(&sql.lock),
        client.prepare(&sql.append_batch),
        client.prepare("COMMIT"),
    );
    Ok(WriterConn {
        begin: begin.map_err(unavailable)?,
        lock: lock.map_err(unavailable)?,
        batch: batch.map_err(unavailable)?,
        commit: commit.map_err(unavailable)?,
        client,
    })
}

/// Sends the batch transaction in one round trip and reads the outcome. Returns each
/// append's outcome and the highest ordering the batch reserved.
async fn commit_batch(
    conn: &WriterConn,
    sql: &Sql,
    requests: &[&Request],
    bytea_only: bool,
) -> Result<(Vec<Result<(), StoreError>>, u64), Failure> {
    let events: usize = requests.iter().map(|r| r.write.events.len()).sum();
    let mut pids = Vec::with_capacity(requests.len());
    let mut expected = Vec::with_capacity(requests.len());
    let mut last = Vec::with_capacity(requests.len());
    let mut first_ev = Vec::with_capacity(requests.len());
    let mut ev_req: Vec<i32> = Vec::with_capacity(events);
    let mut ev_pids = Vec::with_capacity(events);
    let mut seq_nrs = Vec::with_capacity(events);
    let mut manifests = Vec::with_capacity(events);
    let mut versions = Vec::with_capacity(events);
    let mut json: Vec<Option<&str>> = Vec::with_capacity(events);
    let mut bytes: Vec<Option<&[u8]>> = Vec::with_capacity(events);
    let mut tags = Vec::with_capacity(events);
    let mut writer_ids = Vec::with_capacity(events);
    let mut timestamps = Vec::with_capacity(events);
    for (i, request) in requests.iter().enumerate() {
        let write = &request.write;
        pids.push(write.persistence_id.as_str());
        // Validated to fit in i64 before queueing.
        expected.push(write.expected_seq_nr as i64);
        last.push(write.last_seq_nr() as i64);
        first_ev.push(ev_req.len() as i64);
        for (k, event) in write.events.iter().enumerate() {
            ev_req.push(i as i32 + 1);
            ev_pids.push(write.persistence_id.as_str());
            seq_nrs.push(event.seq_nr as i64);
            manifests.push(event.manifest.as_str());
            versions.push(i64::from(event.schema_version));
            let text = (!bytea_only && request.json[k])
                .then(|| std::str::from_utf8(&event.payload).ok())
                .flatten();
            json.push(text);
            bytes.push(text.is_none().then_some(event.payload.as_slice()));
            tags.push(request.tags[k].as_str());
            writer_ids.push(event.writer_id.as_str());
            timestamps.push(event.timestamp_ms);
        }
    }
    let events = events as i64;
    let params: [&(dyn ToSql + Sync); 16] = [
        &pids,
        &expected,
        &last,
        &first_ev,
        &events,
        &ev_req,
        &ev_pids,
        &seq_nrs,
        &manifests,
        &versions,
        &json,
        &bytes,
        &tags,
        &writer_ids,
        &timestamps,
        &sql.channel,
    ];

    let client = &conn.client;
    // Pipelined: all four are sent before the first answer is read.
    let (begin, lock, rows, commit) = tokio::join!(
        client.execute(&conn.begin, &[]),
        client.execute(&conn.lock, &[]),
        client.query(&conn.batch, &params),
        client.execute(&conn.commit, &[]),
    );

    // A server error before COMMIT aborted the transaction (or, for BEGIN, left the batch
    // statement outside it, where its guard makes it do nothing), and the COMMIT then rolled
    // it back: nothing is stored. A broken connection before the COMMIT's answer leaves the
    // outcome unknown, since the COMMIT was already sent.
    let mut server_error = None;
    let mut connection_error = None;
    let mut note = |e: tokio_postgres::Error| {
        if is_db_error(&e) {
            server_error.get_or_insert(e);
        } else {
            connection_error.get_or_insert(e);
        }
    };
    if let Err(e) = begin {
        note(e);
    }
    if let Err(e) = lock {
        note(e);
    }
    let rows = rows.map_err(&mut note).ok();
    if let Some(e) = server_error {
        return Err(Failure::Refused(e));
    }
    let uncertain = |e: &tokio_postgres::Error| {
        Failure::Uncertain(format!(
            "the connection failed while the batch was committing; it may or may not be \
             stored: {}",
            describe(e)
        ))
    };
    if let Some(e) = connection_error {
        return Err(uncertain(&e));
    }
    match commit {
        Ok(_) => {}
        Err(e) if commit_outcome_unknown(&e) => return Err(uncertain(&e)),
        Err(e) => return Err(Failure::Refused(e)),
    }
    let rows = rows.unwrap_or_default();
    if rows.is_empty() {
        return Err(Failure::NotApplied(
            "the batch statement ran outside its transaction and did nothing".into(),
        ));
    }

    let mut outcomes = vec![Ok(()); requests.len()];
    let mut base = None;
    for row in &rows {
        let decode = || -> Result<(usize, bool, i64, i64), tokio_postgres::Error> {
            Ok((
                row.try_get::<_, i64>(0)? as usize,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ))
        };
        let (i, ok, stored, b) = decode().map_err(|e| {
            Failure::Uncertain(format!("unreadable answer to a committed batch: {e}"))
        })?;
        base = Some(b);
        let Some(request) = i.checked_sub(1).and_then(|i| requests.get(i)) else {
            return Err(Failure::Uncertain(format!(
                "committed batch answered for unknown append {i}"
            )));
        };
        if !ok {
            outcomes[i - 1] = Err(StoreError::Conflict {
                persistence_id: request.write.persistence_id.clone(),
                expected: request.write.expected_seq_nr,
                actual: stored.max(0) as u64,
            });
        }
    }
    if rows.len() != requests.len() {
        return Err(Failure::Uncertain(format!(
            "committed batch of {} appends answered {} rows",
            requests.len(),
            rows.len()
        )));
    }
    let max_ordering = base.map_or(0, |b| (b + events).max(0) as u64);
    Ok((outcomes, max_ordering))
}
