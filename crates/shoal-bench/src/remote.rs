//! Remoting between two nodes on loopback: one-way messages/s with 100-byte payloads
//! against a bare pipelined TCP loop of the same frames (same run), and remote ask round
//! trips at 1 and 64 concurrent asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props};
use shoal_remote::frame::{self, FrameKind, HEADER_LEN};
use shoal_remote::{
    ClusterSecret, Endpoint, EndpointConfig, InboundHandler, Remote, RemoteRef, RemoteReplyTo,
    SendError, TcpTransport, Transport, UndeliveredReason, UniqueAddress,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::measure::Latencies;

const PAYLOAD: usize = 100;

fn config() -> EndpointConfig {
    EndpointConfig::new("bench", ClusterSecret::new("bench-secret-0123456789abcdef"))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn tcp() -> Arc<dyn Transport> {
    Arc::new(TcpTransport::new())
}

/// The data frame the endpoint writes for a 100-byte payload.
fn data_frame() -> Vec<u8> {
    let mut body = 1u64.to_be_bytes().to_vec();
    body.extend_from_slice(&[b'x'; PAYLOAD]);
    frame::encode(FrameKind::Data, &body)
}

/// The ceiling: one writer pipelining pre-encoded frames (64 KiB per write), one reader
/// parsing and counting them. Returns frames/s.
async fn bare_tcp(seconds: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let frame = data_frame();
    let frame_len = frame.len();
    let batch: Vec<u8> = frame.repeat(64 * 1024 / frame_len);
    let counted = Arc::new(AtomicU64::new(0));
    let reader_count = counted.clone();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            let n = s.read(&mut buf[end..]).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            end += n;
            let mut frames = 0;
            while end - start >= HEADER_LEN {
                let h = &buf[start..start + HEADER_LEN];
                anyhow::ensure!(h[..4] == frame::MAGIC, "bad magic");
                let len = HEADER_LEN + u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
                if end - start < len {
                    break;
                }
                start += len;
                frames += 1;
            }
            reader_count.fetch_add(frames, Ordering::Relaxed);
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
    });
    let mut w = TcpStream::connect(addr).await?;
    w.set_nodelay(true)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        w.write_all(&batch).await?;
    }
    let received = counted.load(Ordering::Relaxed);
    let rate = received as f64 / started.elapsed().as_secs_f64();
    drop(w);
    reader.await??;
    Ok(rate)
}

struct Count(Arc<AtomicU64>);

impl InboundHandler for Count {
    fn on_message(&self, _from: UniqueAddress, payload: &[u8]) {
        debug_assert_eq!(payload.len(), PAYLOAD);
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends as fast as the endpoint takes messages; on a full queue, yields to the writer.
async fn pump(seconds: u64, counted: &AtomicU64, mut send: impl FnMut() -> bool) -> f64 {
    let base = counted.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..256 {
            if !send() {
                tokio::task::yield_now().await;
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    (counted.load(Ordering::Relaxed) - base) as f64 / started.elapsed().as_secs_f64()
}

/// The endpoint: `send` of a 100-byte payload, counted in the receiver's handler.
async fn endpoint_one_way(seconds: u64) -> anyhow::Result<(f64, f64)> {
    let counted = Arc::new(AtomicU64::new(0));
    let b = Endpoint::bind(
        tcp(),
        loopback(),
        config(),
        Arc::new(Count(counted.clone())),
    )
    .await?;
    let a = Endpoint::bind(tcp(), loopback(), config(), Arc::new(Count(Arc::default()))).await?;
    let payload = [b'x'; PAYLOAD];
    let to = b.local();
    let rate = pump(seconds, &counted, || match a.send(to, &payload) {
        Ok(()) => true,
        Err(SendError::QueueFull(_)) => false,
        Err(e) => panic!("send failed: {e}"),
    })
    .await;
    let stats = a.stats();
    a.shutdown().await;
    b.shutdown().await;
    Ok((
        rate,
        stats.frames_sent as f64 / stats.batches_sent.max(1) as f64,
    ))
}

#[derive(Serialize, Deserialize)]
enum BenchMsg {
    /// 100 bytes of payload (serialized as a 100-character JSON string plus quotes).
    Data(String),
    Ping(u64, RemoteReplyTo<u64>),
}

struct Sink(Arc<AtomicU64>);

impl Actor for Sink {
    type Msg = BenchMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: BenchMsg) -> Result<(), ActorError> {
        match msg {
            BenchMsg::Data(_) => {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            BenchMsg::Ping(n, reply) => {
                reply.send(n + 1);
            }
        }
        Ok(())
    }
}

struct Nodes {
    a: Remote,
    b: Remote,
    system: ActorSystem,
    target: RemoteRef<BenchMsg>,
    counted: Arc<AtomicU64>,
}

async fn nodes() -> anyhow::Result<Nodes> {
    let b = Remote::bind(tcp(), loopback(), config()).await?;
    let a = Remote::bind(tcp(), loopback(), config()).await?;
    let system = ActorSystem::new("bench");
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    let sink = system.spawn(
        "sink",
        Props::new(move || Sink(c.clone())).with_mailbox_capacity(64 * 1024),
    );
    b.register("sink", sink)?;
    let target = a.resolve(b.local(), "sink");
    Ok(Nodes {
        a,
        b,
        system,
        target,
        counted,
    })
}

impl Nodes {
    async fn stop(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        self.system.shutdown().await;
    }
}

/// Remote actors: `RemoteRef::tell` of a JSON message with a 100-byte string, counted by the
/// receiving actor.
async fn remote_tell_one_way(seconds: u64) -> anyhow::Result<f64> {
    let n = nodes().await?;
    let text = "x".repeat(PAYLOAD);
    let rate = pump(seconds, &n.counted, || {
        match n.target.tell(BenchMsg::Data(text.clone())) {
            Ok(()) => true,
            Err(e) if matches!(e.reason, UndeliveredReason::Send(SendError::QueueFull(_))) => false,
            Err(e) => panic!("tell failed: {e}"),
        }
    })
    .await;
    n.stop().await;
    Ok(rate)
}

async fn remote_ask(seconds: u64, clients: usize) -> anyhow::Result<(f64, Latencies)> {
    let n = nodes().await?;
    // Warm the connections up (both directions).
    n.target
        .ask(|r| BenchMsg::Ping(0, r), Duration::from_secs(5))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let target = n.target.clone();
            tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    k = target
                        .ask(|r| BenchMsg::Ping(k, r), Duration::from_secs(5))
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
        all.merge(t.await?);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    n.stop().await;
    Ok((rate, all))
}

pub(crate) async fn run(seconds: u64) -> anyhow::Result<()> {
    println!(
        "## Remote messaging between two nodes on loopback ({seconds} s per row, {PAYLOAD}-byte payloads)\n"
    );
    let frame_len = data_frame().len();
    let bare = bare_tcp(seconds).await?;
    let (endpoint, per_batch) = endpoint_one_way(seconds).await?;
    let tell = remote_tell_one_way(seconds).await?;
    println!("| path | msgs/s | vs bare TCP |");
    println!("|---|---:|---:|");
    println!(
        "| bare pipelined TCP loop ({frame_len}-byte frames, 64 KiB writes) | {bare:.0} | 100 % |"
    );
    println!(
        "| `Endpoint::send` → handler ({per_batch:.0} frames per write) | {endpoint:.0} | {:.0} % |",
        100.0 * endpoint / bare
    );
    println!(
        "| `RemoteRef::tell` (JSON) → actor | {tell:.0} | {:.0} % |",
        100.0 * tell / bare
    );
    println!();
    println!("| concurrent asks | asks/s | p50 µs | p99 µs |");
    println!("|---:|---:|---:|---:|");
    for clients in [1, 64] {
        let (rate, mut lat) = remote_ask(seconds, clients).await?;
        println!(
            "| {clients} | {rate:.0} | {:.1} | {:.1} |",
            lat.percentile_ms(50.0) * 1000.0,
            lat.percentile_ms(99.0) * 1000.0,
        );
    }
    println!();
    Ok(())
}
