//! The actor's view of itself while it handles a message: its ref, timers, stash, children,
//! watches and adapters.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::actor_ref::{Adapter, Cell, Envelope};
use crate::error::{StashFull, StopReason};
use crate::{Actor, ActorRef, ActorSystem, Props};

struct TimerEntry {
    generation: u64,
    periodic: bool,
    task: JoinHandle<()>,
}

struct WatchEntry {
    generation: u64,
    /// The notification hook registered with the target (`None` if it already ran).
    hook: Option<u64>,
    target: Arc<Cell>,
}

/// Handed to every [`Actor`] hook: the actor's own ref and the tools that belong to one actor.
///
/// Everything started through the context (timers, watches, children) ends when the actor
/// stops; timers and the stash also end when it restarts.
pub struct Context<A: Actor> {
    pub(crate) myself: ActorRef<A::Msg>,
    pub(crate) tx: mpsc::Sender<Envelope<A::Msg>>,
    pub(crate) cell: Arc<Cell>,
    pub(crate) system: ActorSystem,
    pub(crate) stop_requested: bool,
    pub(crate) stash: VecDeque<A::Msg>,
    pub(crate) stash_capacity: usize,
    pub(crate) unstashed: VecDeque<A::Msg>,
    timers: HashMap<Arc<str>, TimerEntry>,
    next_generation: u64,
    pub(crate) children: Vec<Arc<Cell>>,
    /// By target id.
    watches: HashMap<u64, WatchEntry>,
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(
        myself: ActorRef<A::Msg>,
        tx: mpsc::Sender<Envelope<A::Msg>>,
        cell: Arc<Cell>,
        system: ActorSystem,
        stash_capacity: usize,
    ) -> Self {
        Self {
            myself,
            tx,
            cell,
            system,
            stop_requested: false,
            stash: VecDeque::new(),
            stash_capacity,
            unstashed: VecDeque::new(),
            timers: HashMap::new(),
            next_generation: 0,
            children: Vec::new(),
            watches: HashMap::new(),
        }
    }

    /// This actor's own reference.
    pub fn myself(&self) -> &ActorRef<A::Msg> {
        &self.myself
    }

    /// The actor system this actor runs in.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// This actor's name.
    pub fn name(&self) -> &str {
        &self.cell.name
    }

    /// Stops the actor after the current message: children stop, then the
    /// [`stopped`](Actor::stopped) hook runs; messages left in the mailbox become dead letters.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    // ---- stash ----

    /// Puts `msg` aside until [`unstash_all`](Self::unstash_all). Hands it back when the stash
    /// is full.
    pub fn stash(&mut self, msg: A::Msg) -> Result<(), StashFull<A::Msg>> {
        if self.stash.len() >= self.stash_capacity {
            return Err(StashFull(msg));
        }
        self.stash.push_back(msg);
        Ok(())
    }

    /// Replays every stashed message, in stash order, before anything else from the mailbox.
    pub fn unstash_all(&mut self) {
        if self.unstashed.is_empty() {
            std::mem::swap(&mut self.unstashed, &mut self.stash);
        } else {
            let mut stashed = std::mem::take(&mut self.stash);
            stashed.append(&mut self.unstashed);
            self.unstashed = stashed;
        }
    }

    /// How many messages are stashed.
    pub fn stash_len(&self) -> usize {
        self.stash.len()
    }

    // ---- timers ----

    /// Delivers `msg` to this actor once after `delay`. Replaces any timer with the same key;
    /// a replaced or cancelled timer's message is never delivered, even if already queued.
    pub fn start_single_timer(&mut self, key: &str, msg: A::Msg, delay: Duration) {
        let (key, generation) = self.new_timer_generation(key);
        let tx = self.tx.clone();
        let k = key.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx
                .send(Envelope::Timer {
                    key: k,
                    generation,
                    msg,
                })
                .await;
        });
        self.timers.insert(
            key,
            TimerEntry {
                generation,
                periodic: false,
                task,
            },
        );
    }

    /// Delivers a clone of `msg` to this actor every `interval`, first after one interval.
    /// Replaces any timer with the same key. A slow actor does not accumulate ticks: the next
    /// tick waits for mailbox space.
    pub fn start_periodic_timer(&mut self, key: &str, msg: A::Msg, interval: Duration)
    where
        A::Msg: Clone,
    {
        let (key, generation) = self.new_timer_generation(key);
        let tx = self.tx.clone();
        let k = key.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval;
            let mut ticks = tokio::time::interval_at(start, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let env = Envelope::Timer {
                    key: k.clone(),
                    generation,
                    msg: msg.clone(),
                };
                if tx.send(env).await.is_err() {
                    return;
                }
            }
        });
        self.timers.insert(
            key,
            TimerEntry {
                generation,
                periodic: true,
                task,
            },
        );
    }

    /// Cancels the timer with this key, if any. Its message will not be delivered.
    pub fn cancel_timer(&mut self, key: &str) {
        if let Some(entry) = self.timers.remove(key) {
            entry.task.abort();
        }
    }

    /// Whether a timer with this key is active.
    pub fn is_timer_active(&self, key: &str) -> bool {
        self.timers.contains_key(key)
    }

    /// Cancels every timer.
    pub fn cancel_all_timers(&mut self) {
        for (_, entry) in self.timers.drain() {
            entry.task.abort();
        }
    }

    fn new_timer_generation(&mut self, key: &str) -> (Arc<str>, u64) {
        self.cancel_timer(key);
        self.next_generation += 1;
        (Arc::from(key), self.next_generation)
    }

    /// Whether a fired timer message is current (and, for a single timer, retires it).
    pub(crate) fn timer_fired(&mut self, key: &str, generation: u64) -> bool {
        match self.timers.get(key) {
            Some(entry) if entry.generation == generation => {
                if !entry.periodic {
                    self.timers.remove(key);
                }
                true
            }
            _ => false,
        }
    }

    // ---- children, watches, adapters ----

    /// Starts a child actor. Children stop before their parent's [`stopped`](Actor::stopped)
    /// hook runs, and when their parent restarts, with [`StopReason::ParentStopped`].
    pub fn spawn<C: Actor>(&mut self, name: &str, props: Props<C>) -> ActorRef<C::Msg> {
        self.children.retain(|c| c.stop_reason().is_none());
        let (child, cell) = self.system.spawn_cell(name, props, false);
        self.children.push(cell);
        child
    }

    /// When `other` stops, delivers `on_stop(reason)` to this actor (at once if it has
    /// already stopped). Watching the same actor again replaces the earlier watch.
    ///
    /// The notification is in this actor's mailbox by the time `other.terminated()` returns
    /// (unless the mailbox is full; then it follows as soon as there is room).
    pub fn watch<N: Send + 'static>(
        &mut self,
        other: &ActorRef<N>,
        on_stop: impl FnOnce(StopReason) -> A::Msg + Send + 'static,
    ) {
        self.unwatch(other);
        self.next_generation += 1;
        let generation = self.next_generation;
        let target = other.cell().clone();
        let target_id = target.id;
        let tx = self.tx.clone();
        let hook = target.on_stop(Box::new(move |reason: &StopReason| {
            let env = Envelope::Watched {
                target: target_id,
                generation,
                msg: on_stop(reason.clone()),
            };
            // Delivered (or the watcher is gone): done. A full mailbox: wait for room.
            let Err(mpsc::error::TrySendError::Full(env)) = tx.try_send(env) else {
                return;
            };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                let _ = tx.send(env).await;
            });
        }));
        self.watches.insert(
            target_id,
            WatchEntry {
                generation,
                hook,
                target,
            },
        );
    }

    /// Stops watching `other`: no notification is delivered afterwards, even one already
    /// queued.
    pub fn unwatch<N: Send + 'static>(&mut self, other: &ActorRef<N>) {
        if let Some(WatchEntry {
            hook: Some(hook),
            target,
            ..
        }) = self.watches.remove(&other.id())
        {
            target.remove_on_stop(hook);
        }
    }

    /// Whether a watch notification is current (and retires the watch).
    pub(crate) fn watch_fired(&mut self, target: u64, generation: u64) -> bool {
        match self.watches.get(&target) {
            Some(entry) if entry.generation == generation => {
                self.watches.remove(&target);
                true
            }
            _ => false,
        }
    }

    /// A reference that accepts `R` and delivers `map(r)` to this actor: how an actor receives
    /// replies of another protocol. It shares this actor's mailbox and lifetime.
    pub fn message_adapter<R: Send + 'static>(
        &self,
        map: impl Fn(R) -> A::Msg + Send + Sync + 'static,
    ) -> ActorRef<R> {
        ActorRef::adapter(Arc::new(Adapter {
            tx: self.tx.clone(),
            cell: self.cell.clone(),
            map: Box::new(map),
        }))
    }

    /// Runs `fut` outside the actor and delivers `map(output)` to this actor when it completes
    /// (unless the actor has stopped by then).
    pub fn pipe_to_self<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
        map: impl FnOnce(T) -> A::Msg + Send + 'static,
    ) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let out = fut.await;
            let _ = tx.send(Envelope::User(map(out))).await;
        });
    }

    /// Drops what does not survive a restart: timers and the stash (as dead letters). Watches
    /// survive; children are stopped by the runtime.
    pub(crate) fn reset_for_restart(&mut self) {
        self.cancel_all_timers();
        self.drop_stash();
        self.stop_requested = false;
    }

    pub(crate) fn drop_stash(&mut self) {
        let dropped = self.stash.len() + self.unstashed.len();
        self.stash.clear();
        self.unstashed.clear();
        for _ in 0..dropped {
            self.cell
                .dead_letters
                .record(&self.cell.name, "stashed message dropped");
        }
    }

    pub(crate) fn end_watches(&mut self) {
        for (_, entry) in self.watches.drain() {
            if let Some(hook) = entry.hook {
                entry.target.remove_on_stop(hook);
            }
        }
    }
}
