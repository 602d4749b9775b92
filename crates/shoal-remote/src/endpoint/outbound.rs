//! Outbound side: one association (queue + connection + writer task) per peer address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Inner, PeerEvent};
use crate::address::UniqueAddress;
use crate::endpoint::Direction;
use crate::frame::{FrameReader, HANDSHAKE_FRAME_LIMIT};
use crate::handshake::{self, HandshakeError};
use crate::transport::Connection;

/// Encoded frames waiting for the writer.
pub(super) struct Outbox {
    pub(super) buf: Vec<u8>,
    pub(super) frames: u64,
}

/// Everything this node keeps about one peer address.
pub(super) struct Association {
    pub(super) addr: SocketAddr,
    pub(super) outbox: Mutex<Outbox>,
    /// Signalled when the outbox goes from empty to non-empty.
    pub(super) wake: Notify,
    /// The connected peer's incarnation; 0 while not connected.
    pub(super) peer: AtomicU64,
    /// Signalled when a node at `addr` connected to us: it is up, so a reconnect backoff in
    /// progress ends now.
    pub(super) redial: Notify,
}

impl Association {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            outbox: Mutex::new(Outbox {
                buf: Vec::new(),
                frames: 0,
            }),
            wake: Notify::new(),
            peer: AtomicU64::new(0),
            redial: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_pending(&self) -> bool {
        !self.lock().buf.is_empty()
    }

    /// Empties the queue; returns how many frames it held.
    fn drain(&self) -> u64 {
        let mut out = self.lock();
        out.buf.clear();
        std::mem::take(&mut out.frames)
    }
}

/// Below this many queued bytes the writer yields once before taking the batch.
const SMALL_BATCH: usize = 16 * 1024;

/// Bytes a batch buffer may keep while its connection is idle.
const KEEP_CAPACITY: usize = 256 * 1024;

/// The association's task: waits for messages, dials, writes batches, redials with backoff.
pub(super) async fn run(inner: Arc<Inner>, assoc: Arc<Association>) {
    let mut failures: u32 = 0;
    let mut spare = Vec::new();
    loop {
        if inner.shutdown.get() != 0 {
            break;
        }
        // Dial lazily: only when there is something to send.
        if !assoc.has_pending() {
            tokio::select! {
                biased;
                _ = inner.shutdown.wait_for(|s| s != 0) => continue,
                _ = assoc.wake.notified() => continue,
            }
        }
        inner
            .counters
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        let dialed = tokio::select! {
            biased;
            _ = inner.shutdown.wait_for(|s| s != 0) => continue,
            r = dial(&inner, assoc.addr) => r,
        };
        let delay = match dialed {
            Ok((conn, peer)) => {
                assoc.peer.store(peer.incarnation, Ordering::Release);
                inner.connected.send_modify(|s| {
                    s.insert(peer);
                });
                tracing::debug!(node = %inner.me, peer = %peer, "outbound connection established");
                inner.event(PeerEvent::Connected {
                    peer,
                    direction: Direction::Outbound,
                });
                let since = Instant::now();
                let reason = write_loop(&inner, &assoc, conn, peer, &mut spare).await;
                assoc.peer.store(0, Ordering::Release);
                inner.connected.send_modify(|s| {
                    s.remove(&peer);
                });
                tracing::debug!(node = %inner.me, peer = %peer, reason = %reason, "outbound connection closed");
                inner.event(PeerEvent::Disconnected {
                    peer,
                    direction: Direction::Outbound,
                    reason,
                });
                // A connection that lived long is a fresh start; one that died at once backs
                // off further (a peer that keeps closing on us must not cause a storm).
                if since.elapsed() >= inner.config.reconnect.max {
                    failures = 0;
                }
                failures += 1;
                inner.config.reconnect.delay(failures, inner.random())
            }
            Err(why) => {
                failures += 1;
                inner
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                if failures == 1 {
                    tracing::warn!(node = %inner.me, peer = %assoc.addr, reason = %why,
                        "cannot connect; dropping its queued messages and backing off \
                         (further failures in a row are logged at debug level)");
                } else {
                    tracing::debug!(node = %inner.me, peer = %assoc.addr, reason = %why, failures,
                        "cannot connect");
                }
                // What waited for this attempt is dropped (counted before the event is
                // published, so an observer of the event sees the count).
                let dropped = assoc.drain();
                inner.dead_letters(dropped, assoc.addr, &"peer unreachable");
                inner.event(PeerEvent::ConnectFailed {
                    addr: assoc.addr,
                    direction: Direction::Outbound,
                    reason: why.to_string(),
                });
                inner.config.reconnect.delay(failures, inner.random())
            }
        };
        tokio::select! {
            biased;
            _ = inner.shutdown.wait_for(|s| s != 0) => {}
            _ = tokio::time::sleep(delay) => {}
            _ = assoc.redial.notified() => {}
        }
    }
}

/// Why dialing failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
}

async fn dial(
    inner: &Arc<Inner>,
    addr: SocketAddr,
) -> Result<(Box<dyn Connection>, UniqueAddress), DialError> {
    let cfg = &inner.config;
    let mut conn = tokio::time::timeout(
        cfg.connect_timeout,
        inner.transport.connect(inner.bound, addr),
    )
    .await
    .map_err(|_| DialError::ConnectTimeout)?
    .map_err(DialError::Connect)?;
    let mut reader = FrameReader::new(HANDSHAKE_FRAME_LIMIT);
    let peer = tokio::time::timeout(
        cfg.handshake_timeout,
        handshake::dial(&mut conn, &mut reader, &inner.creds, addr, |u| {
            inner.is_quarantined(u)
        }),
    )
    .await
    .map_err(|_| DialError::HandshakeTimeout)?
    .map_err(DialError::Handshake)?;
    Ok((conn, peer))
}

/// Writes batches until the connection fails, the peer is quarantined or the node stops.
/// Returns why it ended.
async fn write_loop(
    inner: &Arc<Inner>,
    assoc: &Association,
    conn: Box<dyn Connection>,
    peer: UniqueAddress,
    spare: &mut Vec<u8>,
) -> String {
    let mut quarantine = inner.quarantine_epoch.get();
    if inner.is_quarantined(&peer) {
        return "peer quarantined".into();
    }
    let (mut rd, mut wr) = tokio::io::split(conn);
    let mut probe = [0u8; 16];
    loop {
        // A small batch: let busy senders add to it for one scheduler turn (fewer, larger
        // writes; when nobody else is runnable the yield returns at once).
        if assoc.lock().buf.len() < SMALL_BATCH {
            tokio::task::yield_now().await;
        }
        let frames = {
            let mut out = assoc.lock();
            if out.buf.is_empty() {
                0
            } else {
                std::mem::swap(&mut out.buf, spare);
                std::mem::take(&mut out.frames)
            }
        };
        if frames == 0 {
            // Idle: give back a large batch buffer, then wait for messages; notice a peer
            // that closes, a quarantine, a shutdown.
            if spare.capacity() > KEEP_CAPACITY {
                *spare = Vec::new();
            }
            tokio::select! {
                biased;
                _ = inner.shutdown.wait_for(|s| s != 0) => return "node shutting down".into(),
                _ = inner.quarantine_epoch.changed(&mut quarantine) => {
                    if inner.is_quarantined(&peer) {
                        return "peer quarantined".into();
                    }
                }
                _ = assoc.wake.notified() => {}
                r = rd.read(&mut probe) => {
                    return match r {
                        Ok(0) => "closed by peer".into(),
                        Ok(_) => "peer sent bytes on an outbound connection".into(),
                        Err(e) => format!("i/o error: {e}"),
                    };
                }
            }
            continue;
        }
        let written = tokio::select! {
            biased;
            _ = inner.shutdown.wait_for(|s| s != 0) => return "node shutting down".into(),
            r = wr.write_all(spare) => r,
        };
        spare.clear();
        if let Err(e) = written {
            return format!("write failed: {e}");
        }
        inner
            .counters
            .frames_sent
            .fetch_add(frames, Ordering::Relaxed);
        inner.counters.batches_sent.fetch_add(1, Ordering::Relaxed);
    }
}
