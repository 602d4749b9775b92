//! The read side: a small pool of read connections used from `spawn_blocking`, and the
//! blocking queries run on them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};
use shoal_persistence::store::{
    EventEnvelope, EventRecord, Offset, PersistenceId, SnapshotRecord, StoreError,
};
use tokio::sync::Notify;

use crate::error::store_error;
use crate::schema::{self, decode_tags};

/// Read connections, each used by one blocking task at a time.
///
/// A read takes an idle connection (waiting asynchronously while all are busy), moves it into
/// a task on tokio's blocking pool, and the task puts it back when done. The mutex is held
/// only to pop or push, never across an `.await`.
///
/// Waiting is on a [`Notify`] woken for *every* returned connection, not on a fair queue
/// (such as a semaphore) that hands the connection to the longest waiter: a waiter may be the
/// future of a stream that was polled once and then left alone, and a connection handed to it
/// would be stuck until that stream is polled again, holding back every other reader.
pub(crate) struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    returned: Notify,
    closed: AtomicBool,
}

impl ReaderPool {
    pub(crate) fn new(connections: Vec<Connection>) -> Self {
        Self {
            idle: Mutex::new(connections),
            returned: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on a read connection on tokio's blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let lease = self.lease().await?;
        // The lease moves into the task at once: if the task never runs (runtime shutting
        // down), dropping the closure still returns the connection.
        let task = tokio::task::spawn_blocking(move || f(lease.connection()));
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Unavailable(format!("read task failed: {e}"))),
        }
    }

    async fn lease(self: &Arc<Self>) -> Result<Lease, StoreError> {
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            // Registered before looking, so a connection returned in between wakes us.
            returned.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            if let Some(connection) = self.idle().pop() {
                return Ok(Lease {
                    pool: Arc::clone(self),
                    connection: Some(connection),
                });
            }
            returned.await;
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes every idle connection (busy ones close when their read ends) and refuses
    /// further reads.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle().clear();
        self.returned.notify_waiters();
    }
}

/// A connection taken from the pool; goes back on drop (also when a read panics).
struct Lease {
    pool: Arc<ReaderPool>,
    /// `Some` until dropped.
    connection: Option<Connection>,
}

impl Lease {
    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.pool.closed.load(Ordering::Acquire) {
            return; // the connection closes here
        }
        self.pool.idle().push(connection);
        self.pool.returned.notify_waiters();
    }
}

/// Clamps a `u64` bound to SQLite's signed integers; sequence numbers above `i64::MAX` are
/// never stored.
pub(crate) fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what} {n} stored")))
}

/// Decodes the columns `ordering, seq_nr, manifest, schema_version, payload, tags, writer_id,
/// timestamp_ms` (the first eight of both event queries).
fn event_row(row: &Row<'_>) -> Result<(Offset, EventRecord), StoreError> {
    let ordering: i64 = row.get(0).map_err(store_error)?;
    let seq_nr: i64 = row.get(1).map_err(store_error)?;
    let schema_version: i64 = row.get(3).map_err(store_error)?;
    let tags = match row.get_ref(5).map_err(store_error)? {
        ValueRef::Null => Vec::new(),
        ValueRef::Blob(bytes) => decode_tags(bytes).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "unreadable tags of the event at ordering {ordering}"
            ))
        })?,
        other => {
            return Err(StoreError::Corrupt(format!(
                "tags of the event at ordering {ordering} stored as {:?}",
                other.data_type()
            )));
        }
    };
    let event = EventRecord {
        seq_nr: to_u64(seq_nr, "seq_nr")?,
        manifest: row.get(2).map_err(store_error)?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            StoreError::Corrupt(format!("schema_version {schema_version} out of range"))
        })?,
        payload: row.get(4).map_err(store_error)?,
        tags,
        writer_id: row.get(6).map_err(store_error)?,
        timestamp_ms: row.get(7).map_err(store_error)?,
    };
    Ok((Offset(to_u64(ordering, "ordering")?), event))
}

/// Events of `pid` with `from <= seq_nr <= to`, at most `limit`, ascending.
pub(crate) fn events_by_pid(
    conn: &Connection,
    pid: &PersistenceId,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<(Offset, EventRecord)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(schema::EVENTS_BY_PID)
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params![
            pid.as_str(),
            clamp(from),
            clamp(to),
            clamp(limit as u64)
        ])
        .map_err(store_error)?;
    let mut events = Vec::with_capacity(limit.min(256));
    while let Some(row) = rows.next().map_err(store_error)? {
        events.push(event_row(row)?);
    }
    Ok(events)
}

/// Events carrying `tag` with an ordering above `after`, at most `limit`, in offset order.
pub(crate) fn events_by_tag(
    conn: &Connection,
    tag: &str,
    after: Offset,
    limit: usize,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut stmt = conn
        .prepare_cached(schema::EVENTS_BY_TAG)
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params![tag, clamp(after.0), clamp(limit as u64)])
        .map_err(store_error)?;
    let mut events = Vec::with_capacity(limit.min(256));
    while let Some(row) = rows.next().map_err(store_error)? {
        let (offset, event) = event_row(row)?;
        let pid: String = row.get(8).map_err(store_error)?;
        events.push(EventEnvelope {
            persistence_id: persistence_id(pid)?,
            offset,
            event,
        });
    }
    Ok(events)
}

/// Persistence ids whose first-write position is above `after`, at most `limit`, in that
/// order, with their positions.
pub(crate) fn persistence_ids(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, PersistenceId)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(schema::PERSISTENCE_IDS)
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params![after, clamp(limit as u64)])
        .map_err(store_error)?;
    let mut ids = Vec::with_capacity(limit.min(256));
    while let Some(row) = rows.next().map_err(store_error)? {
        let position: i64 = row.get(0).map_err(store_error)?;
        let pid: String = row.get(1).map_err(store_error)?;
        ids.push((position, persistence_id(pid)?));
    }
    Ok(ids)
}

fn persistence_id(raw: String) -> Result<PersistenceId, StoreError> {
    PersistenceId::new(raw).map_err(|e| StoreError::Corrupt(format!("stored persistence id: {e}")))
}

/// The fence value of `pid` (0 if never written).
pub(crate) fn highest_seq_nr(conn: &Connection, pid: &PersistenceId) -> Result<u64, StoreError> {
    let highest: Option<i64> = conn
        .prepare_cached(schema::HIGHEST)
        .and_then(|mut s| s.query_row([pid.as_str()], |row| row.get(0)).optional())
        .map_err(store_error)?;
    to_u64(highest.unwrap_or(0), "highest_seq_nr")
}

/// The snapshot of `pid` with the highest `seq_nr` in `min..=max`.
pub(crate) fn load_snapshot(
    conn: &Connection,
    pid: &PersistenceId,
    min: u64,
    max: u64,
) -> Result<Option<SnapshotRecord>, StoreError> {
    if min > max || min > i64::MAX as u64 {
        return Ok(None);
    }
    let mut stmt = conn
        .prepare_cached(schema::LOAD_SNAPSHOT)
        .map_err(store_error)?;
    let mut rows = stmt
        .query(params![pid.as_str(), clamp(min), clamp(max)])
        .map_err(store_error)?;
    let Some(row) = rows.next().map_err(store_error)? else {
        return Ok(None);
    };
    let seq_nr: i64 = row.get(0).map_err(store_error)?;
    let schema_version: i64 = row.get(2).map_err(store_error)?;
    Ok(Some(SnapshotRecord {
        persistence_id: pid.clone(),
        seq_nr: to_u64(seq_nr, "snapshot seq_nr")?,
        manifest: row.get(1).map_err(store_error)?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            StoreError::Corrupt(format!(
                "snapshot schema_version {schema_version} out of range"
            ))
        })?,
        payload: row.get(3).map_err(store_error)?,
        timestamp_ms: row.get(4).map_err(store_error)?,
    }))
}

/// The highest ordering stored (0 for none), to start the commit watch.
pub(crate) fn highest_ordering(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(schema::HIGHEST_ORDERING, [], |row| row.get(0))
}
