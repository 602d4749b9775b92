//! The shard coordinator: one per entity type, run as a cluster singleton. Its decisions are
//! events in the journal, fenced by sequence number, so a second coordinator (a split brain,
//! or a stale one during hand-over) cannot persist and stops.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{Actor, ActorError, Context};
use shoal_cluster::{ClusterState, MemberStatus};
use shoal_persistence::store::{
    AtomicWrite, EventRecord, PersistenceId, Store, StoreError, now_millis,
};
use shoal_remote::Remote;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::allocation::{Allocations, ShardAllocationStrategy};
use crate::coordinator_state::{CoordinatorEvent, CoordinatorState};
use crate::protocol::{CoordinatorMessage, CoordinatorView, Names, RegionMessage};
use crate::settings::ShardingSettings;
use crate::{RegionId, ShardId};

/// The journal's entity type for coordinator logs; the entity id is the sharded type name.
pub(crate) const COORDINATOR_LOG_TYPE: &str = "shoal-sharding-coordinator";
const MANIFEST: &str = "CoordinatorEvent";
const TICK: Duration = Duration::from_millis(200);
const REPLAY_PAGE: usize = 10_000;

/// A shard on its way to a new home.
#[derive(Debug)]
struct HandOff {
    owner: RegionId,
    acks_pending: BTreeSet<RegionId>,
    stop_sent: bool,
    started: Instant,
}

pub(crate) struct Coordinator<M> {
    type_name: String,
    names: Names,
    remote: Remote,
    store: Arc<dyn Store>,
    cluster: watch::Receiver<ClusterState>,
    settings: Arc<ShardingSettings>,
    writer_id: String,
    strategy: Box<dyn ShardAllocationStrategy>,
    pid: PersistenceId,
    seq_nr: u64,
    state: CoordinatorState,
    leaving: BTreeSet<RegionId>,
    gone_since: BTreeMap<RegionId, Instant>,
    rebalancing: BTreeMap<ShardId, HandOff>,
    last_rebalance: Instant,
    _message: PhantomData<fn() -> M>,
}

impl<M> Coordinator<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(
        type_name: &str,
        remote: Remote,
        store: Arc<dyn Store>,
        cluster: watch::Receiver<ClusterState>,
        settings: Arc<ShardingSettings>,
    ) -> Self {
        let strategy = (settings.allocation_strategy)();
        Coordinator {
            type_name: type_name.to_owned(),
            names: Names::new(type_name),
            writer_id: format!("coordinator@{}", remote.local()),
            remote,
            store,
            cluster,
            settings,
            strategy,
            pid: PersistenceId::of(COORDINATOR_LOG_TYPE, type_name)
                .expect("type names are checked by Sharding::init"),
            seq_nr: 0,
            state: CoordinatorState::new(),
            leaving: BTreeSet::new(),
            gone_since: BTreeMap::new(),
            rebalancing: BTreeMap::new(),
            last_rebalance: Instant::now(),
            _message: PhantomData,
        }
    }

    async fn recover(&mut self) -> Result<(), StoreError> {
        let mut state = CoordinatorState::new();
        let mut seq_nr = 0;
        loop {
            let page = self
                .store
                .replay(self.pid.clone(), seq_nr + 1, u64::MAX, REPLAY_PAGE)
                .await?;
            let last = page.len() < REPLAY_PAGE;
            for record in page {
                let event: CoordinatorEvent = serde_json::from_slice(&record.payload)
                    .map_err(|e| StoreError::Corrupt(format!("coordinator event: {e}")))?;
                if let Err(e) = state.apply(&event) {
                    // A stored decision that cannot apply: keep going (it changed nothing).
                    tracing::error!(seq_nr = record.seq_nr, error = %e, "stored coordinator event does not apply");
                }
                seq_nr = record.seq_nr;
            }
            if last {
                break;
            }
        }
        // Deleted events still count for the fence.
        self.seq_nr = self
            .store
            .highest_seq_nr(self.pid.clone())
            .await?
            .max(seq_nr);
        self.state = state;
        Ok(())
    }

    /// Persist `event` (fenced) and apply it. `Ok(false)`: the event does not apply now
    /// (nothing written).
    async fn persist(&mut self, event: CoordinatorEvent) -> Result<bool, ActorError> {
        if self.state.validate(&event).is_err() {
            return Ok(false);
        }
        let payload = serde_json::to_vec(&event).map_err(|e| ActorError::new(e.to_string()))?;
        let write = AtomicWrite {
            persistence_id: self.pid.clone(),
            expected_seq_nr: self.seq_nr,
            events: vec![EventRecord {
                seq_nr: self.seq_nr + 1,
                manifest: MANIFEST.to_owned(),
                schema_version: 1,
                payload,
                tags: Vec::new(),
                writer_id: self.writer_id.clone(),
                timestamp_ms: now_millis(),
            }],
        };
        match self.store.append(write).await {
            Ok(()) => {
                self.seq_nr += 1;
                self.state.apply(&event).expect("validated above");
                Ok(true)
            }
            Err(e) => Err(ActorError::new(format!(
                "coordinator of {} could not persist {event:?}: {e}",
                self.type_name
            ))),
        }
    }

    fn to_region(&self, region: RegionId, message: RegionMessage<M>) {
        let target = self
            .remote
            .resolve::<RegionMessage<M>>(region, &self.names.region);
        if let Err(e) = target.tell(message) {
            tracing::debug!(%region, reason = %e.reason, "coordinator message to region not sent");
        }
    }

    /// Whether `region`'s node is a member that is not downed.
    fn is_member(&self, region: RegionId) -> bool {
        self.cluster
            .borrow()
            .members
            .iter()
            .any(|m| m.address == region && m.status < MemberStatus::Down)
    }

    /// Regions that must get no new shards: leaving gracefully, or whose node is not `Up`.
    fn unavailable(&self) -> BTreeSet<RegionId> {
        let cluster = self.cluster.borrow();
        let mut out: BTreeSet<RegionId> = self.leaving.clone();
        out.extend(self.gone_since.keys().copied());
        for region in self.state.regions().keys() {
            let up = cluster
                .members
                .iter()
                .any(|m| m.address == *region && m.status == MemberStatus::Up)
                && !cluster.unreachable.contains(region);
            if !up {
                out.insert(*region);
            }
        }
        out
    }

    async fn register(
        &mut self,
        who: RegionId,
        number_of_shards: u32,
        proxy: bool,
    ) -> Result<(), ActorError> {
        if number_of_shards != self.settings.number_of_shards {
            let reason = format!(
                "entity type {:?}: this node uses {number_of_shards} shards, the cluster {}; \
                 every node must use the same number",
                self.type_name, self.settings.number_of_shards
            );
            tracing::error!(node = %who, "{reason}");
            self.to_region(who, RegionMessage::RegisterRefused { reason });
            return Ok(());
        }
        self.gone_since.remove(&who);
        let event = if proxy {
            CoordinatorEvent::RegionProxyRegistered { proxy: who }
        } else {
            CoordinatorEvent::RegionRegistered { region: who }
        };
        let known = self.state.regions().contains_key(&who) || self.state.proxies().contains(&who);
        if !known {
            self.persist(event).await?;
        }
        self.to_region(who, RegionMessage::RegisterAck);
        Ok(())
    }

    async fn get_shard_home(&mut self, shard: ShardId, from: RegionId) -> Result<(), ActorError> {
        if self.rebalancing.contains_key(&shard) {
            return Ok(()); // asked again once the hand-off is over
        }
        if let Some(home) = self.state.home_of(&shard).copied() {
            // A home on a node that is gone is not given out: the asker keeps buffering
            // and asks again until the region is terminated and the shard re-allocated.
            if !self.gone_since.contains_key(&home) && self.is_member(home) {
                self.to_region(
                    from,
                    RegionMessage::ShardHome {
                        shard,
                        region: home,
                    },
                );
            }
            return Ok(());
        }
        let unavailable = self.unavailable();
        let choice = self.strategy.allocate_shard(
            &from,
            &shard,
            Allocations::new(self.state.regions(), &unavailable),
        );
        let Some(region) =
            choice.filter(|r| self.state.regions().contains_key(r) && !unavailable.contains(r))
        else {
            tracing::debug!(%shard, "no region can host the shard yet");
            return Ok(());
        };
        let allocated = CoordinatorEvent::ShardHomeAllocated {
            shard: shard.clone(),
            region,
        };
        if self.persist(allocated).await? {
            tracing::debug!(%shard, %region, "shard allocated");
            self.to_region(
                region,
                RegionMessage::ShardHome {
                    shard: shard.clone(),
                    region,
                },
            );
            if from != region {
                self.to_region(from, RegionMessage::ShardHome { shard, region });
            }
        }
        Ok(())
    }

    fn begin_hand_off(&mut self, shard: ShardId) {
        let Some(owner) = self.state.home_of(&shard).copied() else {
            return;
        };
        if self.rebalancing.contains_key(&shard) {
            return;
        }
        let recipients: BTreeSet<RegionId> = self
            .state
            .regions()
            .keys()
            .chain(self.state.proxies())
            .filter(|r| !self.gone_since.contains_key(r))
            .copied()
            .collect();
        tracing::debug!(%shard, %owner, "hand-off begins");
        for region in &recipients {
            self.to_region(
                *region,
                RegionMessage::BeginHandOff {
                    shard: shard.clone(),
                },
            );
        }
        let mut hand_off = HandOff {
            owner,
            acks_pending: recipients,
            stop_sent: false,
            started: Instant::now(),
        };
        if hand_off.acks_pending.is_empty() {
            hand_off.stop_sent = true;
            self.to_region(
                owner,
                RegionMessage::HandOff {
                    shard: shard.clone(),
                },
            );
        }
        self.rebalancing.insert(shard, hand_off);
    }

    fn acknowledged(&mut self, shard: &ShardId, from: &RegionId) {
        let Some(hand_off) = self.rebalancing.get_mut(shard) else {
            return;
        };
        hand_off.acks_pending.remove(from);
        if hand_off.acks_pending.is_empty() && !hand_off.stop_sent {
            hand_off.stop_sent = true;
            let owner = hand_off.owner;
            self.to_region(
                owner,
                RegionMessage::HandOff {
                    shard: shard.clone(),
                },
            );
        }
    }

    async fn shard_stopped(&mut self, shard: ShardId, from: RegionId) -> Result<(), ActorError> {
        let owned = self.state.home_of(&shard) == Some(&from);
        if self.rebalancing.remove(&shard).is_some() && owned {
            self.persist(CoordinatorEvent::ShardHomeDeallocated {
                shard: shard.clone(),
            })
            .await?;
            tracing::debug!(%shard, "hand-off complete");
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ActorError> {
        let now = Instant::now();
        // Regions whose node is gone: terminated after the removal margin.
        let members: BTreeMap<RegionId, MemberStatus> = self
            .cluster
            .borrow()
            .members
            .iter()
            .map(|m| (m.address, m.status))
            .collect();
        let known: Vec<(RegionId, bool)> = self
            .state
            .regions()
            .keys()
            .map(|r| (*r, false))
            .chain(self.state.proxies().iter().map(|p| (*p, true)))
            .collect();
        for (region, proxy) in known {
            let gone = members
                .get(&region)
                .is_none_or(|s| *s >= MemberStatus::Down);
            if !gone {
                self.gone_since.remove(&region);
                continue;
            }
            // A member at the same address with another incarnation is that node restarted:
            // the old process is certainly gone (it held the address), no margin to wait.
            let replaced = members
                .keys()
                .any(|m| m.addr == region.addr && m.incarnation != region.incarnation);
            let since = *self.gone_since.entry(region).or_insert(now);
            if now.duration_since(since) < self.settings.removal_margin && !replaced {
                continue;
            }
            let event = if proxy {
                CoordinatorEvent::RegionProxyTerminated { proxy: region }
            } else {
                CoordinatorEvent::RegionTerminated { region }
            };
            tracing::info!(%region, proxy, "region gone: terminated");
            self.persist(event).await?;
            self.gone_since.remove(&region);
            self.leaving.remove(&region);
            for hand_off in self.rebalancing.values_mut() {
                hand_off.acks_pending.remove(&region);
            }
            self.rebalancing.retain(|_, h| h.owner != region);
            let shards: Vec<ShardId> = self
                .rebalancing
                .iter()
                .filter(|(_, h)| h.acks_pending.is_empty() && !h.stop_sent)
                .map(|(s, _)| s.clone())
                .collect();
            for shard in shards {
                self.acknowledged(&shard, &region);
            }
        }
        // Hand-offs that took too long: given up (the shard stays where it was).
        let limit = self.settings.hand_off_timeout * 2;
        self.rebalancing.retain(|shard, h| {
            let keep = now.duration_since(h.started) < limit;
            if !keep {
                tracing::warn!(%shard, owner = %h.owner, "hand-off timed out: the shard stays");
            }
            keep
        });
        // Shards of gracefully leaving regions move at once; others by the strategy.
        let leaving_shards: Vec<ShardId> = self
            .leaving
            .iter()
            .filter_map(|r| self.state.shards_of(r))
            .flatten()
            .cloned()
            .collect();
        for shard in leaving_shards {
            self.begin_hand_off(shard);
        }
        if self.settings.remember_entities {
            self.allocate_unallocated().await?;
        }
        if now.duration_since(self.last_rebalance) >= self.settings.rebalance_interval {
            self.last_rebalance = now;
            let unavailable = self.unavailable();
            let in_progress: BTreeSet<ShardId> = self.rebalancing.keys().cloned().collect();
            let shards = self.strategy.rebalance(
                Allocations::new(self.state.regions(), &unavailable),
                &in_progress,
            );
            // Only move shards when some region can take them.
            let has_target = self
                .state
                .regions()
                .keys()
                .any(|r| !unavailable.contains(r));
            if has_target {
                for shard in shards {
                    self.begin_hand_off(shard);
                }
            }
        }
        Ok(())
    }

    /// With remembered entities, shards that lost their home (their region is gone, or
    /// they were handed off) get a new one at once, so that their entities restart without
    /// waiting for a message.
    async fn allocate_unallocated(&mut self) -> Result<(), ActorError> {
        let shards: Vec<ShardId> = self
            .state
            .unallocated()
            .iter()
            .filter(|s| !self.rebalancing.contains_key(*s))
            .cloned()
            .collect();
        for shard in shards {
            let unavailable = self.unavailable();
            let Some(region) = self
                .state
                .regions()
                .keys()
                .find(|r| !unavailable.contains(r))
                .copied()
            else {
                return Ok(());
            };
            // Let the strategy choose; the first available region asks on the shard's behalf.
            self.get_shard_home(shard, region).await?;
        }
        Ok(())
    }

    fn view(&self) -> CoordinatorView {
        CoordinatorView {
            regions: self
                .state
                .regions()
                .iter()
                .map(|(r, s)| (*r, s.iter().cloned().collect()))
                .collect(),
            proxies: self.state.proxies().iter().copied().collect(),
            rebalancing: self.rebalancing.keys().cloned().collect(),
        }
    }
}

impl<M> Actor for Coordinator<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    type Msg = CoordinatorMessage;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.recover()
            .await
            .map_err(|e| ActorError::new(format!("coordinator recovery failed: {e}")))?;
        tracing::info!(type_name = %self.type_name, seq_nr = self.seq_nr,
            regions = self.state.regions().len(), shards = self.state.shard_home().len(),
            "shard coordinator started");
        self.rebalancing.clear();
        self.last_rebalance = Instant::now();
        ctx.start_single_timer("tick", CoordinatorMessage::Tick, TICK);
        Ok(())
    }

    async fn handle(
        &mut self,
        ctx: &mut Context<Self>,
        msg: CoordinatorMessage,
    ) -> Result<(), ActorError> {
        match msg {
            CoordinatorMessage::Register {
                region,
                number_of_shards,
            } => self.register(region, number_of_shards, false).await,
            CoordinatorMessage::RegisterProxy {
                proxy,
                number_of_shards,
            } => self.register(proxy, number_of_shards, true).await,
            CoordinatorMessage::GetShardHome { shard, from } => {
                self.get_shard_home(shard, from).await
            }
            CoordinatorMessage::BeginHandOffAck { shard, from } => {
                self.acknowledged(&shard, &from);
                Ok(())
            }
            CoordinatorMessage::ShardStopped { shard, from } => {
                self.shard_stopped(shard, from).await
            }
            CoordinatorMessage::GracefulShutdown { region } => {
                if self.state.regions().contains_key(&region) && self.leaving.insert(region) {
                    tracing::info!(%region, "region leaving: handing off its shards");
                    let shards: Vec<ShardId> = self
                        .state
                        .shards_of(&region)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default();
                    for shard in shards {
                        self.begin_hand_off(shard);
                    }
                }
                Ok(())
            }
            CoordinatorMessage::GetState(reply) => {
                reply.send(self.view());
                Ok(())
            }
            CoordinatorMessage::Tick => {
                ctx.start_single_timer("tick", CoordinatorMessage::Tick, TICK);
                self.tick().await
            }
        }
    }
}
