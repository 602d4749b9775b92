//! [`SqliteStore`]: the handle, and its implementation of the storage traits.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, EventStream, Journal, Offset, PersistenceId,
    PersistenceIdStream, QueryMode, SnapshotRecord, SnapshotSelection, SnapshotStore, StoreError,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::SqliteError;
use crate::options::SqliteOptions;
use crate::query::{self, ByPersistenceId, ByTag, PersistenceIds};
use crate::reader::{self, ReaderPool, clamp};
use crate::schema;
use crate::writer::{Op, Request, Writer};

/// What every clone of a [`SqliteStore`] (and every stream of it) shares.
pub(crate) struct Shared {
    requests: mpsc::Sender<Request>,
    /// Highest committed ordering, published by the writer after each commit.
    pub(crate) committed: watch::Receiver<u64>,
    pub(crate) readers: Arc<ReaderPool>,
    pub(crate) query_page_size: usize,
    closed: AtomicBool,
    options: SqliteOptions,
}

/// The embedded SQLite store: a [`Journal`], [`SnapshotStore`] and [`EventQuery`] in one file.
///
/// Cheap to clone (one `Arc`); every clone is the same store. See the [crate docs](crate) for
/// how it works and what it promises.
///
/// The writer thread and the connections live as long as any clone or any query stream of the
/// store; [`close`](Self::close) stops them early.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.options.path)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the database file at `path`, with default
    /// [`SqliteOptions`].
    ///
    /// Blocking: it opens the file, lets SQLite recover the WAL, creates or checks the schema
    /// and starts the writer thread, typically in a few milliseconds. It needs no runtime; in
    /// async code that must not block, call it from `tokio::task::spawn_blocking`. The
    /// store's operations need a Tokio runtime (reads run on its blocking pool).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(SqliteOptions::new(path))
    }

    /// Opens (creating if needed) the store described by `options`. Blocking, like
    /// [`open`](Self::open).
    ///
    /// Fails with [`SqliteError::UnsupportedSchemaVersion`] for a database written by a newer
    /// shoal-sqlite, and with [`SqliteError::ForeignDatabase`] for another application's
    /// SQLite file; neither is modified.
    pub fn open_with(options: SqliteOptions) -> Result<Self, SqliteError> {
        options.validate()?;
        let writer_conn = schema::open_writer(&options)?;
        let highest =
            reader::highest_ordering(&writer_conn).map_err(|source| SqliteError::Sqlite {
                path: options.path.clone(),
                context: "reading the highest ordering",
                source,
            })?;
        let readers = (0..options.read_connections)
            .map(|_| schema::open_reader(&options))
            .collect::<Result<Vec<_>, _>>()?;

        let (requests, requests_rx) = mpsc::channel(options.queue_capacity);
        let (committed_tx, committed) = watch::channel(u64::try_from(highest).unwrap_or(0));
        let writer = Writer::new(
            writer_conn,
            requests_rx,
            committed_tx,
            options.max_batch_size,
            options.path.display().to_string(),
        );
        std::thread::Builder::new()
            .name("shoal-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(SqliteError::Thread)?;
        tracing::debug!(path = %options.path.display(), "opened SQLite store");

        Ok(Self {
            shared: Arc::new(Shared {
                requests,
                committed,
                readers: Arc::new(ReaderPool::new(readers)),
                query_page_size: options.query_page_size,
                closed: AtomicBool::new(false),
                options,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.options.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.shared.options
    }

    /// Closes the store for every clone: requests already queued are still committed and
    /// answered, later ones fail with [`StoreError::Closed`], live query streams end with
    /// `Closed`, and the connections are closed. Returns once the writer connection is closed.
    /// Closing twice is harmless.
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.readers.close();
        let (reply, answer) = oneshot::channel();
        if self
            .shared
            .requests
            .send(Request {
                op: Op::Close,
                reply,
            })
            .await
            .is_err()
        {
            return Ok(()); // the writer thread is already gone
        }
        answer.await.unwrap_or(Ok(()))
    }

    /// Sends `op` to the writer thread and waits for its outcome.
    ///
    /// Dropping the returned future after the request was queued does not withdraw it: it may
    /// still be committed.
    async fn write(&self, op: Op) -> Result<(), StoreError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        if self
            .shared
            .requests
            .send(Request { op, reply })
            .await
            .is_err()
        {
            return Err(self.writer_gone());
        }
        match answer.await {
            Ok(outcome) => outcome,
            // The writer thread died (a panic) with this request in its batch.
            Err(_) => Err(StoreError::Uncertain(
                "the SQLite writer thread stopped".into(),
            )),
        }
    }

    fn writer_gone(&self) -> StoreError {
        if self.shared.closed.load(Ordering::Acquire) {
            StoreError::Closed
        } else {
            StoreError::Unavailable("the SQLite writer thread stopped".into())
        }
    }
}

/// [`AtomicWrite::validate`], and sequence numbers that fit SQLite's signed integers.
fn check_append(write: &AtomicWrite) -> Result<(), StoreError> {
    write.validate()?;
    if write.last_seq_nr() > i64::MAX as u64 {
        return Err(StoreError::Rejected(format!(
            "write to {} goes beyond the highest sequence number SQLite can store ({})",
            write.persistence_id,
            i64::MAX
        )));
    }
    Ok(())
}

impl Journal for SqliteStore {
    fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            check_append(&write)?;
            self.write(Op::Append(write)).await
        }
        .boxed()
    }

    fn replay(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        async move {
            if max == 0 || from_seq_nr > to_seq_nr {
                return Ok(Vec::new());
            }
            self.shared
                .readers
                .run(move |conn| {
                    let rows = reader::events_by_pid(conn, &pid, from_seq_nr, to_seq_nr, max)?;
                    Ok(rows.into_iter().map(|(_, event)| event).collect())
                })
                .await
        }
        .boxed()
    }

    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            self.shared
                .readers
                .run(move |conn| reader::highest_seq_nr(conn, &pid))
                .await
        }
        .boxed()
    }

    fn delete_to(
        &self,
        pid: PersistenceId,
        to_seq_nr: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if to_seq_nr == 0 {
                return Ok(());
            }
            self.write(Op::DeleteTo {
                pid,
                to_seq_nr: clamp(to_seq_nr),
            })
            .await
        }
        .boxed()
    }
}

impl SnapshotStore for SqliteStore {
    fn save(&self, snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if snapshot.seq_nr > i64::MAX as u64 {
                return Err(StoreError::Rejected(format!(
                    "snapshot of {} at seq_nr {} is beyond what SQLite can store",
                    snapshot.persistence_id, snapshot.seq_nr
                )));
            }
            self.write(Op::SaveSnapshot(snapshot)).await
        }
        .boxed()
    }

    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        async move {
            self.shared
                .readers
                .run(move |conn| {
                    reader::load_snapshot(conn, &pid, selection.min_seq_nr, selection.max_seq_nr)
                })
                .await
        }
        .boxed()
    }

    fn delete(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if selection.min_seq_nr > selection.max_seq_nr || selection.min_seq_nr > i64::MAX as u64
            {
                return Ok(());
            }
            self.write(Op::DeleteSnapshots {
                pid,
                min_seq_nr: clamp(selection.min_seq_nr),
                max_seq_nr: clamp(selection.max_seq_nr),
            })
            .await
        }
        .boxed()
    }
}

impl EventQuery for SqliteStore {
    fn events_by_persistence_id(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        mode: QueryMode,
    ) -> EventStream {
        let query = ByPersistenceId {
            pid,
            from_seq_nr: from_seq_nr.max(1),
            to_seq_nr,
        };
        query::paged(Arc::clone(&self.shared), query, mode)
    }

    fn events_by_tag(&self, tag: String, after: Offset, mode: QueryMode) -> EventStream {
        query::paged(Arc::clone(&self.shared), ByTag { tag, after }, mode)
    }

    fn persistence_ids(&self, mode: QueryMode) -> PersistenceIdStream {
        query::paged(Arc::clone(&self.shared), PersistenceIds { after: 0 }, mode)
    }
}
