//! Time from SIGKILL of a node to its removal, as seen by a survivor, with default cluster
//! settings: three `shoal-node` processes on loopback over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_testkit::{NodeProcess, free_port, up_members};

const SECRET: &str = "failover-bench-secret-0123456789";
const WAIT: Duration = Duration::from_secs(120);

/// The `shoal-node` binary next to this one (build it with
/// `cargo build --release -p shoal-management`).
fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("shoal-node");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: run `cargo build --release -p shoal-management` first",
        bin.display()
    );
    Ok(bin)
}

pub(crate) async fn run(repetitions: usize) -> anyhow::Result<()> {
    let bin = node_binary()?;
    let mut times = Vec::new();
    for _ in 0..repetitions {
        let seeds: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let a = NodeProcess::start(&bin, seeds[0], &seeds, SECRET);
        let _b = NodeProcess::start(&bin, seeds[1], &seeds, SECRET);
        let mut c = NodeProcess::start(&bin, seeds[2], &seeds, SECRET);
        a.wait_members(WAIT, |m| up_members(m).len() == 3).await;
        let gone = seeds[2].to_string();
        c.kill();
        let (_, took) = a
            .wait_members(WAIT, |m| {
                m["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().all(|x| x["address"] != gone.as_str()))
            })
            .await;
        times.push(took);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("## Fail-over: SIGKILL of a node to its removal (3 processes, default settings)\n");
    println!("| runs | min | median | max |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!();
    Ok(())
}
