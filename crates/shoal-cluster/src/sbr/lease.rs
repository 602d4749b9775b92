//! Leases for the lease-majority strategy.

use std::fmt;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

/// Why a lease operation has no answer. The resolver treats it as "not acquired": it downs
/// its own side, which is the safe choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The backend could not be reached or did not answer in time; whether the lease
    /// changed is unknown. Retrying is safe.
    #[error("lease `{lease}` unavailable: {reason}")]
    Unavailable {
        /// The lease name.
        lease: String,
        /// What went wrong.
        reason: String,
    },
}

/// A named, exclusive lease shared by all nodes of a cluster (a row in PostgreSQL, an object
/// in Kubernetes, …).
///
/// Rules every implementation keeps:
/// * at most one owner holds it at any time;
/// * `acquire` returns `Ok(true)` only if `owner` holds the lease when the call returns
///   (acquiring a lease one already holds succeeds); `Ok(false)` if someone else holds it;
/// * `release` by a non-holder changes nothing and returns `Ok(false)`;
/// * an `Err` means the outcome is unknown.
///
/// The membership core never calls this: it emits `Effect::AcquireLease` /
/// `Effect::ReleaseLease`, the runner calls the lease and feeds the result back.
pub trait Lease: fmt::Debug + Send + Sync {
    /// Try to take the lease for `owner`.
    fn acquire<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<bool, LeaseError>>;
    /// Give the lease up if `owner` holds it.
    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<bool, LeaseError>>;
}

/// A lease in memory, shared by clones: for tests and for nodes simulated in one process.
/// It has no expiry: a holder that dies keeps it until someone calls
/// [`force_release`](Self::force_release).
#[derive(Debug, Clone, Default)]
pub struct InMemoryLease {
    holder: Arc<Mutex<Option<String>>>,
}

impl InMemoryLease {
    /// A free lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current holder.
    pub fn holder(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Free the lease whoever holds it (what an expiry would do).
    pub fn force_release(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // The guarded value is a plain Option: a panic elsewhere cannot leave it torn.
        self.holder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_acquire(&self, owner: &str) -> bool {
        let mut holder = self.lock();
        match holder.as_deref() {
            None => {
                *holder = Some(owner.to_string());
                true
            }
            Some(h) => h == owner,
        }
    }

    fn try_release(&self, owner: &str) -> bool {
        let mut holder = self.lock();
        if holder.as_deref() == Some(owner) {
            *holder = None;
            true
        } else {
            false
        }
    }
}

impl Lease for InMemoryLease {
    fn acquire<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<bool, LeaseError>> {
        let result = self.try_acquire(owner);
        Box::pin(async move { Ok(result) })
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<bool, LeaseError>> {
        let result = self.try_release(owner);
        Box::pin(async move { Ok(result) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_shared_by_clones() {
        let a = InMemoryLease::new();
        let b = a.clone();
        assert_eq!(a.acquire("n1").await, Ok(true));
        assert_eq!(a.acquire("n1").await, Ok(true), "re-entrant");
        assert_eq!(b.acquire("n2").await, Ok(false));
        assert_eq!(b.release("n2").await, Ok(false));
        assert_eq!(b.holder().as_deref(), Some("n1"));
        assert_eq!(a.release("n1").await, Ok(true));
        assert_eq!(b.acquire("n2").await, Ok(true));
        b.force_release();
        assert_eq!(a.holder(), None);
    }
}
