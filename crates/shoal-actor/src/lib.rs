//! Typed actors on tokio — the runtime under every other part of Shoal.
//!
//! An actor is one tokio task that owns its state and handles one message at a time; the
//! rest of the program holds a cheap, typed [`ActorRef<M>`] to it.
//!
//! * **Messages.** [`ActorRef::tell`] never blocks: when the bounded mailbox is full or the
//!   actor has stopped, the message comes back in [`TellError`] and counts as a dead letter
//!   (the overflow policy is *refuse the newest*). [`ActorRef::ask`] sends a request carrying
//!   a [`ReplyTo`] and waits with a timeout; [`AskError`] says why no answer came.
//! * **Supervision.** A hook that returns an [`ActorError`] or panics is a failure; the
//!   actor's [`SupervisorStrategy`] stops it or restarts a fresh instance from its factory
//!   after a [`Backoff`] (min, max, random factor, max restarts within a window).
//! * **Lifecycle.** [`Actor::started`] and [`Actor::stopped`] hooks; graceful
//!   [`ActorRef::stop`] (after queued messages) and immediate [`ActorRef::kill`];
//!   [`ActorRef::terminated`] and [`Context::watch`] to learn of a stop; children
//!   ([`Context::spawn`]) stop before their parent; [`ActorSystem::shutdown`] stops top-level
//!   actors newest first.
//! * **Tools in the [`Context`].** Keyed single and periodic timers (a cancelled timer's
//!   message is never delivered), a bounded stash, message adapters, `pipe_to_self`.
//! * **[`Receptionist`].** Register under a typed [`ServiceKey`], find, subscribe to
//!   listings.
//!
//! ```
//! use std::time::Duration;
//! use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props, ReplyTo};
//!
//! struct Counter(u64);
//! enum CounterMsg { Add(u64), Get(ReplyTo<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
//!         match msg {
//!             CounterMsg::Add(n) => self.0 += n,
//!             CounterMsg::Get(reply) => { reply.send(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let system = ActorSystem::new("example");
//! let counter = system.spawn("counter", Props::new(|| Counter(0)));
//! counter.tell(CounterMsg::Add(2)).unwrap();
//! let n = counter.ask(CounterMsg::Get, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(n, 2);
//! system.shutdown().await;
//! # }
//! ```

use std::future::Future;

mod actor_ref;
mod ask_timer;
mod context;
mod error;
mod props;
mod receptionist;
mod runtime;
mod system;

pub use actor_ref::{ActorRef, Reply, ReplyTo};
pub use ask_timer::CoarseDeadlines;
pub use context::Context;
pub use error::{ActorError, AskError, StashFull, StopReason, TellError};
pub use props::{
    Backoff, DEFAULT_MAILBOX_CAPACITY, DEFAULT_STASH_CAPACITY, Props, SupervisorStrategy,
};
pub use receptionist::{Listing, Receptionist, ServiceKey};
pub use system::ActorSystem;

/// An actor: state plus the hooks the runtime calls. One message at a time; `&mut self` is
/// never shared.
///
/// Implement the hooks with `async fn`; the futures must be `Send`.
pub trait Actor: Send + Sized + 'static {
    /// The messages this actor accepts.
    type Msg: Send + 'static;

    /// Runs before the first message (and again after each restart). An error is a failure.
    fn started(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message. An error (or a panic) is a failure, handled by the supervision
    /// strategy.
    fn handle(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Self::Msg,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// Runs once when the actor stops for good, after its children have stopped. (Not run
    /// when the factory never produced an instance: it panicked.)
    fn stopped(
        &mut self,
        ctx: &mut Context<Self>,
        reason: &StopReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, reason);
        async {}
    }
}
