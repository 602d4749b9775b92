//! The conformance suite checked against itself: [`MemoryStore`] with one deliberate bug
//! at a time must fail the cases that guard against that bug. Keeps the checks from
//! silently becoming vacuous.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{self, StreamExt};
use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::{
    AtomicWrite, EventEnvelope, EventQuery, EventRecord, EventStream, Journal, Offset,
    PersistenceId, PersistenceIdStream, QueryMode, SnapshotRecord, SnapshotSelection,
    SnapshotStore, Store, StoreError,
};
use shoal_persistence::testing::conformance;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// Appends whatever the expectation, renumbering after the stored highest.
    NoFence,
    /// Conflicts report the writer's expectation as the stored value.
    WrongConflictActual,
    /// Malformed writes are repaired and stored (empty ones acknowledged).
    NoValidation,
    /// Replay returns every event in range, ignoring `max`.
    ReplayIgnoresMax,
    /// Replay starts one after `from`.
    ReplayOffByOne,
    /// Replay returns at most 10 000 events.
    ReplayCapped,
    /// `highest_seq_nr` is the highest event still stored.
    HighestForgetsDeleted,
    /// `delete_to` does nothing.
    DeleteNoop,
    /// `delete_to` beyond the highest also hides events appended later.
    DeleteBeyondHighest,
    /// `load` returns the lowest selected snapshot.
    SnapshotLoadLowest,
    /// Saving an existing snapshot seq_nr keeps the old one.
    SnapshotNoReplace,
    /// Tag queries include the event at `after`.
    TagAfterInclusive,
    /// Live streams deliver what is stored, then never wake.
    LiveNoWake,
    /// Live tag streams lose every 25th event.
    LiveSkips,
    /// Live tag streams deliver every 25th event twice.
    LiveDuplicates,
    /// Bounded live by-id streams never end.
    LiveNeverEnds,
    /// Persistence ids come sorted, not in order of first write.
    IdsSorted,
    /// Persistence ids are delivered twice.
    IdsRepeated,
    /// Ids are compared case-insensitively.
    IdsCaseInsensitive,
    /// Payloads go through a lossy UTF-8 conversion.
    PayloadLossy,
    /// Read-back events lose their tags.
    TagsLost,
    /// Timestamps are stored in whole seconds.
    TimestampSeconds,
    /// Streams stop working once the store handle is dropped.
    StreamsNeedHandle,
    /// Multi-event writes are stored one event at a time (visible half-done).
    SplitWrites,
    /// Every stream poll and every append passes one fair gate; a stream left idle in the
    /// middle of a poll keeps it (like a connection-pool permit assigned to a parked waiter).
    IdleStreamsHoldGate,
}

fn damage(bug: Bug, mut e: EventRecord) -> EventRecord {
    match bug {
        Bug::PayloadLossy => {
            e.payload = String::from_utf8_lossy(&e.payload)
                .into_owned()
                .into_bytes();
        }
        Bug::TagsLost => e.tags.clear(),
        Bug::TimestampSeconds => e.timestamp_ms = e.timestamp_ms / 1000 * 1000,
        _ => {}
    }
    e
}

struct Buggy {
    inner: MemoryStore,
    bug: Bug,
    alive: Arc<()>,
    deleted_to: Mutex<HashMap<PersistenceId, u64>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Buggy {
    fn pid(&self, pid: PersistenceId) -> PersistenceId {
        if self.bug == Bug::IdsCaseInsensitive {
            PersistenceId::new(pid.as_str().to_lowercase()).unwrap()
        } else {
            pid
        }
    }

    fn record(&self, e: EventRecord) -> EventRecord {
        damage(self.bug, e)
    }

    fn hidden(&self, pid: &PersistenceId, seq_nr: u64) -> bool {
        self.bug == Bug::DeleteBeyondHighest
            && self
                .deleted_to
                .lock()
                .unwrap()
                .get(pid)
                .is_some_and(|&to| seq_nr <= to)
    }

    fn events(&self, s: EventStream) -> EventStream {
        let bug = self.bug;
        let s = s.map(move |r| {
            r.map(|mut e| {
                e.event = damage(bug, e.event);
                e
            })
        });
        self.handle_check(s.boxed(), Arc::downgrade(&self.alive))
    }

    fn handle_check<T: Send + 'static>(
        &self,
        s: stream::BoxStream<'static, Result<T, StoreError>>,
        alive: Weak<()>,
    ) -> stream::BoxStream<'static, Result<T, StoreError>> {
        if self.bug == Bug::IdleStreamsHoldGate {
            let gate = Arc::clone(&self.gate);
            return stream::unfold(s, move |mut s| {
                let gate = Arc::clone(&gate);
                async move {
                    {
                        let _permit = gate.acquire().await.expect("gate open");
                        tokio::task::yield_now().await;
                    }
                    s.next().await.map(|item| (item, s))
                }
            })
            .boxed();
        }
        if self.bug != Bug::StreamsNeedHandle {
            return s;
        }
        s.map(move |r| {
            if alive.upgrade().is_some() {
                r
            } else {
                Err(StoreError::Closed)
            }
        })
        .boxed()
    }
}

impl Journal for Buggy {
    fn append(&self, mut write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.bug == Bug::IdleStreamsHoldGate {
                drop(self.gate.acquire().await.expect("gate open"));
            }
            write.persistence_id = self.pid(write.persistence_id);
            let renumber = |w: &mut AtomicWrite, after: u64| {
                w.expected_seq_nr = after;
                for (i, e) in w.events.iter_mut().enumerate() {
                    e.seq_nr = after + 1 + i as u64;
                }
            };
            match self.bug {
                Bug::NoFence => {
                    let h = self
                        .inner
                        .highest_seq_nr(write.persistence_id.clone())
                        .await?;
                    renumber(&mut write, h);
                }
                Bug::NoValidation if write.validate().is_err() => {
                    if write.events.is_empty() {
                        return Ok(());
                    }
                    let e = write.expected_seq_nr.min(u64::MAX / 2);
                    renumber(&mut write, e);
                    for ev in &mut write.events {
                        ev.tags.dedup();
                    }
                }
                _ => {}
            }
            if self.bug == Bug::SplitWrites && write.validate().is_ok() {
                let h = self
                    .inner
                    .highest_seq_nr(write.persistence_id.clone())
                    .await?;
                if h != write.expected_seq_nr {
                    return self.inner.append(write).await;
                }
                for (i, e) in write.events.into_iter().enumerate() {
                    let one = AtomicWrite {
                        persistence_id: write.persistence_id.clone(),
                        expected_seq_nr: h + i as u64,
                        events: vec![e],
                    };
                    self.inner.append(one).await?;
                    tokio::task::yield_now().await;
                }
                return Ok(());
            }
            let expected = write.expected_seq_nr;
            match self.inner.append(write).await {
                Err(StoreError::Conflict { persistence_id, .. })
                    if self.bug == Bug::WrongConflictActual =>
                {
                    Err(StoreError::Conflict {
                        persistence_id,
                        expected,
                        actual: expected,
                    })
                }
                other => other,
            }
        })
    }

    fn replay(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            let pid = self.pid(pid);
            let (from, max) = match self.bug {
                Bug::ReplayIgnoresMax => (from_seq_nr, usize::MAX),
                Bug::ReplayOffByOne => (from_seq_nr.saturating_add(1), max),
                Bug::ReplayCapped => (from_seq_nr, max.min(10_000)),
                _ => (from_seq_nr, max),
            };
            let events = self.inner.replay(pid.clone(), from, to_seq_nr, max).await?;
            Ok(events
                .into_iter()
                .filter(|e| !self.hidden(&pid, e.seq_nr))
                .map(|e| self.record(e))
                .collect())
        })
    }

    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let pid = self.pid(pid);
            if self.bug == Bug::HighestForgetsDeleted {
                let all = self.inner.replay(pid, 0, u64::MAX, usize::MAX).await?;
                return Ok(all.last().map_or(0, |e| e.seq_nr));
            }
            self.inner.highest_seq_nr(pid).await
        })
    }

    fn delete_to(&self, pid: PersistenceId, to: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let pid = self.pid(pid);
            match self.bug {
                Bug::DeleteNoop => Ok(()),
                Bug::DeleteBeyondHighest => {
                    {
                        let mut d = self.deleted_to.lock().unwrap();
                        let e = d.entry(pid.clone()).or_default();
                        *e = (*e).max(to);
                    }
                    self.inner.delete_to(pid, to).await
                }
                _ => self.inner.delete_to(pid, to).await,
            }
        })
    }
}

impl SnapshotStore for Buggy {
    fn save(&self, mut snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            snapshot.persistence_id = self.pid(snapshot.persistence_id);
            if self.bug == Bug::SnapshotNoReplace {
                let at = SnapshotSelection {
                    min_seq_nr: snapshot.seq_nr,
                    max_seq_nr: snapshot.seq_nr,
                };
                if self
                    .inner
                    .load(snapshot.persistence_id.clone(), at)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
            }
            self.inner.save(snapshot).await
        })
    }

    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        Box::pin(async move {
            let pid = self.pid(pid);
            if self.bug == Bug::SnapshotLoadLowest {
                let mut sel = selection;
                let mut lowest = None;
                while let Some(s) = self.inner.load(pid.clone(), sel).await? {
                    if s.seq_nr == 0 {
                        return Ok(Some(s));
                    }
                    sel.max_seq_nr = s.seq_nr - 1;
                    lowest = Some(s);
                }
                return Ok(lowest);
            }
            self.inner.load(pid, selection).await
        })
    }

    fn delete(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let pid = self.pid(pid);
        self.inner.delete(pid, selection)
    }
}

impl EventQuery for Buggy {
    fn events_by_persistence_id(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        mode: QueryMode,
    ) -> EventStream {
        let pid = self.pid(pid);
        let s = match (self.bug, mode) {
            (Bug::LiveNoWake, QueryMode::Live) => self
                .inner
                .events_by_persistence_id(pid.clone(), from_seq_nr, to_seq_nr, QueryMode::Current)
                .chain(stream::pending())
                .boxed(),
            (Bug::LiveNeverEnds, QueryMode::Live) => self
                .inner
                .events_by_persistence_id(pid.clone(), from_seq_nr, u64::MAX, mode)
                .filter(move |r| {
                    std::future::ready(r.as_ref().map_or(true, |e| e.event.seq_nr <= to_seq_nr))
                })
                .boxed(),
            _ => self
                .inner
                .events_by_persistence_id(pid.clone(), from_seq_nr, to_seq_nr, mode),
        };
        let hidden_to = if self.bug == Bug::DeleteBeyondHighest {
            self.deleted_to
                .lock()
                .unwrap()
                .get(&pid)
                .copied()
                .unwrap_or(0)
        } else {
            0
        };
        let s = s
            .filter(move |r| {
                std::future::ready(r.as_ref().map_or(true, |e| e.event.seq_nr > hidden_to))
            })
            .boxed();
        self.events(s)
    }

    fn events_by_tag(&self, tag: String, after: Offset, mode: QueryMode) -> EventStream {
        let after = if self.bug == Bug::TagAfterInclusive {
            Offset(after.0.saturating_sub(1))
        } else {
            after
        };
        let s = match (self.bug, mode) {
            (Bug::LiveNoWake, QueryMode::Live) => self
                .inner
                .events_by_tag(tag, after, QueryMode::Current)
                .chain(stream::pending())
                .boxed(),
            (Bug::LiveSkips, QueryMode::Live) => self
                .inner
                .events_by_tag(tag, after, mode)
                .filter(|r| std::future::ready(r.as_ref().map_or(true, |e| e.offset.0 % 25 != 0)))
                .boxed(),
            (Bug::LiveDuplicates, QueryMode::Live) => self
                .inner
                .events_by_tag(tag, after, mode)
                .flat_map(|r| {
                    let twice = matches!(&r, Ok(e) if e.offset.0 % 25 == 0);
                    let items: Vec<Result<EventEnvelope, StoreError>> =
                        if twice { vec![r.clone(), r] } else { vec![r] };
                    stream::iter(items)
                })
                .boxed(),
            _ => self.inner.events_by_tag(tag, after, mode),
        };
        self.events(s)
    }

    fn persistence_ids(&self, mode: QueryMode) -> PersistenceIdStream {
        let alive = Arc::downgrade(&self.alive);
        let s = match (self.bug, mode) {
            (Bug::LiveNoWake, QueryMode::Live) => self
                .inner
                .persistence_ids(QueryMode::Current)
                .chain(stream::pending())
                .boxed(),
            (Bug::IdsRepeated, _) => self
                .inner
                .persistence_ids(mode)
                .flat_map(|r| stream::iter(vec![r.clone(), r]))
                .boxed(),
            (Bug::IdsSorted, QueryMode::Current) => {
                let inner = self.inner.clone();
                stream::once(async move {
                    let mut ids: Vec<_> = inner.persistence_ids(QueryMode::Current).collect().await;
                    ids.sort_by(|a: &Result<PersistenceId, StoreError>, b| {
                        a.as_ref().ok().cmp(&b.as_ref().ok())
                    });
                    stream::iter(ids)
                })
                .flatten()
                .boxed()
            }
            _ => self.inner.persistence_ids(mode),
        };
        self.handle_check(s, alive)
    }
}

async fn must_fail<F, Fut>(bug: Bug, case: &str, run: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let store = Arc::new(Buggy {
        inner: MemoryStore::new(),
        bug,
        alive: Arc::new(()),
        deleted_to: Mutex::new(HashMap::new()),
        gate: Arc::new(tokio::sync::Semaphore::new(1)),
    }) as Arc<dyn Store>;
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        AssertUnwindSafe(run(store)).catch_unwind(),
    )
    .await
    .unwrap_or_else(|_| panic!("case {case} hung on a store with bug {bug:?}"));
    assert!(
        outcome.is_err(),
        "case {case} passed on a store with bug {bug:?}"
    );
    eprintln!("ok: {case} caught {bug:?}");
}

macro_rules! caught {
    ($($bug:ident => $($case:ident),+;)*) => {
        $(
            #[allow(non_snake_case)]
            mod $bug {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        must_fail(Bug::$bug, stringify!($case), conformance::$case).await;
                    }
                )+
            }
        )*
    };
}

caught! {
    NoFence => fence_conflict, concurrent_writers_one_winner, atomic_write_all_or_nothing,
        highest_seq_nr, delete_to;
    WrongConflictActual => fence_conflict, concurrent_writers_one_winner;
    NoValidation => malformed_writes_rejected;
    ReplayIgnoresMax => replay_ranges, large_batches;
    ReplayOffByOne => append_and_replay, replay_ranges;
    ReplayCapped => large_batches;
    HighestForgetsDeleted => highest_seq_nr, delete_to;
    DeleteNoop => delete_to;
    DeleteBeyondHighest => delete_to;
    SnapshotLoadLowest => snapshots;
    SnapshotNoReplace => snapshots;
    TagAfterInclusive => events_by_tag_current, events_by_tag_live_wakes,
        events_by_tag_live_concurrent_writers;
    LiveNoWake => events_by_tag_live_wakes, events_by_tag_live_concurrent_writers,
        events_by_persistence_id, persistence_ids;
    LiveSkips => events_by_tag_live_concurrent_writers;
    LiveDuplicates => events_by_tag_live_concurrent_writers;
    LiveNeverEnds => events_by_persistence_id;
    IdsSorted => persistence_ids;
    IdsRepeated => persistence_ids, odd_persistence_ids;
    IdsCaseInsensitive => odd_persistence_ids;
    PayloadLossy => payload_and_metadata_round_trip;
    TagsLost => payload_and_metadata_round_trip;
    TimestampSeconds => payload_and_metadata_round_trip;
    StreamsNeedHandle => streams_outlive_store_handle;
    SplitWrites => atomic_write_all_or_nothing;
    IdleStreamsHoldGate => idle_streams_hold_back_only_themselves;
}
