//! The result of a run, and its markdown rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::scenario::{Kind, Scenario};
use crate::stats::KindStats;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The URL the scenario ran against.
    pub target: String,
    /// The scenario.
    pub scenario: Scenario,
    /// From the start of the run until the last user finished.
    pub elapsed: Duration,
    /// From the end of the ramp until the last user finished.
    pub after_ramp: Duration,
    /// `is…` and `getAllStates`.
    pub reads: KindStats,
    /// `set…`.
    pub writes: KindStats,
    /// How many times each kind of failure happened (route, then what).
    pub failures: BTreeMap<String, u64>,
}

impl Report {
    /// Reads and writes together.
    pub fn all(&self) -> KindStats {
        let mut all = self.reads.clone();
        all.merge(&self.writes);
        all
    }

    /// Requests completed (answered or failed).
    pub fn requests(&self) -> u64 {
        self.reads.requests + self.writes.requests
    }

    /// Requests that failed.
    pub fn errors(&self) -> u64 {
        self.reads.errors + self.writes.errors
    }

    /// Requests per second over the whole run.
    pub fn rate(&self, stats: &KindStats) -> f64 {
        stats.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Requests per second once every user had started; `None` when less than a second was
    /// left after the ramp.
    pub fn rate_after_ramp(&self, stats: &KindStats) -> Option<f64> {
        (self.after_ramp >= Duration::from_secs(1))
            .then(|| stats.requests_after_ramp as f64 / self.after_ramp.as_secs_f64())
    }

    /// The report as markdown: a heading, the scenario, a table (all, reads, writes) and the
    /// failures.
    pub fn to_markdown(&self, title: &str) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "{} · {} users ramped over {:.0} s, {:.0} s in all ({:.1} s measured) · pairs from \
             {} artifacts × {} user ids{} · one keep-alive HTTP/1.1 connection per user\n",
            self.target,
            s.users,
            s.ramp.as_secs_f64(),
            s.duration.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            s.artifacts,
            s.user_ids,
            match s.only {
                None => "",
                Some(Kind::Read) => " · reads only",
                Some(Kind::Write) => " · writes only",
            },
        );
        let _ = writeln!(
            out,
            "| requests | count | errors | req/s | req/s after ramp | p50 ms | p95 ms | p99 ms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let rows = [
            ("all", self.all()),
            ("reads (is…, getAllStates)", self.reads.clone()),
            ("writes (set…)", self.writes.clone()),
        ];
        for (name, mut stats) in rows {
            let mut p = |q| {
                stats.latencies.percentile(q).map_or_else(
                    || "–".to_owned(),
                    |d| format!("{:.2}", d.as_secs_f64() * 1e3),
                )
            };
            let (p50, p95, p99) = (p(50.0), p(95.0), p(99.0));
            let after = self
                .rate_after_ramp(&stats)
                .map_or_else(|| "–".to_owned(), |r| format!("{r:.0}"));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.0} | {after} | {p50} | {p95} | {p99} |",
                stats.requests,
                stats.errors,
                self.rate(&stats),
            );
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "\nErrors: none.");
        } else {
            let _ = writeln!(out, "\nErrors:\n");
            for (what, n) in &self.failures {
                let _ = writeln!(out, "- {n} × {what}");
            }
        }
        out
    }
}
