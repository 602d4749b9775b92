//! The phi-accrual failure detector (Hayashibara et al.), as in Akka.
//!
//! Instead of a yes/no timeout it keeps a history of heartbeat inter-arrival times and
//! computes *phi*: `-log10` of the probability that a heartbeat arrives later than now,
//! under a normal distribution with the history's mean (plus the acceptable pause) and
//! standard deviation (at least the configured minimum). phi = 1 means a 10 % chance of being
//! wrong when suspecting the node, phi = 8 a 10⁻⁸ chance. The normal CDF uses the logistic
//! approximation `1 / (1 + e^(-y (1.5976 + 0.070566 y²)))`, error below 0.00014.
//!
//! The struct is pure: heartbeats and queries carry the time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::FailureDetectorConfig;
use crate::time::Timestamp;

/// phi for a time `y` standard deviations past the mean.
pub(crate) fn phi_from_y(y: f64) -> f64 {
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if y > 0.0 {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// Bounded history of heartbeat intervals, in milliseconds, with running sums.
#[derive(Debug, Clone)]
struct HeartbeatHistory {
    max_samples: usize,
    intervals: VecDeque<f64>,
    sum: f64,
    squared_sum: f64,
}

impl HeartbeatHistory {
    fn new(max_samples: usize) -> Self {
        HeartbeatHistory {
            max_samples: max_samples.max(1),
            intervals: VecDeque::new(),
            sum: 0.0,
            squared_sum: 0.0,
        }
    }

    fn add(&mut self, interval_ms: f64) {
        if self.intervals.len() == self.max_samples
            && let Some(oldest) = self.intervals.pop_front()
        {
            self.sum -= oldest;
            self.squared_sum -= oldest * oldest;
        }
        self.intervals.push_back(interval_ms);
        self.sum += interval_ms;
        self.squared_sum += interval_ms * interval_ms;
    }

    fn mean(&self) -> f64 {
        self.sum / self.intervals.len() as f64
    }

    fn std_deviation(&self) -> f64 {
        let mean = self.mean();
        (self.squared_sum / self.intervals.len() as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

/// A phi-accrual failure detector for one monitored node.
///
/// Before the first heartbeat phi is 0 (a node is healthy until monitoring starts). The first
/// heartbeat seeds the history with two intervals around `first_heartbeat_estimate` (±¼ of
/// it), as Akka does, so phi is meaningful at once. An interval that arrives while the node is
/// already suspected is not recorded, so a long outage does not teach the detector to accept
/// long outages.
#[derive(Debug, Clone)]
pub struct PhiAccrualFailureDetector {
    threshold: f64,
    acceptable_pause_ms: f64,
    min_std_deviation_ms: f64,
    first_heartbeat_estimate_ms: f64,
    history: HeartbeatHistory,
    last_heartbeat: Option<Timestamp>,
}

impl PhiAccrualFailureDetector {
    /// A detector with the given settings; the first heartbeat estimate is the heartbeat
    /// interval.
    pub fn new(config: &FailureDetectorConfig) -> Self {
        Self::with_first_estimate(config, config.heartbeat_interval)
    }

    /// A detector whose history starts around `first_heartbeat_estimate`.
    pub fn with_first_estimate(
        config: &FailureDetectorConfig,
        first_heartbeat_estimate: Duration,
    ) -> Self {
        PhiAccrualFailureDetector {
            threshold: config.threshold,
            acceptable_pause_ms: ms(config.acceptable_heartbeat_pause),
            min_std_deviation_ms: ms(config.min_std_deviation),
            first_heartbeat_estimate_ms: ms(first_heartbeat_estimate),
            history: HeartbeatHistory::new(config.max_sample_size),
            last_heartbeat: None,
        }
    }

    /// Whether a heartbeat was ever recorded.
    pub fn is_monitoring(&self) -> bool {
        self.last_heartbeat.is_some()
    }

    /// Record a heartbeat that arrived at `now`.
    pub fn heartbeat(&mut self, now: Timestamp) {
        match self.last_heartbeat {
            None => {
                let mean = self.first_heartbeat_estimate_ms;
                let std = mean / 4.0;
                self.history.add(mean - std);
                self.history.add(mean + std);
            }
            Some(last) => {
                if self.is_available(now) {
                    self.history.add(ms(now.saturating_since(last)));
                }
            }
        }
        self.last_heartbeat = Some(now);
    }

    /// The suspicion level at `now` (0 before the first heartbeat).
    pub fn phi(&self, now: Timestamp) -> f64 {
        let Some(last) = self.last_heartbeat else {
            return 0.0;
        };
        let elapsed = ms(now.saturating_since(last));
        let mean = self.history.mean() + self.acceptable_pause_ms;
        let std = self.history.std_deviation().max(self.min_std_deviation_ms);
        phi_from_y((elapsed - mean) / std)
    }

    /// Whether phi is below the threshold at `now`.
    pub fn is_available(&self, now: Timestamp) -> bool {
        self.phi(now) < self.threshold
    }

    /// Mean of the recorded intervals (without the acceptable pause).
    pub fn mean_interval(&self) -> Duration {
        if self.history.intervals.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.history.mean() / 1000.0)
    }

    /// Number of intervals in the history.
    pub fn sample_count(&self) -> usize {
        self.history.intervals.len()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use std::f64::consts::LOG10_2;

    use super::*;

    fn config() -> FailureDetectorConfig {
        FailureDetectorConfig::default()
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-3,
            "phi {actual}, expected {expected}"
        );
    }

    #[test]
    fn phi_is_zero_before_any_heartbeat() {
        let fd = PhiAccrualFailureDetector::new(&config());
        assert!(!fd.is_monitoring());
        assert_eq!(fd.phi(at(1_000_000)), 0.0);
        assert!(fd.is_available(at(1_000_000)));
    }

    #[test]
    fn phi_after_the_first_heartbeat_uses_the_first_estimate() {
        // History {750, 1250}: mean 1000, std 250; with the 3 s pause the mean is 4000.
        let mut fd = PhiAccrualFailureDetector::new(&config());
        fd.heartbeat(at(10_000));
        assert_eq!(fd.sample_count(), 2);
        assert_eq!(fd.mean_interval(), Duration::from_secs(1));
        close(fd.phi(at(10_000)), 0.0); // y = -16: essentially zero
        close(fd.phi(at(14_000)), LOG10_2); // y = 0: -log10(0.5)
        close(fd.phi(at(14_250)), 0.79951); // y = 1
        close(fd.phi(at(14_500)), 1.64283); // y = 2
        close(fd.phi(at(15_000)), 4.73669); // y = 4
        assert!(fd.is_available(at(15_000)));
        close(fd.phi(at(15_300)), 7.91704); // y = 5.2: still below 8
        assert!(fd.is_available(at(15_300)));
        close(fd.phi(at(15_350)), 8.57238); // y = 5.4
        assert!(!fd.is_available(at(15_350)));
    }

    #[test]
    fn steady_heartbeats_shrink_the_deviation_to_its_floor() {
        let mut fd = PhiAccrualFailureDetector::new(&config());
        for i in 0..=100 {
            fd.heartbeat(at(i * 1000));
        }
        // 102 samples: {750, 1250, 1000 × 100}: std = 250 * sqrt(2/102) ≈ 35 ms → floor 100.
        assert_eq!(fd.sample_count(), 102);
        let last = 100_000;
        close(fd.phi(at(last + 4000)), LOG10_2);
        close(fd.phi(at(last + 4100)), 0.79951);
        close(fd.phi(at(last + 4400)), 4.73669);
        // The threshold (8) is crossed ≈ 4.52 s after the last heartbeat.
        assert!(fd.is_available(at(last + 4520)));
        assert!(!fd.is_available(at(last + 4530)));
    }

    #[test]
    fn irregular_history_gives_known_phi() {
        // Intervals 750, 1250 (first estimate), then 500, 1500: mean 1000,
        // std = sqrt((250² + 250² + 500² + 500²) / 4) = sqrt(156250) ≈ 395.28.
        let mut fd = PhiAccrualFailureDetector::new(&config());
        fd.heartbeat(at(0));
        fd.heartbeat(at(500));
        fd.heartbeat(at(2000));
        let std = 156_250f64.sqrt();
        close(fd.phi(at(2000 + 4000)), LOG10_2);
        close(fd.phi(at(2000 + 4000 + std.round() as u64)), 0.79904); // y ≈ 0.9993
        close(fd.phi(at(2000 + 3000)), 0.00243); // y = -1000/395.28 ≈ -2.53
    }

    #[test]
    fn intervals_while_suspected_are_not_learned() {
        let mut fd = PhiAccrualFailureDetector::new(&config());
        fd.heartbeat(at(0));
        fd.heartbeat(at(1000));
        fd.heartbeat(at(60_000)); // after a 59 s outage
        assert_eq!(fd.sample_count(), 3);
        assert_eq!(fd.mean_interval(), Duration::from_secs(1));
        // It is available again right after the heartbeat.
        assert!(fd.is_available(at(60_100)));
    }

    #[test]
    fn the_history_is_bounded() {
        let cfg = FailureDetectorConfig {
            max_sample_size: 3,
            ..config()
        };
        let mut fd = PhiAccrualFailureDetector::new(&cfg);
        fd.heartbeat(at(0));
        fd.heartbeat(at(2000));
        fd.heartbeat(at(4000));
        fd.heartbeat(at(6000));
        // {750, 1250} were pushed out by 2000, 2000, 2000.
        assert_eq!(fd.sample_count(), 3);
        assert_eq!(fd.mean_interval(), Duration::from_secs(2));
    }

    #[test]
    fn the_acceptable_pause_delays_suspicion() {
        let tolerant = FailureDetectorConfig {
            acceptable_heartbeat_pause: Duration::from_secs(10),
            ..config()
        };
        let mut a = PhiAccrualFailureDetector::new(&config());
        let mut b = PhiAccrualFailureDetector::new(&tolerant);
        a.heartbeat(at(0));
        b.heartbeat(at(0));
        assert!(!a.is_available(at(6000)));
        assert!(b.is_available(at(6000)));
        close(b.phi(at(11_000)), LOG10_2);
    }
}
