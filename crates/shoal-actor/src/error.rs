//! Errors and stop reasons of the actor runtime.

use std::fmt;

/// Why an actor stopped. Observed through [`ActorRef::terminated`](crate::ActorRef::terminated),
/// watch notifications and [`AskError::Stopped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Stopped on request ([`Context::stop`](crate::Context::stop),
    /// [`ActorRef::stop`](crate::ActorRef::stop), [`ActorRef::kill`](crate::ActorRef::kill)).
    Stopped,
    /// Failed (an error or a panic) and its supervision strategy said stop, or its restarts
    /// ran out. Holds the last failure.
    Failed(String),
    /// Stopped because its parent stopped.
    ParentStopped,
    /// Stopped by [`ActorSystem::shutdown`](crate::ActorSystem::shutdown).
    SystemShutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Stopped => f.write_str("stopped"),
            StopReason::Failed(why) => write!(f, "failed: {why}"),
            StopReason::ParentStopped => f.write_str("parent stopped"),
            StopReason::SystemShutdown => f.write_str("system shut down"),
        }
    }
}

/// A failure inside an actor: returned from [`Actor`](crate::Actor) hooks to hand the
/// decision to the actor's supervision strategy. Any `std::error::Error` converts with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorError {
    message: String,
}

impl ActorError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for ActorError {
    fn from(e: E) -> Self {
        Self::new(e.to_string())
    }
}

/// A `tell` that did not enqueue its message; the message is handed back.
///
/// State did not change: the message was not delivered. Retrying a `Full` later is safe; a
/// `Closed` actor never accepts messages again.
#[derive(PartialEq, Eq, thiserror::Error)]
pub enum TellError<M> {
    /// The mailbox is at capacity (overflow policy: refuse the newest message). Counted as a
    /// dead letter.
    #[error("mailbox full")]
    Full(M),
    /// The actor has stopped. Counted as a dead letter.
    #[error("actor stopped")]
    Closed(M),
}

impl<M> TellError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m) | TellError::Closed(m) => m,
        }
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TellError::Full(_) => f.write_str("TellError::Full(..)"),
            TellError::Closed(_) => f.write_str("TellError::Closed(..)"),
        }
    }
}

/// Why an [`ask`](crate::ActorRef::ask) produced no answer.
///
/// Whether the request had an effect is unknown for `Timeout` and `NoReply` (it may have been
/// processed); it had none for `MailboxFull` and for a `Stopped` reported at send time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No answer within the timeout. The request may still be processed.
    #[error("ask timed out")]
    Timeout,
    /// The actor has stopped (before or while handling the request).
    #[error("actor {0}")]
    Stopped(StopReason),
    /// The mailbox was full; the request was not enqueued.
    #[error("mailbox full")]
    MailboxFull,
    /// The actor answered with a failure (for example, a persistent entity whose write failed).
    #[error("request failed: {0}")]
    Failed(String),
    /// The actor dropped the reply handle without answering.
    #[error("no reply")]
    NoReply,
}

/// The stash is at capacity; the message is handed back.
#[derive(PartialEq, Eq, thiserror::Error)]
#[error("stash full")]
pub struct StashFull<M>(pub M);

impl<M> fmt::Debug for StashFull<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StashFull(..)")
    }
}
