//! Actor references, reply handles and the mailbox envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::error::{AskError, StopReason, TellError};
use crate::system::DeadLetters;

/// What travels through a mailbox.
pub(crate) enum Envelope<M> {
    /// A message for the actor's handler.
    User(M),
    /// A timer firing: delivered only if `generation` is still the timer's current one.
    Timer {
        key: Arc<str>,
        generation: u64,
        msg: M,
    },
    /// A watched actor stopped: delivered only if this watch is still the current one.
    Watched {
        target: u64,
        generation: u64,
        msg: M,
    },
    /// Graceful stop: processed in order, after the messages enqueued before it.
    Stop,
}

/// Runs once when an actor stops for good (see [`Cell::on_stop`]).
pub(crate) type StopHook = Box<dyn FnOnce(&StopReason) + Send>;

/// The hooks to run when an actor stops, or, once they ran, why it stopped.
pub(crate) enum StopHooks {
    Open {
        next_id: u64,
        hooks: BTreeMap<u64, StopHook>,
    },
    Ran(StopReason),
}

/// What the actor's handler is doing, so that an asker whose reply handle was dropped can
/// tell "no reply" from "the actor stopped while handling my request".
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity {
    /// Bumped when a handler's outcome settles while someone watches (a wake-up only; the
    /// handler state itself is in [`Cell::handler`]).
    pub(crate) settles: u64,
    /// Set as soon as the actor decides to stop, before its children and hook run.
    pub(crate) stopping: Option<StopReason>,
}

/// What every reference to one actor shares: identity, the stop signal, the termination
/// notice.
pub(crate) struct Cell {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// Immediate stop (after the current message).
    pub(crate) kill: Notify,
    /// Why the pending kill was requested.
    pub(crate) kill_reason: Mutex<Option<StopReason>>,
    /// Set (for good) by the first kill request; checked between messages.
    pub(crate) kill_requested: AtomicBool,
    /// `None` while running; the reason once stopped.
    pub(crate) stopped: watch::Sender<Option<StopReason>>,
    pub(crate) activity: watch::Sender<Activity>,
    /// `(handler runs begun << 1) | busy`: busy while a handler runs or its outcome (carry on,
    /// restart, stop) is not decided yet. Written only by the actor's task; atomics keep the
    /// per-message cost off any lock.
    pub(crate) handler: AtomicU64,
    /// Receptionist deregistrations and watch notifications.
    pub(crate) stop_hooks: Mutex<StopHooks>,
    pub(crate) dead_letters: Arc<DeadLetters>,
    pub(crate) ask_timers: Arc<crate::ask_timer::AskTimers>,
    /// Aborts the actor's task (last resort of [`ActorSystem::shutdown_within`](crate::ActorSystem::shutdown_within)).
    pub(crate) task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Cell {
    pub(crate) fn new(
        id: u64,
        name: &str,
        dead_letters: Arc<DeadLetters>,
        ask_timers: Arc<crate::ask_timer::AskTimers>,
    ) -> Self {
        Self {
            id,
            name: Arc::from(name),
            kill: Notify::new(),
            kill_reason: Mutex::new(None),
            kill_requested: AtomicBool::new(false),
            stopped: watch::Sender::new(None),
            activity: watch::Sender::new(Activity::default()),
            handler: AtomicU64::new(0),
            stop_hooks: Mutex::new(StopHooks::Open {
                next_id: 0,
                hooks: BTreeMap::new(),
            }),
            dead_letters,
            ask_timers,
            task: std::sync::OnceLock::new(),
        }
    }

    /// Why the actor stopped; `None` until its termination is announced.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stopped.borrow().clone()
    }

    /// Why the actor stopped or is stopping (decided, but children and hook still running).
    pub(crate) fn known_stop_reason(&self) -> Option<StopReason> {
        self.stop_reason()
            .or_else(|| self.activity.borrow().stopping.clone())
    }

    /// Requests an immediate stop (after the current message). The first reason wins.
    pub(crate) fn kill_with(&self, reason: StopReason) {
        let mut slot = self.kill_reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
        drop(slot);
        self.kill_requested.store(true, Ordering::Release);
        self.kill.notify_one();
    }

    pub(crate) fn kill_pending(&self) -> bool {
        self.kill_requested.load(Ordering::Acquire)
    }

    pub(crate) fn take_kill_reason(&self) -> StopReason {
        self.kill_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(StopReason::Stopped)
    }

    /// A handler starts. Nobody waits for this transition, so nobody is woken.
    pub(crate) fn begin_message(&self) {
        let runs = self.handler.load(Ordering::SeqCst) >> 1;
        self.handler.store(((runs + 1) << 1) | 1, Ordering::SeqCst);
    }

    /// The last handler's outcome is settled and the actor carries on. Wakes askers waiting
    /// in [`why_no_reply`](Self::why_no_reply), if any: they subscribe before they read the
    /// handler state, so either they see it settled or this sees them subscribed.
    pub(crate) fn settled(&self) {
        self.handler.fetch_and(!1, Ordering::SeqCst);
        if self.activity.receiver_count() > 0 {
            self.activity.send_modify(|a| a.settles += 1);
        }
    }

    /// The actor has decided to stop.
    pub(crate) fn stopping(&self, reason: &StopReason) {
        self.activity
            .send_modify(|a| a.stopping = Some(reason.clone()));
    }

    /// Runs `hook` when the actor stops for good (just before `terminated()` returns), or at
    /// once if it already has. Returns an id for [`remove_on_stop`](Self::remove_on_stop).
    pub(crate) fn on_stop(&self, hook: StopHook) -> Option<u64> {
        let mut state = self.stop_hooks.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            StopHooks::Open { next_id, hooks } => {
                let id = *next_id;
                *next_id += 1;
                hooks.insert(id, hook);
                Some(id)
            }
            StopHooks::Ran(reason) => {
                let reason = reason.clone();
                drop(state);
                hook(&reason);
                None
            }
        }
    }

    pub(crate) fn remove_on_stop(&self, id: u64) {
        let mut state = self.stop_hooks.lock().unwrap_or_else(|e| e.into_inner());
        if let StopHooks::Open { hooks, .. } = &mut *state {
            hooks.remove(&id);
        }
    }

    /// Runs the stop hooks, in registration order, outside the lock. Hooks added later run
    /// at once.
    pub(crate) fn run_stop_hooks(&self, reason: &StopReason) {
        let previous = std::mem::replace(
            &mut *self.stop_hooks.lock().unwrap_or_else(|e| e.into_inner()),
            StopHooks::Ran(reason.clone()),
        );
        if let StopHooks::Open { hooks, .. } = previous {
            for hook in hooks.into_values() {
                hook(reason);
            }
        }
    }

    /// Why an asker's reply handle was dropped unanswered: if a handler was running, waits (up
    /// to `within`) until its outcome is settled, then reports the stop if there is one.
    pub(crate) async fn why_no_reply(&self, within: Duration) -> AskError {
        let mut activity = self.activity.subscribe();
        let stopping = activity.borrow_and_update().stopping.is_some();
        let now = self.handler.load(Ordering::SeqCst);
        if now & 1 == 1 && !stopping {
            let settled = activity.wait_for(|a| {
                let current = self.handler.load(Ordering::SeqCst);
                a.stopping.is_some() || current & 1 == 0 || current >> 1 != now >> 1
            });
            let _ = tokio::time::timeout(within, settled).await;
        }
        match self.known_stop_reason() {
            Some(reason) => AskError::Stopped(reason),
            None => AskError::NoReply,
        }
    }
}

/// Maps messages of type `R` into an actor's own protocol (see
/// [`Context::message_adapter`](crate::Context::message_adapter)).
pub(crate) trait AdapterTarget<R>: Send + Sync {
    fn try_tell(&self, msg: R) -> Result<(), TellError<R>>;
    fn send(&self, msg: R) -> futures_util::future::BoxFuture<'_, Result<(), TellError<R>>>;
    fn stop(&self) -> futures_util::future::BoxFuture<'_, ()>;
    fn cell(&self) -> &Arc<Cell>;
}

pub(crate) struct Adapter<M, R> {
    pub(crate) tx: mpsc::Sender<Envelope<M>>,
    pub(crate) cell: Arc<Cell>,
    pub(crate) map: Box<dyn Fn(R) -> M + Send + Sync>,
}

impl<M: Send + 'static, R: Send + 'static> AdapterTarget<R> for Adapter<M, R> {
    fn try_tell(&self, msg: R) -> Result<(), TellError<R>> {
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(Envelope::User((self.map)(msg)));
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                self.cell
                    .dead_letters
                    .record(&self.cell.name, "mailbox full");
                Err(TellError::Full(msg))
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                self.cell
                    .dead_letters
                    .record(&self.cell.name, "actor stopped");
                Err(TellError::Closed(msg))
            }
        }
    }

    fn send(&self, msg: R) -> futures_util::future::BoxFuture<'_, Result<(), TellError<R>>> {
        Box::pin(async move {
            match self.tx.reserve().await {
                Ok(permit) => {
                    permit.send(Envelope::User((self.map)(msg)));
                    Ok(())
                }
                Err(_) => {
                    self.cell
                        .dead_letters
                        .record(&self.cell.name, "actor stopped");
                    Err(TellError::Closed(msg))
                }
            }
        })
    }

    fn stop(&self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.tx.send(Envelope::Stop).await;
        })
    }

    fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }
}

enum RefInner<M> {
    Local {
        tx: mpsc::Sender<Envelope<M>>,
        cell: Arc<Cell>,
    },
    Adapter(Arc<dyn AdapterTarget<M>>),
}

/// A typed handle to an actor that accepts messages of type `M`.
///
/// Cheap to clone; equal (and hashed) by actor identity. `tell` never blocks: when the
/// mailbox is full or the actor has stopped the message comes back in the error and is
/// counted as a dead letter. `ask` sends a request carrying a [`ReplyTo`] and waits for the
/// answer with a timeout.
pub struct ActorRef<M> {
    inner: RefInner<M>,
}

impl<M> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            RefInner::Local { tx, cell } => RefInner::Local {
                tx: tx.clone(),
                cell: cell.clone(),
            },
            RefInner::Adapter(a) => RefInner::Adapter(a.clone()),
        };
        Self { inner }
    }
}

impl<M: Send + 'static> ActorRef<M> {
    pub(crate) fn local(tx: mpsc::Sender<Envelope<M>>, cell: Arc<Cell>) -> Self {
        Self {
            inner: RefInner::Local { tx, cell },
        }
    }

    pub(crate) fn adapter(target: Arc<dyn AdapterTarget<M>>) -> Self {
        Self {
            inner: RefInner::Adapter(target),
        }
    }

    pub(crate) fn cell(&self) -> &Arc<Cell> {
        match &self.inner {
            RefInner::Local { cell, .. } => cell,
            RefInner::Adapter(a) => a.cell(),
        }
    }

    /// Enqueues `msg` without waiting. On a full mailbox or a stopped actor the message is
    /// handed back in the error (and counted as a dead letter).
    pub fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        match &self.inner {
            RefInner::Local { tx, cell } => match tx.try_send(Envelope::User(msg)) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(env)) => {
                    cell.dead_letters.record(&cell.name, "mailbox full");
                    Err(TellError::Full(unwrap_user(env)))
                }
                Err(mpsc::error::TrySendError::Closed(env)) => {
                    cell.dead_letters.record(&cell.name, "actor stopped");
                    Err(TellError::Closed(unwrap_user(env)))
                }
            },
            RefInner::Adapter(a) => a.try_tell(msg),
        }
    }

    /// Enqueues `msg`, waiting for mailbox space (backpressure). Fails only when the actor
    /// has stopped, handing the message back.
    pub async fn send(&self, msg: M) -> Result<(), TellError<M>> {
        match &self.inner {
            RefInner::Local { tx, cell } => match tx.send(Envelope::User(msg)).await {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendError(env)) => {
                    cell.dead_letters.record(&cell.name, "actor stopped");
                    Err(TellError::Closed(unwrap_user(env)))
                }
            },
            RefInner::Adapter(a) => a.send(msg).await,
        }
    }

    /// Sends the request built by `make` (which receives the reply handle) and waits up to
    /// `timeout` for the answer. Deadlines are shared in 5 ms slots (one timer per slot, not
    /// per ask), so a timeout fires between `timeout` and `timeout` + 5 ms.
    ///
    /// If the reply handle is dropped unanswered while the actor is handling the request, the
    /// outcome of that handler decides: [`AskError::Stopped`] if the actor stops because of it
    /// (it failed under [`SupervisorStrategy::Stop`](crate::SupervisorStrategy::Stop), called
    /// [`Context::stop`](crate::Context::stop), or was killed meanwhile), otherwise
    /// [`AskError::NoReply`].
    pub async fn ask<R>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let (reply, rx) = ReplyTo::pair();
        match self.tell(make(reply)) {
            Ok(()) => {}
            Err(TellError::Full(_)) => return Err(AskError::MailboxFull),
            Err(TellError::Closed(_)) => {
                return Err(AskError::Stopped(
                    self.cell()
                        .known_stop_reason()
                        .unwrap_or(StopReason::Stopped),
                ));
            }
        }
        // A shared coarse deadline (see `ask_timer`), not a timer per ask.
        let slot = self.cell().ask_timers.slot(timeout);
        tokio::select! {
            biased;
            answer = rx => match answer {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(failure)) => Err(AskError::Failed(failure)),
                Err(_dropped) => {
                    let left = slot.deadline.saturating_duration_since(tokio::time::Instant::now());
                    Err(self.cell().why_no_reply(left).await)
                }
            },
            () = slot.fired() => Err(AskError::Timeout),
        }
    }

    /// Graceful stop: the actor stops after handling the messages enqueued before this call.
    /// Waits for mailbox space; returns at once if the actor has already stopped.
    pub async fn stop(&self) {
        match &self.inner {
            RefInner::Local { tx, .. } => {
                let _ = tx.send(Envelope::Stop).await;
            }
            RefInner::Adapter(a) => a.stop().await,
        }
    }

    /// Immediate stop: the actor stops after the message it is handling now; messages still
    /// in its mailbox become dead letters.
    pub fn kill(&self) {
        self.cell().kill_with(StopReason::Stopped);
    }

    /// Waits until the actor has stopped (its post-stop hook has run) and returns why.
    pub async fn terminated(&self) -> StopReason {
        let mut rx = self.cell().stopped.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(StopReason::Stopped),
            // The sender lives in the cell we hold; it cannot be dropped.
            Err(_) => StopReason::Stopped,
        }
    }

    /// Why the actor stopped, or `None` while it runs.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.cell().stop_reason()
    }

    /// The actor's name (unique within its parent).
    pub fn name(&self) -> &str {
        &self.cell().name
    }

    /// A process-unique number identifying the actor.
    pub fn id(&self) -> u64 {
        self.cell().id
    }
}

fn unwrap_user<M>(env: Envelope<M>) -> M {
    match env {
        Envelope::User(m) | Envelope::Timer { msg: m, .. } | Envelope::Watched { msg: m, .. } => m,
        Envelope::Stop => unreachable!("tell only sends user messages"),
    }
}

impl<M: Send + 'static> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<M: Send + 'static> Eq for ActorRef<M> {}

impl<M: Send + 'static> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl<M: Send + 'static> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({}#{})", self.name(), self.id())
    }
}

/// The handle an actor answers a request through; carried inside the request message.
///
/// Answer once with [`send`](ReplyTo::send), or report a failure with
/// [`fail`](ReplyTo::fail) (the asker gets [`AskError::Failed`]). Dropping it unanswered gives
/// the asker [`AskError::NoReply`] (or [`AskError::Stopped`] if the actor stopped).
pub struct ReplyTo<T> {
    tx: oneshot::Sender<Result<T, String>>,
}

impl<T> ReplyTo<T> {
    /// A reply handle and the receiver of its answer, for asking without an actor ref.
    pub fn pair() -> (Self, oneshot::Receiver<Result<T, String>>) {
        let (tx, rx) = oneshot::channel();
        (Self { tx }, rx)
    }

    /// Answers with `value`. Returns false if the asker is gone (timed out); the value is
    /// dropped.
    pub fn send(self, value: T) -> bool {
        self.tx.send(Ok(value)).is_ok()
    }

    /// Answers with a failure.
    pub fn fail(self, reason: impl Into<String>) -> bool {
        self.tx.send(Err(reason.into())).is_ok()
    }

    /// Whether the asker has stopped waiting.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo(..)")
    }
}

/// Anything a request can be answered through: a local [`ReplyTo`], or a reply handle that
/// travels between nodes (`shoal_remote::RemoteReplyTo`). Event-sourced entities answer
/// through this trait, so the same entity serves local and remote (sharded) askers.
pub trait Reply<T>: Send + 'static {
    /// Answers with `value`; false if the answer was dropped (asker gone).
    fn send(self, value: T) -> bool;
    /// Answers with a failure; the asker gets [`AskError::Failed`].
    fn fail(self, reason: String) -> bool;
}

impl<T: Send + 'static> Reply<T> for ReplyTo<T> {
    fn send(self, value: T) -> bool {
        ReplyTo::send(self, value)
    }

    fn fail(self, reason: String) -> bool {
        ReplyTo::fail(self, reason)
    }
}
