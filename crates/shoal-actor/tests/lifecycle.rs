//! Lifecycle: hooks, graceful and immediate stops, children, watch, system shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_actor::{Actor, ActorError, ActorRef, ActorSystem, Context, Props, ReplyTo, StopReason};
use tokio::sync::{mpsc, oneshot};

const ASK: Duration = Duration::from_secs(5);

/// A shared, ordered record of what happened.
type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Logs every hook and message; can spawn children and park inside a handler.
struct Node {
    name: String,
    log: Log,
    children: Vec<&'static str>,
    stop_in_started: bool,
}

enum Msg {
    Record(u32),
    Block {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    },
    StopSelf,
    Ping(ReplyTo<()>),
    /// Stashes the message; `Open` replays the stash.
    Stash(Box<Msg>),
    Open,
}

impl Node {
    fn props(name: &str, log: &Log) -> Props<Node> {
        Self::props_with_children(name, log, Vec::new())
    }

    fn props_with_children(name: &str, log: &Log, children: Vec<&'static str>) -> Props<Node> {
        let name = name.to_owned();
        let log = log.clone();
        Props::new(move || Node {
            name: name.clone(),
            log: log.clone(),
            children: children.clone(),
            stop_in_started: false,
        })
    }

    fn push(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }
}

impl Actor for Node {
    type Msg = Msg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.push(format!("{} started", self.name));
        for child in self.children.clone() {
            let name = format!("{}/{child}", self.name);
            ctx.spawn(child, Node::props(&name, &self.log));
        }
        if self.stop_in_started {
            ctx.stop();
        }
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Record(n) => self.push(format!("{} got {n}", self.name)),
            Msg::Block { entered, release } => {
                self.push(format!("{} blocked", self.name));
                let _ = entered.send(());
                let _ = release.await;
            }
            Msg::StopSelf => ctx.stop(),
            Msg::Ping(reply) => {
                reply.send(());
            }
            Msg::Stash(inner) => {
                if ctx.stash(*inner).is_err() {
                    return Err(ActorError::new("stash full"));
                }
            }
            Msg::Open => ctx.unstash_all(),
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>, reason: &StopReason) {
        self.push(format!("{} stopped: {reason}", self.name));
    }
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
async fn started_and_stopped_hooks_run_once_with_the_reason() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    actor.ask(Msg::Ping, ASK).await.unwrap();
    actor.stop().await;
    // Further stop requests after the stop changed nothing.
    actor.kill();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    actor.stop().await;
    actor.kill();
    system.shutdown().await;
    assert_eq!(entries(&log), vec!["a started", "a stopped: stopped"]);
}

#[tokio::test]
async fn terminated_can_be_awaited_many_times() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    let waiter = {
        let actor = actor.clone();
        tokio::spawn(async move { actor.terminated().await })
    };
    actor.tell(Msg::StopSelf).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(waiter.await.unwrap(), StopReason::Stopped);
    assert_eq!(actor.stop_reason(), Some(StopReason::Stopped));
}

#[tokio::test]
async fn graceful_stop_handles_earlier_messages_first() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    let release = park(&actor).await;
    for n in 1..=3 {
        actor.tell(Msg::Record(n)).unwrap();
    }
    actor.stop().await;
    // Enqueued after the stop: never handled, a dead letter.
    actor.tell(Msg::Record(4)).unwrap();
    release.send(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(
        entries(&log),
        vec![
            "a started",
            "a blocked",
            "a got 1",
            "a got 2",
            "a got 3",
            "a stopped: stopped"
        ]
    );
    assert_eq!(system.dead_letter_count(), 1);
}

#[tokio::test]
async fn kill_stops_after_the_current_message() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    let release = park(&actor).await;
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    actor.kill();
    release.send(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(
        entries(&log),
        vec!["a started", "a blocked", "a stopped: stopped"]
    );
    assert_eq!(system.dead_letter_count(), 2);
}

/// `kill` also cuts short a replay of stashed messages.
#[tokio::test]
async fn kill_skips_unstashed_messages() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    actor
        .tell(Msg::Stash(Box::new(Msg::Block {
            entered: entered_tx,
            release: release_rx,
        })))
        .unwrap();
    actor.tell(Msg::Stash(Box::new(Msg::Record(1)))).unwrap();
    actor.tell(Msg::Stash(Box::new(Msg::Record(2)))).unwrap();
    actor.tell(Msg::Open).unwrap();
    entered_rx.await.unwrap();
    actor.kill();
    release_tx.send(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(
        entries(&log),
        vec!["a started", "a blocked", "a stopped: stopped"]
    );
    // The two replayed-but-unhandled messages are dead letters.
    assert_eq!(system.dead_letter_count(), 2);
}

#[tokio::test]
async fn ctx_stop_stops_after_the_current_message() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let actor = system.spawn("a", Node::props("a", &log));
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::StopSelf).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(
        entries(&log),
        vec!["a started", "a got 1", "a stopped: stopped"]
    );
    assert_eq!(system.dead_letter_count(), 1);
}

#[tokio::test]
async fn ctx_stop_in_started_stops_before_any_message() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let hook_log = log.clone();
    let actor = system.spawn(
        "a",
        Props::new(move || Node {
            name: "a".to_owned(),
            log: hook_log.clone(),
            children: Vec::new(),
            stop_in_started: true,
        }),
    );
    let _ = actor.tell(Msg::Record(1));
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert_eq!(entries(&log), vec!["a started", "a stopped: stopped"]);
}

#[tokio::test]
async fn a_panicking_stopped_hook_still_terminates() {
    struct Grumpy;
    impl Actor for Grumpy {
        type Msg = ();
        async fn handle(&mut self, ctx: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            ctx.stop();
            Ok(())
        }
        async fn stopped(&mut self, _: &mut Context<Self>, _: &StopReason) {
            panic!("not going quietly");
        }
    }
    let system = ActorSystem::new("t");
    let actor = system.spawn("grumpy", Props::new(|| Grumpy));
    actor.tell(()).unwrap();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
}

#[tokio::test]
async fn children_stop_before_the_parent_with_parent_stopped() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let parent = system.spawn("p", Node::props_with_children("p", &log, vec!["c1", "c2"]));
    parent.ask(Msg::Ping, ASK).await.unwrap();
    parent.stop().await;
    assert_eq!(parent.terminated().await, StopReason::Stopped);
    let log = entries(&log);
    let stopped: Vec<&String> = log.iter().filter(|e| e.contains("stopped")).collect();
    assert_eq!(stopped.len(), 3, "{log:?}");
    assert!(stopped[..2].contains(&&"p/c1 stopped: parent stopped".to_owned()));
    assert!(stopped[..2].contains(&&"p/c2 stopped: parent stopped".to_owned()));
    assert_eq!(stopped[2], "p stopped: stopped");
}

#[tokio::test]
async fn children_of_a_failed_parent_stop_too() {
    struct Parent {
        child: oneshot::Sender<ActorRef<Msg>>,
    }
    impl Actor for Parent {
        type Msg = ();
        async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
            let log = Log::default();
            let child = ctx.spawn("child", Node::props("child", &log));
            let (tx, _) = oneshot::channel();
            let _ = std::mem::replace(&mut self.child, tx).send(child);
            Ok(())
        }
        async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            Err(ActorError::new("parent broke"))
        }
    }
    let system = ActorSystem::new("t");
    let (tx, rx) = oneshot::channel();
    let mut tx = Some(tx);
    let parent = system.spawn(
        "parent",
        Props::new(move || Parent {
            child: tx.take().expect("built once"),
        }),
    );
    let child = rx.await.unwrap();
    parent.tell(()).unwrap();
    assert_eq!(
        parent.terminated().await,
        StopReason::Failed("parent broke".to_owned())
    );
    // By the time the parent is terminated, the child has stopped.
    assert_eq!(child.stop_reason(), Some(StopReason::ParentStopped));
}

/// Watches whatever it is told to and reports notifications to the test.
struct Watcher {
    out: mpsc::UnboundedSender<(String, StopReason)>,
}

enum WatcherMsg {
    Watch(ActorRef<Msg>),
    Unwatch(ActorRef<Msg>),
    Terminated(String, StopReason),
    /// Parks; once released, unwatches `target`.
    BlockThenUnwatch {
        entered: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
        target: ActorRef<Msg>,
    },
    Ping(ReplyTo<()>),
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: WatcherMsg) -> Result<(), ActorError> {
        match msg {
            WatcherMsg::Watch(target) => {
                let name = target.name().to_owned();
                ctx.watch(&target, move |reason| WatcherMsg::Terminated(name, reason));
            }
            WatcherMsg::Unwatch(target) => ctx.unwatch(&target),
            WatcherMsg::Terminated(name, reason) => {
                let _ = self.out.send((name, reason));
            }
            WatcherMsg::BlockThenUnwatch {
                entered,
                release,
                target,
            } => {
                let _ = entered.send(());
                let _ = release.await;
                ctx.unwatch(&target);
            }
            WatcherMsg::Ping(reply) => {
                reply.send(());
            }
        }
        Ok(())
    }
}

fn watcher(
    system: &ActorSystem,
) -> (
    ActorRef<WatcherMsg>,
    mpsc::UnboundedReceiver<(String, StopReason)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = system.spawn("watcher", Props::new(move || Watcher { out: tx.clone() }));
    (actor, rx)
}

#[tokio::test]
async fn watch_delivers_a_message_when_the_watched_actor_stops() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let (watcher, mut notes) = watcher(&system);
    let target = system.spawn("target", Node::props("target", &log));
    let other = system.spawn("other", Node::props("other", &log));
    watcher.tell(WatcherMsg::Watch(target.clone())).unwrap();
    watcher.tell(WatcherMsg::Watch(other.clone())).unwrap();
    watcher.ask(WatcherMsg::Ping, ASK).await.unwrap();

    target.stop().await;
    assert_eq!(
        notes.recv().await,
        Some(("target".to_owned(), StopReason::Stopped))
    );
    other.kill();
    assert_eq!(
        notes.recv().await,
        Some(("other".to_owned(), StopReason::Stopped))
    );
    system.shutdown().await;
}

#[tokio::test]
async fn watch_reports_a_failure() {
    let system = ActorSystem::new("t");
    let (watcher, mut notes) = watcher(&system);
    let log = Log::default();
    let target = system.spawn("target", Node::props("target", &log).with_stash_capacity(0));
    watcher.tell(WatcherMsg::Watch(target.clone())).unwrap();
    watcher.ask(WatcherMsg::Ping, ASK).await.unwrap();
    target.tell(Msg::Stash(Box::new(Msg::Record(1)))).unwrap();
    assert_eq!(
        notes.recv().await,
        Some((
            "target".to_owned(),
            StopReason::Failed("stash full".to_owned())
        ))
    );
    system.shutdown().await;
}

#[tokio::test]
async fn watching_a_stopped_actor_notifies_at_once() {
    let system = ActorSystem::new("t");
    let (watcher, mut notes) = watcher(&system);
    let log = Log::default();
    let target = system.spawn("target", Node::props("target", &log));
    target.kill();
    target.terminated().await;
    watcher.tell(WatcherMsg::Watch(target.clone())).unwrap();
    assert_eq!(
        notes.recv().await,
        Some(("target".to_owned(), StopReason::Stopped))
    );
    system.shutdown().await;
}

#[tokio::test]
async fn unwatch_prevents_the_notification() {
    let system = ActorSystem::new("t");
    let (watcher, mut notes) = watcher(&system);
    let log = Log::default();
    let target = system.spawn("target", Node::props("target", &log));
    let sentinel = system.spawn("sentinel", Node::props("sentinel", &log));
    watcher.tell(WatcherMsg::Watch(target.clone())).unwrap();
    watcher.tell(WatcherMsg::Unwatch(target.clone())).unwrap();
    watcher.tell(WatcherMsg::Watch(sentinel.clone())).unwrap();
    watcher.ask(WatcherMsg::Ping, ASK).await.unwrap();

    target.stop().await;
    target.terminated().await;
    sentinel.stop().await;
    // The first (and only) notification is the sentinel's.
    assert_eq!(
        notes.recv().await,
        Some(("sentinel".to_owned(), StopReason::Stopped))
    );
    watcher.ask(WatcherMsg::Ping, ASK).await.unwrap();
    assert!(notes.try_recv().is_err());
    system.shutdown().await;
}

/// The notification is already in the watcher's mailbox when it unwatches: it must not be
/// delivered.
#[tokio::test]
async fn unwatch_drops_an_already_queued_notification() {
    let system = ActorSystem::new("t");
    let (watcher, mut notes) = watcher(&system);
    let log = Log::default();
    let target = system.spawn("target", Node::props("target", &log));
    watcher.tell(WatcherMsg::Watch(target.clone())).unwrap();
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    watcher
        .tell(WatcherMsg::BlockThenUnwatch {
            entered: entered_tx,
            release: release_rx,
            target: target.clone(),
        })
        .unwrap();
    entered_rx.await.unwrap();
    target.stop().await;
    target.terminated().await;
    release_tx.send(()).unwrap();
    watcher.ask(WatcherMsg::Ping, ASK).await.unwrap();
    assert!(notes.try_recv().is_err());
    system.shutdown().await;
}

#[tokio::test]
async fn system_shutdown_stops_top_level_actors_newest_first() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let a = system.spawn("a", Node::props("a", &log));
    let b = system.spawn("b", Node::props_with_children("b", &log, vec!["kid"]));
    let c = system.spawn("c", Node::props("c", &log));
    for actor in [&a, &b, &c] {
        actor.ask(Msg::Ping, ASK).await.unwrap();
    }
    system.shutdown().await;
    let stopped: Vec<String> = entries(&log)
        .into_iter()
        .filter(|e| e.contains("stopped"))
        .collect();
    assert_eq!(
        stopped,
        vec![
            "c stopped: system shut down",
            "b/kid stopped: parent stopped",
            "b stopped: system shut down",
            "a stopped: system shut down",
        ]
    );
    for actor in [&a, &b, &c] {
        assert_eq!(actor.stop_reason(), Some(StopReason::SystemShutdown));
    }
    // Shutting down again is a no-op.
    system.shutdown().await;
}

#[tokio::test]
async fn shutdown_skips_actors_that_already_stopped() {
    let system = ActorSystem::new("t");
    let log = Log::default();
    let a = system.spawn("a", Node::props("a", &log));
    let b = system.spawn("b", Node::props("b", &log));
    b.stop().await;
    assert_eq!(b.terminated().await, StopReason::Stopped);
    system.shutdown().await;
    assert_eq!(a.stop_reason(), Some(StopReason::SystemShutdown));
    assert_eq!(b.stop_reason(), Some(StopReason::Stopped));
}

// ---- shutdown with a grace period ----

struct Stuck;

impl Actor for Stuck {
    type Msg = oneshot::Sender<()>;
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        entered: oneshot::Sender<()>,
    ) -> Result<(), ActorError> {
        let _ = entered.send(());
        // A call that never returns (a store that hangs).
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_within_aborts_actors_stuck_past_the_grace_period() {
    let system = ActorSystem::with_seed("t", 1);
    let fine = system.spawn("fine", Props::new(|| Stuck));
    let stuck = system.spawn("stuck", Props::new(|| Stuck));
    let (entered, inside) = oneshot::channel();
    stuck.tell(entered).unwrap();
    inside.await.unwrap();
    let start = tokio::time::Instant::now();
    assert!(!system.shutdown_within(Duration::from_secs(2)).await);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(matches!(stuck.terminated().await, StopReason::Failed(_)));
    // The idle one still stopped normally, after the stuck one was given up on (newest first).
    assert_eq!(fine.terminated().await, StopReason::SystemShutdown);
    // A system whose actors stop in time reports so.
    let system = ActorSystem::with_seed("t2", 1);
    system.spawn("idle", Props::new(|| Stuck));
    assert!(system.shutdown_within(Duration::from_secs(2)).await);
}
