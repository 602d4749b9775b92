//! How to start an actor: its factory, supervision strategy and capacities.

use std::time::Duration;

use crate::Actor;

/// Default mailbox capacity: messages beyond it are refused (handed back to the sender and
/// counted as dead letters).
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// Default stash capacity.
pub const DEFAULT_STASH_CAPACITY: usize = 1024;

/// What to do when an actor fails (a hook returns an error, or panics).
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorStrategy {
    /// Stop the actor; watchers see [`StopReason::Failed`](crate::StopReason::Failed). The
    /// default, as in Akka Typed.
    Stop,
    /// Replace the actor with a fresh instance from its factory after a backoff delay. The
    /// mailbox is kept; timers and the stash are dropped; children are stopped (as in Akka
    /// Typed: the new instance starts its own).
    Restart(Backoff),
}

/// Restart backoff: the `n`-th restart within `within` waits `min * 2^n`, capped at `max`,
/// stretched by up to `random_factor` (0.2 = up to 20 % longer). After `max_restarts` restarts
/// within `within` the actor stops instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Random stretch of each delay, from 0.0 (none) upwards.
    pub random_factor: f64,
    /// Restarts allowed within `within`.
    pub max_restarts: u32,
    /// The window restarts are counted in.
    pub within: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(200),
            max: Duration::from_secs(10),
            random_factor: 0.2,
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0-based), given a random draw in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = base.min(self.max);
        let stretch = 1.0 + self.random_factor.max(0.0) * random.clamp(0.0, 1.0);
        // `Duration::mul_f64` panics on overflow or a non-finite factor (a huge or infinite
        // `random_factor`); that panic would kill the actor's task.
        Duration::try_from_secs_f64(capped.as_secs_f64() * stretch).unwrap_or(Duration::MAX)
    }
}

/// The recipe for an actor: a factory (called again on every restart) plus settings.
pub struct Props<A> {
    pub(crate) factory: Box<dyn FnMut() -> A + Send>,
    pub(crate) supervision: SupervisorStrategy,
    pub(crate) mailbox_capacity: usize,
    pub(crate) stash_capacity: usize,
}

impl<A: Actor> Props<A> {
    /// Props that build the actor with `factory`; supervision [`SupervisorStrategy::Stop`],
    /// default capacities.
    pub fn new(factory: impl FnMut() -> A + Send + 'static) -> Self {
        Self {
            factory: Box::new(factory),
            supervision: SupervisorStrategy::Stop,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            stash_capacity: DEFAULT_STASH_CAPACITY,
        }
    }

    /// Sets the supervision strategy.
    pub fn with_supervision(mut self, strategy: SupervisorStrategy) -> Self {
        self.supervision = strategy;
        self
    }

    /// Sets the mailbox capacity (at least 1).
    pub fn with_mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    /// Sets the stash capacity.
    pub fn with_stash_capacity(mut self, capacity: usize) -> Self {
        self.stash_capacity = capacity;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_stretches() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            random_factor: 0.5,
            max_restarts: 3,
            within: Duration::from_secs(10),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay(4, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(40, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(150));
        // Out-of-range draws are clamped.
        assert_eq!(b.delay(0, 7.0), Duration::from_millis(150));
        assert_eq!(b.delay(0, -1.0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_with_an_absurd_random_factor_does_not_panic() {
        let b = Backoff {
            random_factor: f64::INFINITY,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.5), Duration::MAX);
        let b = Backoff {
            random_factor: f64::MAX,
            max: Duration::from_secs(u64::MAX),
            ..Backoff::default()
        };
        assert_eq!(b.delay(100, 1.0), Duration::MAX);
        let b = Backoff {
            random_factor: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(200));
    }
}
