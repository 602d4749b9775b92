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
//! The runtime on top of it: [`Sharding::init`] an [`Entity`] type on every node → a
//! [`ShardRegion`] (a region task that routes and buffers, or a proxy on nodes without the
//! role) and the type's coordinator, a cluster singleton that persists this state's events in
//! the journal; [`ShardRegion::entity_ref`] → an [`EntityRef`] with `tell` and `ask` that work
//! from any node. Shards host the entities: start on demand, passivation (idle timeout,
//! active-entity limit, on request via [`EntityContext::passivate`]), hand-off, remembered
//! entities. [`ShardedDaemonProcess`] keeps N workers running across the cluster. See
//! `docs/sharding.md` for the protocols.

pub mod allocation;
mod coordinator;
pub mod coordinator_state;
mod daemon;
mod protocol;
mod region;
mod settings;
mod shard;
pub mod shard_id;
mod sharding;

pub use allocation::{
    Allocations, InvalidLimits, LeastShardAllocationStrategy, ShardAllocationStrategy,
};
pub use coordinator_state::{CoordinatorEvent, CoordinatorState, InvalidEvent};
pub use daemon::{DaemonSettings, ShardedDaemonProcess};
pub use shard::EntityContext;
pub use shard_id::{
    DEFAULT_NUMBER_OF_SHARDS, EntityId, HashShardExtractor, IdError, InvalidNumberOfShards,
    ShardExtractor, ShardId, fnv1a_64,
};

pub use protocol::{CoordinatorView, RegionStats};
pub use settings::{ShardingSettings, StrategyFactory};
pub use sharding::{
    Entity, EntityRef, EntityRefError, RegionShards, ShardRegion, Sharding, ShardingError,
};

/// The identity of a shard region (or region proxy): the node incarnation it runs on.
pub type RegionId = shoal_remote::UniqueAddress;
