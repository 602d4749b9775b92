//! [`PostgresStore`]: the handle, and its implementation of the storage traits.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use shoal_persistence::store::{
    AtomicWrite, EventQuery, EventRecord, EventStream, Journal, Offset, PersistenceId,
    PersistenceIdStream, QueryMode, SnapshotRecord, SnapshotSelection, SnapshotStore, StoreError,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::config::{PayloadStorage, PostgresConfig};
use crate::error::{self, PostgresError, pool_error, read_error};
use crate::listener;
use crate::payload::{is_storable_json, tags_literal};
use crate::query::{self, ByPersistenceId, ByTag, PersistenceIds, clamp, event_row};
use crate::schema::{self, Sql};
use crate::writer::{self, Request, Writers};

/// What every clone of a [`PostgresStore`] (and every stream of it) shares.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) sql: Arc<Sql>,
    /// Highest committed ordering known; live streams wait on it.
    pub(crate) committed: Arc<watch::Sender<u64>>,
    /// Keeps the watch open while the store exists, even with no stream.
    _committed_rx: watch::Receiver<u64>,
    pub(crate) page_size: usize,
    pub(crate) poll_interval: Duration,
    /// Where the store's tasks (writers, listener, page fetches) run.
    pub(crate) runtime: tokio::runtime::Handle,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Dropping (or firing) it stops the listener.
    listener_stop: Mutex<Option<oneshot::Sender<()>>>,
    closed: AtomicBool,
    config: PostgresConfig,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The PostgreSQL store: a [`Journal`], [`SnapshotStore`] and [`EventQuery`] in one schema of
/// a database that every node of a cluster shares.
///
/// Cheap to clone (one `Arc`); every clone is the same store. See the [crate docs](crate) for
/// how it works and what it promises. Its background tasks (writers, listener) run on the
/// Tokio runtime it was connected on, as long as any clone or query stream of it exists;
/// [`close`](Self::close) stops them early.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.shared.config.schema)
            .field("closed", &self.shared.is_closed())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with the default [`PostgresConfig`] for `url`.
    pub async fn connect_url(url: &str) -> Result<Self, PostgresError> {
        Self::connect(PostgresConfig::new(url)).await
    }

    /// Connects, creates (if configured) and checks the schema, and starts the writer and
    /// listener tasks on the current Tokio runtime.
    ///
    /// Fails if the database cannot be reached, if `create_schema` is off and the tables are
    /// missing ([`PostgresError::MissingSchema`]), or if the schema was created by a newer
    /// version ([`PostgresError::UnsupportedSchemaVersion`]).
    pub async fn connect(config: PostgresConfig) -> Result<Self, PostgresError> {
        let pg = config.validate()?;
        let (client, connection) =
            pg.connect(NoTls)
                .await
                .map_err(|source| PostgresError::Postgres {
                    context: "connecting",
                    source,
                })?;
        let setup = tokio::spawn(connection);
        let prepared = async {
            let objid = schema::prepare(&client, &config.schema, config.create_schema).await?;
            let sql = Sql::new(&config.schema, objid, config.query_page_size);
            let last: i64 = client
                .query_one(&sql.last_ordering, &[])
                .await
                .map_err(|source| PostgresError::Postgres {
                    context: "reading the last ordering",
                    source,
                })?
                .get(0);
            Ok::<_, PostgresError>((sql, last))
        }
        .await;
        drop(client);
        let _ = setup.await;
        let (sql, last) = prepared?;
        let sql = Arc::new(sql);

        // The pool runs only the store's reads and small writes, all of which want plain
        // index scans in index order. A bitmap scan loses that order: with statistics that
        // lag behind a growing table, the planner would pick one plus a sort of every later
        // row for each page of a tag query, which makes catching up quadratic.
        let mut pool_pg = pg.clone();
        let options = format!(
            "{} -c enable_bitmapscan=off",
            pool_pg.get_options().unwrap_or_default()
        );
        pool_pg.options(&options);
        let manager = Manager::from_config(
            pool_pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.write_timeout))
            .build()
            .map_err(|e| PostgresError::InvalidConfig(format!("connection pool: {e}")))?;

        let (committed_tx, committed_rx) = watch::channel(last.max(0) as u64);
        let committed = Arc::new(committed_tx);
        let (requests, requests_rx) = mpsc::channel(config.queue_capacity);
        // A writer holds the cluster-wide ordering lock from its lock statement to its
        // COMMIT, all sent at once. Should its client stall while sending a large batch (a
        // pause, a partition), the server ends the session instead of holding the lock until
        // TCP notices.
        let mut writer_pg = pg.clone();
        let idle_ms = config
            .write_timeout
            .as_millis()
            .clamp(1_000, i32::MAX as u128);
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={idle_ms}",
            writer_pg.get_options().unwrap_or_default()
        );
        writer_pg.options(&options);
        let writers = Arc::new(Writers::new(
            requests_rx,
            writer_pg,
            Arc::clone(&sql),
            Arc::clone(&committed),
            config.max_batch_events,
            config.max_batch_bytes,
            config.write_timeout,
        ));
        let writer_tasks = (0..config.writer_connections)
            .map(|id| tokio::spawn(writer::run(Arc::clone(&writers), id)))
            .collect();
        let (listener_stop, stop_rx) = oneshot::channel();
        tokio::spawn(listener::run(
            pg,
            Arc::clone(&sql),
            Arc::clone(&committed),
            config.poll_interval,
            stop_rx,
        ));
        tracing::debug!(schema = config.schema, "PostgreSQL store started");

        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                sql,
                committed,
                _committed_rx: committed_rx,
                page_size: config.query_page_size,
                poll_interval: config.poll_interval,
                runtime: tokio::runtime::Handle::current(),
                requests: Mutex::new(Some(requests)),
                writer_tasks: Mutex::new(writer_tasks),
                listener_stop: Mutex::new(Some(listener_stop)),
                closed: AtomicBool::new(false),
                config,
            }),
        })
    }

    /// The configuration the store was started with.
    pub fn config(&self) -> &PostgresConfig {
        &self.shared.config
    }

    /// Closes the store for every clone: appends already queued are still committed and
    /// answered, later operations fail with [`StoreError::Closed`], live streams end with
    /// `Closed`, and the connections are closed. Closing twice is harmless.
    pub async fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(lock(&self.shared.requests).take());
        let tasks = std::mem::take(&mut *lock(&self.shared.writer_tasks));
        for task in tasks {
            let _ = task.await;
        }
        if let Some(stop) = lock(&self.shared.listener_stop).take() {
            let _ = stop.send(());
        }
        self.shared.pool.close();
        // Wake every live stream, so that it sees the store is closed.
        self.shared.committed.send_modify(|_| {});
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.shared.is_closed() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.check_open()?;
        self.shared.pool.get().await.map_err(pool_error)
    }

    /// Whether `payload` goes to the `jsonb` column.
    fn as_json(&self, payload: &[u8]) -> bool {
        self.shared.config.payload_storage == PayloadStorage::Jsonb && is_storable_json(payload)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses a text value PostgreSQL cannot store.
fn check_text(what: &str, value: &str, pid: &PersistenceId) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::Rejected(format!(
            "{what} of a write to {pid} contains NUL, which PostgreSQL text cannot store"
        )));
    }
    Ok(())
}

/// Checks what [`AtomicWrite::validate`] does not: sequence numbers fit a `bigint`, and no
/// text contains NUL.
fn check_append(write: &AtomicWrite) -> Result<(), StoreError> {
    write.validate()?;
    if write.last_seq_nr() > i64::MAX as u64 {
        return Err(StoreError::Rejected(format!(
            "write to {} goes beyond the highest sequence number PostgreSQL can store ({})",
            write.persistence_id,
            i64::MAX
        )));
    }
    let pid = &write.persistence_id;
    for event in &write.events {
        check_text("the manifest", &event.manifest, pid)?;
        check_text("the writer id", &event.writer_id, pid)?;
        for tag in &event.tags {
            check_text("a tag", tag, pid)?;
        }
    }
    Ok(())
}

impl Journal for PostgresStore {
    fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.check_open()?;
            check_append(&write)?;
            let json = write
                .events
                .iter()
                .map(|e| self.as_json(&e.payload))
                .collect();
            let mut literal = String::new();
            let tags = write
                .events
                .iter()
                .map(|e| {
                    tags_literal(&e.tags, &mut literal);
                    literal.clone()
                })
                .collect();
            let bytes = write.events.iter().map(|e| e.payload.len()).sum();
            let Some(sender) = lock(&self.shared.requests).clone() else {
                return Err(StoreError::Closed);
            };
            let (reply, answer) = oneshot::channel();
            let request = Request {
                write,
                json,
                tags,
                bytes,
                reply,
            };
            if sender.send(request).await.is_err() {
                return Err(StoreError::Closed);
            }
            match answer.await {
                Ok(outcome) => outcome,
                // The writer task ended (a panic) with the append in its batch.
                Err(_) => Err(StoreError::Uncertain(
                    "the PostgreSQL writer task stopped".into(),
                )),
            }
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
            if max == 0 || from_seq_nr > to_seq_nr || from_seq_nr > i64::MAX as u64 {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.replay)
                .await
                .map_err(|e| read_error(&e))?;
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    &statement,
                    &[
                        &pid.as_str(),
                        &clamp(from_seq_nr),
                        &clamp(to_seq_nr),
                        &limit,
                    ],
                )
                .await
                .map_err(|e| read_error(&e))?;
            drop(client);
            rows.iter()
                .map(|row| event_row(row, Some(&pid)).map(|e| e.event))
                .collect()
        }
        .boxed()
    }

    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.highest)
                .await
                .map_err(|e| read_error(&e))?;
            let row = client
                .query_opt(&statement, &[&pid.as_str()])
                .await
                .map_err(|e| read_error(&e))?;
            let highest: i64 = match row {
                Some(row) => row
                    .try_get(0)
                    .map_err(|e| StoreError::Corrupt(format!("persistence_ids row: {e}")))?,
                None => 0,
            };
            Ok(highest.max(0) as u64)
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
                return self.check_open();
            }
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.delete_to)
                .await
                .map_err(|e| error::store_error(&e))?;
            client
                .execute(&statement, &[&pid.as_str(), &clamp(to_seq_nr)])
                .await
                .map_err(|e| error::store_error(&e))?;
            Ok(())
        }
        .boxed()
    }
}

impl SnapshotStore for PostgresStore {
    fn save(&self, snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let pid = &snapshot.persistence_id;
            if snapshot.seq_nr > i64::MAX as u64 {
                return Err(StoreError::Rejected(format!(
                    "snapshot of {pid} at seq_nr {} is beyond what PostgreSQL can store",
                    snapshot.seq_nr
                )));
            }
            check_text("the manifest", &snapshot.manifest, pid)?;
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.save_snapshot)
                .await
                .map_err(|e| error::store_error(&e))?;
            let mut as_json = self.as_json(&snapshot.payload);
            loop {
                let text = as_json
                    .then(|| std::str::from_utf8(&snapshot.payload).ok())
                    .flatten();
                let bytes = text.is_none().then_some(snapshot.payload.as_slice());
                let result = client
                    .execute(
                        &statement,
                        &[
                            &pid.as_str(),
                            &(snapshot.seq_nr as i64),
                            &snapshot.manifest,
                            &i64::from(snapshot.schema_version),
                            &text,
                            &bytes,
                            &snapshot.timestamp_ms,
                        ],
                    )
                    .await;
                match result {
                    Ok(_) => return Ok(()),
                    // jsonb refused the payload after all: store the bytes alone.
                    Err(e) if as_json && error::class(&e) == Some("22") => as_json = false,
                    Err(e) => return Err(error::store_error(&e)),
                }
            }
        }
        .boxed()
    }

    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        async move {
            if selection.min_seq_nr > selection.max_seq_nr || selection.min_seq_nr > i64::MAX as u64
            {
                return self.check_open().map(|()| None);
            }
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.load_snapshot)
                .await
                .map_err(|e| read_error(&e))?;
            let row = client
                .query_opt(
                    &statement,
                    &[
                        &pid.as_str(),
                        &clamp(selection.min_seq_nr),
                        &clamp(selection.max_seq_nr),
                    ],
                )
                .await
                .map_err(|e| read_error(&e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let corrupt = |e: tokio_postgres::Error| {
                StoreError::Corrupt(format!("snapshot row of {pid}: {e}"))
            };
            let seq_nr: i64 = row.try_get(0).map_err(corrupt)?;
            let version: i64 = row.try_get(2).map_err(corrupt)?;
            let payload: Option<Vec<u8>> = row.try_get(3).map_err(corrupt)?;
            Ok(Some(SnapshotRecord {
                persistence_id: pid.clone(),
                seq_nr: seq_nr.max(0) as u64,
                manifest: row.try_get(1).map_err(corrupt)?,
                schema_version: u32::try_from(version).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "snapshot of {pid}: schema version {version} out of range"
                    ))
                })?,
                payload: payload.ok_or_else(|| {
                    StoreError::Corrupt(format!("snapshot of {pid} has no payload"))
                })?,
                timestamp_ms: row.try_get(4).map_err(corrupt)?,
            }))
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
                return self.check_open();
            }
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.shared.sql.delete_snapshots)
                .await
                .map_err(|e| error::store_error(&e))?;
            client
                .execute(
                    &statement,
                    &[
                        &pid.as_str(),
                        &clamp(selection.min_seq_nr),
                        &clamp(selection.max_seq_nr),
                    ],
                )
                .await
                .map_err(|e| error::store_error(&e))?;
            Ok(())
        }
        .boxed()
    }
}

impl EventQuery for PostgresStore {
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
