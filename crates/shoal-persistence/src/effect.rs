//! What a command handler decides: persist events (or not), then side effects that run only
//! after the events are committed.

use shoal_actor::Reply;

use crate::EventSourced;

pub(crate) enum Action<Ev> {
    None,
    Persist(Vec<Ev>),
    Unhandled,
    Stop,
}

/// Answers a request after commit, or reports the failure.
pub(crate) trait PendingReply<S>: Send {
    fn complete(self: Box<Self>, state: &S);
    fn fail(self: Box<Self>, reason: &str);
}

struct ReplyWith<R, F> {
    reply: R,
    make: F,
}

impl<S, T, R: Reply<T>, F: FnOnce(&S) -> T + Send> PendingReply<S> for ReplyWith<R, F> {
    fn complete(self: Box<Self>, state: &S) {
        let this = *self;
        this.reply.send((this.make)(state));
    }

    fn fail(self: Box<Self>, reason: &str) {
        self.reply.fail(reason.to_owned());
    }
}

pub(crate) enum SideEffect<S> {
    Run(Box<dyn FnOnce(&S) + Send>),
    Reply(Box<dyn PendingReply<S>>),
}

/// The decision of [`EventSourced::on_command`].
///
/// Build it with [`persist`](Effect::persist), [`persist_all`](Effect::persist_all),
/// [`none`](Effect::none), [`reply`](Effect::reply), [`unhandled`](Effect::unhandled) or
/// [`stop`](Effect::stop), then chain side effects. Side effects run in order, after the
/// events are committed and applied, with the new state. If the write fails, no `then_run`
/// effect runs and every reply gets a failure ([`AskError::Failed`](shoal_actor::AskError)).
#[must_use = "an effect does nothing unless returned from on_command"]
pub struct Effect<E: EventSourced> {
    pub(crate) action: Action<E::Event>,
    pub(crate) side_effects: Vec<SideEffect<E::State>>,
    pub(crate) stop_after: bool,
}

impl<E: EventSourced> Effect<E> {
    fn new(action: Action<E::Event>) -> Self {
        Self {
            action,
            side_effects: Vec::new(),
            stop_after: false,
        }
    }

    /// Persist one event.
    pub fn persist(event: E::Event) -> Self {
        Self::new(Action::Persist(vec![event]))
    }

    /// Persist several events atomically: all are stored or none. An empty list is the same
    /// as [`none`](Effect::none).
    pub fn persist_all(events: Vec<E::Event>) -> Self {
        if events.is_empty() {
            Self::none()
        } else {
            Self::new(Action::Persist(events))
        }
    }

    /// Persist nothing (side effects still run).
    pub fn none() -> Self {
        Self::new(Action::None)
    }

    /// Persist nothing and answer `reply` (a local [`ReplyTo`](shoal_actor::ReplyTo) or a
    /// remote reply handle) with `value`.
    pub fn reply<T: Send + 'static>(reply: impl Reply<T>, value: T) -> Self {
        Self::none().then_reply(reply, move |_| value)
    }

    /// The command is not handled in this state: logged, and reply handles it carries are
    /// dropped (the asker sees [`AskError::NoReply`](shoal_actor::AskError)).
    pub fn unhandled() -> Self {
        Self::new(Action::Unhandled)
    }

    /// Stop the entity (after side effects).
    pub fn stop() -> Self {
        Self::new(Action::Stop)
    }

    /// After commit, answer `reply` with `make(&new_state)`.
    pub fn then_reply<T: Send + 'static>(
        mut self,
        reply: impl Reply<T>,
        make: impl FnOnce(&E::State) -> T + Send + 'static,
    ) -> Self {
        self.side_effects
            .push(SideEffect::Reply(Box::new(ReplyWith { reply, make })));
        self
    }

    /// After commit, run `f` with the new state.
    pub fn then_run(mut self, f: impl FnOnce(&E::State) + Send + 'static) -> Self {
        self.side_effects.push(SideEffect::Run(Box::new(f)));
        self
    }

    /// After commit and side effects, stop the entity.
    pub fn then_stop(mut self) -> Self {
        self.stop_after = true;
        self
    }
}
