//! The actor loop: one tokio task per actor that owns its state, runs its hooks and applies
//! its supervision strategy.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::actor_ref::Envelope;
use crate::error::{ActorError, StopReason};
use crate::{Actor, Context, Props, SupervisorStrategy};

enum Outcome {
    Stopped(StopReason),
    Failed(ActorError),
}

/// Runs an actor until it stops for good, then cleans up in order: children, the `stopped`
/// hook, the termination notice, then the mailbox's leftovers (dead letters).
pub(crate) async fn run<A: Actor>(
    mut props: Props<A>,
    mut ctx: Context<A>,
    mut rx: mpsc::Receiver<Envelope<A::Msg>>,
    seed: u64,
) {
    let span = tracing::debug_span!("actor", name = %ctx.cell.name, id = ctx.cell.id);
    async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        let mut actor = (props.factory)();
        let reason = loop {
            match run_incarnation(&mut actor, &mut ctx, &mut rx).await {
                Outcome::Stopped(reason) => break reason,
                Outcome::Failed(err) => {
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
                    tokio::select! {
                        biased;
                        _ = ctx.cell.kill.notified() => break ctx.cell.take_kill_reason(),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    actor = (props.factory)();
                }
            }
        };
        finish(&mut actor, &mut ctx, &mut rx, reason).await;
    }
    .instrument(span)
    .await
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
        let msg = match ctx.unstashed.pop_front() {
            Some(m) => m,
            None => {
                let env = tokio::select! {
                    biased;
                    _ = ctx.cell.kill.notified() => {
                        return Outcome::Stopped(ctx.cell.take_kill_reason())
                    }
                    env = rx.recv() => env,
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
                    // `None` cannot happen while the context holds a sender; treat it as a stop.
                    Some(Envelope::Stop) | None => return Outcome::Stopped(StopReason::Stopped),
                }
            }
        };
        if let Err(e) = guard(actor.handle(ctx, msg)).await {
            return Outcome::Failed(e);
        }
    }
}

/// Runs a hook, turning a panic into a failure.
async fn guard(
    fut: impl std::future::Future<Output = Result<(), ActorError>>,
) -> Result<(), ActorError> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            Err(ActorError::new(format!("panicked: {what}")))
        }
    }
}

async fn finish<A: Actor>(
    actor: &mut A,
    ctx: &mut Context<A>,
    rx: &mut mpsc::Receiver<Envelope<A::Msg>>,
    reason: StopReason,
) {
    // Children first, then this actor's own hook.
    let children = std::mem::take(&mut ctx.children);
    for child in children.iter().rev() {
        child.kill_with(StopReason::ParentStopped);
    }
    for child in &children {
        let mut done = child.stopped.subscribe();
        let _ = done.wait_for(Option::is_some).await;
    }
    ctx.cancel_all_timers();
    ctx.end_watches();
    if AssertUnwindSafe(actor.stopped(ctx, &reason))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!("stopped hook panicked");
    }
    tracing::debug!(%reason, "actor stopped");
    // Announce the stop before dropping queued messages, so that an asker whose request is
    // dropped sees why.
    ctx.cell.stopped.send_replace(Some(reason));
    ctx.system.forget(ctx.cell.id);
    ctx.drop_stash();
    rx.close();
    while let Ok(env) = rx.try_recv() {
        if !matches!(env, Envelope::Stop) {
            ctx.cell
                .dead_letters
                .record(&ctx.cell.name, "actor stopped with message in mailbox");
        }
    }
}
