//! TCP over tokio.

use std::io;
use std::net::SocketAddr;

use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};

use crate::transport::{Connection, Listener, Transport};

/// The production [`Transport`]: plain TCP with `TCP_NODELAY` (the endpoint batches frames
/// itself, so Nagle would only add latency).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl TcpTransport {
    /// The TCP transport.
    pub fn new() -> Self {
        Self
    }
}

struct TcpListenerBox {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Transport for TcpTransport {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            Ok(Box::new(TcpListenerBox { listener, addr }) as Box<dyn Listener>)
        })
    }

    fn connect(
        &self,
        _from: SocketAddr,
        to: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Box<dyn Connection>>> {
        Box::pin(async move {
            let stream = TcpStream::connect(to).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Connection>)
        })
    }
}

impl Listener for TcpListenerBox {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Connection>, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as Box<dyn Connection>, peer))
        })
    }
}
