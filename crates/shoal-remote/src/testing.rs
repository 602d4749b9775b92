//! The transport conformance suite: the [rules of the `Transport` boundary](crate::Transport)
//! and of the [`Endpoint`] over it, as tests every transport runs — plus helpers for
//! multi-node tests ([`TestNode`], [`test_config`]).
//!
//! # Running it for a transport
//!
//! In an integration test file (with `tokio` and its `macros` and `rt-multi-thread`
//! features among the dev-dependencies):
//!
//! ```text
//! use std::sync::Arc;
//! use shoal_remote::{MemoryNetwork, TcpTransport, Transport, testing::LinkFaults};
//!
//! mod tcp {
//!     shoal_remote::transport_conformance_tests!(async {
//!         std::sync::Arc::new(shoal_remote::TcpTransport::new()) as std::sync::Arc<dyn shoal_remote::Transport>
//!     });
//! }
//! mod memory {
//!     shoal_remote::transport_conformance_tests!(async { shoal_remote::MemoryNetwork::new().transport() });
//!     shoal_remote::link_fault_conformance_tests!(async {
//!         let net = shoal_remote::MemoryNetwork::new();
//!         (net.transport(), std::sync::Arc::new(net) as std::sync::Arc<dyn shoal_remote::testing::LinkFaults>)
//!     });
//! }
//! ```
//!
//! [`transport_conformance_tests!`](crate::transport_conformance_tests) takes an expression
//! of a future whose output is an `Arc<dyn Transport>`, evaluated afresh per case, and
//! expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` per entry of
//! [`CASES`]. [`link_fault_conformance_tests!`](crate::link_fault_conformance_tests) does the
//! same for the [`LINK_FAULT_CASES`], for transports that can cut links (the factory also
//! yields an `Arc<dyn LinkFaults>`). Every case is also a `pub async fn` in [`conformance`]
//! that panics naming the violated rule. Nodes bind `127.0.0.1:0`.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::address::UniqueAddress;
use crate::config::{ClusterSecret, EndpointConfig, ReconnectBackoff};
use crate::endpoint::{Endpoint, Incoming, PeerEvent};
use crate::memory::MemoryNetwork;
use crate::transport::Transport;

/// How long any case may run before it fails as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a [`TestNode`] waits for an expected message or event.
pub const WAIT: Duration = Duration::from_secs(15);

/// The cases of [`transport_conformance_tests!`](crate::transport_conformance_tests).
pub const CASES: &[&str] = &[
    "streams_are_ordered_and_end_cleanly",
    "listen_and_connect_errors",
    "delivery_in_order_per_peer",
    "large_frames_up_to_the_limit",
    "oversized_messages_are_refused",
    "unknown_peer",
    "reconnect_after_peer_restart",
    "old_incarnation_is_dropped",
    "wrong_secret_is_refused",
    "wrong_cluster_is_refused",
    "send_to_addr_reaches_any_incarnation",
    "connection_events",
    "quarantined_peer_is_cut_off",
];

/// The cases of [`link_fault_conformance_tests!`](crate::link_fault_conformance_tests).
pub const LINK_FAULT_CASES: &[&str] = &["cut_and_heal", "partition_of_three", "added_delay"];

/// Link faults a test transport can inject, addressed by the nodes' listening addresses.
pub trait LinkFaults: Send + Sync + 'static {
    /// Breaks the connections between `a` and `b` and refuses new ones.
    fn cut(&self, a: SocketAddr, b: SocketAddr);
    /// Allows connections between `a` and `b` again.
    fn heal(&self, a: SocketAddr, b: SocketAddr);
    /// Delays bytes between `a` and `b`.
    fn set_delay(&self, a: SocketAddr, b: SocketAddr, delay: Duration);
}

impl LinkFaults for MemoryNetwork {
    fn cut(&self, a: SocketAddr, b: SocketAddr) {
        MemoryNetwork::cut(self, a, b);
    }

    fn heal(&self, a: SocketAddr, b: SocketAddr) {
        MemoryNetwork::heal(self, a, b);
    }

    fn set_delay(&self, a: SocketAddr, b: SocketAddr, delay: Duration) {
        MemoryNetwork::set_delay(self, a, b, delay);
    }
}

/// A config for tests: cluster `"test"`, a fixed secret, fast reconnects (5–100 ms),
/// 2 s handshake timeout.
pub fn test_config() -> EndpointConfig {
    let mut c = EndpointConfig::new("test", ClusterSecret::new("test-secret-0123456789abcdef"));
    c.reconnect = ReconnectBackoff {
        min: Duration::from_millis(5),
        max: Duration::from_millis(100),
        jitter: 0.2,
    };
    c.handshake_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// The loopback address with port 0.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An endpoint whose inbox is a channel, with waits that fail the test after [`WAIT`].
pub struct TestNode {
    /// The node.
    pub endpoint: Endpoint,
    inbox: mpsc::Receiver<Incoming>,
    messages: VecDeque<(UniqueAddress, Vec<u8>)>,
    events: VecDeque<PeerEvent>,
}

impl TestNode {
    /// Binds a node on `addr` with `config`.
    pub async fn bind(
        transport: &Arc<dyn Transport>,
        addr: SocketAddr,
        config: EndpointConfig,
    ) -> Self {
        let (endpoint, inbox) =
            Endpoint::bind_with_channel(transport.clone(), addr, config, 1 << 16)
                .await
                .expect("bind");
        Self {
            endpoint,
            inbox,
            messages: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Binds a node on `127.0.0.1:0` with [`test_config`].
    pub async fn start(transport: &Arc<dyn Transport>) -> Self {
        Self::bind(transport, any_port(), test_config()).await
    }

    /// The node's identity.
    pub fn id(&self) -> UniqueAddress {
        self.endpoint.local()
    }

    async fn pull(&mut self, what: &str) {
        match tokio::time::timeout(WAIT, self.inbox.recv()).await {
            Ok(Some(Incoming::Message { from, payload })) => {
                self.messages.push_back((from, payload))
            }
            Ok(Some(Incoming::Event(e))) => self.events.push_back(e),
            Ok(None) => panic!("{}: inbox closed while waiting for {what}", self.id()),
            Err(_) => panic!("{}: no {what} within {WAIT:?}", self.id()),
        }
    }

    /// The next message (events are kept for [`next_event`](Self::next_event)).
    pub async fn next_message(&mut self) -> (UniqueAddress, Vec<u8>) {
        loop {
            if let Some(m) = self.messages.pop_front() {
                return m;
            }
            self.pull("message").await;
        }
    }

    /// The first event matching `pred`; earlier events are discarded, messages are kept.
    pub async fn next_event(&mut self, what: &str, pred: impl Fn(&PeerEvent) -> bool) -> PeerEvent {
        loop {
            while let Some(e) = self.events.pop_front() {
                if pred(&e) {
                    return e;
                }
            }
            self.pull(what).await;
        }
    }

    /// Stops the node; returns its address (free again).
    pub async fn stop(self) -> SocketAddr {
        let addr = self.endpoint.local().addr;
        self.endpoint.shutdown().await;
        addr
    }
}

/// Dials `to` and runs the dialer's side of the handshake as a node `me` with `config`,
/// then hands over the raw connection: for tests that write malformed frames after a valid
/// handshake (the node must close that connection and keep serving).
pub async fn dial_raw(
    transport: &Arc<dyn Transport>,
    me: UniqueAddress,
    to: SocketAddr,
    config: &EndpointConfig,
) -> std::io::Result<(Box<dyn crate::transport::Connection>, UniqueAddress)> {
    let mut conn = transport.connect(me.addr, to).await?;
    let mut reader = crate::frame::FrameReader::new(crate::frame::HANDSHAKE_FRAME_LIMIT);
    let creds = crate::handshake::Credentials {
        me,
        cluster: Arc::from(config.cluster_name.as_str()),
        secret: config.secret.bytes(),
    };
    let peer = crate::handshake::dial(&mut conn, &mut reader, &creds, to, |_| false)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((conn, peer))
}

/// Runs one case with a fresh transport, failing it after [`CASE_TIMEOUT`].
pub async fn run_case<T, F, C, CF>(name: &str, factory: F, case: C)
where
    F: Future<Output = T>,
    C: FnOnce(T) -> CF,
    CF: Future<Output = ()>,
{
    let t = factory.await;
    if tokio::time::timeout(CASE_TIMEOUT, case(t)).await.is_err() {
        panic!("conformance case {name} did not finish within {CASE_TIMEOUT:?} (hung?)");
    }
}

/// Generates the transport conformance tests. See the [`testing`](crate::testing) docs.
#[macro_export]
macro_rules! transport_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__transport_conformance_cases! {
            ($factory)
            streams_are_ordered_and_end_cleanly
            listen_and_connect_errors
            delivery_in_order_per_peer
            large_frames_up_to_the_limit
            oversized_messages_are_refused
            unknown_peer
            reconnect_after_peer_restart
            old_incarnation_is_dropped
            wrong_secret_is_refused
            wrong_cluster_is_refused
            send_to_addr_reaches_any_incarnation
            connection_events
            quarantined_peer_is_cut_off
        }
    };
}

/// Generates the link-fault conformance tests. See the [`testing`](crate::testing) docs.
#[macro_export]
macro_rules! link_fault_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__transport_conformance_cases! {
            ($factory)
            cut_and_heal
            partition_of_three
            added_delay
        }
    };
}

/// Implementation detail of the conformance macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __transport_conformance_cases {
    (($factory:expr) $($case:ident)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testing::run_case(
                    ::core::stringify!($case),
                    $factory,
                    $crate::testing::conformance::$case,
                )
                .await;
            }
        )*
    };
}

/// The cases, one function each; each panics with a message naming the violated rule.
pub mod conformance {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{LinkFaults, TestNode, WAIT, any_port, test_config};
    use crate::address::UniqueAddress;
    use crate::endpoint::{Direction, PeerEvent, SendError};
    use crate::transport::Transport;

    fn connected_to(peer: UniqueAddress, dir: Direction) -> impl Fn(&PeerEvent) -> bool {
        move |e| matches!(e, PeerEvent::Connected { peer: p, direction } if *p == peer && *direction == dir)
    }

    fn disconnected_from(peer: UniqueAddress, dir: Direction) -> impl Fn(&PeerEvent) -> bool {
        move |e| matches!(e, PeerEvent::Disconnected { peer: p, direction, .. } if *p == peer && *direction == dir)
    }

    fn failed(dir: Direction) -> impl Fn(&PeerEvent) -> bool {
        move |e| matches!(e, PeerEvent::ConnectFailed { direction, .. } if *direction == dir)
    }

    /// Rule 1 and 2: bytes arrive in order; dropping one end ends the other.
    pub async fn streams_are_ordered_and_end_cleanly(t: Arc<dyn Transport>) {
        let mut listener = t.listen(any_port()).await.expect("listen");
        let addr = listener.local_addr();
        assert_ne!(
            addr.port(),
            0,
            "rule 3: port 0 must be replaced by a real port"
        );
        let (dialed, accepted) = tokio::join!(t.connect(any_port(), addr), listener.accept());
        let mut dialed = dialed.expect("connect");
        let (mut accepted, _) = accepted.expect("accept");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(7_919) {
                dialed.write_all(chunk).await.expect("write");
            }
            dialed.flush().await.expect("flush");
            drop(dialed);
        });
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, accepted.read_to_end(&mut got))
            .await
            .expect("rule 2: dropping the dialer must end the acceptor's reads")
            .ok();
        writer.await.expect("writer");
        assert_eq!(
            got.len(),
            expected.len(),
            "rule 1: bytes lost or duplicated"
        );
        assert!(got == expected, "rule 1: bytes reordered or corrupted");
    }

    /// Rule 3 and 4: an address in use is refused; dialing nobody fails.
    pub async fn listen_and_connect_errors(t: Arc<dyn Transport>) {
        let listener = t.listen(any_port()).await.expect("listen");
        let addr = listener.local_addr();
        match t.listen(addr).await {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "rule 3: {e}"),
            Ok(_) => panic!("rule 3: listening twice on {addr} must fail"),
        }
        drop(listener);
        let again = t
            .listen(addr)
            .await
            .expect("rule 3: a dropped listener frees its address");
        drop(again);
        let dialed = tokio::time::timeout(WAIT, t.connect(any_port(), addr))
            .await
            .expect("rule 4: dialing nobody must not hang");
        assert!(
            dialed.is_err(),
            "rule 4: dialing an address nobody listens on must fail"
        );
    }

    /// Messages from each sender arrive complete and in send order.
    pub async fn delivery_in_order_per_peer(t: Arc<dyn Transport>) {
        const N: u32 = 5_000;
        let mut b = TestNode::start(&t).await;
        let a = TestNode::start(&t).await;
        let c = TestNode::start(&t).await;
        for i in 0..N {
            a.endpoint
                .send(b.id(), &i.to_be_bytes())
                .expect("send from a");
            c.endpoint
                .send(b.id(), &i.to_be_bytes())
                .expect("send from c");
        }
        let (mut next_a, mut next_c) = (0u32, 0u32);
        while next_a < N || next_c < N {
            let (from, payload) = b.next_message().await;
            let n = u32::from_be_bytes(payload.as_slice().try_into().expect("4-byte payload"));
            let next = if from == a.id() {
                &mut next_a
            } else if from == c.id() {
                &mut next_c
            } else {
                panic!("message from unknown sender {from}");
            };
            assert_eq!(n, *next, "messages from {from} out of order or lost");
            *next += 1;
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Frames up to the configured limit go through intact.
    pub async fn large_frames_up_to_the_limit(t: Arc<dyn Transport>) {
        let mut config = test_config();
        config.max_frame_len = 256 * 1024;
        let max = config.max_payload_len();
        let mut b = TestNode::bind(&t, any_port(), config.clone()).await;
        let a = TestNode::bind(&t, any_port(), config).await;
        let sizes = [0, 1, 1_000, 65_535, 65_536, 100_000, max - 1, max, max, 3];
        for (i, &len) in sizes.iter().enumerate() {
            a.endpoint
                .send(b.id(), &pattern(len, i as u8))
                .expect("a frame within the limit must be accepted");
        }
        for (i, &len) in sizes.iter().enumerate() {
            let (_, payload) = b.next_message().await;
            assert_eq!(payload.len(), len, "frame {i} has the wrong length");
            assert!(payload == pattern(len, i as u8), "frame {i} corrupted");
        }
    }

    /// A message over the limit is refused at send; the connection is unaffected.
    pub async fn oversized_messages_are_refused(t: Arc<dyn Transport>) {
        let mut config = test_config();
        config.max_frame_len = 64 * 1024;
        let max = config.max_payload_len();
        let mut b = TestNode::bind(&t, any_port(), config.clone()).await;
        let a = TestNode::bind(&t, any_port(), config).await;
        a.endpoint.send(b.id(), b"before").expect("send");
        let refused = a.endpoint.send(b.id(), &vec![0; max + 1]);
        assert_eq!(
            refused,
            Err(SendError::TooLarge {
                len: 64 * 1024 + 1,
                limit: 64 * 1024
            }),
            "a payload one byte over the limit must be refused"
        );
        a.endpoint
            .send(b.id(), b"after")
            .expect("send after a refused one");
        assert_eq!(b.next_message().await.1, b"before");
        assert_eq!(
            b.next_message().await.1,
            b"after",
            "the refused message must not be sent"
        );
        assert_eq!(
            a.endpoint.stats().dead_letters,
            1,
            "a refused message is a dead letter"
        );
    }

    /// Sending to an address nobody listens on fails quietly: a dead letter and an event,
    /// not an error from `send`, and the node keeps working.
    pub async fn unknown_peer(t: Arc<dyn Transport>) {
        let nobody = {
            let l = t.listen(any_port()).await.expect("listen");
            l.local_addr()
        };
        let mut a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        a.endpoint
            .send_to_addr(nobody, b"lost")
            .expect("send is queued");
        let e = a
            .next_event("connect failure", failed(Direction::Outbound))
            .await;
        assert!(
            matches!(e, PeerEvent::ConnectFailed { addr, .. } if addr == nobody),
            "{e:?}"
        );
        assert!(
            a.endpoint.stats().dead_letters >= 1,
            "the queued message must count as a dead letter"
        );
        assert!(
            !a.endpoint
                .connected()
                .borrow()
                .iter()
                .any(|p| p.addr == nobody)
        );
        a.endpoint.send(b.id(), b"still works").expect("send");
        assert_eq!(b.next_message().await.1, b"still works");
    }

    /// A peer that restarts (same address, new incarnation) is reconnected to.
    pub async fn reconnect_after_peer_restart(t: Arc<dyn Transport>) {
        let mut a = TestNode::start(&t).await;
        let mut b1 = TestNode::start(&t).await;
        let b1_id = b1.id();
        a.endpoint.send(b1_id, b"one").expect("send");
        assert_eq!(b1.next_message().await.1, b"one");
        a.next_event("connected to b1", connected_to(b1_id, Direction::Outbound))
            .await;
        let addr = b1.stop().await;
        a.next_event("b1 gone", disconnected_from(b1_id, Direction::Outbound))
            .await;
        let mut b2 = TestNode::bind(&t, addr, test_config()).await;
        assert_ne!(
            b2.id().incarnation,
            b1_id.incarnation,
            "a restart is a new incarnation"
        );
        a.endpoint.send(b2.id(), b"two").expect("send");
        let (from, payload) = b2.next_message().await;
        assert_eq!((from, payload.as_slice()), (a.id(), &b"two"[..]));
        a.next_event(
            "connected to b2",
            connected_to(b2.id(), Direction::Outbound),
        )
        .await;
        assert!(a.endpoint.connected().borrow().contains(&b2.id()));
        assert!(!a.endpoint.connected().borrow().contains(&b1_id));
    }

    /// Messages addressed to a previous incarnation never reach the restarted node.
    pub async fn old_incarnation_is_dropped(t: Arc<dyn Transport>) {
        let a = TestNode::start(&t).await;
        let mut b1 = TestNode::start(&t).await;
        let b1_id = b1.id();
        a.endpoint.send(b1_id, b"hello").expect("send");
        assert_eq!(b1.next_message().await.1, b"hello");
        let mut a = a;
        let addr = b1.stop().await;
        a.next_event("b1 gone", disconnected_from(b1_id, Direction::Outbound))
            .await;
        let mut b2 = TestNode::bind(&t, addr, test_config()).await;
        // Not connected now: both are queued; the connection reaches b2, which must drop the
        // first.
        a.endpoint
            .send(b1_id, b"for the old incarnation")
            .expect("queued while not connected");
        a.endpoint.send(b2.id(), b"for the new one").expect("send");
        assert_eq!(
            b2.next_message().await.1,
            b"for the new one",
            "a message for b1 reached b2"
        );
        assert_eq!(b2.endpoint.stats().wrong_incarnation, 1);
        // Now connected to b2: the sender refuses at once.
        let refused = a.endpoint.send(b1_id, b"again");
        assert_eq!(
            refused,
            Err(SendError::WrongIncarnation {
                to: b1_id,
                current: b2.id()
            })
        );
    }

    /// A node with another secret is refused by both sides; nothing is delivered.
    pub async fn wrong_secret_is_refused(t: Arc<dyn Transport>) {
        let mut b = TestNode::start(&t).await;
        let mut config = test_config();
        config.secret = crate::ClusterSecret::new("not-the-secret");
        let mut intruder = TestNode::bind(&t, any_port(), config).await;
        intruder
            .endpoint
            .send(b.id(), b"let me in")
            .expect("queued");
        let e = intruder
            .next_event("refusal", failed(Direction::Outbound))
            .await;
        assert!(
            format!("{e:?}").contains("secret"),
            "the dialer must name the failed proof: {e:?}"
        );
        b.next_event("refusal", failed(Direction::Inbound)).await;
        assert!(!intruder.endpoint.connected().borrow().contains(&b.id()));
        let friend = TestNode::start(&t).await;
        friend.endpoint.send(b.id(), b"marker").expect("send");
        assert_eq!(
            b.next_message().await,
            (friend.id(), b"marker".to_vec()),
            "the intruder's message was delivered"
        );
        assert!(b.endpoint.stats().inbound_refused >= 1);
    }

    /// A node of another cluster is refused.
    pub async fn wrong_cluster_is_refused(t: Arc<dyn Transport>) {
        let mut b = TestNode::start(&t).await;
        let mut config = test_config();
        config.cluster_name = "other".into();
        let mut stranger = TestNode::bind(&t, any_port(), config).await;
        stranger.endpoint.send(b.id(), b"hi").expect("queued");
        let e = stranger
            .next_event("refusal", failed(Direction::Outbound))
            .await;
        assert!(
            format!("{e:?}").contains("cluster"),
            "the refusal must name the cluster: {e:?}"
        );
        let e = b.next_event("refusal", failed(Direction::Inbound)).await;
        assert!(format!("{e:?}").contains("other"), "{e:?}");
        let friend = TestNode::start(&t).await;
        friend.endpoint.send(b.id(), b"marker").expect("send");
        assert_eq!(
            b.next_message().await.1,
            b"marker",
            "the stranger's message was delivered"
        );
    }

    /// `send_to_addr` reaches whoever listens there (joining through a seed).
    pub async fn send_to_addr_reaches_any_incarnation(t: Arc<dyn Transport>) {
        let a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        a.endpoint.send_to_addr(b.id().addr, b"join").expect("send");
        assert_eq!(b.next_message().await, (a.id(), b"join".to_vec()));
    }

    /// Both sides see connect and disconnect events; `connected()` follows.
    pub async fn connection_events(t: Arc<dyn Transport>) {
        let mut a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        let mut watch = a.endpoint.connected();
        a.endpoint.send(b.id(), b"x").expect("send");
        a.next_event(
            "outbound connect",
            connected_to(b.id(), Direction::Outbound),
        )
        .await;
        b.next_event("inbound connect", connected_to(a.id(), Direction::Inbound))
            .await;
        let b_id = b.id();
        tokio::time::timeout(WAIT, watch.wait_for(|s| s.contains(&b_id)))
            .await
            .expect("connected() must show the peer")
            .expect("watch");
        let a_id = a.id();
        a.stop().await;
        b.next_event(
            "inbound disconnect",
            disconnected_from(a_id, Direction::Inbound),
        )
        .await;
    }

    /// A quarantined peer is disconnected, refused, and not sent to.
    pub async fn quarantined_peer_is_cut_off(t: Arc<dyn Transport>) {
        let mut a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        a.endpoint.send(b.id(), b"x").expect("send");
        assert_eq!(b.next_message().await.1, b"x");
        a.next_event("connect", connected_to(b.id(), Direction::Outbound))
            .await;
        a.endpoint.quarantine(b.id());
        a.next_event("disconnect", disconnected_from(b.id(), Direction::Outbound))
            .await;
        assert_eq!(
            a.endpoint.send(b.id(), b"y"),
            Err(SendError::Quarantined(b.id()))
        );
        b.endpoint.send(a.id(), b"let me talk").expect("queued");
        b.next_event("refusal by a", failed(Direction::Outbound))
            .await;
        let c = TestNode::start(&t).await;
        c.endpoint.send(a.id(), b"marker").expect("send");
        assert_eq!(
            a.next_message().await.1,
            b"marker",
            "a quarantined peer's message was delivered"
        );
    }

    /// A cut link breaks both directions and refuses reconnection; after healing, messages
    /// flow again.
    pub async fn cut_and_heal(t: (Arc<dyn Transport>, Arc<dyn LinkFaults>)) {
        let (t, links) = t;
        let mut a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        a.endpoint.send(b.id(), b"before").expect("send");
        assert_eq!(b.next_message().await.1, b"before");
        a.next_event("connect", connected_to(b.id(), Direction::Outbound))
            .await;
        links.cut(a.id().addr, b.id().addr);
        a.next_event(
            "outbound cut",
            disconnected_from(b.id(), Direction::Outbound),
        )
        .await;
        b.next_event("inbound cut", disconnected_from(a.id(), Direction::Inbound))
            .await;
        a.endpoint.send(b.id(), b"during").expect("queued");
        a.next_event("refused while cut", failed(Direction::Outbound))
            .await;
        links.heal(a.id().addr, b.id().addr);
        a.endpoint.send(b.id(), b"after").expect("queued");
        assert_eq!(
            b.next_message().await.1,
            b"after",
            "after healing, messages must flow (and the one sent during the cut is gone)"
        );
    }

    /// Cutting one node off leaves the others connected.
    pub async fn partition_of_three(t: (Arc<dyn Transport>, Arc<dyn LinkFaults>)) {
        let (t, links) = t;
        let mut a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        let mut c = TestNode::start(&t).await;
        links.cut(a.id().addr, b.id().addr);
        links.cut(a.id().addr, c.id().addr);
        b.endpoint.send(c.id(), b"b->c").expect("send");
        c.endpoint.send(b.id(), b"c->b").expect("send");
        assert_eq!(c.next_message().await.1, b"b->c");
        assert_eq!(b.next_message().await.1, b"c->b");
        a.endpoint.send(b.id(), b"a->b").expect("queued");
        a.next_event("a cut off", failed(Direction::Outbound)).await;
        links.heal(a.id().addr, b.id().addr);
        links.heal(a.id().addr, c.id().addr);
        a.endpoint.send(c.id(), b"a->c").expect("send");
        assert_eq!(c.next_message().await, (a.id(), b"a->c".to_vec()));
    }

    /// Added delay holds bytes back (order kept).
    pub async fn added_delay(t: (Arc<dyn Transport>, Arc<dyn LinkFaults>)) {
        let (t, links) = t;
        let delay = Duration::from_millis(100);
        let a = TestNode::start(&t).await;
        let mut b = TestNode::start(&t).await;
        links.set_delay(a.id().addr, b.id().addr, delay);
        let start = tokio::time::Instant::now();
        for i in 0..10u8 {
            a.endpoint.send(b.id(), &[i]).expect("send");
        }
        for i in 0..10u8 {
            assert_eq!(b.next_message().await.1, [i]);
        }
        // Handshake (2 round trips) and the data each cross the link at least once.
        assert!(
            start.elapsed() >= delay * 3,
            "delivered after {:?}, delay is {delay:?}",
            start.elapsed()
        );
    }
}
