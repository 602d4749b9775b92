//! [`MemoryStore`]: a complete store (journal, snapshots, queries) kept in process memory.
//!
//! For tests, examples and single-process tools. It follows every rule of the
//! [storage boundary](crate::store), with "durable" meaning "in this process's memory": an
//! acknowledged write survives as long as some clone of the store (or a stream from it) does.
//!
//! # Design
//!
//! All state sits behind one [`std::sync::Mutex`], which is never held across an `.await`.
//! Every append takes the next values of one global offset counter while it holds that lock,
//! so offsets are strictly increasing in commit order and a tag query can never skip an event
//! (rule 7). After each commit a [`tokio::sync::watch`] channel is bumped; live streams wait on
//! it when they have caught up, so nothing polls. Streams read in pages of at most
//! [`PAGE_SIZE`] entries and only fetch the next page once the consumer has taken the previous
//! one, so a slow consumer costs at most one page of memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

use crate::store::{
    AtomicWrite, EventEnvelope, EventQuery, EventRecord, EventStream, Journal, Offset,
    PersistenceId, PersistenceIdStream, QueryMode, SnapshotRecord, SnapshotSelection,
    SnapshotStore, StoreError,
};

/// The most entries a query stream fetches from the store at once.
pub const PAGE_SIZE: usize = 256;

/// A store kept in process memory.
///
/// Cheap to clone: clones share the same data. Create with [`MemoryStore::new`].
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped after every commit; live streams wait on it.
    commits: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    logs: HashMap<PersistenceId, Log>,
    /// Every persistence id ever written, in order of first write.
    ids: Vec<PersistenceId>,
    /// Per tag, the stored events carrying it, by offset.
    tags: HashMap<String, BTreeMap<u64, Arc<EventEnvelope>>>,
    /// Per persistence id, its snapshots by sequence number.
    snapshots: HashMap<PersistenceId, BTreeMap<u64, SnapshotRecord>>,
    /// The offset given to the most recently appended event.
    last_offset: u64,
}

/// One persistence id's log.
///
/// Invariant: `events` holds exactly the sequence numbers `deleted_to + 1 ..= highest`, in
/// order, so `events.len() == highest - deleted_to`.
#[derive(Default)]
struct Log {
    /// The highest sequence number ever written (deletions included).
    highest: u64,
    /// Every event up to and including this sequence number has been deleted.
    deleted_to: u64,
    events: VecDeque<Arc<EventEnvelope>>,
}

impl Log {
    /// The stored events with `from <= seq_nr <= to`, ascending.
    fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Arc<EventEnvelope>> {
        let first = self.deleted_to + 1;
        let from = from.max(first);
        let to = to.min(self.highest);
        let (start, end) = if from > to {
            (0, 0)
        } else {
            (index(from - first), index(to - first).saturating_add(1))
        };
        let len = self.events.len();
        self.events.range(start.min(len)..end.min(len))
    }
}

/// A `u64` distance as a `VecDeque` index (saturating; the deque is bounded by memory anyway).
fn index(distance: u64) -> usize {
    usize::try_from(distance).unwrap_or(usize::MAX)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (commits, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                commits,
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MemoryStore");
        if let Ok(state) = self.inner.state.try_lock() {
            d.field("persistence_ids", &state.ids.len())
                .field("last_offset", &state.last_offset);
        }
        d.finish_non_exhaustive()
    }
}

impl Inner {
    /// Locks the state. A panic while the lock was held may have left a half-applied
    /// change, so a poisoned lock makes the store unavailable instead of guessing.
    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| {
            StoreError::Unavailable("memory store state was poisoned by a panic".into())
        })
    }

    fn append(&self, write: AtomicWrite) -> Result<(), StoreError> {
        write.validate()?;
        {
            let mut guard = self.lock()?;
            let state = &mut *guard;
            let actual = state
                .logs
                .get(&write.persistence_id)
                .map_or(0, |log| log.highest);
            if actual != write.expected_seq_nr {
                return Err(StoreError::Conflict {
                    persistence_id: write.persistence_id,
                    expected: write.expected_seq_nr,
                    actual,
                });
            }
            // Nothing below can fail: the write is applied whole.
            let last_seq_nr = write.last_seq_nr();
            let pid = write.persistence_id;
            let log = match state.logs.get_mut(&pid) {
                Some(log) => log,
                None => {
                    state.ids.push(pid.clone());
                    state.logs.entry(pid.clone()).or_default()
                }
            };
            log.events.reserve(write.events.len());
            for event in write.events {
                state.last_offset += 1;
                let envelope = Arc::new(EventEnvelope {
                    persistence_id: pid.clone(),
                    offset: Offset(state.last_offset),
                    event,
                });
                for tag in &envelope.event.tags {
                    state
                        .tags
                        .entry(tag.clone())
                        .or_default()
                        .insert(state.last_offset, Arc::clone(&envelope));
                }
                log.events.push_back(envelope);
            }
            log.highest = last_seq_nr;
        }
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    fn replay(
        &self,
        pid: &PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let state = self.lock()?;
        Ok(state.logs.get(pid).map_or_else(Vec::new, |log| {
            log.range(from_seq_nr, to_seq_nr)
                .take(max)
                .map(|e| e.event.clone())
                .collect()
        }))
    }

    fn delete_to(&self, pid: &PersistenceId, to_seq_nr: u64) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let state = &mut *guard;
        let Some(log) = state.logs.get_mut(pid) else {
            return Ok(());
        };
        // Never beyond what is written: later appends must not be born deleted.
        let to = to_seq_nr.min(log.highest);
        while log.deleted_to < to {
            let Some(envelope) = log.events.pop_front() else {
                break;
            };
            log.deleted_to = envelope.event.seq_nr;
            for tag in &envelope.event.tags {
                if let Some(index) = state.tags.get_mut(tag) {
                    index.remove(&envelope.offset.0);
                    if index.is_empty() {
                        state.tags.remove(tag);
                    }
                }
            }
        }
        Ok(())
    }

    fn save_snapshot(&self, snapshot: SnapshotRecord) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state
            .snapshots
            .entry(snapshot.persistence_id.clone())
            .or_default()
            .insert(snapshot.seq_nr, snapshot);
        Ok(())
    }

    fn load_snapshot(
        &self,
        pid: &PersistenceId,
        selection: SnapshotSelection,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        if selection.min_seq_nr > selection.max_seq_nr {
            return Ok(None);
        }
        let state = self.lock()?;
        Ok(state.snapshots.get(pid).and_then(|snaps| {
            snaps
                .range(selection.min_seq_nr..=selection.max_seq_nr)
                .next_back()
                .map(|(_, s)| s.clone())
        }))
    }

    fn delete_snapshots(
        &self,
        pid: &PersistenceId,
        selection: SnapshotSelection,
    ) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if let Some(snaps) = state.snapshots.get_mut(pid) {
            snaps.retain(|&seq_nr, _| !selection.contains(seq_nr));
            if snaps.is_empty() {
                state.snapshots.remove(pid);
            }
        }
        Ok(())
    }
}

impl Journal for MemoryStore {
    fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner.append(write) })
    }

    fn replay(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move { self.inner.replay(&pid, from_seq_nr, to_seq_nr, max) })
    }

    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let state = self.inner.lock()?;
            Ok(state.logs.get(&pid).map_or(0, |log| log.highest))
        })
    }

    fn delete_to(
        &self,
        pid: PersistenceId,
        to_seq_nr: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner.delete_to(&pid, to_seq_nr) })
    }
}

impl SnapshotStore for MemoryStore {
    fn save(&self, snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner.save_snapshot(snapshot) })
    }

    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        Box::pin(async move { self.inner.load_snapshot(&pid, selection) })
    }

    fn delete(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner.delete_snapshots(&pid, selection) })
    }
}

impl EventQuery for MemoryStore {
    fn events_by_persistence_id(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        mode: QueryMode,
    ) -> EventStream {
        let cursor = PidCursor {
            pid,
            next: from_seq_nr.max(1),
            to: to_seq_nr,
        };
        paged(&self.inner, mode, cursor, fetch_by_pid)
            .map(|r| r.map(Arc::unwrap_or_clone))
            .boxed()
    }

    fn events_by_tag(&self, tag: String, after: Offset, mode: QueryMode) -> EventStream {
        let cursor = TagCursor {
            tag,
            after: after.0,
        };
        paged(&self.inner, mode, cursor, fetch_by_tag)
            .map(|r| r.map(Arc::unwrap_or_clone))
            .boxed()
    }

    fn persistence_ids(&self, mode: QueryMode) -> PersistenceIdStream {
        paged(&self.inner, mode, 0usize, fetch_ids).boxed()
    }
}

/// What one fetch found.
enum Page {
    /// A full page; more may be stored right now.
    Full,
    /// Everything stored right now has been fetched (possibly nothing).
    CaughtUp,
    /// Nothing will ever follow what has been fetched.
    Complete,
}

/// Takes the next page from the state into `out` (empty on entry), advancing the cursor.
type Fetch<C, T> = fn(&State, &mut C, &mut VecDeque<T>) -> Page;

struct PidCursor {
    pid: PersistenceId,
    /// The next sequence number to deliver.
    next: u64,
    /// The last sequence number to deliver.
    to: u64,
}

fn fetch_by_pid(
    state: &State,
    cursor: &mut PidCursor,
    out: &mut VecDeque<Arc<EventEnvelope>>,
) -> Page {
    if cursor.next > cursor.to {
        return Page::Complete;
    }
    let Some(log) = state.logs.get(&cursor.pid) else {
        return Page::CaughtUp;
    };
    out.extend(log.range(cursor.next, cursor.to).take(PAGE_SIZE).cloned());
    if let Some(last) = out.back() {
        match last.event.seq_nr.checked_add(1) {
            Some(next) => cursor.next = next,
            None => return Page::Complete,
        }
    }
    if cursor.next > cursor.to {
        Page::Complete
    } else if out.len() == PAGE_SIZE {
        Page::Full
    } else if log.highest >= cursor.to {
        // Everything up to `to` is written and whatever of it still exists was fetched.
        Page::Complete
    } else {
        Page::CaughtUp
    }
}

struct TagCursor {
    tag: String,
    /// The offset of the last event delivered.
    after: u64,
}

fn fetch_by_tag(
    state: &State,
    cursor: &mut TagCursor,
    out: &mut VecDeque<Arc<EventEnvelope>>,
) -> Page {
    let Some(index) = state.tags.get(&cursor.tag) else {
        return Page::CaughtUp;
    };
    out.extend(
        index
            .range((Bound::Excluded(cursor.after), Bound::Unbounded))
            .take(PAGE_SIZE)
            .map(|(_, e)| Arc::clone(e)),
    );
    if let Some(last) = out.back() {
        cursor.after = last.offset.0;
    }
    if out.len() == PAGE_SIZE {
        Page::Full
    } else {
        Page::CaughtUp
    }
}

/// `next` is the position in [`State::ids`] of the next id to deliver.
fn fetch_ids(state: &State, next: &mut usize, out: &mut VecDeque<PersistenceId>) -> Page {
    let rest = state.ids.get(*next..).unwrap_or_default();
    out.extend(rest.iter().take(PAGE_SIZE).cloned());
    *next += out.len();
    if out.len() == PAGE_SIZE {
        Page::Full
    } else {
        Page::CaughtUp
    }
}

/// The state of one query stream.
struct Pager<C, T> {
    inner: Arc<Inner>,
    commits: watch::Receiver<u64>,
    mode: QueryMode,
    cursor: C,
    fetch: Fetch<C, T>,
    /// The fetched page not yet delivered; at most [`PAGE_SIZE`] entries.
    page: VecDeque<T>,
    /// The last fetch found everything stored at the time.
    caught_up: bool,
    /// Nothing more will be delivered after `page`.
    done: bool,
}

/// A stream that fetches pages with `fetch` and, in live mode, waits for the next commit
/// whenever it has caught up. Keeps the store's state alive through its own `Arc`.
fn paged<C, T>(
    inner: &Arc<Inner>,
    mode: QueryMode,
    cursor: C,
    fetch: Fetch<C, T>,
) -> impl futures_util::Stream<Item = Result<T, StoreError>> + Send + 'static
where
    C: Send + 'static,
    T: Send + 'static,
{
    let pager = Pager {
        inner: Arc::clone(inner),
        commits: inner.commits.subscribe(),
        mode,
        cursor,
        fetch,
        page: VecDeque::with_capacity(PAGE_SIZE),
        caught_up: false,
        done: false,
    };
    stream::unfold(pager, |mut p| async move {
        loop {
            if let Some(item) = p.page.pop_front() {
                return Some((Ok(item), p));
            }
            if p.done {
                return None;
            }
            if p.caught_up {
                match p.mode {
                    QueryMode::Current => return None,
                    QueryMode::Live => {
                        // The receiver was marked as seen before the last fetch, so a commit
                        // since then has already bumped it: no wake-up can be lost.
                        if p.commits.changed().await.is_err() {
                            // Unreachable while `p.inner` holds the sender; end quietly.
                            return None;
                        }
                    }
                }
            }
            p.commits.mark_unchanged();
            let found = p
                .inner
                .lock()
                .map(|state| (p.fetch)(&state, &mut p.cursor, &mut p.page));
            match found {
                Ok(Page::Full) => p.caught_up = false,
                Ok(Page::CaughtUp) => p.caught_up = true,
                Ok(Page::Complete) => p.done = true,
                Err(e) => {
                    p.done = true;
                    return Some((Err(e), p));
                }
            }
        }
    })
}
