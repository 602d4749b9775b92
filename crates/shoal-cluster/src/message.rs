//! What cluster nodes say to each other.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::gossip::Gossip;

/// A message between the membership cores of two nodes. The sender's identity travels with
/// it (the transport's handshake established it), not inside it.
///
/// Joining: a node sends [`InitJoin`](Self::InitJoin) to the seed nodes; members answer
/// [`InitJoinAck`](Self::InitJoinAck), nodes that are not members yet
/// [`InitJoinNack`](Self::InitJoinNack). The joiner sends [`Join`](Self::Join) to the first
/// member that acknowledged; that member adds it as `Joining` and answers
/// [`Welcome`](Self::Welcome) with the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterMessage {
    /// "Are you a member?" — sent to seed nodes by a node that wants to join.
    InitJoin,
    /// "Yes: join through me."
    InitJoinAck,
    /// "No: I am not a member (yet)."
    InitJoinNack,
    /// Add me as a member, with these roles.
    Join {
        /// The joining node's roles.
        roles: BTreeSet<String>,
    },
    /// You are a member: here is the membership.
    Welcome {
        /// The membership, including the new member as `Joining`.
        gossip: Gossip,
    },
    /// The sender's membership state.
    Gossip {
        /// The state.
        gossip: Gossip,
    },
    /// Failure-detector probe; answered by a [`HeartbeatResponse`](Self::HeartbeatResponse).
    Heartbeat {
        /// Echoed in the response.
        sequence_nr: u64,
    },
    /// Answer to a [`Heartbeat`](Self::Heartbeat).
    HeartbeatResponse {
        /// The probe's sequence number.
        sequence_nr: u64,
    },
}

impl ClusterMessage {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterMessage::InitJoin => "InitJoin",
            ClusterMessage::InitJoinAck => "InitJoinAck",
            ClusterMessage::InitJoinNack => "InitJoinNack",
            ClusterMessage::Join { .. } => "Join",
            ClusterMessage::Welcome { .. } => "Welcome",
            ClusterMessage::Gossip { .. } => "Gossip",
            ClusterMessage::Heartbeat { .. } => "Heartbeat",
            ClusterMessage::HeartbeatResponse { .. } => "HeartbeatResponse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_through_json() {
        let msgs = vec![
            ClusterMessage::InitJoin,
            ClusterMessage::InitJoinAck,
            ClusterMessage::InitJoinNack,
            ClusterMessage::Join {
                roles: BTreeSet::from(["entity".to_string()]),
            },
            ClusterMessage::Welcome {
                gossip: Gossip::new(),
            },
            ClusterMessage::Gossip {
                gossip: Gossip::new(),
            },
            ClusterMessage::Heartbeat { sequence_nr: 7 },
            ClusterMessage::HeartbeatResponse { sequence_nr: 7 },
        ];
        for m in msgs {
            let json = serde_json::to_string(&m).unwrap();
            let back: ClusterMessage = serde_json::from_str(&json).unwrap();
            assert_eq!(back, m, "{}", m.kind());
        }
    }
}
