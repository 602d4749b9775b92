//! Ask round trip to a local actor vs a bare tokio mpsc + oneshot round trip.

use std::time::{Duration, Instant};

use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props, ReplyTo};
use tokio::sync::{mpsc, oneshot};

use crate::measure::Latencies;

struct Echo;

struct Ping(u64, ReplyTo<u64>);

impl Actor for Echo {
    type Msg = Ping;
    async fn handle(
        &mut self,
        _: &mut Context<Self>,
        Ping(n, reply): Ping,
    ) -> Result<(), ActorError> {
        reply.send(n + 1);
        Ok(())
    }
}

async fn bare(seconds: u64, clients: usize, with_timeout: bool) -> (f64, Latencies) {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
    tokio::spawn(async move {
        while let Some((n, reply)) = rx.recv().await {
            let _ = reply.send(n + 1);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let (otx, orx) = oneshot::channel();
                    tx.send((n, otx)).await.expect("server runs");
                    n = if with_timeout {
                        tokio::time::timeout(Duration::from_secs(5), orx)
                            .await
                            .expect("in time")
                            .expect("server answers")
                    } else {
                        orx.await.expect("server answers")
                    };
                    lat.record(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await.expect("client task"));
    }
    (all.len() as f64 / start.elapsed().as_secs_f64(), all)
}

async fn actor(seconds: u64, clients: usize) -> (f64, Latencies) {
    let system = ActorSystem::new("bench");
    let echo = system.spawn("echo", Props::new(|| Echo));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let echo = echo.clone();
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    n = echo
                        .ask(|r| Ping(n, r), Duration::from_secs(5))
                        .await
                        .expect("answer");
                    lat.record(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.merge(t.await.expect("client task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    system.shutdown().await;
    (rate, all)
}

pub(crate) async fn run(seconds: u64) -> anyhow::Result<()> {
    println!("## Ask round trip to a local actor ({seconds} s per row)\n");
    println!(
        "| clients | bare mpsc+oneshot/s | bare + tokio timeout/s | actor ask/s | ratio to bare | ratio to bare+timeout | ask p50 µs | ask p99 µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1, 64] {
        let (bare_rate, _) = bare(seconds, clients, false).await;
        let (timed_rate, _) = bare(seconds, clients, true).await;
        let (ask_rate, mut lat) = actor(seconds, clients).await;
        println!(
            "| {clients} | {bare_rate:.0} | {timed_rate:.0} | {ask_rate:.0} | {:.0} % | {:.0} % | {:.1} | {:.1} |",
            100.0 * ask_rate / bare_rate,
            100.0 * ask_rate / timed_rate,
            lat.percentile_ms(50.0) * 1000.0,
            lat.percentile_ms(99.0) * 1000.0,
        );
    }
    println!();
    Ok(())
}
