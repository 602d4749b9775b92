//! Actor references, reply handles and the mailbox envelope.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
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
    /// Graceful stop: processed in order, after the messages enqueued before it.
    Stop,
}

/// What every reference to one actor shares: identity, the stop signal, the termination
/// notice.
pub(crate) struct Cell {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// Immediate stop (after the current message).
    pub(crate) kill: Notify,
    /// Why the pending kill was requested.
    pub(crate) kill_reason: std::sync::Mutex<Option<StopReason>>,
    /// `None` while running; the reason once stopped.
    pub(crate) stopped: watch::Sender<Option<StopReason>>,
    pub(crate) dead_letters: Arc<DeadLetters>,
}

impl Cell {
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stopped.borrow().clone()
    }
}

/// Maps messages of type `R` into an actor's own protocol (see
/// [`Context::message_adapter`](crate::Context::message_adapter)).
pub(crate) trait AdapterTarget<R>: Send + Sync {
    fn try_tell(&self, msg: R) -> Result<(), TellError<R>>;
    fn send(&self, msg: R) -> futures_util::future::BoxFuture<'_, Result<(), TellError<R>>>;
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
    /// `timeout` for the answer.
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
                    self.cell().stop_reason().unwrap_or(StopReason::Stopped),
                ));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(failure))) => Err(AskError::Failed(failure)),
            Ok(Err(_dropped)) => match self.cell().stop_reason() {
                Some(reason) => Err(AskError::Stopped(reason)),
                None => Err(AskError::NoReply),
            },
            Err(_elapsed) => Err(AskError::Timeout),
        }
    }

    /// Graceful stop: the actor stops after handling the messages enqueued before this call.
    /// Waits for mailbox space; returns at once if the actor has already stopped.
    pub async fn stop(&self) {
        match &self.inner {
            RefInner::Local { tx, .. } => {
                let _ = tx.send(Envelope::Stop).await;
            }
            RefInner::Adapter(_) => self.kill(),
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
        Envelope::User(m) | Envelope::Timer { msg: m, .. } => m,
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
