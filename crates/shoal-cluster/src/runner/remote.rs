//! Running the cluster over a `shoal_remote::Remote`, beside the node's remote actors.

use std::net::SocketAddr;

use shoal_remote::{RegisterError, Remote, RemoteInbox, UniqueAddress};

use super::ClusterLink;
use crate::message::ClusterMessage;

/// The name cluster messages are registered under on every node's [`Remote`].
pub const CLUSTER_RECIPIENT: &str = "shoal.cluster";

/// A [`ClusterLink`] over a [`Remote`]: cluster messages go to the channel registered as
/// [`CLUSTER_RECIPIENT`] on each node, so membership, singletons and user actors share one
/// endpoint (one port, one handshake, one node identity).
#[derive(Clone)]
pub struct RemoteLink {
    remote: Remote,
}

impl RemoteLink {
    /// Register this node's cluster channel (`capacity` messages; more are dropped and
    /// counted, the protocol repeats itself) and return the link and the inbound channel
    /// for [`Cluster::start`](super::Cluster::start).
    pub fn register(
        remote: &Remote,
        capacity: usize,
    ) -> Result<(Self, RemoteInbox<ClusterMessage>), RegisterError> {
        let (_, inbox) = remote.register_channel::<ClusterMessage>(CLUSTER_RECIPIENT, capacity)?;
        Ok((
            RemoteLink {
                remote: remote.clone(),
            },
            inbox,
        ))
    }

    fn tell(&self, to: UniqueAddress, message: &ClusterMessage) {
        let target = self.remote.resolve::<ClusterMessage>(to, CLUSTER_RECIPIENT);
        if let Err(e) = target.tell(message.clone()) {
            tracing::debug!(%to, kind = message.kind(), reason = %e.reason, "cluster message not sent");
        }
    }
}

impl ClusterLink for RemoteLink {
    fn send(&self, to: UniqueAddress, message: &ClusterMessage) {
        self.tell(to, message);
    }

    fn send_to_address(&self, to: SocketAddr, message: &ClusterMessage) {
        // Incarnation 0 addresses whichever incarnation listens at `to`.
        self.tell(UniqueAddress::new(to, 0), message);
    }

    fn quarantine(&self, node: UniqueAddress) {
        self.remote.endpoint().quarantine(node);
    }
}
