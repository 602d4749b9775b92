//! Node identity: an address plus an incarnation id.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One incarnation of a node: where it listens plus a number chosen at start that differs
/// between restarts. A restarted node is a new member; messages addressed to an older
/// incarnation are dropped.
///
/// Ordered by address, then incarnation (a stable order for leader election and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UniqueAddress {
    /// Where the node accepts connections (advertised address).
    pub addr: SocketAddr,
    /// Chosen at node start; never 0.
    pub incarnation: u64,
}

impl UniqueAddress {
    /// The identity of an incarnation of the node at `addr`.
    pub fn new(addr: SocketAddr, incarnation: u64) -> Self {
        Self { addr, incarnation }
    }
}

impl fmt::Display for UniqueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:x}", self.addr, self.incarnation)
    }
}
