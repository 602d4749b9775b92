//! Settings of one sharded entity type.

use std::sync::Arc;
use std::time::Duration;

use crate::allocation::{LeastShardAllocationStrategy, ShardAllocationStrategy};
use crate::shard_id::DEFAULT_NUMBER_OF_SHARDS;

/// Makes the allocation strategy each time a coordinator starts.
pub type StrategyFactory = Arc<dyn Fn() -> Box<dyn ShardAllocationStrategy> + Send + Sync>;

/// Settings of one entity type, the same on every node (the number of shards must match:
/// regions with another number are refused by the coordinator).
#[derive(Clone)]
pub struct ShardingSettings {
    /// Shards per entity type. Default 1000 (Akka's). Never change it for a running system:
    /// entities would move to other shards.
    pub number_of_shards: u32,
    /// Host entities only on nodes with this role; other nodes run a proxy. Default: all
    /// nodes host.
    pub role: Option<String>,
    /// Messages a region buffers while shard homes are unknown (over all shards). Default
    /// 100 000; beyond it messages are dropped and counted.
    pub buffer_size: usize,
    /// Passivate an entity after this long without a message. Default 120 s; `None`: never.
    pub passivation_idle_timeout: Option<Duration>,
    /// At most this many entities per region; the least recently used are passivated.
    /// Default: no limit.
    pub active_entity_limit: Option<usize>,
    /// Messages buffered for one entity while it passivates. Default 1000.
    pub entity_buffer: usize,
    /// Restart an entity's shard's remembered entities wherever the shard starts.
    /// Default false. Turns automatic passivation (idle timeout, entity limit) off, as in
    /// Akka: a passivated entity would be forgotten.
    pub remember_entities: bool,
    /// Remembered entities restarted per second per shard (no storm after a full restart).
    /// Default 100.
    pub remember_entities_starts_per_second: u32,
    /// How long entities of a shard being handed off may take to stop before they are
    /// killed. Default 10 s.
    pub hand_off_timeout: Duration,
    /// How often the coordinator considers rebalancing. Default 10 s.
    pub rebalance_interval: Duration,
    /// How often a region repeats registration and shard-home requests that got no answer.
    /// Default 1 s.
    pub retry_interval: Duration,
    /// How long the coordinator waits after a region's node was removed before it gives the
    /// shards new homes (the other side of a partition stops its entities meanwhile).
    /// Default 3.5 s, the resolver's `stable_after`.
    pub removal_margin: Duration,
    /// The allocation strategy. Default: least shards, with rebalance limits of 20 shards or
    /// 10 % per round.
    pub allocation_strategy: StrategyFactory,
}

impl Default for ShardingSettings {
    fn default() -> Self {
        ShardingSettings {
            number_of_shards: DEFAULT_NUMBER_OF_SHARDS,
            role: None,
            buffer_size: 100_000,
            passivation_idle_timeout: Some(Duration::from_secs(120)),
            active_entity_limit: None,
            entity_buffer: 1000,
            remember_entities: false,
            remember_entities_starts_per_second: 100,
            hand_off_timeout: Duration::from_secs(10),
            rebalance_interval: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            removal_margin: Duration::from_millis(3500),
            allocation_strategy: Arc::new(|| Box::new(LeastShardAllocationStrategy::default())),
        }
    }
}

impl std::fmt::Debug for ShardingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardingSettings")
            .field("number_of_shards", &self.number_of_shards)
            .field("role", &self.role)
            .field("buffer_size", &self.buffer_size)
            .field("passivation_idle_timeout", &self.passivation_idle_timeout)
            .field("active_entity_limit", &self.active_entity_limit)
            .field("remember_entities", &self.remember_entities)
            .field("hand_off_timeout", &self.hand_off_timeout)
            .field("rebalance_interval", &self.rebalance_interval)
            .field("retry_interval", &self.retry_interval)
            .field("removal_margin", &self.removal_margin)
            .finish_non_exhaustive()
    }
}

impl ShardingSettings {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.number_of_shards == 0 {
            return Err("number_of_shards must be at least 1".into());
        }
        if self.buffer_size == 0 || self.entity_buffer == 0 {
            return Err("buffer_size and entity_buffer must be at least 1".into());
        }
        if self.active_entity_limit == Some(0) {
            return Err("active_entity_limit must be at least 1 (or None)".into());
        }
        if self.retry_interval.is_zero() || self.rebalance_interval.is_zero() {
            return Err("retry_interval and rebalance_interval must be positive".into());
        }
        if self.remember_entities && self.remember_entities_starts_per_second == 0 {
            return Err("remember_entities_starts_per_second must be at least 1".into());
        }
        Ok(())
    }
}
