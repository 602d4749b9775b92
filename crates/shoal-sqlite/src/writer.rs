//! The writer thread: group commit of every write request.
//!
//! One `std::thread` owns the only writing connection. It blocks for the first request, drains
//! whatever else is queued (up to `max_batch_size`), and runs the whole batch in one
//! `BEGIN IMMEDIATE` transaction, each request inside its own `SAVEPOINT` so that a refused or
//! failed request is undone alone. One `COMMIT` (one fsync of the WAL) then makes the whole
//! batch durable, and only after it does any request get its answer. Finally the highest
//! committed ordering is published on a [`watch`] channel, which wakes the live queries.

use rusqlite::{Connection, OptionalExtension, params};
use shoal_persistence::store::{AtomicWrite, PersistenceId, SnapshotRecord, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::store_error;
use crate::schema::{self, decode_tags, encode_tags};

/// Where a request's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A request to the writer thread.
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: Reply,
}

/// What the writer thread is asked to do. Sequence numbers are already checked to fit SQLite's
/// signed 64-bit integers.
pub(crate) enum Op {
    /// A validated, fenced append.
    Append(AtomicWrite),
    /// Delete events up to a sequence number.
    DeleteTo { pid: PersistenceId, to_seq_nr: i64 },
    /// Insert or replace a snapshot.
    SaveSnapshot(SnapshotRecord),
    /// Delete the snapshots in a sequence number range.
    DeleteSnapshots {
        pid: PersistenceId,
        min_seq_nr: i64,
        max_seq_nr: i64,
    },
    /// Finish the current batch, refuse the rest, close the connection, then answer.
    Close,
}

/// The batch's transaction is gone: SQLite rolled it back on its own, or a savepoint could not
/// be opened, released or undone. Nothing of the batch is stored.
struct TransactionLost(rusqlite::Error);

/// Why one request did not apply.
enum OpError {
    /// Refused by the store's rules (conflict, corrupt stored row); answered as is.
    Refused(StoreError),
    /// A statement failed.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sql(e)
    }
}

/// The state of the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Request>,
    committed: watch::Sender<u64>,
    max_batch: usize,
    /// Reused buffer for encoding an event's tags.
    scratch: Vec<u8>,
    /// For logs.
    path: String,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Request>,
        committed: watch::Sender<u64>,
        max_batch: usize,
        path: String,
    ) -> Self {
        Self {
            conn,
            rx,
            committed,
            max_batch,
            scratch: Vec::new(),
            path,
        }
    }

    /// The thread's body: runs until every sender is gone or [`Op::Close`] arrives.
    pub(crate) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut answers = Vec::with_capacity(self.max_batch);
        let mut close = None;
        while close.is_none() {
            if self.rx.blocking_recv_many(&mut batch, self.max_batch) == 0 {
                break; // every store handle is gone
            }
            close = self.commit_batch(&mut batch, &mut answers);
        }
        let Writer {
            conn,
            mut rx,
            path,
            committed,
            ..
        } = self;
        // Live queries end once the commit watch is gone.
        drop(committed);
        rx.close();
        while let Some(request) = rx.blocking_recv() {
            let _ = request.reply.send(Err(StoreError::Closed));
        }
        let closed = conn.close().map_err(|(_, e)| {
            tracing::warn!(path, error = %e, "closing the writer connection failed");
            store_error(e)
        });
        tracing::debug!(path, "writer thread stopped");
        if let Some(reply) = close {
            let _ = reply.send(closed);
        }
    }

    /// Runs one batch in one transaction and answers every request of it. Returns the reply of
    /// a close request, if the batch held one.
    fn commit_batch(
        &mut self,
        batch: &mut Vec<Request>,
        answers: &mut Vec<(Reply, Result<(), StoreError>)>,
    ) -> Option<Reply> {
        let mut close = None;
        if let Err(e) = exec(&self.conn, schema::BEGIN) {
            tracing::warn!(path = self.path, error = %e, "cannot begin a write transaction");
            // Should a failed rollback have left a transaction open, end it so that the next
            // batch can begin.
            self.rollback();
            let err = StoreError::Unavailable(format!("cannot begin a write transaction: {e}"));
            for request in batch.drain(..) {
                match request.op {
                    Op::Close => close = Some(request.reply),
                    _ => {
                        let _ = request.reply.send(Err(err.clone()));
                    }
                }
            }
            return close;
        }

        let mut max_ordering = 0i64;
        let mut lost = None;
        for request in batch.drain(..) {
            let outcome = match request.op {
                Op::Close => {
                    close = Some(request.reply);
                    continue;
                }
                // Replaced by the batch's error below.
                _ if lost.is_some() => Ok(()),
                op => match self.apply(&op, &mut max_ordering) {
                    Ok(outcome) => outcome,
                    Err(TransactionLost(e)) => {
                        lost = Some(e);
                        Ok(())
                    }
                },
            };
            answers.push((request.reply, outcome));
        }

        let failure = match lost {
            Some(e) => {
                self.rollback();
                Some(StoreError::Unavailable(format!(
                    "write transaction aborted, none of it was stored: {e}"
                )))
            }
            None => match exec(&self.conn, schema::COMMIT) {
                Ok(()) => None,
                // Still in the transaction: the commit did not happen (and cannot now).
                Err(e) if !self.conn.is_autocommit() => {
                    self.rollback();
                    Some(StoreError::Unavailable(format!(
                        "commit failed and was rolled back, nothing was stored: {e}"
                    )))
                }
                // The transaction ended with an error: it may have reached the WAL or not.
                Err(e) => Some(StoreError::Uncertain(format!(
                    "commit failed; the writes may or may not be stored: {e}"
                ))),
            },
        };

        match failure {
            None => {
                if max_ordering > 0 {
                    let max = max_ordering as u64;
                    self.committed.send_if_modified(|published| {
                        let newer = max > *published;
                        if newer {
                            *published = max;
                        }
                        newer
                    });
                }
                for (reply, outcome) in answers.drain(..) {
                    let _ = reply.send(outcome);
                }
            }
            Some(err) => {
                tracing::warn!(
                    path = self.path,
                    requests = answers.len(),
                    error = %err,
                    "write batch failed"
                );
                for (reply, outcome) in answers.drain(..) {
                    let outcome = match outcome {
                        // Refused before anything was attempted: still true.
                        Err(rejected @ StoreError::Rejected(_)) => Err(rejected),
                        _ => Err(err.clone()),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
        close
    }

    /// Applies one request inside its own savepoint. `Ok(Err(_))` means this request was
    /// refused or failed and is undone, while the batch goes on.
    fn apply(
        &mut self,
        op: &Op,
        max_ordering: &mut i64,
    ) -> Result<Result<(), StoreError>, TransactionLost> {
        let conn = &self.conn;
        exec(conn, schema::SAVEPOINT).map_err(TransactionLost)?;
        let result = match op {
            Op::Append(write) => append(conn, write, &mut self.scratch).map(|ordering| {
                *max_ordering = ordering.max(*max_ordering);
            }),
            Op::DeleteTo { pid, to_seq_nr } => delete_to(conn, pid, *to_seq_nr),
            Op::SaveSnapshot(snapshot) => save_snapshot(conn, snapshot),
            Op::DeleteSnapshots {
                pid,
                min_seq_nr,
                max_seq_nr,
            } => conn
                .prepare_cached(schema::DELETE_SNAPSHOTS)
                .and_then(|mut s| s.execute(params![pid.as_str(), min_seq_nr, max_seq_nr]))
                .map(drop)
                .map_err(OpError::Sql),
            Op::Close => Ok(()),
        };
        match result {
            Ok(()) => {
                exec(conn, schema::RELEASE).map_err(TransactionLost)?;
                Ok(Ok(()))
            }
            Err(e) => {
                let err = match e {
                    OpError::Refused(err) => err,
                    // SQLite rolled back the whole transaction (it may on I/O errors, a full
                    // disk, or lack of memory): the batch is gone.
                    OpError::Sql(e) if conn.is_autocommit() => return Err(TransactionLost(e)),
                    OpError::Sql(e) => {
                        tracing::warn!(path = self.path, error = %e, "write request failed");
                        store_error(e)
                    }
                };
                exec(conn, schema::ROLLBACK_TO)
                    .and_then(|()| exec(conn, schema::RELEASE))
                    .map_err(TransactionLost)?;
                Ok(Err(err))
            }
        }
    }

    fn rollback(&self) {
        if self.conn.is_autocommit() {
            return; // SQLite already rolled back
        }
        if let Err(e) = exec(&self.conn, schema::ROLLBACK) {
            tracing::error!(path = self.path, error = %e, "rolling back a failed batch failed");
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The fence, then the events and their tags. Returns the ordering of the last event.
fn append(conn: &Connection, write: &AtomicWrite, scratch: &mut Vec<u8>) -> Result<i64, OpError> {
    let pid = write.persistence_id.as_str();
    let expected = write.expected_seq_nr as i64;
    let last = write.last_seq_nr() as i64;
    let fenced = if expected == 0 {
        conn.prepare_cached(schema::FENCE_NEW)?
            .execute(params![pid, last])?
    } else {
        conn.prepare_cached(schema::FENCE_ADVANCE)?
            .execute(params![pid, expected, last])?
    };
    if fenced != 1 {
        let actual: Option<i64> = conn
            .prepare_cached(schema::HIGHEST)?
            .query_row([pid], |row| row.get(0))
            .optional()?;
        return Err(OpError::Refused(StoreError::Conflict {
            persistence_id: write.persistence_id.clone(),
            expected: write.expected_seq_nr,
            actual: actual.unwrap_or(0) as u64,
        }));
    }

    let mut insert = conn.prepare_cached(schema::INSERT_EVENT)?;
    let mut ordering = 0;
    for event in &write.events {
        let tags = encode_tags(&event.tags, scratch);
        insert.execute(params![
            pid,
            event.seq_nr as i64,
            event.manifest,
            event.schema_version,
            event.payload,
            tags,
            event.writer_id,
            event.timestamp_ms,
        ])?;
        ordering = conn.last_insert_rowid();
        if !event.tags.is_empty() {
            let mut insert_tag = conn.prepare_cached(schema::INSERT_TAG)?;
            for tag in &event.tags {
                insert_tag.execute(params![tag, ordering])?;
            }
        }
    }
    Ok(ordering)
}

/// Deletes the events of `pid` up to `to_seq_nr` and their tag index entries. The fence row
/// stays.
fn delete_to(conn: &Connection, pid: &PersistenceId, to_seq_nr: i64) -> Result<(), OpError> {
    {
        let mut tagged = conn.prepare_cached(schema::TAGGED_TO_DELETE)?;
        let mut delete_tag = conn.prepare_cached(schema::DELETE_TAG)?;
        let mut rows = tagged.query(params![pid.as_str(), to_seq_nr])?;
        while let Some(row) = rows.next()? {
            let ordering: i64 = row.get(0)?;
            let tags = row
                .get_ref(1)?
                .as_blob()
                .ok()
                .and_then(decode_tags)
                .ok_or_else(|| {
                    OpError::Refused(StoreError::Corrupt(format!(
                        "tags of the event at ordering {ordering} of {pid} are unreadable"
                    )))
                })?;
            for tag in &tags {
                delete_tag.execute(params![tag, ordering])?;
            }
        }
    }
    conn.prepare_cached(schema::DELETE_EVENTS)?
        .execute(params![pid.as_str(), to_seq_nr])?;
    Ok(())
}

fn save_snapshot(conn: &Connection, snapshot: &SnapshotRecord) -> Result<(), OpError> {
    conn.prepare_cached(schema::SAVE_SNAPSHOT)?
        .execute(params![
            snapshot.persistence_id.as_str(),
            snapshot.seq_nr as i64,
            snapshot.manifest,
            snapshot.schema_version,
            snapshot.payload,
            snapshot.timestamp_ms,
        ])?;
    Ok(())
}
