//! Coarse, shared deadlines for `ask`.
//!
//! A tokio timer per ask costs more than the whole local round trip (it registers in and
//! deregisters from the runtime's timer wheel, and parks workers with a deadline). Asks instead
//! share one timer per [`GRANULARITY`] slot: an ask whose deadline falls in a slot waits on the
//! slot's [`Notify`], and one task per slot fires it. An ask therefore times out between its
//! timeout and its timeout plus [`GRANULARITY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How finely ask deadlines are resolved.
pub(crate) const GRANULARITY: Duration = Duration::from_millis(5);

/// One slot: every ask with a deadline in it.
pub(crate) struct Slot {
    pub(crate) deadline: Instant,
    fired: AtomicBool,
    notify: Notify,
}

impl Slot {
    /// Waits until the slot fires. Registers before checking `fired`, so a firing between the
    /// lookup and the wait is never missed.
    pub(crate) async fn fired(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.fired.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// Fires its slot when dropped, too: if the runtime that ran the slot's task goes away, its
/// waiters time out instead of hanging.
struct FireOnDrop(Arc<Slot>);

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        self.0.fire();
    }
}

/// The slots of one actor system.
pub(crate) struct AskTimers {
    epoch: Instant,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl AskTimers {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The slot holding the deadline `timeout` from now (rounded up to the slot's end).
    pub(crate) fn slot(self: &Arc<Self>, timeout: Duration) -> Arc<Slot> {
        let due = Instant::now() + timeout;
        let index = (due.saturating_duration_since(self.epoch).as_nanos() / GRANULARITY.as_nanos())
            .min(u128::from(u64::MAX - 1)) as u64
            + 1;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&index) {
            return slot.clone();
        }
        let deadline = self
            .epoch
            .checked_add(GRANULARITY.saturating_mul(u32::try_from(index).unwrap_or(u32::MAX)))
            .unwrap_or(due);
        let slot = Arc::new(Slot {
            deadline,
            fired: AtomicBool::new(false),
            notify: Notify::new(),
        });
        slots.insert(index, slot.clone());
        drop(slots);
        let timers = self.clone();
        let guard = FireOnDrop(slot.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(guard.0.deadline).await;
            timers
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&index);
            drop(guard);
        });
        slot
    }
}

/// Shared coarse deadlines for waiting on answers, as [`ActorRef::ask`](crate::ActorRef::ask)
/// uses them: waits whose deadlines fall in one 5 ms slot share one timer task instead of
/// each registering a tokio timer (which costs more than a local round trip). A wait times
/// out between its timeout and its timeout plus 5 ms. Cheap to clone; create it inside a tokio
/// runtime.
#[derive(Clone)]
pub struct CoarseDeadlines(Arc<AskTimers>);

impl CoarseDeadlines {
    /// A new set of slots.
    pub fn new() -> Self {
        Self(Arc::new(AskTimers::new()))
    }

    /// `fut`'s output, or `None` if `timeout` (rounded up to its slot's end) passed first.
    pub async fn within<F: std::future::Future>(
        &self,
        timeout: Duration,
        fut: F,
    ) -> Option<F::Output> {
        let slot = self.0.slot(timeout);
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = slot.fired() => None,
        }
    }
}

impl Default for CoarseDeadlines {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CoarseDeadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoarseDeadlines").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn asks_in_one_slot_share_it_and_fire_at_its_end() {
        let timers = Arc::new(AskTimers::new());
        let a = timers.slot(Duration::from_millis(101));
        let b = timers.slot(Duration::from_millis(103));
        assert!(Arc::ptr_eq(&a, &b), "same 5 ms slot");
        let c = timers.slot(Duration::from_millis(107));
        assert!(!Arc::ptr_eq(&a, &c));
        let start = Instant::now();
        a.fired().await;
        assert_eq!(start.elapsed(), Duration::from_millis(105));
        // Waiting on a slot that already fired returns at once.
        b.fired().await;
        assert_eq!(start.elapsed(), Duration::from_millis(105));
        c.fired().await;
        assert_eq!(start.elapsed(), Duration::from_millis(110));
        assert!(
            timers.slots.lock().unwrap().is_empty(),
            "fired slots are removed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn within_answers_or_times_out_at_the_slot_end() {
        let deadlines = CoarseDeadlines::new();
        assert_eq!(
            deadlines
                .within(Duration::from_millis(50), async { 7 })
                .await,
            Some(7)
        );
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(
            deadlines.within(Duration::from_millis(51), never).await,
            None
        );
        assert_eq!(start.elapsed(), Duration::from_millis(55));
    }

    #[test]
    fn a_slot_whose_runtime_is_gone_fires() {
        let timers = Arc::new(AskTimers::new_in_runtime_for_test());
        let slot = {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async { timers.slot(Duration::from_secs(3600)) })
        };
        // The runtime dropped the slot's task: the slot fired instead of hanging its waiters.
        assert!(slot.fired.load(Ordering::SeqCst));
    }

    impl AskTimers {
        fn new_in_runtime_for_test() -> Self {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async { AskTimers::new() })
        }
    }
}
