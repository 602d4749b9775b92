//! What regions, proxies and the coordinator say to each other. All of it crosses nodes, so
//! all of it is serializable; the names on each node's `Remote` are in [`Names`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_remote::RemoteReplyTo;

use crate::{EntityId, RegionId, ShardId};

/// The names one entity type uses on every node's `Remote`.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) region: String,
    pub(crate) coordinator: String,
}

impl Names {
    pub(crate) fn new(type_name: &str) -> Self {
        Names {
            region: format!("shoal.sharding.{type_name}.region"),
            coordinator: format!("sharding.{type_name}.coordinator"),
        }
    }
}

/// To a region (or region proxy) of one entity type.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "M: serde::de::DeserializeOwned"))]
pub(crate) enum RegionMessage<M> {
    /// A message for an entity, forwarded by another region or proxy.
    Deliver {
        /// The entity.
        entity_id: EntityId,
        /// The message.
        message: M,
    },
    /// The coordinator accepted this region's (or proxy's) registration.
    RegisterAck,
    /// The coordinator refused the registration (another number of shards): this node's
    /// region cannot work and fails every message with the reason.
    RegisterRefused {
        /// Why.
        reason: String,
    },
    /// Where a shard lives (an answer to `GetShardHome`, or news for the new home itself).
    ShardHome {
        /// The shard.
        shard: ShardId,
        /// Its home.
        region: RegionId,
    },
    /// A shard is about to move: forget its home and buffer its messages; acknowledge.
    BeginHandOff {
        /// The shard.
        shard: ShardId,
    },
    /// Stop the shard's entities here and report `ShardStopped`.
    HandOff {
        /// The shard.
        shard: ShardId,
    },
    /// What runs here (for the management endpoint).
    GetStats(RemoteReplyTo<RegionStats>),
}

/// To the coordinator of one entity type (through its singleton proxy).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CoordinatorMessage {
    /// A region that hosts shards wants them.
    Register {
        /// The region.
        region: RegionId,
        /// Its number of shards (must match the coordinator's).
        number_of_shards: u32,
    },
    /// A proxy (sends, hosts nothing) wants hand-off news.
    RegisterProxy {
        /// The proxy.
        proxy: RegionId,
        /// Its number of shards (must match the coordinator's).
        number_of_shards: u32,
    },
    /// Where does `shard` live? (Allocated now if it has no home.)
    GetShardHome {
        /// The shard.
        shard: ShardId,
        /// The asking region or proxy.
        from: RegionId,
    },
    /// `from` has forgotten `shard`'s home and buffers its messages.
    BeginHandOffAck {
        /// The shard.
        shard: ShardId,
        /// The region or proxy.
        from: RegionId,
    },
    /// `from` stopped every entity of `shard`.
    ShardStopped {
        /// The shard.
        shard: ShardId,
        /// The region that hosted it.
        from: RegionId,
    },
    /// `region` is leaving: move all its shards away now.
    GracefulShutdown {
        /// The region.
        region: RegionId,
    },
    /// The coordinator's view (for the management endpoint).
    GetState(RemoteReplyTo<CoordinatorView>),
    /// The coordinator's own timer (never sent between nodes).
    #[serde(skip)]
    Tick,
}

/// One region's running shards and their entity counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionStats {
    /// Shard id → running entities.
    pub shards: BTreeMap<ShardId, usize>,
}

/// The coordinator's view: which region hosts which shards.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CoordinatorView {
    /// Every registered region with its shards.
    pub regions: Vec<(RegionId, Vec<ShardId>)>,
    /// Registered proxies.
    pub proxies: Vec<RegionId>,
    /// Shards whose hand-off is in progress.
    pub rebalancing: Vec<ShardId>,
}
