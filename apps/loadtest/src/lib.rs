//! Seed 001's Gatling load test, as a small closed-loop tool: virtual users ramp up, each
//! with one keep-alive HTTP/1.1 connection, and each loops through every artifact-state API
//! (set read, is read, add to feed, is in feed, remove from feed, `getAllStates` by POST and
//! by GET) on a random `(artifactId, userId)` pair from a bounded pool, sending its next
//! request as soon as the previous one is answered.
//!
//! Any non-2xx answer, a body not of the route's shape (or an `artifactRead` false after the
//! same user set it), a transport error or a timeout is an error.
//!
//! * [`scenario`] — [`Scenario`], [`Target`] and [`run`].
//! * [`bare`] — the ceiling: the same routes answering the same JSON with no entity behind.
//! * [`report`] — [`Report`] and its markdown.
//! * [`stats`] — latency percentiles.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use loadtest::{Scenario, Target, run};
//!
//! let target = Target::parse("http://127.0.0.1:8082").await?;
//! let report = run(&target, &Scenario::default(), true).await?;
//! println!("{}", report.to_markdown("artifact-state"));
//! # Ok(()) }
//! ```

pub mod bare;
pub mod report;
pub mod scenario;
pub mod stats;

pub use bare::BareServer;
pub use report::Report;
pub use scenario::{Api, Kind, Scenario, Target, run};
