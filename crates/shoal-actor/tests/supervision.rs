//! Supervision: stop and restart strategies, panics, backoff, restart limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, AskError, Backoff, Context, Props, ReplyTo,
    StopReason, SupervisorStrategy,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

const ASK: Duration = Duration::from_secs(5);

/// What the test observes from the actors' hooks.
#[derive(Debug, PartialEq)]
enum Event {
    /// `started` ran on instance `n` (1-based), with what it found in its context.
    Started {
        instance: usize,
        stash_len: usize,
        timer_active: bool,
        at: Instant,
    },
    Stopped {
        instance: usize,
        reason: StopReason,
    },
}

struct Worker {
    instance: usize,
    sum: u64,
    fail_on_start: bool,
    events: mpsc::UnboundedSender<Event>,
}

enum Msg {
    Add(u64),
    Get(ReplyTo<(usize, u64)>),
    Fail(&'static str),
    Panic,
    StashAdd(u64),
    StartTimer,
    Unstash,
}

impl Actor for Worker {
    type Msg = Msg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let _ = self.events.send(Event::Started {
            instance: self.instance,
            stash_len: ctx.stash_len(),
            timer_active: ctx.is_timer_active("tick"),
            at: Instant::now(),
        });
        if self.fail_on_start {
            return Err(ActorError::new("cannot start"));
        }
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Add(n) => self.sum += n,
            Msg::Get(reply) => {
                reply.send((self.instance, self.sum));
            }
            Msg::Fail(why) => return Err(ActorError::new(why)),
            Msg::Panic => panic!("kaboom"),
            Msg::StashAdd(n) => {
                if ctx.stash(Msg::Add(n)).is_err() {
                    return Err(ActorError::new("stash full"));
                }
            }
            Msg::StartTimer => ctx.start_single_timer("tick", Msg::Add(1000), ASK),
            Msg::Unstash => ctx.unstash_all(),
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>, reason: &StopReason) {
        let _ = self.events.send(Event::Stopped {
            instance: self.instance,
            reason: reason.clone(),
        });
    }
}

/// Props whose factory numbers its instances.
fn worker(
    strategy: SupervisorStrategy,
    fail_on_start: bool,
) -> (Props<Worker>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let instances = AtomicUsize::new(0);
    let props = Props::new(move || Worker {
        instance: instances.fetch_add(1, Ordering::SeqCst) + 1,
        sum: 0,
        fail_on_start,
        events: tx.clone(),
    })
    .with_supervision(strategy);
    (props, rx)
}

fn restart(min_ms: u64, max_restarts: u32, within: Duration) -> SupervisorStrategy {
    SupervisorStrategy::Restart(Backoff {
        min: Duration::from_millis(min_ms),
        max: Duration::from_secs(10),
        random_factor: 0.0,
        max_restarts,
        within,
    })
}

async fn next_started(events: &mut mpsc::UnboundedReceiver<Event>) -> (usize, Instant) {
    match events.recv().await {
        Some(Event::Started { instance, at, .. }) => (instance, at),
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn get(actor: &ActorRef<Msg>) -> (usize, u64) {
    actor.ask(Msg::Get, ASK).await.unwrap()
}

#[tokio::test]
async fn stop_strategy_stops_with_failed() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(SupervisorStrategy::Stop, false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Fail("boom")).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("boom".to_owned())
    );
    assert_eq!(next_started(&mut events).await.0, 1);
    assert_eq!(
        events.recv().await,
        Some(Event::Stopped {
            instance: 1,
            reason: StopReason::Failed("boom".to_owned())
        })
    );
    // No restart happened.
    assert_eq!(events.recv().await, None);
}

#[tokio::test]
async fn stop_is_the_default_strategy() {
    let system = ActorSystem::new("t");
    let (tx, _rx) = mpsc::unbounded_channel();
    let actor = system.spawn(
        "w",
        Props::new(move || Worker {
            instance: 1,
            sum: 0,
            fail_on_start: false,
            events: tx.clone(),
        }),
    );
    actor.tell(Msg::Fail("default")).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("default".to_owned())
    );
}

#[tokio::test]
async fn a_panic_is_a_failure() {
    let system = ActorSystem::new("t");
    let (props, _events) = worker(SupervisorStrategy::Stop, false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Panic).unwrap();
    match actor.terminated().await {
        StopReason::Failed(why) => assert!(why.contains("kaboom"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_from_started_is_a_failure() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(SupervisorStrategy::Stop, true);
    let actor = system.spawn("w", props);
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("cannot start".to_owned())
    );
    assert_eq!(next_started(&mut events).await.0, 1);
}

#[tokio::test(start_paused = true)]
async fn restart_builds_a_fresh_instance_and_keeps_the_mailbox() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(100, 5, Duration::from_secs(60)), false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Add(1)).unwrap();
    assert_eq!(get(&actor).await, (1, 1));

    // Queued behind the failure: must reach the new instance.
    actor.tell(Msg::Fail("boom")).unwrap();
    actor.tell(Msg::Add(5)).unwrap();
    assert_eq!(get(&actor).await, (2, 5));

    assert_eq!(next_started(&mut events).await.0, 1);
    assert_eq!(next_started(&mut events).await.0, 2);
    assert_eq!(actor.stop_reason(), None);
    assert_eq!(system.dead_letter_count(), 0);
    system.shutdown().await;
    assert_eq!(
        events.recv().await,
        Some(Event::Stopped {
            instance: 2,
            reason: StopReason::SystemShutdown
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_restarts_too() {
    let system = ActorSystem::new("t");
    let (props, _events) = worker(restart(10, 5, Duration::from_secs(60)), false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Panic).unwrap();
    assert_eq!(get(&actor).await, (2, 0));
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_drops_the_stash_and_timers() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(10, 5, Duration::from_secs(60)), false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::StashAdd(1)).unwrap();
    actor.tell(Msg::StashAdd(2)).unwrap();
    actor.tell(Msg::StartTimer).unwrap();
    actor.tell(Msg::Fail("boom")).unwrap();
    actor.tell(Msg::Unstash).unwrap();
    // Past the timer's deadline: a surviving timer would have added 1000.
    tokio::time::sleep(ASK * 2).await;
    assert_eq!(get(&actor).await, (2, 0));

    assert!(matches!(
        events.recv().await,
        Some(Event::Started { instance: 1, .. })
    ));
    match events.recv().await {
        Some(Event::Started {
            instance,
            stash_len,
            timer_active,
            ..
        }) => {
            assert_eq!(instance, 2);
            assert_eq!(stash_len, 0);
            assert!(!timer_active);
        }
        other => panic!("expected the second start, got {other:?}"),
    }
    // The two stashed messages became dead letters.
    assert_eq!(system.dead_letter_count(), 2);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_delay_is_respected_and_grows() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(100, 5, Duration::from_secs(60)), false);
    let actor = system.spawn("w", props);
    let (_, first) = next_started(&mut events).await;

    let failed_at = Instant::now();
    actor.tell(Msg::Fail("one")).unwrap();
    let (n, second) = next_started(&mut events).await;
    assert_eq!(n, 2);
    let waited = second - failed_at;
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(110),
        "{waited:?}"
    );

    let failed_at = Instant::now();
    actor.tell(Msg::Fail("two")).unwrap();
    let (n, third) = next_started(&mut events).await;
    assert_eq!(n, 3);
    let waited = third - failed_at;
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(210),
        "{waited:?}"
    );
    assert!(second > first);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_random_factor_stretches_within_bounds() {
    let system = ActorSystem::with_seed("t", 7);
    let (props, mut events) = worker(
        SupervisorStrategy::Restart(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            random_factor: 0.5,
            max_restarts: 100,
            within: Duration::from_secs(600),
        }),
        false,
    );
    let actor = system.spawn("w", props);
    next_started(&mut events).await;
    let failed_at = Instant::now();
    actor.tell(Msg::Fail("one")).unwrap();
    let (_, restarted) = next_started(&mut events).await;
    let waited = restarted - failed_at;
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(151),
        "{waited:?}"
    );
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restarts_exhausted_within_the_window_stop_with_failed() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(10, 2, Duration::from_secs(60)), false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Fail("one")).unwrap();
    actor.tell(Msg::Fail("two")).unwrap();
    actor.tell(Msg::Fail("three")).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("three".to_owned())
    );
    for expected in 1..=3 {
        assert_eq!(next_started(&mut events).await.0, expected);
    }
    assert_eq!(
        events.recv().await,
        Some(Event::Stopped {
            instance: 3,
            reason: StopReason::Failed("three".to_owned())
        })
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_are_forgotten() {
    let system = ActorSystem::new("t");
    let (props, _events) = worker(restart(10, 1, Duration::from_secs(1)), false);
    let actor = system.spawn("w", props);
    actor.tell(Msg::Fail("one")).unwrap();
    assert_eq!(get(&actor).await, (2, 0));
    // Let the window pass: the next failure is the first one in the new window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    actor.tell(Msg::Fail("two")).unwrap();
    assert_eq!(get(&actor).await, (3, 0));
    // A second failure within the window exceeds max_restarts = 1.
    actor.tell(Msg::Fail("three")).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("three".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_started_hook_is_restarted_until_exhausted() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(10, 3, Duration::from_secs(60)), true);
    let actor = system.spawn("w", props);
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("cannot start".to_owned())
    );
    for expected in 1..=4 {
        assert_eq!(next_started(&mut events).await.0, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn kill_during_backoff_stops_without_restarting() {
    let system = ActorSystem::new("t");
    let (props, mut events) = worker(restart(60_000, 5, Duration::from_secs(600)), false);
    let actor = system.spawn("w", props);
    next_started(&mut events).await;
    let start = Instant::now();
    actor.tell(Msg::Fail("boom")).unwrap();
    // Queued behind the failure; not answered before the restart.
    let ask = actor.ask(Msg::Get, Duration::from_secs(1)).await;
    assert_eq!(ask, Err(AskError::Timeout));
    actor.kill();
    assert_eq!(actor.terminated().await, StopReason::Stopped);
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(matches!(
        events.recv().await,
        Some(Event::Stopped { instance: 1, .. })
    ));
    assert_eq!(events.recv().await, None, "no second instance");
}

/// A factory that panics must not leave the actor (and everyone waiting for it) hanging.
#[tokio::test]
async fn a_panicking_factory_stops_the_actor_with_failed() {
    struct Never;
    impl Actor for Never {
        type Msg = ();
        async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            Ok(())
        }
    }
    let system = ActorSystem::new("t");
    let actor = system.spawn(
        "never",
        Props::new(|| -> Never { panic!("no instance for you") }),
    );
    let reason = tokio::time::timeout(ASK, actor.terminated())
        .await
        .expect("terminated must not hang");
    match reason {
        StopReason::Failed(why) => assert!(why.contains("no instance for you"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let shutdown = tokio::time::timeout(ASK, system.shutdown()).await;
    assert!(shutdown.is_ok(), "shutdown must not hang");
}

#[tokio::test(start_paused = true)]
async fn a_factory_panicking_on_restart_counts_as_a_failure() {
    struct Flaky;
    impl Actor for Flaky {
        type Msg = ();
        async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
            Err(ActorError::new("handler failed"))
        }
    }
    let system = ActorSystem::new("t");
    let built = Arc::new(AtomicUsize::new(0));
    let counter = built.clone();
    let actor = system.spawn(
        "flaky",
        Props::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) > 0 {
                panic!("factory broke");
            }
            Flaky
        })
        .with_supervision(restart(10, 3, Duration::from_secs(60))),
    );
    actor.tell(()).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3600), actor.terminated())
        .await
        .expect("terminated must not hang");
    match reason {
        StopReason::Failed(why) => assert!(why.contains("factory broke"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // The first build plus one per allowed restart.
    assert_eq!(built.load(Ordering::SeqCst), 4);
}

// ---- a restart stops the children of the failed instance ----

struct Idle;

impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
}

struct Parent;

enum ParentMsg {
    SpawnChild(ReplyTo<ActorRef<()>>),
    Fail,
}

impl Actor for Parent {
    type Msg = ParentMsg;
    async fn handle(&mut self, ctx: &mut Context<Self>, msg: ParentMsg) -> Result<(), ActorError> {
        match msg {
            ParentMsg::SpawnChild(reply) => {
                reply.send(ctx.spawn("child", Props::new(|| Idle)));
                Ok(())
            }
            ParentMsg::Fail => Err(ActorError::new("boom")),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_stops_the_children() {
    let system = ActorSystem::with_seed("t", 3);
    let parent = system.spawn(
        "parent",
        Props::new(|| Parent).with_supervision(SupervisorStrategy::Restart(Backoff::default())),
    );
    let child = parent.ask(ParentMsg::SpawnChild, ASK).await.unwrap();
    parent.tell(ParentMsg::Fail).unwrap();
    assert_eq!(child.terminated().await, StopReason::ParentStopped);
    // The restarted parent is alive and can start a new child.
    let second = parent.ask(ParentMsg::SpawnChild, ASK).await.unwrap();
    assert_ne!(second.id(), child.id());
    assert!(second.stop_reason().is_none());
    system.shutdown().await;
}
