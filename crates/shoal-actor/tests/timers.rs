//! Timers, under paused tokio time.

use std::time::Duration;

use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Backoff, Context, Props, StopReason,
    SupervisorStrategy,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// Reports every tick (and when it came) to the test.
struct Ticker {
    ticks: mpsc::UnboundedSender<(u32, Instant)>,
    /// Reports what the hooks find.
    hooks: mpsc::UnboundedSender<(&'static str, bool)>,
}

#[derive(Clone)]
enum Msg {
    Single(&'static str, u32, Duration),
    Periodic(&'static str, u32, Duration),
    Cancel(&'static str),
    Tick(u32),
    /// Answers whether the timer is active (a channel, because timer messages are `Clone`).
    Active(&'static str, mpsc::UnboundedSender<bool>),
    /// Starts a single timer, waits (inside the handler) until after it fired, so its tick
    /// is queued in the mailbox, then runs `then`.
    ArmAndWait {
        key: &'static str,
        tick: u32,
        delay: Duration,
        wait: Duration,
        then: Then,
    },
    /// Like `ArmAndWait` for a periodic timer.
    ArmPeriodicAndWait {
        key: &'static str,
        tick: u32,
        interval: Duration,
        wait: Duration,
        then: Then,
    },
    Fail,
}

#[derive(Clone, Copy)]
enum Then {
    Nothing,
    Cancel,
    CancelAll,
    /// Replace the timer: same key, tick + 100, same delay.
    Replace,
}

impl Actor for Ticker {
    type Msg = Msg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let _ = self.hooks.send(("started", ctx.is_timer_active("t")));
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Single(key, tick, delay) => ctx.start_single_timer(key, Msg::Tick(tick), delay),
            Msg::Periodic(key, tick, every) => {
                ctx.start_periodic_timer(key, Msg::Tick(tick), every)
            }
            Msg::Cancel(key) => ctx.cancel_timer(key),
            Msg::Tick(n) => {
                let _ = self.ticks.send((n, Instant::now()));
            }
            Msg::Active(key, reply) => {
                let _ = reply.send(ctx.is_timer_active(key));
            }
            Msg::ArmAndWait {
                key,
                tick,
                delay,
                wait,
                then,
            } => {
                ctx.start_single_timer(key, Msg::Tick(tick), delay);
                tokio::time::sleep(wait).await;
                match then {
                    Then::Nothing => {}
                    Then::Cancel => ctx.cancel_timer(key),
                    Then::CancelAll => ctx.cancel_all_timers(),
                    Then::Replace => ctx.start_single_timer(key, Msg::Tick(tick + 100), delay),
                }
            }
            Msg::ArmPeriodicAndWait {
                key,
                tick,
                interval,
                wait,
                then,
            } => {
                ctx.start_periodic_timer(key, Msg::Tick(tick), interval);
                tokio::time::sleep(wait).await;
                match then {
                    Then::Nothing => {}
                    Then::Cancel => ctx.cancel_timer(key),
                    Then::CancelAll => ctx.cancel_all_timers(),
                    Then::Replace => ctx.start_periodic_timer(key, Msg::Tick(tick + 100), interval),
                }
            }
            Msg::Fail => return Err(ActorError::new("boom")),
        }
        Ok(())
    }

    async fn stopped(&mut self, ctx: &mut Context<Self>, _reason: &StopReason) {
        let _ = self.hooks.send(("stopped", ctx.is_timer_active("t")));
    }
}

struct Probe {
    actor: ActorRef<Msg>,
    ticks: mpsc::UnboundedReceiver<(u32, Instant)>,
    hooks: mpsc::UnboundedReceiver<(&'static str, bool)>,
}

impl Probe {
    fn spawn(system: &ActorSystem, strategy: SupervisorStrategy) -> Self {
        let (ticks_tx, ticks) = mpsc::unbounded_channel();
        let (hooks_tx, hooks) = mpsc::unbounded_channel();
        let actor = system.spawn(
            "ticker",
            Props::new(move || Ticker {
                ticks: ticks_tx.clone(),
                hooks: hooks_tx.clone(),
            })
            .with_supervision(strategy),
        );
        Self {
            actor,
            ticks,
            hooks,
        }
    }

    async fn active(&self, key: &'static str) -> bool {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.actor.tell(Msg::Active(key, tx)).unwrap();
        rx.recv().await.expect("answered")
    }

    /// Lets virtual time pass (every timer due meanwhile fires), then waits until the actor
    /// has handled everything queued so far, and returns the ticks seen.
    async fn ticks_after(&mut self, wait: Duration) -> Vec<u32> {
        tokio::time::sleep(wait).await;
        self.active("sync").await;
        let mut seen = Vec::new();
        while let Ok((n, _)) = self.ticks.try_recv() {
            seen.push(n);
        }
        seen
    }
}

#[tokio::test(start_paused = true)]
async fn a_single_timer_fires_once_after_its_delay() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    let start = Instant::now();
    probe
        .actor
        .tell(Msg::Single("t", 1, Duration::from_millis(100)))
        .unwrap();
    assert!(probe.active("t").await);
    let (n, at) = probe.ticks.recv().await.unwrap();
    assert_eq!(n, 1);
    let after = at - start;
    assert!(after >= 100 * MS && after < 102 * MS, "{after:?}");
    assert_eq!(
        probe.ticks_after(Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
    assert!(!probe.active("t").await, "a fired single timer is retired");
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_periodic_timer_repeats_until_cancelled() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    let start = Instant::now();
    probe
        .actor
        .tell(Msg::Periodic("t", 7, Duration::from_millis(100)))
        .unwrap();
    for k in 1..=3u32 {
        let (n, at) = probe.ticks.recv().await.unwrap();
        assert_eq!(n, 7);
        let after = at - start;
        assert!(
            after >= 100 * k * MS && after < (100 * k + 2) * MS,
            "tick {k} at {after:?}"
        );
    }
    assert!(probe.active("t").await);
    probe.actor.tell(Msg::Cancel("t")).unwrap();
    assert!(!probe.active("t").await);
    // Ticks possibly queued before the cancel are dropped too.
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancel_drops_a_tick_that_is_already_queued() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    probe
        .actor
        .tell(Msg::ArmAndWait {
            key: "t",
            tick: 1,
            delay: Duration::from_millis(10),
            wait: Duration::from_millis(50),
            then: Then::Cancel,
        })
        .unwrap();
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    assert!(!probe.active("t").await);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancel_all_drops_queued_periodic_ticks() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    probe
        .actor
        .tell(Msg::ArmPeriodicAndWait {
            key: "t",
            tick: 1,
            interval: Duration::from_millis(10),
            wait: Duration::from_millis(35),
            then: Then::CancelAll,
        })
        .unwrap();
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn starting_a_timer_with_the_same_key_replaces_it() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    let start = Instant::now();
    probe
        .actor
        .tell(Msg::Single("t", 1, Duration::from_millis(100)))
        .unwrap();
    probe
        .actor
        .tell(Msg::Single("t", 2, Duration::from_millis(300)))
        .unwrap();
    let (n, at) = probe.ticks.recv().await.unwrap();
    assert_eq!(n, 2);
    assert!(at - start >= 300 * MS);
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn replacing_a_timer_drops_its_queued_tick() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    probe
        .actor
        .tell(Msg::ArmAndWait {
            key: "t",
            tick: 1,
            delay: Duration::from_millis(10),
            wait: Duration::from_millis(50),
            then: Then::Replace,
        })
        .unwrap();
    assert_eq!(probe.ticks_after(Duration::from_secs(1)).await, vec![101]);

    probe
        .actor
        .tell(Msg::ArmPeriodicAndWait {
            key: "p",
            tick: 2,
            interval: Duration::from_millis(10),
            wait: Duration::from_millis(15),
            then: Then::Replace,
        })
        .unwrap();
    let ticks = probe.ticks_after(Duration::from_millis(35)).await;
    assert!(
        !ticks.is_empty() && ticks.iter().all(|&n| n == 102),
        "{ticks:?}"
    );
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timers_with_different_keys_are_independent() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    probe
        .actor
        .tell(Msg::Single("a", 1, Duration::from_millis(100)))
        .unwrap();
    probe
        .actor
        .tell(Msg::Single("b", 2, Duration::from_millis(200)))
        .unwrap();
    probe.actor.tell(Msg::Cancel("a")).unwrap();
    assert_eq!(probe.ticks_after(Duration::from_secs(1)).await, vec![2]);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timers_are_cancelled_when_the_actor_stops() {
    let system = ActorSystem::new("t");
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Stop);
    probe
        .actor
        .tell(Msg::Periodic("t", 1, Duration::from_millis(10)))
        .unwrap();
    assert!(probe.active("t").await);
    probe.actor.stop().await;
    assert_eq!(probe.actor.terminated().await, StopReason::Stopped);
    assert_eq!(probe.hooks.recv().await, Some(("started", false)));
    // The timer was already gone when the stopped hook ran.
    assert_eq!(probe.hooks.recv().await, Some(("stopped", false)));
    let dead = system.dead_letter_count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(probe.ticks.try_recv().is_err());
    assert_eq!(system.dead_letter_count(), dead);
}

#[tokio::test(start_paused = true)]
async fn timers_are_cancelled_when_the_actor_restarts() {
    let system = ActorSystem::new("t");
    let backoff = Backoff {
        min: Duration::from_millis(10),
        max: Duration::from_millis(10),
        random_factor: 0.0,
        max_restarts: 5,
        within: Duration::from_secs(60),
    };
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Restart(backoff));
    probe
        .actor
        .tell(Msg::Single("t", 1, Duration::from_millis(100)))
        .unwrap();
    probe
        .actor
        .tell(Msg::Periodic("p", 2, Duration::from_millis(50)))
        .unwrap();
    probe.actor.tell(Msg::Fail).unwrap();
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    assert!(!probe.active("t").await);
    assert!(!probe.active("p").await);
    assert_eq!(probe.hooks.recv().await, Some(("started", false)));
    assert_eq!(probe.hooks.recv().await, Some(("started", false)));
    assert_eq!(probe.actor.stop_reason(), None);
    system.shutdown().await;
}

/// A tick queued before a restart is not delivered to the new instance, even when the new
/// instance starts a timer with the same key.
#[tokio::test(start_paused = true)]
async fn a_tick_queued_before_a_restart_is_dropped() {
    let system = ActorSystem::new("t");
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_millis(100),
        random_factor: 0.0,
        max_restarts: 5,
        within: Duration::from_secs(60),
    };
    let mut probe = Probe::spawn(&system, SupervisorStrategy::Restart(backoff));
    // Mailbox: [ArmAndWait, Fail, Single(2)]; while the first handler waits, tick 1 fires
    // and is queued behind them.
    probe
        .actor
        .tell(Msg::ArmAndWait {
            key: "t",
            tick: 1,
            delay: Duration::from_millis(10),
            wait: Duration::from_millis(50),
            then: Then::Nothing,
        })
        .unwrap();
    probe.actor.tell(Msg::Fail).unwrap();
    probe
        .actor
        .tell(Msg::Single("t", 2, Duration::from_millis(500)))
        .unwrap();
    let start = Instant::now();
    let (n, at) = probe.ticks.recv().await.unwrap();
    assert_eq!(n, 2);
    assert!(at - start >= 500 * MS);
    assert_eq!(
        probe.ticks_after(Duration::from_secs(1)).await,
        Vec::<u32>::new()
    );
    system.shutdown().await;
}
