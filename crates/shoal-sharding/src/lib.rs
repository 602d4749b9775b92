//! Cluster sharding for Shoal — the I/O-free core.
//!
//! Sharding spreads the entities of one entity type over the nodes of a cluster so that each
//! entity lives in exactly one place. Entities are grouped into **shards** (by a stable hash of
//! the entity id); a **shard region** on each node hosts the shards allocated to it; a single
//! **coordinator** per entity type decides which region hosts which shard, and moves shards
//! when nodes join or leave.
//!
//! What is here (pure logic, no tasks, no I/O — tested step by step):
//!
//! * [`shard_id`]: [`EntityId`], [`ShardId`], the [`ShardExtractor`] trait and the default
//!   [`HashShardExtractor`] (FNV-1a 64 of the entity id modulo `number_of_shards`, 1000 by
//!   default; stable across releases and platforms, pinned by golden tests).
//! * [`allocation`]: the pluggable [`ShardAllocationStrategy`] and the default
//!   [`LeastShardAllocationStrategy`] (fewest shards first; bounded rebalance rounds, 20 shards
//!   or 10 % per round by default; leaving regions get nothing and are emptied).
//! * [`coordinator_state`]: the coordinator's state as an event-sourced model
//!   ([`CoordinatorState`], [`CoordinatorEvent`]): the coordinator will persist its decisions in
//!   the journal, so two coordinators in a split brain are fenced by the journal and can
//!   never both give a shard a home.
//!
//! A region is identified by the [`UniqueAddress`](shoal_remote::UniqueAddress) of its node
//! incarnation ([`RegionId`]): one coordinator serves one entity type, so one node has at most
//! one region (or one proxy) per coordinator, and a restarted node is a new region.
//!
//! What comes later: the shard region and its buffers, the coordinator as a cluster singleton
//! running this state, shard hand-off (stop the entities, then reallocate), passivation
//! (idle timeout, active-entity limit), remember entities, region proxies and the `Sharding`
//! API (`init`, `entity_ref`).

pub mod allocation;
pub mod coordinator_state;
pub mod shard_id;

pub use allocation::{
    Allocations, InvalidLimits, LeastShardAllocationStrategy, ShardAllocationStrategy,
};
pub use coordinator_state::{CoordinatorEvent, CoordinatorState, InvalidEvent};
pub use shard_id::{
    DEFAULT_NUMBER_OF_SHARDS, EntityId, HashShardExtractor, IdError, InvalidNumberOfShards,
    ShardExtractor, ShardId, fnv1a_64,
};

/// The identity of a shard region (or region proxy): the node incarnation it runs on.
pub type RegionId = shoal_remote::UniqueAddress;
