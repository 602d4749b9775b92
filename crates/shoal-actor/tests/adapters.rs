//! Message adapters and `pipe_to_self`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Props, ReplyTo, StopReason, TellError,
};
use tokio::sync::oneshot;

const ASK: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Owner {
    seen: Vec<String>,
    /// Where `seen` goes when the actor stops.
    log: Arc<Mutex<Vec<String>>>,
    /// Results of `pipe_to_self`, answered when they arrive.
    waiting: Option<ReplyTo<u64>>,
}

enum Msg {
    /// What the adapter maps a `u32` to.
    FromAdapter(u32),
    Local(&'static str),
    Adapter(ReplyTo<ActorRef<u32>>),
    Seen(ReplyTo<Vec<String>>),
    Block {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
    /// Computes outside the actor, answers when the result is piped back.
    Compute(oneshot::Receiver<u64>, ReplyTo<u64>),
    Computed(u64),
}

impl Actor for Owner {
    type Msg = Msg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::FromAdapter(n) => self.seen.push(format!("adapted {n}")),
            Msg::Local(s) => self.seen.push(s.to_owned()),
            Msg::Adapter(reply) => {
                reply.send(ctx.message_adapter(Msg::FromAdapter));
            }
            Msg::Seen(reply) => {
                reply.send(self.seen.clone());
            }
            Msg::Block { entered, release } => {
                let _ = entered.send(());
                let _ = release.await;
            }
            Msg::Compute(input, reply) => {
                self.waiting = Some(reply);
                ctx.pipe_to_self(async move { input.await.unwrap_or(0) * 2 }, Msg::Computed);
            }
            Msg::Computed(v) => {
                self.seen.push(format!("computed {v}"));
                if let Some(reply) = self.waiting.take() {
                    reply.send(v);
                }
            }
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>, _reason: &StopReason) {
        *self.log.lock().unwrap() = std::mem::take(&mut self.seen);
    }
}

fn owner(system: &ActorSystem, capacity: usize) -> ActorRef<Msg> {
    owner_with_log(system, capacity, Arc::default())
}

fn owner_with_log(
    system: &ActorSystem,
    capacity: usize,
    log: Arc<Mutex<Vec<String>>>,
) -> ActorRef<Msg> {
    system.spawn(
        "owner",
        Props::new(move || Owner {
            log: log.clone(),
            ..Owner::default()
        })
        .with_mailbox_capacity(capacity),
    )
}

/// What the actor has seen, once everything queued before has been handled. Waits for
/// mailbox room (the mailbox may still be full right after the actor was released).
async fn seen(actor: &ActorRef<Msg>) -> Vec<String> {
    let (reply, answer) = ReplyTo::pair();
    actor.send(Msg::Seen(reply)).await.unwrap();
    answer.await.unwrap().unwrap()
}

async fn park(actor: &ActorRef<Msg>) -> oneshot::Sender<()> {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    actor
        .tell(Msg::Block {
            entered: entered_tx,
            release: release_rx,
        })
        .unwrap();
    entered_rx.await.expect("actor parked");
    release_tx
}

#[tokio::test]
async fn an_adapter_delivers_mapped_messages_in_order() {
    let system = ActorSystem::new("t");
    let actor = owner(&system, 16);
    let adapter = actor.ask(Msg::Adapter, ASK).await.unwrap();
    adapter.tell(1).unwrap();
    actor.tell(Msg::Local("between")).unwrap();
    adapter.send(2).await.unwrap();
    assert_eq!(
        seen(&actor).await,
        vec!["adapted 1", "between", "adapted 2"]
    );
    // The adapter is the owner: same identity, same lifetime.
    assert_eq!(adapter.id(), actor.id());
    assert_eq!(adapter.name(), "owner");
    assert_eq!(adapter.stop_reason(), None);
    system.shutdown().await;
    assert_eq!(adapter.terminated().await, StopReason::SystemShutdown);
}

#[tokio::test]
async fn an_adapter_on_a_full_mailbox_hands_the_original_message_back() {
    let system = ActorSystem::new("t");
    let actor = owner(&system, 1);
    let adapter = actor.ask(Msg::Adapter, ASK).await.unwrap();
    let release = park(&actor).await;
    actor.tell(Msg::Local("fill")).unwrap();
    let err = adapter.tell(7).unwrap_err();
    assert!(matches!(err, TellError::Full(7)), "{err:?}");
    assert_eq!(err.into_inner(), 7);
    assert_eq!(system.dead_letter_count(), 1);
    release.send(()).unwrap();
    assert_eq!(seen(&actor).await, vec!["fill"]);
    system.shutdown().await;
}

#[tokio::test]
async fn an_adapter_of_a_stopped_actor_is_closed() {
    let system = ActorSystem::new("t");
    let actor = owner(&system, 4);
    let adapter = actor.ask(Msg::Adapter, ASK).await.unwrap();
    actor.kill();
    actor.terminated().await;
    let err = adapter.tell(3).unwrap_err();
    assert!(matches!(err, TellError::Closed(3)), "{err:?}");
    let err = adapter.send(4).await.unwrap_err();
    assert!(matches!(err, TellError::Closed(4)), "{err:?}");
    assert_eq!(system.dead_letter_count(), 2);
}

/// `stop` through an adapter is graceful, like through the actor's own ref.
#[tokio::test]
async fn stop_through_an_adapter_is_graceful() {
    let system = ActorSystem::new("t");
    let log = Arc::default();
    let actor = owner_with_log(&system, 8, Arc::clone(&log));
    let adapter = actor.ask(Msg::Adapter, ASK).await.unwrap();
    let release = park(&actor).await;
    adapter.tell(1).unwrap();
    adapter.tell(2).unwrap();
    adapter.stop().await;
    // Queued after the stop: never handled.
    adapter.tell(3).unwrap();
    let (reply, unanswered) = ReplyTo::pair();
    actor.tell(Msg::Seen(reply)).unwrap();
    release.send(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert!(unanswered.await.is_err());
    assert_eq!(*log.lock().unwrap(), vec!["adapted 1", "adapted 2"]);
    assert_eq!(system.dead_letter_count(), 2);
}

#[tokio::test]
async fn pipe_to_self_delivers_the_mapped_result_without_blocking_the_actor() {
    let system = ActorSystem::new("t");
    let actor = owner(&system, 16);
    let (input_tx, input_rx) = oneshot::channel();
    let asked = {
        let actor = actor.clone();
        tokio::spawn(async move { actor.ask(|r| Msg::Compute(input_rx, r), ASK).await })
    };
    // The actor keeps handling messages while the future is pending.
    actor.tell(Msg::Local("still responsive")).unwrap();
    assert_eq!(seen(&actor).await, vec!["still responsive"]);
    input_tx.send(21).unwrap();
    assert_eq!(asked.await.unwrap(), Ok(42));
    assert_eq!(seen(&actor).await, vec!["still responsive", "computed 42"]);
    system.shutdown().await;
}
