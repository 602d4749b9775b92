//! [`FaultyStore`]: a store wrapper whose appends and snapshot loads can be made to fail or to
//! wait, for testing how entities and services behave when storage misbehaves.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, watch};

use crate::store::{
    AtomicWrite, EventQuery, EventRecord, EventStream, Journal, Offset, PersistenceId,
    PersistenceIdStream, QueryMode, SnapshotRecord, SnapshotSelection, SnapshotStore, Store,
    StoreError,
};

/// What a [`FaultyStore`] does with one kind of operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass it to the wrapped store.
    Pass,
    /// Answer this error without touching the wrapped store.
    Fail(StoreError),
    /// Wait until [`FaultyStore::release`] lets it through, then pass it on.
    Hold,
}

/// The operations a [`FaultyStore`] can interfere with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Journal::append`].
    Append,
    /// [`SnapshotStore::load`] — the first step of every recovery.
    Load,
}

/// Counters of one operation kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Calls seen.
    pub calls: usize,
    /// Calls held now.
    pub waiting: usize,
    /// The most calls held at once.
    pub max_waiting: usize,
}

struct Control {
    fault: Mutex<Fault>,
    gate: Semaphore,
    stats: watch::Sender<OpStats>,
}

impl Control {
    fn new() -> Self {
        Self {
            fault: Mutex::new(Fault::Pass),
            gate: Semaphore::new(0),
            stats: watch::Sender::new(OpStats::default()),
        }
    }

    /// Applies the fault; `Ok` means: go on to the wrapped store.
    async fn enter(&self) -> Result<(), StoreError> {
        let fault = self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.stats.send_modify(|s| s.calls += 1);
        match fault {
            Fault::Pass => Ok(()),
            Fault::Fail(error) => Err(error),
            Fault::Hold => {
                self.stats.send_modify(|s| {
                    s.waiting += 1;
                    s.max_waiting = s.max_waiting.max(s.waiting);
                });
                let permit = self.gate.acquire().await;
                self.stats.send_modify(|s| s.waiting -= 1);
                permit.expect("the gate is never closed").forget();
                Ok(())
            }
        }
    }
}

/// Wraps any [`Store`]; appends and snapshot loads obey a [`Fault`] set per [`Op`]. Everything
/// else passes straight through. Cheap to clone (clones share their controls).
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    append: Arc<Control>,
    load: Arc<Control>,
}

impl FaultyStore {
    /// Wraps `inner`; every operation passes until told otherwise.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            append: Arc::new(Control::new()),
            load: Arc::new(Control::new()),
        }
    }

    fn control(&self, op: Op) -> &Control {
        match op {
            Op::Append => &self.append,
            Op::Load => &self.load,
        }
    }

    /// Sets what happens to later calls of `op` (calls already held stay held).
    pub fn set(&self, op: Op, fault: Fault) {
        *self
            .control(op)
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Lets `n` held (or future held) calls of `op` through.
    pub fn release(&self, op: Op, n: usize) {
        self.control(op).gate.add_permits(n);
    }

    /// The counters of `op` now.
    pub fn stats(&self, op: Op) -> OpStats {
        *self.control(op).stats.borrow()
    }

    /// Waits until `pred` holds for the counters of `op`.
    pub async fn wait_for(&self, op: Op, pred: impl FnMut(&OpStats) -> bool) -> OpStats {
        let mut rx = self.control(op).stats.subscribe();
        *rx.wait_for(pred)
            .await
            .expect("the sender lives in the store")
    }
}

impl Journal for FaultyStore {
    fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.append.enter().await?;
            self.inner.append(write).await
        })
    }

    fn replay(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        self.inner.replay(pid, from_seq_nr, to_seq_nr, max)
    }

    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.highest_seq_nr(pid)
    }

    fn delete_to(
        &self,
        pid: PersistenceId,
        to_seq_nr: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.delete_to(pid, to_seq_nr)
    }
}

impl SnapshotStore for FaultyStore {
    fn save(&self, snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.save(snapshot)
    }

    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        Box::pin(async move {
            self.load.enter().await?;
            self.inner.load(pid, selection).await
        })
    }

    fn delete(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        SnapshotStore::delete(&*self.inner, pid, selection)
    }
}

impl EventQuery for FaultyStore {
    fn events_by_persistence_id(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        mode: QueryMode,
    ) -> EventStream {
        self.inner
            .events_by_persistence_id(pid, from_seq_nr, to_seq_nr, mode)
    }

    fn events_by_tag(&self, tag: String, after: Offset, mode: QueryMode) -> EventStream {
        self.inner.events_by_tag(tag, after, mode)
    }

    fn persistence_ids(&self, mode: QueryMode) -> PersistenceIdStream {
        self.inner.persistence_ids(mode)
    }
}
