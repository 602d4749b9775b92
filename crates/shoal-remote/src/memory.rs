//! An in-memory network for multi-node tests in one process, with link faults.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::transport::{Connection, Listener, Transport};

/// Bytes a connection buffers in each direction before writers wait (like a socket buffer).
const PIPE_CAPACITY: usize = 256 * 1024;
/// Connections waiting to be accepted per listener; more are refused.
const BACKLOG: usize = 128;
/// Ports handed out for binds to port 0.
const FIRST_EPHEMERAL_PORT: u16 = 20_000;

/// A network of in-memory nodes: a [`Transport`] whose links can be cut, healed and slowed.
///
/// Cheap to clone; clones share the network. Nodes listen on any address (port 0 picks a free
/// port; an unspecified IP becomes 127.0.0.1); nothing touches the OS.
///
/// * [`cut(a, b)`](Self::cut) breaks every connection between the nodes listening at `a` and
///   `b` (both directions; reads and writes fail at once, as after a reset) and refuses new
///   ones until [`heal(a, b)`](Self::heal).
/// * [`set_delay(a, b, d)`](Self::set_delay) delays every byte between `a` and `b` by `d`
///   (order is kept); [`with_delay`](Self::with_delay) sets the default for all links. Delays
///   run on `tokio::time`, so a test with paused time runs them instantly and
///   deterministically.
///
/// Links are identified by the nodes' listening addresses (the `from` of
/// [`Transport::connect`]).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Net>>,
}

/// A dialed connection waiting to be accepted, with the dialer's address.
type Accepted = (Box<dyn Connection>, SocketAddr);

#[derive(Default)]
struct Net {
    listeners: HashMap<SocketAddr, (u64, mpsc::Sender<Accepted>)>,
    next_listener: u64,
    next_port: u16,
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    default_delay: Duration,
    delays: HashMap<(SocketAddr, SocketAddr), Duration>,
    links: Vec<LinkEntry>,
}

struct LinkEntry {
    a: SocketAddr,
    b: SocketAddr,
    pipes: [Weak<Pipe>; 2],
}

fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl MemoryNetwork {
    /// An empty network without delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty network whose links all delay bytes by `delay` (unless set per link).
    pub fn with_delay(delay: Duration) -> Self {
        let net = Self::default();
        net.lock().default_delay = delay;
        net
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network as an `Arc<dyn Transport>`.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    /// Breaks every connection between `a` and `b` and refuses new ones until healed.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut net = self.lock();
        net.cut.insert(pair(a, b));
        net.links.retain(|l| {
            let live = l.pipes.iter().any(|p| p.strong_count() > 0);
            if live && pair(l.a, l.b) == pair(a, b) {
                for p in l.pipes.iter().filter_map(Weak::upgrade) {
                    p.break_link();
                }
                return false;
            }
            live
        });
    }

    /// Allows connections between `a` and `b` again (existing broken ones stay broken; nodes
    /// reconnect).
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        self.lock().cut.remove(&pair(a, b));
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`.
    pub fn partition(&self, side_a: &[SocketAddr], side_b: &[SocketAddr]) {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b);
            }
        }
    }

    /// Heals every cut link.
    pub fn heal_all(&self) {
        self.lock().cut.clear();
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn is_cut(&self, a: SocketAddr, b: SocketAddr) -> bool {
        self.lock().cut.contains(&pair(a, b))
    }

    /// Delays bytes between `a` and `b` (both directions, existing connections included) by
    /// `delay`.
    pub fn set_delay(&self, a: SocketAddr, b: SocketAddr, delay: Duration) {
        let mut net = self.lock();
        net.delays.insert(pair(a, b), delay);
        for l in net.links.iter().filter(|l| pair(l.a, l.b) == pair(a, b)) {
            for p in l.pipes.iter().filter_map(Weak::upgrade) {
                p.lock().delay = delay;
            }
        }
    }

    fn delay(net: &Net, a: SocketAddr, b: SocketAddr) -> Duration {
        net.delays
            .get(&pair(a, b))
            .copied()
            .unwrap_or(net.default_delay)
    }
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = self.lock();
        f.debug_struct("MemoryNetwork")
            .field("listeners", &net.listeners.len())
            .field("cut", &net.cut)
            .finish()
    }
}

struct MemoryListener {
    net: MemoryNetwork,
    id: u64,
    addr: SocketAddr,
    rx: mpsc::Receiver<Accepted>,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut net = self.net.lock();
        if net
            .listeners
            .get(&self.addr)
            .is_some_and(|(id, _)| *id == self.id)
        {
            net.listeners.remove(&self.addr);
        }
    }
}

impl Listener for MemoryListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Connection>, SocketAddr)>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "listener closed"))
        })
    }
}

impl Transport for MemoryNetwork {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let mut net = self.lock();
            let ip = if addr.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                addr.ip()
            };
            let addr = if addr.port() == 0 {
                let mut found = None;
                for _ in 0..u16::MAX {
                    net.next_port = net.next_port.max(FIRST_EPHEMERAL_PORT).wrapping_add(1);
                    if net.next_port == 0 {
                        continue;
                    }
                    let candidate = SocketAddr::new(ip, net.next_port);
                    if !net.listeners.contains_key(&candidate) {
                        found = Some(candidate);
                        break;
                    }
                }
                found.ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?
            } else {
                SocketAddr::new(ip, addr.port())
            };
            if net.listeners.contains_key(&addr) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{addr} is in use"),
                ));
            }
            net.next_listener += 1;
            let id = net.next_listener;
            let (tx, rx) = mpsc::channel(BACKLOG);
            net.listeners.insert(addr, (id, tx));
            Ok(Box::new(MemoryListener {
                net: self.clone(),
                id,
                addr,
                rx,
            }) as Box<dyn Listener>)
        })
    }

    fn connect(
        &self,
        from: SocketAddr,
        to: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let refused = |why: &str| io::Error::new(io::ErrorKind::ConnectionRefused, why);
            let (accept_tx, dialer, acceptor) = {
                let mut net = self.lock();
                if net.cut.contains(&pair(from, to)) {
                    return Err(refused("link is cut"));
                }
                let Some((_, tx)) = net.listeners.get(&to) else {
                    return Err(refused("nobody listens there"));
                };
                let tx = tx.clone();
                let delay = Self::delay(&net, from, to);
                let there = Arc::new(Pipe::new(delay));
                let back = Arc::new(Pipe::new(delay));
                net.links
                    .retain(|l| l.pipes.iter().any(|p| p.strong_count() > 0));
                net.links.push(LinkEntry {
                    a: from,
                    b: to,
                    pipes: [Arc::downgrade(&there), Arc::downgrade(&back)],
                });
                let dialer = MemoryConnection::new(back.clone(), there.clone());
                let acceptor = MemoryConnection::new(there, back);
                (tx, dialer, acceptor)
            };
            accept_tx
                .try_send((Box::new(acceptor), from))
                .map_err(|_| refused("backlog full or listener gone"))?;
            Ok(Box::new(dialer) as Box<dyn Connection>)
        })
    }
}

/// One direction of a connection: a bounded byte queue whose chunks become readable at
/// their due time.
struct Pipe {
    state: Mutex<PipeState>,
}

struct PipeState {
    chunks: VecDeque<Chunk>,
    queued: usize,
    delay: Duration,
    last_due: Option<Instant>,
    writer_closed: bool,
    reader_closed: bool,
    broken: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

struct Chunk {
    due: Instant,
    data: Vec<u8>,
    pos: usize,
}

impl Pipe {
    fn new(delay: Duration) -> Self {
        Self {
            state: Mutex::new(PipeState {
                chunks: VecDeque::new(),
                queued: 0,
                delay,
                last_due: None,
                writer_closed: false,
                reader_closed: false,
                broken: false,
                read_waker: None,
                write_waker: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn break_link(&self) {
        let mut s = self.lock();
        s.broken = true;
        s.chunks.clear();
        s.queued = 0;
        s.wake_all();
    }
}

impl PipeState {
    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// One end of an in-memory connection.
struct MemoryConnection {
    read: Arc<Pipe>,
    write: Arc<Pipe>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl MemoryConnection {
    fn new(read: Arc<Pipe>, write: Arc<Pipe>) -> Self {
        Self {
            read,
            write,
            sleep: None,
        }
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut")
}

impl AsyncRead for MemoryConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut s = this.read.lock();
            if s.broken {
                return Poll::Ready(Err(reset()));
            }
            let Some(front) = s.chunks.front() else {
                if s.writer_closed {
                    return Poll::Ready(Ok(()));
                }
                s.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let due = front.due;
            if due > Instant::now() {
                // Woken by the timer, or at once by a cut.
                s.read_waker = Some(cx.waker().clone());
                drop(s);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if sleep.deadline() != due {
                    sleep.as_mut().reset(due);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            let now = Instant::now();
            let mut copied = 0;
            while buf.remaining() > 0 {
                let Some(chunk) = s.chunks.front_mut() else {
                    break;
                };
                if chunk.due > now {
                    break;
                }
                let n = buf.remaining().min(chunk.data.len() - chunk.pos);
                buf.put_slice(&chunk.data[chunk.pos..chunk.pos + n]);
                chunk.pos += n;
                copied += n;
                if chunk.pos == chunk.data.len() {
                    s.chunks.pop_front();
                }
            }
            s.queued -= copied;
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
            return Poll::Ready(Ok(()));
        }
    }
}

use std::future::Future;

impl AsyncWrite for MemoryConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.write.lock();
        if s.broken {
            return Poll::Ready(Err(reset()));
        }
        if s.reader_closed || s.writer_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = PIPE_CAPACITY.saturating_sub(s.queued);
        if room == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        let now = Instant::now();
        let due = (now + s.delay).max(s.last_due.unwrap_or(now));
        s.last_due = Some(due);
        s.chunks.push_back(Chunk {
            due,
            data: data[..n].to_vec(),
            pos: 0,
        });
        s.queued += n;
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.write.lock();
        s.writer_closed = true;
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryConnection {
    fn drop(&mut self) {
        {
            let mut s = self.write.lock();
            s.writer_closed = true;
            s.wake_all();
        }
        let mut s = self.read.lock();
        s.reader_closed = true;
        s.chunks.clear();
        s.queued = 0;
        s.wake_all();
    }
}
