//! Endpoint configuration.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::{DATA_PREFIX_LEN, HEADER_LEN};

/// The shared cluster secret. Never sent over the wire (the handshake proves knowledge of it
/// with HMAC-SHA256); never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    /// A secret from its bytes. Use at least 32 random bytes in production.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(bytes.as_ref()))
    }

    pub(crate) fn bytes(&self) -> Arc<[u8]> {
        self.0.clone()
    }

    /// The secret's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty (which [`EndpointConfig::validate`] refuses).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.0.len())
    }
}

/// Reconnection backoff: after the `n`-th failure in a row, wait `min · 2^(n-1)` capped at
/// `max`, then add a random `0..=jitter` fraction of that (from the endpoint's seeded RNG).
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectBackoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay (before jitter).
    pub max: Duration,
    /// Random extra, as a fraction of the delay, in `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter: 0.2,
        }
    }
}

impl ReconnectBackoff {
    /// The delay after `failures` failures in a row (`failures >= 1`), given a random number
    /// in `0.0..1.0`.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        base.mul_f64(1.0 + self.jitter * random.clamp(0.0, 1.0))
    }
}

/// Configuration of an [`Endpoint`](crate::Endpoint).
///
/// Build with [`EndpointConfig::new`] and adjust fields; [`validate`](Self::validate) runs at
/// bind time and names the first inconsistent setting.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Nodes only talk to nodes with the same cluster name (checked in the handshake).
    pub cluster_name: String,
    /// The shared secret every node of the cluster knows.
    pub secret: ClusterSecret,
    /// This incarnation's id (never 0); `None` picks a random one at bind time.
    pub incarnation: Option<u64>,
    /// The address other nodes dial to reach this node, when it differs from the bound one
    /// (binding `0.0.0.0`, NAT). `None` advertises the bound address.
    pub advertised_addr: Option<SocketAddr>,
    /// The largest frame (header included) this node sends or accepts. A larger inbound frame
    /// closes its connection; a larger outbound message is refused at `send`.
    pub max_frame_len: usize,
    /// Bytes of encoded frames queued per peer (plus one batch being written). A message that
    /// does not fit is a dead letter.
    pub outbound_queue_bytes: usize,
    /// How long dialing may take.
    pub connect_timeout: Duration,
    /// How long a handshake may take (both directions).
    pub handshake_timeout: Duration,
    /// Backoff between connection attempts to a peer.
    pub reconnect: ReconnectBackoff,
    /// Inbound connections (handshaking or established) beyond this are closed at once.
    pub max_inbound_connections: usize,
    /// Seed of the RNG behind backoff jitter (a seed reproduces a run).
    pub seed: u64,
}

impl EndpointConfig {
    /// Defaults for a node of cluster `cluster_name` that knows `secret`: 1 MiB frames,
    /// 8 MiB outbound queue per peer, 5 s connect and handshake timeouts, backoff
    /// 100 ms–5 s with 20 % jitter, 1024 inbound connections.
    pub fn new(cluster_name: impl Into<String>, secret: ClusterSecret) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            secret,
            incarnation: None,
            advertised_addr: None,
            max_frame_len: 1024 * 1024,
            outbound_queue_bytes: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            reconnect: ReconnectBackoff::default(),
            max_inbound_connections: 1024,
            seed: 0x5EED,
        }
    }

    /// The largest payload a message may have under [`max_frame_len`](Self::max_frame_len).
    pub fn max_payload_len(&self) -> usize {
        self.max_frame_len
            .saturating_sub(HEADER_LEN + DATA_PREFIX_LEN)
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError(why));
        if self.cluster_name.is_empty() || self.cluster_name.len() > 255 {
            return bad(format!(
                "cluster_name must have 1 to 255 bytes, has {}",
                self.cluster_name.len()
            ));
        }
        if self.secret.is_empty() {
            return bad("secret must not be empty".into());
        }
        if self.incarnation == Some(0) {
            return bad("incarnation 0 is reserved (it means \"any incarnation\")".into());
        }
        if self.max_frame_len < 1024 || self.max_frame_len > u32::MAX as usize {
            return bad(format!(
                "max_frame_len must be between 1 KiB and 4 GiB, is {}",
                self.max_frame_len
            ));
        }
        if self.outbound_queue_bytes < self.max_frame_len {
            return bad(format!(
                "outbound_queue_bytes ({}) must hold at least one frame of max_frame_len ({})",
                self.outbound_queue_bytes, self.max_frame_len
            ));
        }
        if self.connect_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return bad("connect_timeout and handshake_timeout must be positive".into());
        }
        let b = &self.reconnect;
        if b.min.is_zero() || b.min > b.max {
            return bad(format!(
                "reconnect backoff needs 0 < min <= max, has min {:?}, max {:?}",
                b.min, b.max
            ));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return bad(format!(
                "reconnect jitter must be in 0.0..=1.0, is {}",
                b.jitter
            ));
        }
        if self.max_inbound_connections == 0 {
            return bad("max_inbound_connections must be at least 1".into());
        }
        Ok(())
    }
}

/// An inconsistent [`EndpointConfig`]; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint config: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_then_jitters() {
        let b = ReconnectBackoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.5,
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(500, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(150));
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let ok = EndpointConfig::new("c", ClusterSecret::new("s"));
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.outbound_queue_bytes = 10;
        assert!(c.validate().unwrap_err().0.contains("outbound_queue_bytes"));
        let mut c = ok.clone();
        c.secret = ClusterSecret::new("");
        assert!(c.validate().unwrap_err().0.contains("secret"));
        let mut c = ok.clone();
        c.reconnect.min = Duration::from_secs(10);
        assert!(c.validate().unwrap_err().0.contains("backoff"));
        let mut c = ok;
        c.incarnation = Some(0);
        assert!(c.validate().unwrap_err().0.contains("incarnation"));
    }

    #[test]
    fn the_secret_is_not_printed() {
        let s = ClusterSecret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
