//! `tell`, `send`, `ask` and dead letters.

use std::time::Duration;

use futures_util::FutureExt;
use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, AskError, Backoff, Context, Props, ReplyTo,
    StopReason, SupervisorStrategy, TellError,
};
use tokio::sync::oneshot;

const ASK: Duration = Duration::from_secs(5);

/// Records numbers; can be parked inside a handler so that its mailbox fills up.
#[derive(Default)]
struct Recorder {
    seen: Vec<u32>,
    /// Requests kept without answering (to make asks time out).
    kept: Vec<ReplyTo<u32>>,
}

enum Msg {
    Record(u32),
    /// Signals `entered`, then waits for `release` before returning.
    Block {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
    Seen(ReplyTo<Vec<u32>>),
    Echo(u32, ReplyTo<u32>),
    Keep(ReplyTo<u32>),
    FailReply(ReplyTo<u32>),
    DropReply(ReplyTo<u32>),
    /// Drops the reply and stops the actor (ctx.stop()).
    StopAndDrop(ReplyTo<u32>),
    /// Returns an error while holding the reply.
    FailWhileHolding(ReplyTo<u32>),
    /// Panics while holding the reply.
    PanicWhileHolding(ReplyTo<u32>),
    /// Holds the reply until `release`, then drops it.
    HoldUntil {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
        reply: ReplyTo<u32>,
    },
    Fail,
}

impl Actor for Recorder {
    type Msg = Msg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Record(n) => self.seen.push(n),
            Msg::Block { entered, release } => {
                let _ = entered.send(());
                let _ = release.await;
            }
            Msg::Seen(reply) => {
                reply.send(self.seen.clone());
            }
            Msg::Echo(n, reply) => {
                reply.send(n);
            }
            Msg::Keep(reply) => self.kept.push(reply),
            Msg::FailReply(reply) => {
                reply.fail("no such thing");
            }
            Msg::DropReply(reply) => drop(reply),
            Msg::StopAndDrop(reply) => {
                drop(reply);
                ctx.stop();
            }
            Msg::FailWhileHolding(reply) => {
                let _held = reply;
                return Err(ActorError::new("failed while handling"));
            }
            Msg::PanicWhileHolding(reply) => {
                let _held = reply;
                panic!("exploded while handling");
            }
            Msg::HoldUntil {
                entered,
                release,
                reply,
            } => {
                let _ = entered.send(());
                let _ = release.await;
                drop(reply);
            }
            Msg::Fail => return Err(ActorError::new("boom")),
        }
        Ok(())
    }
}

/// Parks the actor inside a handler; returns the release switch once it is parked.
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

fn recorder(capacity: usize) -> Props<Recorder> {
    Props::new(Recorder::default).with_mailbox_capacity(capacity)
}

fn record(msg: Msg) -> u32 {
    match msg {
        Msg::Record(n) => n,
        _ => panic!("expected Msg::Record"),
    }
}

/// What the actor has seen, once everything queued before has been handled. Waits for
/// mailbox room (the mailbox may still be full right after the actor was released).
async fn seen(actor: &ActorRef<Msg>) -> Vec<u32> {
    let (reply, answer) = ReplyTo::pair();
    actor.send(Msg::Seen(reply)).await.unwrap();
    answer.await.unwrap().unwrap()
}

#[tokio::test]
async fn tell_delivers_in_order() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(16));
    for n in 1..=5 {
        actor.tell(Msg::Record(n)).unwrap();
    }
    assert_eq!(seen(&actor).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(system.dead_letter_count(), 0);
    system.shutdown().await;
}

#[tokio::test]
async fn tell_on_full_mailbox_hands_the_message_back() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(2));
    let release = park(&actor).await;
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();

    // `tell` is synchronous: it returns at once with the refused message.
    let err = actor.tell(Msg::Record(3)).unwrap_err();
    assert!(matches!(err, TellError::Full(Msg::Record(3))), "{err:?}");
    assert_eq!(record(err.into_inner()), 3);
    let err = actor.tell(Msg::Record(4)).unwrap_err();
    assert!(matches!(err, TellError::Full(_)));
    assert_eq!(system.dead_letter_count(), 2);

    release.send(()).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2]);
    // Room again once the mailbox drained.
    actor.tell(Msg::Record(5)).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2, 5]);
    assert_eq!(system.dead_letter_count(), 2);
    system.shutdown().await;
}

#[tokio::test]
async fn tell_to_a_stopped_actor_is_closed_and_counted() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    actor.stop().await;
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    let before = system.dead_letter_count();

    let err = actor.tell(Msg::Record(7)).unwrap_err();
    assert!(matches!(err, TellError::Closed(Msg::Record(7))), "{err:?}");
    assert_eq!(record(err.into_inner()), 7);
    assert_eq!(system.dead_letter_count(), before + 1);
}

/// Right after `terminated()` returns, the mailbox refuses messages (no window in which a
/// message is accepted and then silently dropped). Runs many times on two worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_after_terminated_is_always_closed() {
    let system = ActorSystem::new("t");
    for i in 0..300 {
        let actor = system.spawn("rec", recorder(4));
        actor.kill();
        actor.terminated().await;
        let result = actor.tell(Msg::Record(i));
        assert!(
            matches!(result, Err(TellError::Closed(_))),
            "iteration {i}: {result:?}"
        );
    }
}

#[tokio::test]
async fn send_waits_for_room_and_fails_on_a_stopped_actor() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(1));
    let release = park(&actor).await;
    actor.tell(Msg::Record(1)).unwrap();

    let send = actor.send(Msg::Record(2));
    tokio::pin!(send);
    assert!(send.as_mut().now_or_never().is_none(), "send must wait");
    release.send(()).unwrap();
    send.await.unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2]);

    actor.stop().await;
    actor.terminated().await;
    let err = actor.send(Msg::Record(3)).await.unwrap_err();
    assert!(matches!(err, TellError::Closed(Msg::Record(3))), "{err:?}");
    assert_eq!(system.dead_letter_count(), 1);
}

#[tokio::test]
async fn ask_returns_the_answer() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    let answer = actor.ask(|r| Msg::Echo(41, r), ASK).await;
    assert_eq!(answer, Ok(41));
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ask_times_out_when_no_answer_comes() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    let start = tokio::time::Instant::now();
    let answer = actor.ask(Msg::Keep, Duration::from_secs(3)).await;
    assert_eq!(answer, Err(AskError::Timeout));
    // Deadlines are resolved to 5 ms slots: never early, at most one slot late.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited <= Duration::from_millis(3005),
        "{waited:?}"
    );
    // The actor is still alive and answering.
    assert_eq!(actor.ask(|r| Msg::Echo(1, r), ASK).await, Ok(1));
    system.shutdown().await;
}

#[tokio::test]
async fn ask_a_stopped_actor_reports_why_it_stopped() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    actor.tell(Msg::Fail).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("boom".to_owned())
    );
    let answer = actor.ask(|r| Msg::Echo(1, r), ASK).await;
    assert_eq!(
        answer,
        Err(AskError::Stopped(StopReason::Failed("boom".to_owned())))
    );
}

#[tokio::test]
async fn ask_queued_behind_a_kill_reports_stopped() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    let release = park(&actor).await;
    // The first poll enqueues the request (the mailbox has room), then waits for the answer.
    let ask = actor.ask(|r| Msg::Echo(1, r), ASK);
    tokio::pin!(ask);
    assert!(ask.as_mut().now_or_never().is_none());
    actor.kill();
    release.send(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    let answer = ask.await;
    // The request was never handled: one dead letter.
    assert_eq!(system.dead_letter_count(), 1);
    assert_eq!(answer, Err(AskError::Stopped(StopReason::Stopped)));
}

/// The handler drops the reply and stops the actor: the asker must learn that the actor
/// stopped, not merely that no reply came. Repeated on two worker threads to catch races
/// between the dropped reply and the stop announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_while_the_actor_stops_reports_stopped() {
    let system = ActorSystem::new("t");
    for i in 0..200 {
        let actor = system.spawn("rec", recorder(4));
        let answer = actor.ask(Msg::StopAndDrop, ASK).await;
        assert_eq!(
            answer,
            Err(AskError::Stopped(StopReason::Stopped)),
            "iteration {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_while_the_actor_fails_reports_the_failure() {
    let system = ActorSystem::new("t");
    for i in 0..200 {
        let actor = system.spawn("rec", recorder(4));
        let answer = actor.ask(Msg::FailWhileHolding, ASK).await;
        assert_eq!(
            answer,
            Err(AskError::Stopped(StopReason::Failed(
                "failed while handling".to_owned()
            ))),
            "iteration {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_while_the_actor_panics_reports_the_failure() {
    let system = ActorSystem::new("t");
    for i in 0..50 {
        let actor = system.spawn("rec", recorder(4));
        let answer = actor.ask(Msg::PanicWhileHolding, ASK).await;
        match answer {
            Err(AskError::Stopped(StopReason::Failed(why))) => {
                assert!(why.contains("exploded while handling"), "{why}")
            }
            other => panic!("iteration {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_while_the_actor_is_killed_reports_stopped() {
    let system = ActorSystem::new("t");
    for i in 0..100 {
        let actor = system.spawn("rec", recorder(4));
        let (entered_tx, entered_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let asker = {
            let actor = actor.clone();
            tokio::spawn(async move {
                actor
                    .ask(
                        |reply| Msg::HoldUntil {
                            entered: entered_tx,
                            release: release_rx,
                            reply,
                        },
                        ASK,
                    )
                    .await
            })
        };
        entered_rx.await.unwrap();
        actor.kill();
        release_tx.send(()).unwrap();
        assert_eq!(
            asker.await.unwrap(),
            Err(AskError::Stopped(StopReason::Stopped)),
            "iteration {i}"
        );
    }
}

/// A reply dropped by a handler that fails under a restart strategy: the actor did not stop,
/// so the asker gets `NoReply`, and the restarted actor answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_while_the_actor_restarts_reports_no_reply() {
    let system = ActorSystem::new("t");
    let backoff = Backoff {
        min: Duration::from_millis(1),
        max: Duration::from_millis(1),
        random_factor: 0.0,
        max_restarts: 1000,
        within: Duration::from_secs(60),
    };
    let actor = system.spawn(
        "rec",
        recorder(4).with_supervision(SupervisorStrategy::Restart(backoff)),
    );
    for i in 0..50 {
        let answer = actor.ask(Msg::FailWhileHolding, ASK).await;
        assert_eq!(answer, Err(AskError::NoReply), "iteration {i}");
    }
    assert_eq!(actor.ask(|r| Msg::Echo(3, r), ASK).await, Ok(3));
    system.shutdown().await;
}

#[tokio::test]
async fn reply_fail_gives_failed() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    let answer = actor.ask(Msg::FailReply, ASK).await;
    assert_eq!(answer, Err(AskError::Failed("no such thing".to_owned())));
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_gives_no_reply() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(4));
    for i in 0..100 {
        let answer = actor.ask(Msg::DropReply, ASK).await;
        assert_eq!(answer, Err(AskError::NoReply), "iteration {i}");
    }
    assert_eq!(actor.stop_reason(), None);
    system.shutdown().await;
}

#[tokio::test]
async fn ask_on_a_full_mailbox_is_mailbox_full() {
    let system = ActorSystem::new("t");
    let actor = system.spawn("rec", recorder(1));
    let release = park(&actor).await;
    actor.tell(Msg::Record(1)).unwrap();
    let answer = actor.ask(|r| Msg::Echo(1, r), ASK).await;
    assert_eq!(answer, Err(AskError::MailboxFull));
    assert_eq!(system.dead_letter_count(), 1);
    release.send(()).unwrap();
    assert_eq!(seen(&actor).await, vec![1]);
    system.shutdown().await;
}

#[tokio::test]
async fn reply_to_pair_works_without_an_actor() {
    let (reply, rx) = ReplyTo::<u32>::pair();
    assert!(!reply.is_closed());
    assert!(reply.send(5));
    assert_eq!(rx.await.unwrap(), Ok(5));

    let (reply, rx) = ReplyTo::<u32>::pair();
    drop(rx);
    assert!(reply.is_closed());
    assert!(!reply.fail("late"));
}

#[tokio::test]
async fn refs_compare_by_identity() {
    let system = ActorSystem::new("t");
    let a = system.spawn("a", recorder(4));
    let b = system.spawn("b", recorder(4));
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    assert_ne!(a.id(), b.id());
    assert_eq!(a.name(), "a");
    assert_eq!(a.stop_reason(), None);
    assert!(format!("{a:?}").contains('a'));
    system.shutdown().await;
    assert_eq!(a.stop_reason(), Some(StopReason::SystemShutdown));
}
