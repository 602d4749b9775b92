//! The actor loop: one tokio task per actor that owns its state, runs its hooks and applies
//! its supervision strategy.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::actor_ref::{Cell, Envelope};
use crate::error::{ActorError, StopReason};
use crate::{Actor, ActorSystem, Context, Props, SupervisorStrategy};

enum Outcome {
    Stopped(StopReason),
    Failed(ActorError),
}

/// Announces the termination of an actor whose task ended without doing so (a panic in the
/// runtime itself, or the task being dropped with its tokio runtime), so that nobody waits for
/// it forever.
struct TerminationGuard {
    cell: Arc<Cell>,
    system: ActorSystem,
}

impl Drop for TerminationGuard {
    fn drop(&mut self) {
        if self.cell.stop_reason().is_some() {
            return;
        }
        let reason = StopReason::Failed("actor task ended abnormally".to_owned());
        self.cell.stopping(&reason);
        self.system.forget(self.cell.id);
        self.cell.run_stop_hooks(&reason);
        self.cell.stopped.send_replace(Some(reason));
    }
}

/// Runs an actor until it stops for good, then cleans up in order: children, the `stopped`
/// hook, the mailbox closes, stop hooks (receptionist, watchers), the termination notice,
/// then the mailbox's leftovers (dead letters).
pub(crate) async fn run<A: Actor>(
    mut props: Props<A>,
    mut ctx: Context<A>,
    mut rx: mpsc::Receiver<Envelope<A::Msg>>,
    seed: u64,
) {
    let span = tracing::debug_span!("actor", name = %ctx.cell.name, id = ctx.cell.id);
    async move {
        let _guard = TerminationGuard {
            cell: ctx.cell.clone(),
            system: ctx.system.clone(),
        };
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        let mut actor: Option<A> = None;
        let reason = loop {
            let outcome = match build(&mut props) {
                Ok(fresh) => run_incarnation(actor.insert(fresh), &mut ctx, &mut rx).await,
                Err(e) => Outcome::Failed(e),
            };
            let err = match outcome {
                Outcome::Stopped(reason) => break reason,
                Outcome::Failed(err) => err,
            };
            let SupervisorStrategy::Restart(backoff) = &props.supervision else {
                tracing::error!(error = %err, "actor failed; stopping");
                break StopReason::Failed(err.message().to_owned());
            };
            let now = Instant::now();
            while restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > backoff.within)
            {
                restarts.pop_front();
            }
            if restarts.len() as u32 >= backoff.max_restarts {
                tracing::error!(
                    error = %err,
                    restarts = restarts.len(),
                    "actor failed; restarts exhausted, stopping"
                );
                break StopReason::Failed(err.message().to_owned());
            }
            let delay = backoff.delay(restarts.len() as u32, rng.f64());
            restarts.push_back(now);
            tracing::warn!(error = %err, ?delay, "actor failed; restarting after backoff");
            ctx.reset_for_restart();
            // As in Akka Typed, a restart stops the children: the fresh instance starts its own.
            stop_children(&mut ctx).await;
            // The failed handler's outcome is settled: the actor carries on.
            ctx.cell.settled();
            tokio::select! {
                biased;
                _ = ctx.cell.kill.notified() => break ctx.cell.take_kill_reason(),
                _ = tokio::time::sleep(delay) => {}
            }
            // Release the failed instance before building its successor.
            actor = None;
        };
        ctx.cell.stopping(&reason);
        finish(actor.as_mut(), &mut ctx, &mut rx, reason).await;
    }
    .instrument(span)
    .await
}

/// Builds an instance; a panicking factory is a failure.
fn build<A: Actor>(props: &mut Props<A>) -> Result<A, ActorError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (props.factory)()))
        .map_err(|panic| ActorError::new(format!("factory panicked: {}", panic_message(&*panic))))
}

async fn run_incarnation<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    rx: &mut mpsc::Receiver<Envelope<A::Msg>>,
) -> Outcome {
    if let Err(e) = guard(actor.started(ctx)).await {
        return Outcome::Failed(e);
    }
    loop {
        if ctx.stop_requested {
            return Outcome::Stopped(StopReason::Stopped);
        }
        // Checked here too, not only while waiting on the mailbox: a replay of unstashed
        // messages must not outlast a kill.
        if ctx.cell.kill_pending() {
            return Outcome::Stopped(ctx.cell.take_kill_reason());
        }
        let msg = match ctx.unstashed.pop_front() {
            Some(m) => m,
            None => {
                // Fast path: a queued message needs no wait (a pending kill was checked
                // above). Only an empty mailbox waits, on the kill signal and the mailbox.
                let env = match rx.try_recv() {
                    Ok(env) => Some(env),
                    Err(_) => tokio::select! {
                        biased;
                        _ = ctx.cell.kill.notified() => {
                            return Outcome::Stopped(ctx.cell.take_kill_reason())
                        }
                        env = rx.recv() => env,
                    },
                };
                match env {
                    Some(Envelope::User(m)) => m,
                    Some(Envelope::Timer {
                        key,
                        generation,
                        msg,
                    }) => {
                        if !ctx.timer_fired(&key, generation) {
                            continue;
                        }
                        msg
                    }
                    Some(Envelope::Watched {
                        target,
                        generation,
                        msg,
                    }) => {
                        if !ctx.watch_fired(target, generation) {
                            continue;
                        }
                        msg
                    }
                    // `None` cannot happen while the context holds a sender; treat it as a stop.
                    Some(Envelope::Stop) | None => return Outcome::Stopped(StopReason::Stopped),
                }
            }
        };
        ctx.cell.begin_message();
        if let Err(e) = guard(actor.handle(ctx, msg)).await {
            // Still "busy" for askers until the supervision decision is made.
            return Outcome::Failed(e);
        }
        if !ctx.stop_requested && !ctx.cell.kill_pending() {
            ctx.cell.settled();
        }
    }
}

/// Runs a hook, turning a panic into a failure.
async fn guard(
    fut: impl std::future::Future<Output = Result<(), ActorError>>,
) -> Result<(), ActorError> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(ActorError::new(format!(
            "panicked: {}",
            panic_message(&*panic)
        ))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Stops every child (newest first) and waits until each has terminated.
async fn stop_children<A: Actor>(ctx: &mut Context<A>) {
    let children = std::mem::take(&mut ctx.children);
    for child in children.iter().rev() {
        child.kill_with(StopReason::ParentStopped);
    }
    for child in &children {
        let mut done = child.stopped.subscribe();
        let _ = done.wait_for(Option::is_some).await;
    }
}

async fn finish<A: Actor>(
    actor: Option<&mut A>,
    ctx: &mut Context<A>,
    rx: &mut mpsc::Receiver<Envelope<A::Msg>>,
    reason: StopReason,
) {
    // Children first, then this actor's own hook.
    stop_children(ctx).await;
    ctx.cancel_all_timers();
    ctx.end_watches();
    // No hook when the factory never produced an instance.
    if let Some(actor) = actor {
        let hook = AssertUnwindSafe(actor.stopped(ctx, &reason))
            .catch_unwind()
            .await;
        if hook.is_err() {
            tracing::error!("stopped hook panicked");
        }
    }
    tracing::debug!(%reason, "actor stopped");
    // Close the mailbox before announcing the stop, so that once `terminated()` returns every
    // `tell` fails with `Closed`; askers refused now see the reason through `stopping`.
    rx.close();
    // Deregister from the system and the receptionist, and notify watchers, before
    // `terminated()` returns.
    ctx.system.forget(ctx.cell.id);
    ctx.cell.run_stop_hooks(&reason);
    // Announce the stop before dropping queued messages, so that an asker whose request is
    // dropped sees why.
    ctx.cell.stopped.send_replace(Some(reason));
    ctx.drop_stash();
    while let Ok(env) = rx.try_recv() {
        if !matches!(env, Envelope::Stop) {
            ctx.cell
                .dead_letters
                .record(&ctx.cell.name, "actor stopped with message in mailbox");
        }
    }
}
