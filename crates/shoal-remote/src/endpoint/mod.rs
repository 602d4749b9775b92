//! The [`Endpoint`]: one node's presence on the network.

mod inbound;
mod outbound;
mod signal;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Semaphore, mpsc, watch};

use crate::address::UniqueAddress;
use crate::codec::Codec;
use crate::config::{ConfigError, EndpointConfig};
use crate::frame;
use crate::handshake::Credentials;
use crate::transport::Transport;

use outbound::Association;
use signal::Signal;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node dialed; it sends its messages to the peer on this connection.
    Outbound,
    /// The peer dialed; this node receives the peer's messages on it.
    Inbound,
}

/// What happened to a connection. Delivered to [`InboundHandler::on_event`], in order with
/// the messages of the same connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A connection with `peer` completed its handshake.
    Connected {
        /// The peer's identity, proven in the handshake.
        peer: UniqueAddress,
        /// Who dialed.
        direction: Direction,
    },
    /// An established connection with `peer` ended (closed, failed, malformed frame,
    /// quarantine, shutdown). An outbound one is redialed when there is something to send.
    Disconnected {
        /// The peer's identity.
        peer: UniqueAddress,
        /// Who dialed.
        direction: Direction,
        /// Why, for logs.
        reason: String,
    },
    /// A connection could not be established: dialing failed, or the handshake failed or was
    /// refused (wrong cluster name or secret, bad frames, timeout).
    ConnectFailed {
        /// For outbound: the address dialed. For inbound: the transport's peer address.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// Why, for logs.
        reason: String,
    },
}

/// Receives what arrives at an [`Endpoint`].
///
/// Called on the connection's reader task, in order per connection, so a handler must not
/// block for long: hand work off (a `try_send` into a bounded channel, an actor `tell`) and
/// count what does not fit. The payload slice points into the reader's buffer (no copy).
pub trait InboundHandler: Send + Sync + 'static {
    /// A message from `from` (the identity proven in the handshake) addressed to this
    /// incarnation (or to any incarnation at this address).
    fn on_message(&self, from: UniqueAddress, payload: &[u8]);

    /// A connection event. The default ignores it.
    fn on_event(&self, event: PeerEvent) {
        let _ = event;
    }
}

/// What a [`ChannelHandler`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message.
    Message {
        /// The sender.
        from: UniqueAddress,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A connection event.
    Event(PeerEvent),
}

impl Incoming {
    /// Decodes a message's payload with `codec`; `None` for events.
    pub fn decode<T>(&self, codec: &impl Codec<T>) -> Option<Result<T, crate::CodecError>> {
        match self {
            Incoming::Message { payload, .. } => Some(codec.decode(payload)),
            Incoming::Event(_) => None,
        }
    }
}

/// An [`InboundHandler`] that forwards everything into a bounded channel (for runners that
/// prefer a `recv().await` loop). What does not fit is dropped, counted and logged once.
pub struct ChannelHandler {
    tx: mpsc::Sender<Incoming>,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl ChannelHandler {
    /// A handler and the receiving end of its channel of `capacity` entries.
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handler = Arc::new(Self {
            tx,
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        });
        (handler, rx)
    }

    /// Messages and events dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, item: Incoming) {
        if self.tx.try_send(item).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "inbound channel full or closed; dropping (logged once, counted in dropped())"
                );
            } else {
                tracing::debug!(dropped = n, "inbound channel full or closed");
            }
        }
    }
}

impl InboundHandler for ChannelHandler {
    fn on_message(&self, from: UniqueAddress, payload: &[u8]) {
        self.push(Incoming::Message {
            from,
            payload: payload.to_vec(),
        });
    }

    fn on_event(&self, event: PeerEvent) {
        self.push(Incoming::Event(event));
    }
}

/// Why a message was not queued. Nothing was sent; the caller still has the message. Every
/// variant but `Shutdown` counts as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The frame would exceed `max_frame_len`. Retrying the same message never helps.
    #[error("a frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's length, header included.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The peer's outbound queue is full (the peer is slow or unreachable). Retry later.
    #[error("outbound queue to {0} is full")]
    QueueFull(SocketAddr),
    /// The connection to the recipient's address reached another incarnation: the recipient
    /// is gone (or, briefly after a restart, the new incarnation is not connected yet).
    #[error("{to} is not the incarnation connected at its address ({current})")]
    WrongIncarnation {
        /// The addressed incarnation.
        to: UniqueAddress,
        /// The one connected now.
        current: UniqueAddress,
    },
    /// The recipient was [quarantined](Endpoint::quarantine).
    #[error("{0} is quarantined")]
    Quarantined(UniqueAddress),
    /// The codec failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The endpoint has shut down.
    #[error("endpoint is shut down")]
    Shutdown,
}

/// Why [`Endpoint::bind`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not listen.
    #[error("cannot listen: {0}")]
    Io(#[from] io::Error),
    /// No randomness for the incarnation id.
    #[error("no randomness for an incarnation id: {0}")]
    Random(String),
}

/// Counters of an endpoint since it was bound. `frames_sent` and `frames_received` are
/// added per batch, so they may trail what a handler has already seen by one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Data frames written to connections.
    pub frames_sent: u64,
    /// Batches written (one drained queue each; `frames_sent / batches_sent` is the average
    /// batch).
    pub batches_sent: u64,
    /// Data frames received and handed to the handler.
    pub frames_received: u64,
    /// Messages not delivered by this node: refused at `send`, or dropped from a queue when a
    /// connection attempt failed.
    pub dead_letters: u64,
    /// Inbound data frames addressed to another incarnation, dropped.
    pub wrong_incarnation: u64,
    /// Outbound connection attempts.
    pub connect_attempts: u64,
    /// Outbound connection attempts that failed (dial or handshake).
    pub connect_failures: u64,
    /// Inbound connections refused (handshake failed, over the connection limit) or closed
    /// for a protocol violation.
    pub inbound_refused: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    batches_sent: AtomicU64,
    frames_received: AtomicU64,
    dead_letters: AtomicU64,
    wrong_incarnation: AtomicU64,
    connect_attempts: AtomicU64,
    connect_failures: AtomicU64,
    inbound_refused: AtomicU64,
}

/// A running node on a [`Transport`]: listens, dials peers on demand, runs the handshake,
/// frames and batches messages, and hands what arrives to an [`InboundHandler`].
///
/// Cheap to clone; the node stops when [`shutdown`](Self::shutdown) is called or the last
/// clone is dropped.
///
/// # Delivery
///
/// At most once; in send order per (sender, recipient address) as long as the connection
/// lives. Each peer address has one outbound connection (dialed lazily on the first message),
/// fed from a bounded per-peer queue of encoded frames; the writer drains the whole queue per
/// write. A lost connection loses the batch being written; the rest of the queue goes out
/// on the next connection. A failed connection attempt drops what was queued (dead letters);
/// the next attempt comes after a backoff and only if something new was queued meanwhile, so
/// a gone peer costs counters and a few dials, not a pile of stale messages or a storm of
/// retries.
///
/// # Identity
///
/// Messages are addressed to a [`UniqueAddress`]; a frame carries the recipient's
/// incarnation and the receiver drops frames for another incarnation of itself, so nothing
/// meant for a node's previous life reaches the restarted node. [`send_to_addr`](Self::send_to_addr)
/// addresses whoever listens at an address (to join through a seed
/// node whose incarnation is not known yet).
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.begin_shutdown();
    }
}

pub(crate) struct Inner {
    me: UniqueAddress,
    /// The bound address (the `from` of dials; differs from `me.addr` when advertising).
    bound: SocketAddr,
    config: EndpointConfig,
    creds: Credentials,
    transport: Arc<dyn Transport>,
    handler: Arc<dyn InboundHandler>,
    runtime: tokio::runtime::Handle,
    associations: RwLock<HashMap<SocketAddr, Arc<Association>, BuildAddrHasher>>,
    connected: watch::Sender<BTreeSet<UniqueAddress>>,
    quarantined: RwLock<HashSet<UniqueAddress>>,
    any_quarantined: AtomicBool,
    /// Bumped on every quarantine; connections check whether their peer is affected.
    quarantine_epoch: Signal,
    /// 0 while running, 1 once shutting down.
    shutdown: Signal,
    /// Mirrors `shutdown` for the send path (no lock).
    stopping: AtomicBool,
    /// Running tasks; shutdown waits for 0.
    tasks: watch::Sender<usize>,
    inbound_permits: Arc<Semaphore>,
    counters: Counters,
    rng: Mutex<fastrand::Rng>,
    dead_letters_warned: AtomicBool,
    wrong_incarnation_warned: AtomicBool,
}

impl Endpoint {
    /// Listens on `addr` (port 0 picks one) and starts the node. Inbound messages and
    /// connection events go to `handler`.
    pub async fn bind(
        transport: Arc<dyn Transport>,
        addr: SocketAddr,
        config: EndpointConfig,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Self, BindError> {
        config.validate()?;
        let incarnation = match config.incarnation {
            Some(i) => i,
            None => random_incarnation()?,
        };
        let listener = transport.listen(addr).await?;
        let bound = listener.local_addr();
        let me = UniqueAddress::new(config.advertised_addr.unwrap_or(bound), incarnation);
        let inner = Arc::new(Inner {
            me,
            bound,
            creds: Credentials {
                me,
                cluster: Arc::from(config.cluster_name.as_str()),
                secret: config.secret.bytes(),
            },
            transport,
            handler,
            runtime: tokio::runtime::Handle::current(),
            associations: RwLock::new(HashMap::default()),
            connected: watch::Sender::new(BTreeSet::new()),
            quarantined: RwLock::new(HashSet::new()),
            any_quarantined: AtomicBool::new(false),
            quarantine_epoch: Signal::new(0),
            shutdown: Signal::new(0),
            stopping: AtomicBool::new(false),
            tasks: watch::Sender::new(0),
            inbound_permits: Arc::new(Semaphore::new(config.max_inbound_connections)),
            counters: Counters::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed ^ incarnation)),
            dead_letters_warned: AtomicBool::new(false),
            wrong_incarnation_warned: AtomicBool::new(false),
            config,
        });
        inner.spawn(inbound::accept_loop(inner.clone(), listener));
        tracing::debug!(node = %me, bound = %bound, "endpoint bound");
        Ok(Self {
            _stop_on_drop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        })
    }

    /// Like [`bind`](Self::bind) with a [`ChannelHandler`] of `capacity` entries; returns its
    /// receiver.
    pub async fn bind_with_channel(
        transport: Arc<dyn Transport>,
        addr: SocketAddr,
        config: EndpointConfig,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), BindError> {
        let (handler, rx) = ChannelHandler::new(capacity);
        Ok((Self::bind(transport, addr, config, handler).await?, rx))
    }

    /// This node's identity.
    pub fn local(&self) -> UniqueAddress {
        self.inner.me
    }

    /// The address the endpoint is bound to (differs from `local().addr` when an advertised
    /// address is configured).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.bound
    }

    /// The configuration the endpoint runs with.
    pub fn config(&self) -> &EndpointConfig {
        &self.inner.config
    }

    /// The largest payload a message may have.
    pub fn max_payload_len(&self) -> usize {
        self.inner.config.max_payload_len()
    }

    /// Queues `payload` for `to`. Never waits; see [`SendError`] for what refuses it.
    pub fn send(&self, to: UniqueAddress, payload: &[u8]) -> Result<(), SendError> {
        self.inner.enqueue(to.addr, to.incarnation, |buf| {
            buf.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// Queues a message for `to` that `encode` writes straight into the peer's outbound
    /// buffer (the zero-copy path). `encode` runs under the queue's lock: keep it to encoding
    /// (it must not send through this endpoint).
    pub fn send_with<E: fmt::Display>(
        &self,
        to: UniqueAddress,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), SendError> {
        self.inner.enqueue(to.addr, to.incarnation, encode)
    }

    /// Queues `value` for `to`, encoded with `codec`.
    pub fn send_encoded<T>(
        &self,
        to: UniqueAddress,
        value: &T,
        codec: &impl Codec<T>,
    ) -> Result<(), SendError> {
        self.send_with(to, |buf| codec.encode(value, buf))
    }

    /// Queues `payload` for whichever incarnation listens at `addr` (joining through a seed
    /// node whose incarnation is unknown).
    pub fn send_to_addr(&self, addr: SocketAddr, payload: &[u8]) -> Result<(), SendError> {
        self.inner.enqueue(addr, 0, |buf| {
            buf.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// [`send_with`](Self::send_with) for whichever incarnation listens at `addr`.
    pub fn send_to_addr_with<E: fmt::Display>(
        &self,
        addr: SocketAddr,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), SendError> {
        self.inner.enqueue(addr, 0, encode)
    }

    /// The peers this node has an established outbound connection to, kept current. Tests
    /// and runners `wait_for` a predicate on it instead of sleeping.
    pub fn connected(&self) -> watch::Receiver<BTreeSet<UniqueAddress>> {
        self.inner.connected.subscribe()
    }

    /// Refuses `peer` for good: its connections close, its handshakes fail, messages to it
    /// are dropped. For members removed from the cluster (a zombie must not talk back).
    pub fn quarantine(&self, peer: UniqueAddress) {
        let added = self
            .inner
            .quarantined
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer);
        if added {
            tracing::info!(node = %self.inner.me, peer = %peer, "peer quarantined");
            self.inner.any_quarantined.store(true, Ordering::Release);
            self.inner.quarantine_epoch.update(|e| e + 1);
        }
    }

    /// Whether `peer` is quarantined.
    pub fn is_quarantined(&self, peer: &UniqueAddress) -> bool {
        self.inner.is_quarantined(peer)
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EndpointStats {
            frames_sent: get(&c.frames_sent),
            batches_sent: get(&c.batches_sent),
            frames_received: get(&c.frames_received),
            dead_letters: get(&c.dead_letters),
            wrong_incarnation: get(&c.wrong_incarnation),
            connect_attempts: get(&c.connect_attempts),
            connect_failures: get(&c.connect_failures),
            inbound_refused: get(&c.inbound_refused),
        }
    }

    /// Stops the node: stops listening (the address is free when this returns), closes every
    /// connection and waits for the endpoint's tasks to end. Queued messages are dropped.
    pub async fn shutdown(&self) {
        self.inner.begin_shutdown();
        let mut tasks = self.inner.tasks.subscribe();
        let _ = tasks.wait_for(|n| *n == 0).await;
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.inner.me)
    }
}

fn random_incarnation() -> Result<u64, BindError> {
    loop {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| BindError::Random(e.to_string()))?;
        let i = u64::from_be_bytes(b);
        if i != 0 {
            return Ok(i);
        }
    }
}

/// A cheap hasher for socket addresses (the per-send association lookup; SipHash's DoS
/// resistance buys nothing for a map keyed by this node's own peers).
#[derive(Default, Clone, Copy)]
struct BuildAddrHasher;

impl std::hash::BuildHasher for BuildAddrHasher {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts a task for [`Endpoint::shutdown`] while it runs.
struct TaskGuard(Arc<Inner>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.send_modify(|n| *n -= 1);
    }
}

/// Truncates a partly written frame unless committed (also when `encode` panics).
struct Rollback<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    committed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.buf.truncate(self.start);
        }
    }
}

impl Inner {
    fn spawn<F>(self: &Arc<Self>, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.clone());
        self.runtime.spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.update(|_| 1);
    }

    fn is_shut_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn is_quarantined(&self, peer: &UniqueAddress) -> bool {
        self.any_quarantined.load(Ordering::Acquire)
            && self
                .quarantined
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(peer)
    }

    fn event(&self, event: PeerEvent) {
        self.handler.on_event(event);
    }

    fn random(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64()
    }

    /// Counts `n` dead letters; the first is logged at `warn`, the rest at `debug`.
    fn dead_letters(&self, n: u64, to: SocketAddr, why: &dyn fmt::Display) {
        if n == 0 {
            return;
        }
        let total = self.counters.dead_letters.fetch_add(n, Ordering::Relaxed) + n;
        if !self.dead_letters_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(node = %self.me, to = %to, why = %why, count = n,
                "dead letters; further ones are logged at debug level and counted in stats()");
        } else {
            tracing::debug!(node = %self.me, to = %to, why = %why, count = n, total, "dead letters");
        }
    }

    fn refuse(&self, to: SocketAddr, e: SendError) -> Result<(), SendError> {
        if e != SendError::Shutdown {
            self.dead_letters(1, to, &e);
        }
        Err(e)
    }

    /// Runs `f` on the association for `addr` (created, with its task, on first use). The
    /// common case takes only the map's read lock and clones nothing.
    fn with_association<T>(
        self: &Arc<Self>,
        addr: SocketAddr,
        f: impl FnOnce(&Association) -> T,
    ) -> T {
        {
            let map = self.associations.read().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = map.get(&addr) {
                return f(a);
            }
        }
        let assoc = {
            let mut map = self.associations.write().unwrap_or_else(|e| e.into_inner());
            map.entry(addr)
                .or_insert_with(|| {
                    let a = Arc::new(Association::new(addr));
                    self.spawn(outbound::run(self.clone(), a.clone()));
                    a
                })
                .clone()
        };
        f(&assoc)
    }

    /// The send path: frame and encode straight into the peer's queue.
    fn enqueue<E: fmt::Display>(
        self: &Arc<Self>,
        addr: SocketAddr,
        incarnation: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), SendError> {
        if self.is_shut_down() {
            return Err(SendError::Shutdown);
        }
        let to = UniqueAddress::new(addr, incarnation);
        if incarnation != 0 && self.is_quarantined(&to) {
            return self.refuse(addr, SendError::Quarantined(to));
        }
        self.with_association(addr, |assoc| self.enqueue_on(assoc, to, encode))
    }

    fn enqueue_on<E: fmt::Display>(
        &self,
        assoc: &Association,
        to: UniqueAddress,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), SendError> {
        let (addr, incarnation) = (to.addr, to.incarnation);
        let current = assoc.peer.load(Ordering::Acquire);
        if incarnation != 0 && current != 0 && current != incarnation {
            let current = UniqueAddress::new(addr, current);
            return self.refuse(addr, SendError::WrongIncarnation { to, current });
        }
        let limit = self.config.max_frame_len;
        let capacity = self.config.outbound_queue_bytes;
        let mut outbox = assoc.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let start = outbox.buf.len();
        if start >= capacity {
            drop(outbox);
            return self.refuse(addr, SendError::QueueFull(addr));
        }
        let mut frame = Rollback {
            buf: &mut outbox.buf,
            start,
            committed: false,
        };
        frame::begin_data(frame.buf, incarnation);
        if let Err(e) = encode(frame.buf) {
            drop(frame);
            drop(outbox);
            return self.refuse(addr, SendError::Encode(e.to_string()));
        }
        let len = frame.buf.len() - start;
        if len > limit {
            drop(frame);
            drop(outbox);
            return self.refuse(addr, SendError::TooLarge { len, limit });
        }
        if start + len > capacity && start > 0 {
            drop(frame);
            drop(outbox);
            return self.refuse(addr, SendError::QueueFull(addr));
        }
        frame::finish(frame.buf, start);
        frame.committed = true;
        drop(frame);
        outbox.frames += 1;
        drop(outbox);
        if start == 0 {
            assoc.wake.notify_one();
        }
        Ok(())
    }
}
