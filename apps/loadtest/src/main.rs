//! `loadtest`: seed 001's load test against an artifact-state service, or (`--bare`) against
//! a bare in-process handler of the same shape. See `--help`.

/// The allocator artifact-state uses, so that the bare ceiling is built like the service.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use loadtest::{BareServer, Kind, Scenario, Target, run};

/// Seed 001's load test: virtual users ramping up, each looping through every artifact-state
/// API on random (artifactId, userId) pairs, one keep-alive HTTP/1.1 connection per user.
///
/// Progress goes to stderr once per second; the final report (markdown) to stdout. The exit
/// status is 1 when any request failed.
///
/// The seed's full ramp: `loadtest --users 1000 --ramp 300s --duration 360s`.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Args {
    /// The service's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8082", conflicts_with = "bare")]
    target: String,
    /// Run against a bare axum handler of the same shape started in this process (parses
    /// the body, answers the same JSON, no entity): the ceiling.
    #[arg(long)]
    bare: bool,
    /// Only serve the bare handler on ADDR until Ctrl-C or SIGTERM, in its own process like
    /// the service (then `loadtest --target http://ADDR` measures it): the ceiling with the
    /// same process layout as a run against the service.
    #[arg(long, value_name = "ADDR", conflicts_with = "bare")]
    serve_bare: Option<std::net::SocketAddr>,
    /// Virtual users.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Time over which the users start (e.g. 10s, 5m, 500ms; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ramp: Duration,
    /// The whole run, ramp included.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Artifact ids are drawn from 0..N.
    #[arg(long, default_value_t = 100)]
    artifacts: u64,
    /// User ids are drawn from user-0..user-N.
    #[arg(long, default_value_t = 100)]
    user_ids: u64,
    /// A request not answered within this time is an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Seed of the random pair choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only the reads (`read`) or only the writes (`write`) of each iteration, to measure one
    /// kind alone; by default every API, as in the seed.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// The `--only` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Only {
    /// `is…` and `getAllStates`.
    Read,
    /// `set…`.
    Write,
}

/// `300s`, `5m`, `500ms`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => bail!("bad duration unit {other:?} (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("bad duration {text:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match main_with(args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_with(args: Args) -> anyhow::Result<u64> {
    let scenario = Scenario {
        users: args.users,
        ramp: args.ramp,
        duration: args.duration,
        artifacts: args.artifacts,
        user_ids: args.user_ids,
        timeout: args.timeout,
        seed: args.seed,
        only: args.only.map(|only| match only {
            Only::Read => Kind::Read,
            Only::Write => Kind::Write,
        }),
    };
    let progress = !args.quiet;
    if let Some(addr) = args.serve_bare {
        let server = BareServer::start_on(addr)
            .await
            .with_context(|| format!("cannot serve the bare handler on {addr}"))?;
        println!("bare handler listening on http://{}", server.addr());
        shoal_service::shutdown_signal().await;
        server.shutdown().await?;
        return Ok(0);
    }
    let (report, title) = if args.bare {
        let server = BareServer::start()
            .await
            .context("cannot start the bare server")?;
        let target = Target::from_addr(server.addr());
        let report = run(&target, &scenario, progress).await?;
        server.shutdown().await?;
        (report, "bare axum handler (ceiling)")
    } else {
        let target = Target::parse(&args.target).await?;
        (run(&target, &scenario, progress).await?, "artifact-state")
    };
    println!("{}", report.to_markdown(title));
    Ok(report.errors())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let args = Args::parse_from([
            "loadtest",
            "--users",
            "1000",
            "--ramp",
            "300s",
            "--duration",
            "6m",
        ]);
        assert_eq!(args.users, 1000);
        assert_eq!(args.duration, Duration::from_secs(360));
        assert!(Args::try_parse_from(["loadtest", "--bare", "--target", "http://x"]).is_err());
        let args = Args::parse_from(["loadtest", "--serve-bare", "127.0.0.1:8099"]);
        assert_eq!(args.serve_bare, Some("127.0.0.1:8099".parse().unwrap()));
        assert!(Args::try_parse_from(["loadtest", "--serve-bare", "nowhere"]).is_err());
        assert!(
            Args::try_parse_from(["loadtest", "--serve-bare", "127.0.0.1:1", "--bare"]).is_err()
        );
    }
}
