//! A [`Transport`] over turmoil's simulated TCP (`turmoil::net`), for deterministic
//! simulations: the real [`Endpoint`](crate::Endpoint) (framing, handshake, queues,
//! reconnection) runs unchanged on every simulated host.
//!
//! turmoil drops the segments of a partitioned link for good, so a connection that lost one
//! stalls forever, even after the link is repaired (its reorder buffer waits for the lost
//! segment). Real TCP would retransmit. [`TurmoilNetwork::partition`] therefore also
//! **breaks** every live connection across the cut: reads and writes on both ends fail, and
//! the endpoint reconnects (through the cut, until it is repaired), as it does after any
//! connection failure.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::{Connection, Listener, Transport};

/// The simulated network of one turmoil simulation: hands out the [`Transport`] for its hosts
/// and applies partitions (to turmoil's links and to the live connections).
#[derive(Clone, Default)]
pub struct TurmoilNetwork {
    connections: Arc<Mutex<Vec<Weak<Link>>>>,
}

impl std::fmt::Debug for TurmoilNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurmoilNetwork").finish_non_exhaustive()
    }
}

impl TurmoilNetwork {
    /// A network with no connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport for hosts of this simulation (use it inside `sim.host`/`sim.client`).
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(TurmoilTransport { net: self.clone() })
    }

    /// Partition hosts `a` and `b` (both directions) in `sim` and break the live connections
    /// between them.
    pub fn partition(&self, sim: &turmoil::Sim<'_>, a: IpAddr, b: IpAddr) {
        sim.partition(a, b);
        self.break_connections(a, b);
    }

    /// Repair the link between hosts `a` and `b` in `sim`.
    pub fn repair(&self, sim: &turmoil::Sim<'_>, a: IpAddr, b: IpAddr) {
        sim.repair(a, b);
    }

    /// Make every live connection between hosts `a` and `b` fail, on both ends.
    pub fn break_connections(&self, a: IpAddr, b: IpAddr) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|weak| {
            let Some(link) = weak.upgrade() else {
                return false;
            };
            let (x, y) = link.ends;
            if (x == a && y == b) || (x == b && y == a) {
                link.break_now();
            }
            true
        });
    }

    /// Live connections (both ends counted once each).
    pub fn live_connections(&self) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.iter().filter(|w| w.strong_count() > 0).count()
    }

    fn wrap(&self, stream: turmoil::net::TcpStream) -> io::Result<Box<dyn Connection>> {
        let ends = (stream.local_addr()?.ip(), stream.peer_addr()?.ip());
        let link = Arc::new(Link {
            ends,
            broken: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
        });
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        // Closed connections are forgotten here too, or every reconnect would add one.
        connections.retain(|w| w.strong_count() > 0);
        connections.push(Arc::downgrade(&link));
        drop(connections);
        Ok(Box::new(TurmoilConnection { stream, link }))
    }
}

/// One end of a connection as the network sees it.
struct Link {
    ends: (IpAddr, IpAddr),
    broken: AtomicBool,
    /// Tasks waiting on this end: woken when it breaks.
    wakers: Mutex<Vec<Waker>>,
}

impl Link {
    fn break_now(&self) {
        self.broken.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }

    fn check(&self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulated link was partitioned",
            ));
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Ok(())
    }
}

/// A turmoil TCP stream that fails once its link was partitioned.
struct TurmoilConnection {
    stream: turmoil::net::TcpStream,
    link: Arc<Link>,
}

impl AsyncRead for TurmoilConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.link.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TurmoilConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.link.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.link.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// [`Transport`] over `turmoil::net`; get one from [`TurmoilNetwork::transport`]. Only usable
/// inside a turmoil simulation's hosts.
struct TurmoilTransport {
    net: TurmoilNetwork,
}

struct TurmoilListener {
    listener: turmoil::net::TcpListener,
    addr: SocketAddr,
    net: TurmoilNetwork,
}

impl Transport for TurmoilTransport {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            Ok(Box::new(TurmoilListener {
                listener,
                addr,
                net: self.net.clone(),
            }) as Box<dyn Listener>)
        })
    }

    fn connect(
        &self,
        _from: SocketAddr,
        to: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(to).await?;
            self.net.wrap(stream)
        })
    }
}

impl Listener for TurmoilListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Connection>, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            Ok((self.net.wrap(stream)?, peer))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bytes_flow_and_a_partition_breaks_the_connection() {
        let net = TurmoilNetwork::new();
        let mut sim = turmoil::Builder::new().rng_seed(1).build();
        let server_net = net.clone();
        sim.host("server", move || {
            let transport = server_net.transport();
            async move {
                let mut listener = transport.listen("0.0.0.0:7000".parse().unwrap()).await?;
                loop {
                    let (mut conn, _) = listener.accept().await?;
                    tokio::spawn(async move {
                        let mut buf = [0u8; 5];
                        if conn.read_exact(&mut buf).await.is_ok() {
                            let _ = conn.write_all(&buf).await;
                            // Wait until the connection fails.
                            let _ = conn.read(&mut buf).await;
                        }
                    });
                }
            }
        });
        let transport = net.transport();
        let (tx, mut broken) = tokio::sync::oneshot::channel();
        sim.client("client", async move {
            let server = SocketAddr::new(turmoil::lookup("server"), 7000);
            let here = SocketAddr::new(turmoil::lookup("client"), 0);
            let mut conn = transport.connect(here, server).await?;
            conn.write_all(b"hello").await?;
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"hello");
            let _ = tx.send(());
            let mut more = [0u8; 1];
            let err = conn.read(&mut more).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            Ok(())
        });
        while broken.try_recv().is_err() {
            sim.step().unwrap();
        }
        assert_eq!(net.live_connections(), 2);
        let (a, b) = (sim.lookup("client"), sim.lookup("server"));
        net.partition(&sim, a, b);
        let finished = (0..100).any(|_| sim.step().unwrap());
        assert!(finished, "the client saw the broken connection");
    }
}
