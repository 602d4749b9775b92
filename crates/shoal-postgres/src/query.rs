//! Paged, `'static` query streams, finite and live.
//!
//! A stream holds a cursor and at most two pages: the one being consumed and the next one,
//! fetched ahead while the consumer works through the first. Every fetch runs in its own
//! spawned task that takes a pooled connection, runs one `SELECT … LIMIT page`, returns the
//! connection and leaves the rows for the stream. So a stream that is not being polled holds
//! no connection and no place in the pool's queue: it holds back only itself (rule 7).
//!
//! A live stream whose last page came back short waits on the store's commit `watch`
//! (published by the local writers after each commit, and by the listener for other nodes'
//! commits and its periodic poll). It marks the watch as seen *before* every fetch, so a
//! commit the fetch did not see always wakes it.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use shoal_persistence::store::{
    EventEnvelope, EventRecord, Offset, PersistenceId, QueryMode, StoreError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Row;

use crate::error::{pool_error, read_error};
use crate::store::Shared;

/// One page of a query, and the query advanced past it.
pub(crate) struct Page<Q: Query> {
    pub(crate) items: Vec<Q::Item>,
    pub(crate) next: Q,
    /// Nothing can follow this page, not even in live mode.
    pub(crate) complete: bool,
}

/// A resumable query: fetches a page after its cursor and returns itself advanced.
pub(crate) trait Query: Clone + Send + Sync + 'static {
    /// What the stream yields.
    type Item: Send + 'static;

    /// Fetches up to a page (the store's `query_page_size`, written into the statement) of
    /// items after the cursor on a pooled connection.
    fn fetch(self, shared: Arc<Shared>) -> BoxFuture<'static, Result<Page<Self>, StoreError>>;
}

struct State<Q: Query> {
    shared: Arc<Shared>,
    /// Where the next fetch starts; `None` once nothing more can come.
    query: Option<Q>,
    page: std::vec::IntoIter<Q::Item>,
    /// The fetch in flight, if any (its cursor is `query`).
    pending: Option<JoinHandle<Result<Page<Q>, StoreError>>>,
    /// The commit watch, for live streams.
    live: Option<watch::Receiver<u64>>,
    /// The last fetch came back short (or failed): wait for a commit before the next one.
    wait: bool,
    /// The last fetch failed: also retry after the poll interval without a commit.
    failed: bool,
}

/// The stream of every item of `query`, fetched page by page.
pub(crate) fn paged<Q: Query>(
    shared: Arc<Shared>,
    query: Q,
    mode: QueryMode,
) -> BoxStream<'static, Result<Q::Item, StoreError>> {
    let live = match mode {
        QueryMode::Live => Some(shared.committed.subscribe()),
        QueryMode::Current => None,
    };
    let state = State {
        shared,
        query: Some(query),
        page: Vec::new().into_iter(),
        pending: None,
        live,
        wait: false,
        failed: false,
    };
    stream::unfold(state, next).boxed()
}

impl<Q: Query> State<Q> {
    /// Starts fetching the page after the cursor, marking the commit watch as seen first.
    fn start_fetch(&mut self, query: Q) {
        if let Some(live) = self.live.as_mut() {
            live.borrow_and_update();
        }
        let fetch = query.fetch(Arc::clone(&self.shared));
        self.pending = Some(self.shared.runtime.spawn(fetch));
    }

    /// Ends the stream with `error` after this item.
    fn fail(mut self, error: StoreError) -> Option<(Result<Q::Item, StoreError>, Self)> {
        if self.live.is_some() && !matches!(error, StoreError::Closed) {
            // Live streams outlast outages: report, then try again later.
            self.wait = true;
            self.failed = true;
        } else {
            self.query = None;
        }
        Some((Err(error), self))
    }
}

async fn next<Q: Query>(mut st: State<Q>) -> Option<(Result<Q::Item, StoreError>, State<Q>)> {
    loop {
        if let Some(item) = st.page.next() {
            return Some((Ok(item), st));
        }
        if st.shared.is_closed() {
            st.pending = None;
            return match st.query.take() {
                Some(_) => st.fail(StoreError::Closed),
                None => None,
            };
        }
        if st.pending.is_none() {
            let query = st.query.clone()?;
            if std::mem::take(&mut st.wait)
                && let Some(live) = st.live.as_mut()
            {
                let changed = if std::mem::take(&mut st.failed) {
                    // A retry delay after a failed fetch (the database may be down).
                    tokio::select! {
                        c = live.changed() => c,
                        _ = tokio::time::sleep(st.shared.poll_interval) => Ok(()),
                    }
                } else {
                    live.changed().await
                };
                if changed.is_err() || st.shared.is_closed() {
                    st.query = None;
                    return st.fail(StoreError::Closed);
                }
            }
            st.start_fetch(query);
        }
        let Some(pending) = st.pending.as_mut() else {
            continue;
        };
        let result = pending.await;
        st.pending = None;
        let page = match result {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return st.fail(e),
            Err(e) => {
                return st.fail(StoreError::Unavailable(format!("query task failed: {e}")));
            }
        };
        let short = page.items.len() < st.shared.page_size;
        st.page = page.items.into_iter();
        if page.complete || (short && st.live.is_none()) {
            st.query = None;
        } else {
            st.query = Some(page.next.clone());
            if short {
                st.wait = true;
            } else {
                // Fetch ahead while the consumer works through this page.
                st.start_fetch(page.next);
            }
        }
    }
}

/// Reads the columns of `schema::EVENT_COLUMNS`. `pid` is the log when the caller knows it.
pub(crate) fn event_row(
    row: &Row,
    pid: Option<&PersistenceId>,
) -> Result<EventEnvelope, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(format!("journal row: {e}"));
    let ordering: i64 = row.try_get(0).map_err(corrupt)?;
    let persistence_id = match pid {
        Some(pid) => pid.clone(),
        None => {
            let raw: String = row.try_get(1).map_err(corrupt)?;
            PersistenceId::new(raw).map_err(|e| {
                StoreError::Corrupt(format!("journal row at ordering {ordering}: {e}"))
            })?
        }
    };
    let seq_nr: i64 = row.try_get(2).map_err(corrupt)?;
    let schema_version: i64 = row.try_get(4).map_err(corrupt)?;
    let schema_version = u32::try_from(schema_version).map_err(|_| {
        StoreError::Corrupt(format!(
            "journal row at ordering {ordering}: schema version {schema_version} out of range"
        ))
    })?;
    let payload: Option<Vec<u8>> = row.try_get(5).map_err(corrupt)?;
    Ok(EventEnvelope {
        persistence_id,
        offset: Offset(ordering.max(0) as u64),
        event: EventRecord {
            seq_nr: seq_nr.max(0) as u64,
            manifest: row.try_get(3).map_err(corrupt)?,
            schema_version,
            payload: payload.ok_or_else(|| {
                StoreError::Corrupt(format!("journal row at ordering {ordering} has no payload"))
            })?,
            tags: row.try_get(6).map_err(corrupt)?,
            writer_id: row.try_get(7).map_err(corrupt)?,
            timestamp_ms: row.try_get(8).map_err(corrupt)?,
        },
    })
}

/// A sequence number as a PostgreSQL `bigint`, saturating (no stored value is larger).
pub(crate) fn clamp(seq_nr: u64) -> i64 {
    i64::try_from(seq_nr).unwrap_or(i64::MAX)
}

/// Events of one log in a sequence number range.
#[derive(Clone)]
pub(crate) struct ByPersistenceId {
    pub(crate) pid: PersistenceId,
    pub(crate) from_seq_nr: u64,
    pub(crate) to_seq_nr: u64,
}

impl Query for ByPersistenceId {
    type Item = EventEnvelope;

    fn fetch(mut self, shared: Arc<Shared>) -> BoxFuture<'static, Result<Page<Self>, StoreError>> {
        Box::pin(async move {
            if self.from_seq_nr > self.to_seq_nr || self.from_seq_nr > i64::MAX as u64 {
                return Ok(Page {
                    items: Vec::new(),
                    next: self,
                    complete: true,
                });
            }
            let client = shared.pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached(&shared.sql.events_by_pid)
                .await
                .map_err(|e| read_error(&e))?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &self.pid.as_str(),
                        &clamp(self.from_seq_nr),
                        &clamp(self.to_seq_nr),
                    ],
                )
                .await
                .map_err(|e| read_error(&e))?;
            drop(client);
            let items = rows
                .iter()
                .map(|row| event_row(row, Some(&self.pid)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut complete = false;
            if let Some(last) = items.last() {
                let last = last.event.seq_nr;
                complete = last >= self.to_seq_nr;
                self.from_seq_nr = last.saturating_add(1);
            }
            Ok(Page {
                items,
                next: self,
                complete,
            })
        })
    }
}

/// Events carrying a tag, after an offset.
#[derive(Clone)]
pub(crate) struct ByTag {
    pub(crate) tag: String,
    pub(crate) after: Offset,
}

impl Query for ByTag {
    type Item = EventEnvelope;

    fn fetch(mut self, shared: Arc<Shared>) -> BoxFuture<'static, Result<Page<Self>, StoreError>> {
        Box::pin(async move {
            let client = shared.pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached(&shared.sql.events_by_tag)
                .await
                .map_err(|e| read_error(&e))?;
            let rows = client
                .query(&statement, &[&self.tag, &clamp(self.after.0)])
                .await
                .map_err(|e| read_error(&e))?;
            drop(client);
            let items = rows
                .iter()
                .map(|row| event_row(row, None))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(last) = items.last() {
                self.after = last.offset;
            }
            Ok(Page {
                items,
                next: self,
                complete: false,
            })
        })
    }
}

/// Persistence ids in order of first write.
#[derive(Clone)]
pub(crate) struct PersistenceIds {
    /// `first_ordering` of the last id delivered.
    pub(crate) after: i64,
}

impl Query for PersistenceIds {
    type Item = PersistenceId;

    fn fetch(mut self, shared: Arc<Shared>) -> BoxFuture<'static, Result<Page<Self>, StoreError>> {
        Box::pin(async move {
            let client = shared.pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached(&shared.sql.persistence_ids)
                .await
                .map_err(|e| read_error(&e))?;
            let rows = client
                .query(&statement, &[&self.after])
                .await
                .map_err(|e| read_error(&e))?;
            drop(client);
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                let raw: String = row
                    .try_get(0)
                    .map_err(|e| StoreError::Corrupt(format!("persistence_ids row: {e}")))?;
                self.after = row
                    .try_get(1)
                    .map_err(|e| StoreError::Corrupt(format!("persistence_ids row: {e}")))?;
                items.push(
                    PersistenceId::new(raw)
                        .map_err(|e| StoreError::Corrupt(format!("persistence_ids row: {e}")))?,
                );
            }
            Ok(Page {
                items,
                next: self,
                complete: false,
            })
        })
    }
}
