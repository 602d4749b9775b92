//! Paged, `'static` query streams, finite and live.
//!
//! Every stream holds one page (at most `query_page_size` rows) and a cursor. When the page is
//! drained it fetches the next one on a read connection. A live stream whose last page came
//! back short waits on the commit watch before fetching again, so it neither polls nor misses
//! a commit: it marks the watch as seen *before* each fetch, hence any commit the fetch did not
//! see is published after the mark and wakes it.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use rusqlite::Connection;
use shoal_persistence::store::{EventEnvelope, Offset, PersistenceId, QueryMode, StoreError};

use crate::reader;
use crate::store::Shared;

/// One page of a query, and the query advanced past it.
pub(crate) struct Page<Q: Query> {
    items: Vec<Q::Item>,
    next: Q,
    /// Nothing can follow this page, not even in live mode.
    complete: bool,
}

/// A resumable query: fetches a page after its cursor and returns itself advanced.
pub(crate) trait Query: Send + Sized + 'static {
    /// What the stream yields.
    type Item: Send + 'static;

    /// Fetches up to `limit` items after the cursor (blocking; runs on a read connection).
    fn fetch(self, conn: &Connection, limit: usize) -> Result<Page<Self>, StoreError>;
}

struct State<Q: Query> {
    shared: Arc<Shared>,
    /// `None` once the stream has nothing more to fetch.
    query: Option<Q>,
    page: std::vec::IntoIter<Q::Item>,
    /// The commit watch, for live streams.
    live: Option<tokio::sync::watch::Receiver<u64>>,
    /// The last fetch came back short: wait for a commit before the next one.
    wait: bool,
}

/// The stream of every item of `query`, fetched page by page.
pub(crate) fn paged<Q: Query>(
    shared: Arc<Shared>,
    query: Q,
    mode: QueryMode,
) -> BoxStream<'static, Result<Q::Item, StoreError>> {
    let live = match mode {
        QueryMode::Live => Some(shared.committed.clone()),
        QueryMode::Current => None,
    };
    let state = State {
        shared,
        query: Some(query),
        page: Vec::new().into_iter(),
        live,
        wait: false,
    };
    stream::unfold(state, next).boxed()
}

async fn next<Q: Query>(mut st: State<Q>) -> Option<(Result<Q::Item, StoreError>, State<Q>)> {
    loop {
        if let Some(item) = st.page.next() {
            return Some((Ok(item), st));
        }
        st.query.as_ref()?;
        if st.wait {
            st.wait = false;
            let closed = match st.live.as_mut() {
                Some(live) => live.changed().await.is_err(),
                None => false,
            };
            if closed {
                // The writer thread is gone: the store was closed.
                st.query = None;
                return Some((Err(StoreError::Closed), st));
            }
        }
        if let Some(live) = st.live.as_mut() {
            live.borrow_and_update();
        }
        let query = st.query.take()?;
        let limit = st.shared.query_page_size;
        match st
            .shared
            .readers
            .run(move |conn| query.fetch(conn, limit))
            .await
        {
            Err(e) => return Some((Err(e), st)),
            Ok(page) => {
                let short = page.items.len() < limit;
                st.page = page.items.into_iter();
                let finished = page.complete || (short && st.live.is_none());
                if !finished {
                    st.query = Some(page.next);
                    st.wait = short;
                }
            }
        }
    }
}

/// Events of one log in a sequence number range.
pub(crate) struct ByPersistenceId {
    pub(crate) pid: PersistenceId,
    pub(crate) from_seq_nr: u64,
    pub(crate) to_seq_nr: u64,
}

impl Query for ByPersistenceId {
    type Item = EventEnvelope;

    fn fetch(mut self, conn: &Connection, limit: usize) -> Result<Page<Self>, StoreError> {
        if self.from_seq_nr > self.to_seq_nr {
            return Ok(Page {
                items: Vec::new(),
                next: self,
                complete: true,
            });
        }
        let rows = reader::events_by_pid(conn, &self.pid, self.from_seq_nr, self.to_seq_nr, limit)?;
        let mut complete = false;
        if let Some((_, last)) = rows.last() {
            complete = last.seq_nr >= self.to_seq_nr;
            self.from_seq_nr = last.seq_nr + 1;
        }
        let items = rows
            .into_iter()
            .map(|(offset, event)| EventEnvelope {
                persistence_id: self.pid.clone(),
                offset,
                event,
            })
            .collect();
        Ok(Page {
            items,
            next: self,
            complete,
        })
    }
}

/// Events carrying a tag, after an offset.
pub(crate) struct ByTag {
    pub(crate) tag: String,
    pub(crate) after: Offset,
}

impl Query for ByTag {
    type Item = EventEnvelope;

    fn fetch(mut self, conn: &Connection, limit: usize) -> Result<Page<Self>, StoreError> {
        let items = reader::events_by_tag(conn, &self.tag, self.after, limit)?;
        if let Some(last) = items.last() {
            self.after = last.offset;
        }
        Ok(Page {
            items,
            next: self,
            complete: false,
        })
    }
}

/// Persistence ids in order of first write.
pub(crate) struct PersistenceIds {
    /// Position (`persistence_ids.id`) of the last id delivered.
    pub(crate) after: i64,
}

impl Query for PersistenceIds {
    type Item = PersistenceId;

    fn fetch(mut self, conn: &Connection, limit: usize) -> Result<Page<Self>, StoreError> {
        let rows = reader::persistence_ids(conn, self.after, limit)?;
        if let Some((position, _)) = rows.last() {
            self.after = *position;
        }
        let items = rows.into_iter().map(|(_, pid)| pid).collect();
        Ok(Page {
            items,
            next: self,
            complete: false,
        })
    }
}
