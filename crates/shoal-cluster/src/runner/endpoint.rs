//! Running the cluster over a `shoal_remote::Endpoint`.

use std::net::SocketAddr;

use shoal_remote::{Codec, Endpoint, Incoming, Json, UniqueAddress};
use tokio::sync::mpsc;

use super::ClusterLink;
use crate::message::ClusterMessage;

/// A [`ClusterLink`] over an endpoint used for cluster messages only, JSON-encoded.
#[derive(Clone)]
pub struct EndpointLink {
    endpoint: Endpoint,
}

impl EndpointLink {
    /// Send through `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        EndpointLink { endpoint }
    }
}

impl ClusterLink for EndpointLink {
    fn send(&self, to: UniqueAddress, message: &ClusterMessage) {
        if let Err(e) = self.endpoint.send_encoded(to, message, &Json) {
            tracing::debug!(%to, kind = message.kind(), error = %e, "cluster message not sent");
        }
    }

    fn send_to_address(&self, to: SocketAddr, message: &ClusterMessage) {
        let sent = self
            .endpoint
            .send_to_addr_with(to, |buf| Json.encode(message, buf));
        if let Err(e) = sent {
            tracing::debug!(%to, kind = message.kind(), error = %e, "cluster message not sent");
        }
    }

    fn quarantine(&self, node: UniqueAddress) {
        self.endpoint.quarantine(node);
    }
}

/// Decode what an endpoint's channel delivers into cluster messages, on a task, into a
/// channel of `capacity`. Connection events are skipped; a message that does not decode is
/// logged and dropped (the node keeps serving).
pub fn decode_inbound(
    mut incoming: mpsc::Receiver<Incoming>,
    capacity: usize,
) -> mpsc::Receiver<(UniqueAddress, ClusterMessage)> {
    let (tx, rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        while let Some(item) = incoming.recv().await {
            let Incoming::Message { from, payload } = item else {
                continue;
            };
            match Json.decode(&payload) {
                Ok(message) => {
                    if tx.send((from, message)).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(%from, error = %e, "undecodable cluster message dropped"),
            }
        }
    });
    rx
}
