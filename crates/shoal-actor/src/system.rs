//! The actor system: spawns top-level actors, counts dead letters, shuts down in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::actor_ref::Cell;
use crate::context::Context;
use crate::error::StopReason;
use crate::receptionist::Receptionist;
use crate::runtime;
use crate::{Actor, ActorRef, Props};

/// Counts messages that could not be delivered and logs the first at `warn`, the rest at
/// `debug`.
pub(crate) struct DeadLetters {
    count: AtomicU64,
    warned: AtomicBool,
}

impl DeadLetters {
    pub(crate) fn record(&self, recipient: &str, why: &str) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                recipient,
                why,
                "dead letter; further dead letters are logged at debug level and counted"
            );
        } else {
            tracing::debug!(recipient, why, count = n, "dead letter");
        }
    }
}

struct SystemInner {
    name: Arc<str>,
    seed: u64,
    next_id: AtomicU64,
    dead_letters: Arc<DeadLetters>,
    ask_timers: Arc<crate::ask_timer::AskTimers>,
    /// Running top-level actors by id (= spawn order), for ordered shutdown.
    top_level: Mutex<BTreeMap<u64, Arc<Cell>>>,
    receptionist: Receptionist,
}

/// A handle to an actor system; cheap to clone. Must be created inside a tokio runtime.
///
/// Top-level actors are spawned with [`spawn`](Self::spawn); [`shutdown`](Self::shutdown)
/// stops them in reverse spawn order, each after its children.
#[derive(Clone)]
pub struct ActorSystem {
    inner: Arc<SystemInner>,
}

impl ActorSystem {
    /// A new system named `name`, with randomness (restart jitter) seeded from the clock.
    pub fn new(name: &str) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::with_seed(name, seed)
    }

    /// A new system whose randomness derives from `seed`, for reproducible runs.
    pub fn with_seed(name: &str, seed: u64) -> Self {
        Self {
            inner: Arc::new(SystemInner {
                name: Arc::from(name),
                seed,
                next_id: AtomicU64::new(1),
                dead_letters: Arc::new(DeadLetters {
                    count: AtomicU64::new(0),
                    warned: AtomicBool::new(false),
                }),
                ask_timers: Arc::new(crate::ask_timer::AskTimers::new()),
                top_level: Mutex::new(BTreeMap::new()),
                receptionist: Receptionist::default(),
            }),
        }
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Starts a top-level actor.
    pub fn spawn<A: Actor>(&self, name: &str, props: Props<A>) -> ActorRef<A::Msg> {
        self.spawn_cell(name, props, true).0
    }

    /// Starts an actor; a `top_level` one is registered for shutdown before it runs (so that
    /// an actor stopping at once is not left registered).
    pub(crate) fn spawn_cell<A: Actor>(
        &self,
        name: &str,
        props: Props<A>,
        top_level: bool,
    ) -> (ActorRef<A::Msg>, Arc<Cell>) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(props.mailbox_capacity);
        let cell = Arc::new(Cell::new(
            id,
            name,
            self.inner.dead_letters.clone(),
            self.inner.ask_timers.clone(),
        ));
        if top_level {
            self.inner
                .top_level
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, cell.clone());
        }
        let actor = ActorRef::local(tx.clone(), cell.clone());
        let ctx = Context::new(
            actor.clone(),
            tx,
            cell.clone(),
            self.clone(),
            props.stash_capacity,
        );
        let seed = self.inner.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let task = tokio::spawn(runtime::run(props, ctx, rx, seed));
        let _ = cell.task.set(task.abort_handle());
        (actor, cell)
    }

    pub(crate) fn forget(&self, id: u64) {
        self.inner
            .top_level
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// How many messages could not be delivered since the system started.
    pub fn dead_letter_count(&self) -> u64 {
        self.inner.dead_letters.count.load(Ordering::Relaxed)
    }

    /// The local receptionist, where actors register under a [`ServiceKey`](crate::ServiceKey)
    /// and are found by it.
    pub fn receptionist(&self) -> &Receptionist {
        &self.inner.receptionist
    }

    /// Like [`shutdown`](Self::shutdown), but gives each actor at most `grace` to stop: an
    /// actor still running then (for example stuck in a call that never returns) has its task
    /// aborted — its `stopped` hook does not run, its children are left to the rest of the
    /// shutdown only if they are top-level, and its termination is announced as
    /// [`StopReason::Failed`]. Returns whether every actor stopped in time.
    pub async fn shutdown_within(&self, grace: std::time::Duration) -> bool {
        let mut all_in_time = true;
        while let Some(cell) = self.newest_top_level() {
            cell.kill_with(StopReason::SystemShutdown);
            let mut done = cell.stopped.subscribe();
            if tokio::time::timeout(grace, done.wait_for(Option::is_some))
                .await
                .is_err()
            {
                all_in_time = false;
                tracing::warn!(actor = %cell.name, ?grace, "actor did not stop in time; aborting");
                if let Some(task) = cell.task.get() {
                    task.abort();
                }
                let _ = done.wait_for(Option::is_some).await;
            }
            self.forget(cell.id);
        }
        all_in_time
    }

    fn newest_top_level(&self) -> Option<Arc<Cell>> {
        let top = self
            .inner
            .top_level
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        top.values().next_back().cloned()
    }

    /// Stops every top-level actor, newest first, waiting for each (and its children) to
    /// finish before stopping the next. Each sees [`StopReason::SystemShutdown`].
    pub async fn shutdown(&self) {
        while let Some(cell) = self.newest_top_level() {
            cell.kill_with(StopReason::SystemShutdown);
            let mut done = cell.stopped.subscribe();
            let _ = done.wait_for(Option::is_some).await;
            self.forget(cell.id);
        }
    }
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorSystem({})", self.inner.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActorError, Context};

    struct FailsToStart;

    impl Actor for FailsToStart {
        type Msg = ();

        async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
            Err(ActorError::new("no"))
        }

        async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            Ok(())
        }
    }

    fn top_level_len(system: &ActorSystem) -> usize {
        system.inner.top_level.lock().unwrap().len()
    }

    /// A top-level actor is no longer registered for shutdown once `terminated()` returned,
    /// even when it stops at once (registration used to race with its deregistration).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_top_level_actor_is_forgotten() {
        let system = ActorSystem::new("t");
        for i in 0..200 {
            let actor = system.spawn("short-lived", Props::new(|| FailsToStart));
            actor.terminated().await;
            assert_eq!(top_level_len(&system), 0, "iteration {i}");
        }
    }
}
