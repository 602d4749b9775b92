//! A number that many tasks wait on, waking them in a deterministic order.
//!
//! `tokio::sync::watch` spreads its waiters over eight `Notify` shards picked by tokio's
//! runtime RNG, and wakes them shard by shard. That RNG is seeded from OS randomness (unless
//! tokio is built with `--cfg tokio_unstable` and given a seed), so after a shutdown or a
//! quarantine the endpoint's connection tasks ran in a different order in every run, and
//! simulations (turmoil) did not reproduce from their seed. A single `Notify` wakes its
//! waiters in the order they registered.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

pub(super) struct Signal {
    value: AtomicU64,
    notify: Notify,
}

impl Signal {
    pub(super) fn new(value: u64) -> Self {
        Signal {
            value: AtomicU64::new(value),
            notify: Notify::new(),
        }
    }

    pub(super) fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Sets the value to `f(value)` and wakes every waiter.
    pub(super) fn update(&self, f: impl Fn(u64) -> u64) {
        let _ = self
            .value
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(f(v)));
        self.notify.notify_waiters();
    }

    /// Waits until `pred(value)` holds; returns that value.
    pub(super) async fn wait_for(&self, pred: impl Fn(u64) -> bool) -> u64 {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: an update in between is not missed.
            notified.as_mut().enable();
            let value = self.get();
            if pred(value) {
                return value;
            }
            notified.await;
        }
    }

    /// Waits until the value differs from `seen`, and remembers it there.
    pub(super) async fn changed(&self, seen: &mut u64) {
        let before = *seen;
        *seen = self.wait_for(|v| v != before).await;
    }
}
