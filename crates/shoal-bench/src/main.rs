//! Shoal's benchmarks, each measured next to the ceiling of the same machine in the same run.
//!
//! ```text
//! cargo run --release -p shoal-bench -- all            # everything, as markdown
//! cargo run --release -p shoal-bench -- ask --seconds 5
//! cargo run --release -p shoal-bench -- sqlite --entities 1,64,1024 --seconds 10
//! cargo run --release -p shoal-bench -- recovery --events 100000
//! cargo run --release -p shoal-bench -- remote --seconds 5
//! cargo run --release -p shoal-bench -- sharding --seconds 5
//! cargo run --release -p shoal-bench -- probe
//! cargo build --release -p shoal-management && cargo run --release -p shoal-bench -- failover
//! cargo run --release -p shoal-bench -- postgres --entities 1024 --seconds 10
//! ```
//!
//! Results are printed as markdown rows for `BENCHMARKS.md`. Disk-bound figures print a
//! flush-rate probe (4 KiB write + fdatasync per iteration) taken in the same directory just
//! before, because this machine's disk has two speeds.

mod ask;
mod failover;
mod measure;
mod persist;
mod pg;
mod remote;
mod sharding;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Shoal benchmarks against same-run ceilings")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every benchmark with default sizes.
    All {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Ask round trip to a local actor vs a bare tokio mpsc + oneshot round trip.
    Ask {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Persisted commands/s into the SQLite store vs a bare multi-row INSERT loop.
    Sqlite {
        /// Numbers of concurrently busy entities, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
        entities: Vec<usize>,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Events replayed per second for one entity, without and with a snapshot.
    Recovery {
        /// Events in the entity's log.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
    },
    /// The PostgreSQL store on a throwaway server: persisted events/s vs a bare INSERT loop,
    /// live tag stream lag, tag query catch-up.
    Postgres {
        /// Concurrently busy entities.
        #[arg(long, default_value_t = 1024)]
        entities: usize,
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Events/s written while measuring the lag of a live tag stream.
        #[arg(long, default_value_t = 10_000)]
        lag_rate: u64,
        /// Events a tag query catches up over.
        #[arg(long, default_value_t = 1_000_000)]
        catchup_events: u64,
    },
    /// Remote one-way messages/s vs a bare pipelined TCP loop; remote ask round trips.
    Remote {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Asks to sharded entities (same node, and from a proxy node over TCP) vs direct asks.
    Sharding {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Time from SIGKILL of a node to its removal (needs the release `shoal-node` binary).
    Failover {
        /// How many kills to time.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The disk's flush rate (fdatasync/s) in a temporary directory.
    Probe,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::All { seconds } => {
                ask::run(seconds).await?;
                persist::sqlite(&[1, 64, 1024], seconds).await?;
                persist::recovery(100_000).await?;
                remote::run(seconds).await?;
                sharding::run(seconds).await?;
            }
            Command::Ask { seconds } => ask::run(seconds).await?,
            Command::Sqlite { entities, seconds } => persist::sqlite(&entities, seconds).await?,
            Command::Recovery { events } => persist::recovery(events).await?,
            Command::Remote { seconds } => remote::run(seconds).await?,
            Command::Sharding { seconds } => sharding::run(seconds).await?,
            Command::Failover { runs } => failover::run(runs.max(1)).await?,
            Command::Postgres {
                entities,
                seconds,
                lag_rate,
                catchup_events,
            } => pg::run(entities, seconds, lag_rate, catchup_events).await?,
            Command::Probe => {
                let dir = tempfile::tempdir()?;
                println!(
                    "flush probe: {:.0} fdatasync/s",
                    measure::flush_rate(dir.path())?
                );
            }
        }
        Ok(())
    })
}
