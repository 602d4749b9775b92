//! Inbound side: the accept loop and one reader task per inbound connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{Direction, Inner, PeerEvent};
use crate::address::UniqueAddress;
use crate::frame::{DATA_PREFIX_LEN, FrameKind, FrameReader, HANDSHAKE_FRAME_LIMIT, ReadError};
use crate::handshake;
use crate::transport::{Connection, Listener};

pub(super) async fn accept_loop(inner: Arc<Inner>, mut listener: Box<dyn Listener>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = inner.shutdown.wait_for(|s| s != 0) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((conn, remote)) => match inner.inbound_permits.clone().try_acquire_owned() {
                Ok(permit) => inner.spawn(run(inner.clone(), conn, remote, permit)),
                Err(_) => {
                    inner
                        .counters
                        .inbound_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %inner.me, remote = %remote,
                            limit = inner.config.max_inbound_connections,
                            "too many inbound connections; closing the new one");
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: log, pause briefly, go on.
                tracing::warn!(node = %inner.me, error = %e, "accept failed");
                tokio::select! {
                    biased;
                    _ = inner.shutdown.wait_for(|s| s != 0) => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    mut conn: Box<dyn Connection>,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let mut reader = FrameReader::new(HANDSHAKE_FRAME_LIMIT);
    let handshake = tokio::time::timeout(
        inner.config.handshake_timeout,
        handshake::accept(&mut conn, &mut reader, &inner.creds, |u| {
            inner.is_quarantined(u)
        }),
    );
    let result = tokio::select! {
        biased;
        _ = inner.shutdown.wait_for(|s| s != 0) => return,
        r = handshake => r,
    };
    let peer = match result {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => return refused(&inner, remote, e.to_string()),
        Err(_) => return refused(&inner, remote, "handshake timed out".into()),
    };
    reader.set_limit(inner.config.max_frame_len);
    tracing::debug!(node = %inner.me, peer = %peer, "inbound connection established");
    // The peer is up: a reconnect backoff towards it need not run out (its answers, say to a
    // join request, would wait for it).
    if let Some(assoc) = inner
        .associations
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&peer.addr)
    {
        assoc.redial.notify_waiters();
    }
    inner.event(PeerEvent::Connected {
        peer,
        direction: Direction::Inbound,
    });
    let (reason, violation) = read_loop(&inner, &mut conn, &mut reader, peer).await;
    if violation {
        inner
            .counters
            .inbound_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %inner.me, peer = %peer, reason = %reason,
            "closing inbound connection: protocol violation");
    } else {
        tracing::debug!(node = %inner.me, peer = %peer, reason = %reason, "inbound connection closed");
    }
    inner.event(PeerEvent::Disconnected {
        peer,
        direction: Direction::Inbound,
        reason,
    });
}

fn refused(inner: &Inner, remote: SocketAddr, reason: String) {
    inner
        .counters
        .inbound_refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(node = %inner.me, remote = %remote, reason = %reason, "refused inbound connection");
    inner.event(PeerEvent::ConnectFailed {
        addr: remote,
        direction: Direction::Inbound,
        reason,
    });
}

/// Hands every data frame to the handler until the connection ends; returns why, and
/// whether the peer broke the protocol.
async fn read_loop(
    inner: &Arc<Inner>,
    conn: &mut Box<dyn Connection>,
    reader: &mut FrameReader,
    peer: UniqueAddress,
) -> (String, bool) {
    let mut quarantine = inner.quarantine_epoch.get();
    let me = inner.me.incarnation;
    loop {
        let mut delivered = 0u64;
        let mut misaddressed = 0u64;
        let outcome = loop {
            match reader.next() {
                Ok(Some((FrameKind::Data, range))) => {
                    let body = reader.body(range);
                    let Some((to, payload)) = body.split_first_chunk::<DATA_PREFIX_LEN>() else {
                        break Some(("malformed data frame (no incarnation)".to_string(), true));
                    };
                    let to = u64::from_be_bytes(*to);
                    if to != 0 && to != me {
                        // Counted at once (before later frames reach the handler).
                        inner
                            .counters
                            .wrong_incarnation
                            .fetch_add(1, Ordering::Relaxed);
                        misaddressed += 1;
                        continue;
                    }
                    inner.handler.on_message(peer, payload);
                    delivered += 1;
                }
                Ok(Some((kind, _))) => {
                    break Some((
                        format!("unexpected {kind:?} frame after the handshake"),
                        true,
                    ));
                }
                Ok(None) => break None,
                Err(e) => break Some((e.to_string(), true)),
            }
        };
        inner
            .counters
            .frames_received
            .fetch_add(delivered, Ordering::Relaxed);
        if misaddressed > 0 && !inner.wrong_incarnation_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(node = %inner.me, peer = %peer, count = misaddressed,
                    "dropped messages addressed to another incarnation of this node \
                     (logged once, counted in stats())");
        }
        if let Some(outcome) = outcome {
            return outcome;
        }
        let filled = tokio::select! {
            biased;
            _ = inner.shutdown.wait_for(|s| s != 0) => return ("node shutting down".into(), false),
            _ = inner.quarantine_epoch.changed(&mut quarantine) => {
                if inner.is_quarantined(&peer) {
                    return ("peer quarantined".into(), false);
                }
                continue;
            }
            r = reader.fill(conn) => r,
        };
        match filled {
            Ok(()) => {}
            Err(ReadError::Eof) => return ("closed by peer".into(), false),
            Err(ReadError::Frame(e)) => return (e.to_string(), true),
            Err(ReadError::Io(e)) => return (format!("i/o error: {e}"), false),
        }
    }
}
