//! Latency samples and their percentiles; request counts per kind of request.

use std::time::Duration;

/// Latency samples, kept whole (a 300 s run at 10 000 requests/s is 24 MB).
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(latency.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.sorted = false;
    }

    /// Adds all of `other`'s samples.
    pub fn merge(&mut self, other: &Latencies) {
        self.nanos.extend_from_slice(&other.nanos);
        self.sorted = false;
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The `p`-th percentile (`p` from 0 to 100, clamped) by the nearest-rank method: the
    /// smallest sample that at least `p` % of the samples are less than or equal to. `None`
    /// without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.nanos.is_empty() {
            return None;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let n = self.nanos.len();
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        // Rank 1..=n; p = 0 is the smallest sample.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Some(Duration::from_nanos(self.nanos[index]))
    }
}

/// What one kind of request (reads or writes) did during a run.
#[derive(Debug, Clone, Default)]
pub struct KindStats {
    /// Requests completed: answered or failed.
    pub requests: u64,
    /// Requests that failed: not 2xx, a wrong body, a transport error or a timeout.
    pub errors: u64,
    /// Requests completed once every user had started (after the ramp).
    pub requests_after_ramp: u64,
    /// Latencies of the successful requests (send to last body byte).
    pub latencies: Latencies,
}

impl KindStats {
    /// Adds `other`'s counts and samples.
    pub fn merge(&mut self, other: &KindStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.requests_after_ramp += other.requests_after_ramp;
        self.latencies.merge(&other.latencies);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_of_one_to_a_hundred() {
        let mut l = Latencies::default();
        // Out of order on purpose.
        for n in (1..=100).rev() {
            l.record(ms(n));
        }
        assert_eq!(l.len(), 100);
        assert_eq!(l.percentile(0.0), Some(ms(1)));
        assert_eq!(l.percentile(1.0), Some(ms(1)));
        assert_eq!(l.percentile(50.0), Some(ms(50)));
        assert_eq!(l.percentile(95.0), Some(ms(95)));
        assert_eq!(l.percentile(99.0), Some(ms(99)));
        assert_eq!(l.percentile(99.5), Some(ms(100)));
        assert_eq!(l.percentile(100.0), Some(ms(100)));
        // Out-of-range ranks are clamped.
        assert_eq!(l.percentile(150.0), Some(ms(100)));
        assert_eq!(l.percentile(-3.0), Some(ms(1)));
    }

    #[test]
    fn percentiles_of_few_samples() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile(50.0), None);
        l.record(ms(7));
        assert_eq!(l.percentile(0.0), Some(ms(7)));
        assert_eq!(l.percentile(99.0), Some(ms(7)));
        l.record(ms(3));
        assert_eq!(l.percentile(50.0), Some(ms(3)));
        assert_eq!(l.percentile(51.0), Some(ms(7)));
    }

    #[test]
    fn a_skewed_distribution_shows_in_the_tail_only() {
        let mut l = Latencies::default();
        for _ in 0..980 {
            l.record(ms(1));
        }
        for _ in 0..20 {
            l.record(ms(500));
        }
        assert_eq!(l.percentile(50.0), Some(ms(1)));
        assert_eq!(l.percentile(95.0), Some(ms(1)));
        assert_eq!(l.percentile(98.0), Some(ms(1)));
        assert_eq!(l.percentile(99.0), Some(ms(500)));
    }

    #[test]
    fn merging_keeps_every_sample_and_resorts() {
        let mut a = Latencies::default();
        a.record(ms(10));
        assert_eq!(a.percentile(100.0), Some(ms(10)));
        let mut b = Latencies::default();
        b.record(ms(1));
        b.record(ms(20));
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.percentile(0.0), Some(ms(1)));
        assert_eq!(a.percentile(50.0), Some(ms(10)));
        assert_eq!(a.percentile(100.0), Some(ms(20)));

        let mut k = KindStats {
            requests: 3,
            errors: 1,
            requests_after_ramp: 2,
            latencies: a,
        };
        k.merge(&KindStats {
            requests: 2,
            errors: 0,
            requests_after_ramp: 2,
            latencies: b,
        });
        assert_eq!((k.requests, k.errors, k.requests_after_ramp), (5, 1, 4));
        assert_eq!(k.latencies.len(), 5);
    }
}
