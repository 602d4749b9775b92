//! Injected time: the cores never read a clock.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// A point on the runner's monotonic clock, expressed as the time elapsed since the runner
/// started.
///
/// The cores ([`Membership`](crate::Membership), the
/// [`PhiAccrualFailureDetector`](crate::PhiAccrualFailureDetector), the
/// [`SplitBrainResolver`](crate::SplitBrainResolver)) take `now` as an argument and never read
/// a clock themselves, so a test or a simulation decides exactly what time it is. A runner on
/// tokio maps `tokio::time::Instant` to a `Timestamp` with `start.elapsed()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The moment the runner started.
    pub const ZERO: Timestamp = Timestamp(Duration::ZERO);

    /// The point `since_start` after the runner started.
    pub const fn from_duration(since_start: Duration) -> Self {
        Timestamp(since_start)
    }

    /// The point `millis` milliseconds after the runner started.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(Duration::from_millis(millis))
    }

    /// Time elapsed since the runner started.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this point is; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(1500);
        assert_eq!(
            t + Duration::from_millis(500),
            Timestamp::from_secs_for_test(2)
        );
        assert_eq!(
            t.saturating_since(Timestamp::from_millis(500)),
            Duration::from_secs(1)
        );
        assert_eq!(Timestamp::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(t.as_duration(), Duration::from_millis(1500));
        assert_eq!(t.to_string(), "1.5s");
    }

    impl Timestamp {
        fn from_secs_for_test(secs: u64) -> Self {
            Timestamp::from_duration(Duration::from_secs(secs))
        }
    }
}
