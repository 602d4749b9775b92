//! The [`Transport`] trait: how a node listens and dials. Everything above it (framing,
//! handshake, identity, queues, reconnection) is the same code for every transport.

use std::io;
use std::net::SocketAddr;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream between two nodes: what a [`Transport`] hands out.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// How nodes reach each other: listen on an address, dial an address, get reliable ordered
/// byte streams ([`Connection`]s).
///
/// Object-safe (`Arc<dyn Transport>`), so the transport is chosen at run time: a node runs the
/// same [`Endpoint`](crate::Endpoint) over [`TcpTransport`](crate::TcpTransport) in production
/// and over a [`MemoryNetwork`](crate::MemoryNetwork) in multi-node tests. A turmoil or TLS
/// transport is another implementation of these two methods.
///
/// # Rules every implementation follows (checked by [`testing`](crate::testing))
///
/// 1. A connection delivers the bytes written to it in order, without loss or duplication,
///    until it fails; after a failure it delivers nothing more (reads end with EOF or an
///    error, writes fail).
/// 2. Dropping one end ends the other: its reads see EOF or an error.
/// 3. [`listen`](Self::listen) on a port 0 picks a free port; listening on an address that
///    is in use fails with [`io::ErrorKind::AddrInUse`]. Dropping the [`Listener`] frees the
///    address.
/// 4. [`connect`](Self::connect) to an address nobody listens on fails (it does not hang
///    beyond the transport's own connect timeout).
pub trait Transport: Send + Sync + 'static {
    /// Starts listening on `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;

    /// Opens a connection to the node listening at `to`. `from` is the dialing node's own
    /// listening address (the in-memory network uses it to apply link faults; TCP ignores it).
    fn connect(
        &self,
        from: SocketAddr,
        to: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Box<dyn Connection>>>;
}

/// A listening socket of a [`Transport`].
pub trait Listener: Send + 'static {
    /// The address it listens on (with the port filled in when bound to port 0).
    fn local_addr(&self) -> SocketAddr;

    /// Waits for the next inbound connection; returns it and the peer's address as the
    /// transport sees it (for logs only: the peer's identity comes from the handshake).
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Connection>, SocketAddr)>>;
}
