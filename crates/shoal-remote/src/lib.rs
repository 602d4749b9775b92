//! Remoting for Shoal: how nodes find, authenticate and talk to each other.
//!
//! Three layers, each usable on its own:
//!
//! 1. **[`Transport`]** — how a node listens and dials: reliable ordered byte streams.
//!    [`TcpTransport`] for production, [`MemoryNetwork`] for multi-node tests in one process
//!    with [`cut`](MemoryNetwork::cut) / [`heal`](MemoryNetwork::heal) /
//!    [`set_delay`](MemoryNetwork::set_delay). Object-safe (`Arc<dyn Transport>`); every
//!    implementation runs the public conformance suite in [`testing`].
//! 2. **[`Endpoint`]** — a node on a transport, identified by a [`UniqueAddress`] (address +
//!    incarnation). It frames messages ([`frame`]: magic, version, size limit), runs the
//!    [handshake](#handshake) on every connection, keeps one lazily dialed outbound
//!    connection per peer fed by a bounded queue of encoded frames (drained whole per write),
//!    reconnects with seeded, jittered backoff, drops messages meant for another incarnation,
//!    and hands inbound messages with the sender's proven identity to an
//!    [`InboundHandler`] (or a bounded channel, [`Endpoint::bind_with_channel`]). Connection
//!    events ([`PeerEvent`]) and the set of connected peers ([`Endpoint::connected`]) tell a
//!    runner when peers come and go; [`Endpoint::quarantine`] shuts a member out for good.
//! 3. **[`Remote`]** — actors reachable from other nodes: [`Remote::register`] an
//!    [`ActorRef`](shoal_actor::ActorRef) under a name and get a serializable
//!    [`RemoteRef<M>`]; `tell` and `ask` (with a timeout) through it from any node; requests
//!    carry serializable [`RemoteReplyTo<R>`] handles (requesting node + request id). Bodies
//!    are encoded per type by a [`Codec`] ([`Json`] by default).
//!
//! # A cluster runner over the endpoint
//!
//! ```
//! use shoal_remote::{ClusterSecret, Endpoint, EndpointConfig, Incoming, Json, MemoryNetwork};
//!
//! # #[tokio::main] async fn main() {
//! let net = MemoryNetwork::new(); // or Arc::new(TcpTransport::new())
//! let config = EndpointConfig::new("my-cluster", ClusterSecret::new("0123456789abcdef"));
//! let any = "127.0.0.1:0".parse().unwrap();
//! let (a, _a_inbox) =
//!     Endpoint::bind_with_channel(net.transport(), any, config.clone(), 1024).await.unwrap();
//! let (b, mut b_inbox) =
//!     Endpoint::bind_with_channel(net.transport(), any, config, 1024).await.unwrap();
//!
//! a.send_encoded(b.local(), &"join".to_string(), &Json).unwrap();
//! loop {
//!     let incoming = b_inbox.recv().await.unwrap();
//!     if let Incoming::Message { from, .. } = &incoming {
//!         assert_eq!(*from, a.local());
//!         let text: String = incoming.decode(&Json).unwrap().unwrap();
//!         assert_eq!(text, "join");
//!         break;
//!     }
//!     // Otherwise an Incoming::Event(PeerEvent::Connected { .. }) and the like.
//! }
//! net.cut(a.local().addr, b.local().addr); // both sides see Disconnected
//! # }
//! ```
//!
//! # Remote actors
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props};
//! use shoal_remote::{ClusterSecret, EndpointConfig, MemoryNetwork, Remote, RemoteRef, RemoteReplyTo};
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterMsg { Add(u64), Get(RemoteReplyTo<u64>) }
//!
//! struct Counter(u64);
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     async fn handle(&mut self, _: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
//!         match msg {
//!             CounterMsg::Add(n) => self.0 += n,
//!             CounterMsg::Get(reply) => { reply.send(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let net = MemoryNetwork::new();
//! let config = EndpointConfig::new("my-cluster", ClusterSecret::new("0123456789abcdef"));
//! let any = "127.0.0.1:0".parse().unwrap();
//! let node_a = Remote::bind(net.transport(), any, config.clone()).await.unwrap();
//! let node_b = Remote::bind(net.transport(), any, config).await.unwrap();
//!
//! let system = ActorSystem::new("b");
//! let counter = system.spawn("counter", Props::new(|| Counter(0)));
//! node_b.register("counter", counter).unwrap();
//!
//! let remote: RemoteRef<CounterMsg> = node_a.resolve(node_b.local(), "counter");
//! remote.tell(CounterMsg::Add(2)).unwrap();
//! let n = remote.ask(CounterMsg::Get, Duration::from_secs(5)).await.unwrap();
//! assert_eq!(n, 2);
//! # system.shutdown().await;
//! # }
//! ```
//!
//! # Handshake
//!
//! Every connection starts with four frames: the dialer sends the cluster name, its identity
//! and a nonce; the acceptor answers with its identity, its nonce and
//! `HMAC-SHA256(secret, "acceptor" ‖ transcript)`; the dialer checks it and answers with
//! `HMAC-SHA256(secret, "dialer" ‖ transcript)`; the acceptor checks that and accepts. The
//! transcript is the cluster name, both identities and both nonces. The secret never
//! travels; nonces from both sides defeat replay; another cluster name, a wrong proof, a
//! quarantined identity or an acceptor that is not at the dialed address is refused with a
//! reason. The handshake authenticates but does not encrypt: run on a trusted network or
//! under TLS/WireGuard.
//!
//! # Guarantees and limits
//!
//! * At-most-once delivery, in order per (sender, recipient address) while a connection
//!   lives; a broken connection loses its in-flight batch.
//! * Everything is bounded: per-peer outbound queues (bytes; overflow → [`SendError`], a
//!   dead letter, counted), inbound connections, pending asks, event buffers. A malformed or
//!   oversized frame closes only its connection, with a logged reason.
//! * A gone peer costs counters and a few dials (the queue is dropped at each failed attempt,
//!   attempts back off), logged once — not a storm.

pub mod address;
mod codec;
mod config;
mod endpoint;
pub mod frame;
mod handshake;
mod memory;
mod remote;
mod tcp;
pub mod testing;
mod transport;
#[cfg(feature = "turmoil")]
mod turmoil_transport;

pub use address::UniqueAddress;
pub use codec::{Codec, CodecError, Json};
pub use config::{ClusterSecret, ConfigError, EndpointConfig, ReconnectBackoff};
pub use endpoint::{
    BindError, ChannelHandler, Direction, Endpoint, EndpointStats, InboundHandler, Incoming,
    PeerEvent, SendError,
};
pub use memory::MemoryNetwork;
pub use remote::{
    RegisterError, Remote, RemoteInbox, RemoteRef, RemoteReplyTo, RemoteStats, Undelivered,
    UndeliveredReason,
};
pub use tcp::TcpTransport;
pub use transport::{Connection, Listener, Transport};
#[cfg(feature = "turmoil")]
pub use turmoil_transport::TurmoilNetwork;
