//! The shard region: one task per entity type per node. It routes each message to the
//! shard's home (here, or another node's region), learns homes from the coordinator,
//! buffers while a home is unknown or moving, hosts the shards allocated here, and hands
//! them off when the coordinator says so.
//!
//! **Direct routes.** Once a shard is running here and nothing for it waits in the region,
//! the region publishes the shard's handle in [`LocalRoutes`]: this node's entity refs then
//! hand their messages to the shard themselves, one task hop fewer. A sender's messages
//! keep their order across the switch: the region publishes a route only while holding the
//! routes' write lock and after handling everything already in its input queue, so a message
//! sent through the region always reaches the shard's queue before any message the same
//! sender sends directly afterwards. A route is withdrawn (under the same lock) before the
//! shard begins a hand-off or stops; messages that went directly before are in the shard's
//! queue and are delivered before the entities' stop message, those after go through the
//! region and wait for the new home.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::ActorSystem;
use shoal_cluster::{ClusterState, MemberStatus, SingletonProxy};
use shoal_remote::{Remote, RemoteInbox};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::protocol::{CoordinatorMessage, Names, RegionMessage, RegionStats};
use crate::settings::ShardingSettings;
use crate::shard::{EntityFactory, ShardHandle, ShardSettings};
use crate::shard_id::ShardExtractor;
use crate::{EntityId, RegionId, ShardId};

/// Checks an entity id before anything is started for it.
pub(crate) type ValidateId = Arc<dyn Fn(&EntityId) -> Result<(), String> + Send + Sync>;

/// What the node's own handles send to its region.
pub(crate) enum RegionInput<M> {
    Deliver(EntityId, M),
    Stats(oneshot::Sender<RegionStats>),
    /// Hand off every shard (graceful leave); answered once none is hosted here.
    Shutdown(oneshot::Sender<()>),
}

/// The shards hosted on this node that the node's entity refs may deliver to directly (see
/// the module docs). Written by the region only.
pub(crate) type LocalRoutes<M> = Arc<RwLock<HashMap<ShardId, ShardHandle<M>>>>;

/// Inputs handled per wake-up of the region before it looks at its other sources again.
const DRAIN_BATCH: usize = 64;

/// Most inputs [`Region::publish`] handles while senders wait on the routes' write lock.
const PUBLISH_DRAIN: usize = 1024;

/// Counters shared with the handles.
#[derive(Debug, Default)]
pub(crate) struct RegionCounters {
    pub(crate) dropped: AtomicU64,
    pub(crate) refused: std::sync::Mutex<Option<String>>,
}

pub(crate) struct Region<M> {
    pub(crate) me: RegionId,
    pub(crate) type_name: String,
    pub(crate) names: Names,
    /// Hosts shards (false: a proxy).
    pub(crate) hosts: bool,
    pub(crate) remote: Remote,
    pub(crate) system: ActorSystem,
    pub(crate) settings: Arc<ShardingSettings>,
    pub(crate) extractor: Arc<dyn ShardExtractor>,
    pub(crate) validate: Option<ValidateId>,
    pub(crate) factory: EntityFactory<M>,
    pub(crate) shard_settings: ShardSettings<M>,
    pub(crate) coordinator: SingletonProxy<CoordinatorMessage>,
    pub(crate) cluster: watch::Receiver<ClusterState>,
    pub(crate) counters: Arc<RegionCounters>,
    pub(crate) routes: LocalRoutes<M>,
}

struct Routing<M> {
    homes: BTreeMap<ShardId, RegionId>,
    shards: BTreeMap<ShardId, ShardHandle<M>>,
    /// Shards of this region being stopped for a hand-off.
    stopping: BTreeSet<ShardId>,
    buffers: BTreeMap<ShardId, VecDeque<(EntityId, M)>>,
    buffered: usize,
    requested: BTreeMap<ShardId, Instant>,
    registered: bool,
    last_register: Option<Instant>,
    refused: Option<String>,
    shutting_down: Vec<oneshot::Sender<()>>,
    leaving: bool,
    last_leave_request: Option<Instant>,
    terminated: bool,
    warned_drop: bool,
    /// Shards whose direct route is published.
    published: BTreeSet<ShardId>,
    /// Shards that started taking messages here and may get a direct route.
    to_publish: BTreeSet<ShardId>,
}

impl<M> Region<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) async fn run(
        mut self,
        mut local: mpsc::Receiver<RegionInput<M>>,
        mut inbox: RemoteInbox<RegionMessage<M>>,
    ) {
        let mut r = Routing {
            homes: BTreeMap::new(),
            shards: BTreeMap::new(),
            stopping: BTreeSet::new(),
            buffers: BTreeMap::new(),
            buffered: 0,
            requested: BTreeMap::new(),
            registered: false,
            last_register: None,
            refused: None,
            shutting_down: Vec::new(),
            leaving: false,
            last_leave_request: None,
            terminated: false,
            warned_drop: false,
            published: BTreeSet::new(),
            to_publish: BTreeSet::new(),
        };
        let (stopped_tx, mut stopped_rx) = mpsc::unbounded_channel::<ShardId>();
        let mut tick = tokio::time::interval(self.settings.retry_interval / 4);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut cluster_open = true;
        loop {
            tokio::select! {
                input = local.recv() => match input {
                    Some(input) => {
                        self.local_input(&mut r, input);
                        // Whatever else is queued, before the next select.
                        for _ in 1..DRAIN_BATCH {
                            match local.try_recv() {
                                Ok(input) => self.local_input(&mut r, input),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                message = inbox.recv() => match message {
                    Some((_from, message)) => self.received(&mut r, message, &stopped_tx),
                    None => break,
                },
                Some(shard) = stopped_rx.recv() => {
                    self.withdraw(&mut r, &shard);
                    r.stopping.remove(&shard);
                    r.shards.remove(&shard);
                    self.spread_entity_limit(&r);
                    self.to_coordinator(CoordinatorMessage::ShardStopped { shard: shard.clone(), from: self.me });
                    tracing::debug!(%shard, "shard handed off");
                    // Messages that arrived meanwhile wait for the new home.
                    if r.buffers.contains_key(&shard) {
                        self.request_home(&mut r, &shard, true);
                    }
                }
                changed = self.cluster.changed(), if cluster_open => {
                    if changed.is_err() {
                        cluster_open = false;
                    }
                    self.cluster_changed(&mut r, !cluster_open, &stopped_tx);
                }
                _ = tick.tick() => self.tick(&mut r),
            }
            if r.leaving && r.shards.is_empty() && r.stopping.is_empty() {
                for done in r.shutting_down.drain(..) {
                    let _ = done.send(());
                }
            }
            if !r.to_publish.is_empty() {
                self.publish(&mut r, &mut local);
            }
        }
        self.withdraw_all(&mut r);
        for (_, shard) in std::mem::take(&mut r.shards) {
            shard.hand_off().await;
        }
    }

    fn local_input(&self, r: &mut Routing<M>, input: RegionInput<M>) {
        match input {
            RegionInput::Deliver(entity_id, msg) => self.deliver(r, entity_id, msg),
            RegionInput::Stats(reply) => {
                let _ = reply.send(self.stats(r));
            }
            RegionInput::Shutdown(done) => {
                r.leaving = true;
                r.shutting_down.push(done);
                self.request_leave(r);
            }
        }
    }

    /// Publishes the direct routes of `r.to_publish` that qualify. Holds the write lock while
    /// it first handles every input already queued: whatever a sender sent through the region
    /// before is then in the shard's queue ahead of anything it sends directly. Senders wait
    /// on that lock, so it handles at most [`PUBLISH_DRAIN`] inputs; if more are queued it
    /// publishes nothing now and tries again after the next wake-up.
    fn publish(&self, r: &mut Routing<M>, local: &mut mpsc::Receiver<RegionInput<M>>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        // Every send happens under the read lock, so none is half done: empty means empty.
        let mut handled = 0;
        while let Ok(input) = local.try_recv() {
            self.local_input(r, input);
            handled += 1;
            if handled == PUBLISH_DRAIN {
                return;
            }
        }
        for shard in std::mem::take(&mut r.to_publish) {
            let qualifies = !r.terminated
                && r.refused.is_none()
                && r.homes.get(&shard) == Some(&self.me)
                && !r.stopping.contains(&shard)
                && !r.buffers.contains_key(&shard);
            if let Some(handle) = r.shards.get(&shard).filter(|_| qualifies) {
                routes.insert(shard.clone(), handle.clone());
                r.published.insert(shard);
            }
        }
    }

    /// Withdraws `shard`'s direct route: later messages go through the region.
    fn withdraw(&self, r: &mut Routing<M>, shard: &ShardId) {
        r.to_publish.remove(shard);
        if r.published.remove(shard) {
            self.routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(shard);
        }
    }

    fn withdraw_all(&self, r: &mut Routing<M>) {
        r.to_publish.clear();
        r.published.clear();
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Routes one message. Its entity id is valid: checked by `ShardRegion::entity_ref` for
    /// this node's senders, by [`Self::received`] for other regions'.
    fn deliver(&self, r: &mut Routing<M>, entity_id: EntityId, msg: M) {
        if let Some(reason) = &r.refused {
            tracing::debug!(%entity_id, reason, "region refused by the coordinator: message dropped");
            self.drop_one(r, "the coordinator refused this region");
            return;
        }
        let shard = self.extractor.shard_id(&entity_id);
        match r.homes.get(&shard).copied() {
            Some(home) if home == self.me => self.deliver_here(r, shard, entity_id, msg),
            Some(home) => {
                let target = self
                    .remote
                    .resolve::<RegionMessage<M>>(home, &self.names.region);
                if let Err(e) = target.tell(RegionMessage::Deliver {
                    entity_id,
                    message: msg,
                }) {
                    match e.reason {
                        reason if reason.is_full() => {
                            self.drop_one(r, "the home region's queue is full");
                        }
                        reason => {
                            // That home is gone: ask again, keep the message.
                            tracing::debug!(%shard, %home, %reason, "home region unreachable");
                            r.homes.remove(&shard);
                            let RegionMessage::Deliver { entity_id, message } = e.message else {
                                unreachable!("we sent a Deliver");
                            };
                            self.buffer(r, shard, entity_id, message);
                        }
                    }
                }
            }
            None => self.buffer(r, shard, entity_id, msg),
        }
    }

    fn deliver_here(&self, r: &mut Routing<M>, shard: ShardId, entity_id: EntityId, msg: M) {
        if r.stopping.contains(&shard) || r.terminated {
            self.buffer(r, shard, entity_id, msg);
            return;
        }
        self.ensure_shard(r, &shard);
        if r.shards[&shard].deliver(entity_id, msg).is_err() {
            self.drop_one(r, "the shard refused the message");
        } else if !r.published.contains(&shard) {
            r.to_publish.insert(shard);
        }
    }

    /// Start hosting `shard` here if it is not running yet.
    fn ensure_shard(&self, r: &mut Routing<M>, shard: &ShardId) {
        if r.shards.contains_key(shard) {
            return;
        }
        tracing::debug!(%shard, "shard started");
        let handle = ShardHandle::start(
            shard.clone(),
            self.shard_settings.clone(),
            self.factory.clone(),
            self.system.clone(),
        );
        r.shards.insert(shard.clone(), handle);
        self.spread_entity_limit(r);
    }

    /// The active-entity limit is per region: each shard gets an equal part.
    fn spread_entity_limit(&self, r: &Routing<M>) {
        let Some(limit) = self.shard_settings.active_entity_limit else {
            return;
        };
        let per_shard = limit.div_ceil(r.shards.len().max(1)).max(1);
        for handle in r.shards.values() {
            handle.set_active_entity_limit(Some(per_shard));
        }
    }

    fn buffer(&self, r: &mut Routing<M>, shard: ShardId, entity_id: EntityId, msg: M) {
        if r.buffered >= self.settings.buffer_size {
            self.drop_one(r, "the region's buffer is full");
            return;
        }
        r.buffered += 1;
        r.buffers
            .entry(shard.clone())
            .or_default()
            .push_back((entity_id, msg));
        self.request_home(r, &shard, false);
    }

    fn request_home(&self, r: &mut Routing<M>, shard: &ShardId, force: bool) {
        if r.stopping.contains(shard) {
            return;
        }
        let now = Instant::now();
        let due = force
            || r.requested
                .get(shard)
                .is_none_or(|at| now.duration_since(*at) >= self.settings.retry_interval);
        if due {
            r.requested.insert(shard.clone(), now);
            self.to_coordinator(CoordinatorMessage::GetShardHome {
                shard: shard.clone(),
                from: self.me,
            });
        }
    }

    fn flush(&self, r: &mut Routing<M>, shard: &ShardId) {
        if let Some(buffer) = r.buffers.remove(shard) {
            r.buffered -= buffer.len();
            r.requested.remove(shard);
            for (entity_id, msg) in buffer {
                self.deliver(r, entity_id, msg);
            }
        }
    }

    fn received(
        &self,
        r: &mut Routing<M>,
        message: RegionMessage<M>,
        stopped: &mpsc::UnboundedSender<ShardId>,
    ) {
        match message {
            RegionMessage::Deliver { entity_id, message } => {
                if let Some(validate) = &self.validate
                    && let Err(reason) = validate(&entity_id)
                {
                    tracing::warn!(%entity_id, reason, "invalid entity id: message dropped");
                    self.drop_one(r, "invalid entity id");
                    return;
                }
                self.deliver(r, entity_id, message);
            }
            RegionMessage::RegisterAck => {
                if !r.registered {
                    tracing::debug!(type_name = %self.type_name, "region registered");
                }
                r.registered = true;
                // Ask again for everything buffered (the coordinator may be new).
                let shards: Vec<ShardId> = r.buffers.keys().cloned().collect();
                for shard in shards {
                    self.request_home(r, &shard, true);
                }
            }
            RegionMessage::RegisterRefused { reason } => {
                tracing::error!(type_name = %self.type_name, reason, "sharding region refused");
                *self
                    .counters
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                r.refused = Some(reason);
                self.withdraw_all(r);
            }
            RegionMessage::ShardHome { shard, region } => {
                if region == self.me && !self.hosts {
                    tracing::warn!(%shard, "a proxy was given a shard: ignored");
                    return;
                }
                if region != self.me {
                    // Not (or no longer) here: nothing may go to a local instance directly.
                    self.withdraw(r, &shard);
                }
                if region != self.me && !self.is_member(region) {
                    // A home on a node that is not (or no longer) a member, e.g. a previous
                    // incarnation recovered from the coordinator's log: not cached (nothing
                    // would ever forget it); the messages stay buffered and the home is asked
                    // for again until the coordinator has given the shard a live home.
                    tracing::debug!(%shard, %region, "shard home on a non-member: asking again");
                    return;
                }
                r.homes.insert(shard.clone(), region);
                if region == self.me && self.shard_settings.remember.is_some() && !r.terminated {
                    // Remembered entities restart as soon as their shard has a home.
                    self.ensure_shard(r, &shard);
                }
                self.flush(r, &shard);
            }
            RegionMessage::BeginHandOff { shard } => {
                self.withdraw(r, &shard);
                r.homes.remove(&shard);
                self.to_coordinator(CoordinatorMessage::BeginHandOffAck {
                    shard,
                    from: self.me,
                });
            }
            RegionMessage::HandOff { shard } => {
                self.withdraw(r, &shard);
                r.homes.remove(&shard);
                match r.shards.get(&shard) {
                    Some(handle) if r.stopping.insert(shard.clone()) => {
                        let (handle, stopped) = (handle.clone(), stopped.clone());
                        tokio::spawn(async move {
                            handle.hand_off().await;
                            let _ = stopped.send(shard);
                        });
                    }
                    Some(_) => {} // already stopping
                    None => self.to_coordinator(CoordinatorMessage::ShardStopped {
                        shard,
                        from: self.me,
                    }),
                }
            }
            RegionMessage::GetStats(reply) => {
                reply.send(self.stats(r));
            }
        }
    }

    /// Whether `region`'s node is a member that is not down (as this node sees it).
    fn is_member(&self, region: RegionId) -> bool {
        self.cluster
            .borrow()
            .members
            .iter()
            .any(|m| m.address == region && m.status < MemberStatus::Down)
    }

    fn stats(&self, r: &Routing<M>) -> RegionStats {
        RegionStats {
            shards: r
                .shards
                .iter()
                .map(|(s, h)| (s.clone(), h.entity_count()))
                .collect(),
        }
    }

    fn cluster_changed(
        &self,
        r: &mut Routing<M>,
        closed: bool,
        stopped: &mpsc::UnboundedSender<ShardId>,
    ) {
        let (status, members): (Option<MemberStatus>, BTreeSet<RegionId>) = {
            let state = self.cluster.borrow();
            let status = if closed || state.terminated {
                Some(MemberStatus::Removed)
            } else {
                state.self_status
            };
            let members = state
                .members
                .iter()
                .filter(|m| m.status < MemberStatus::Down)
                .map(|m| m.address)
                .collect();
            (status, members)
        };
        // Homes on nodes that are gone: forget them (messages buffer until re-allocated).
        r.homes
            .retain(|_, home| members.contains(home) || *home == self.me);
        match status {
            Some(MemberStatus::Leaving | MemberStatus::Exiting) if self.hosts && !r.leaving => {
                r.leaving = true;
                self.request_leave(r);
            }
            Some(MemberStatus::Down | MemberStatus::Removed) if !r.terminated => {
                // A downed node stops its own work at once.
                r.terminated = true;
                tracing::info!(type_name = %self.type_name, shards = r.shards.len(),
                    "node downed or removed: stopping every shard here");
                self.withdraw_all(r);
                r.homes.clear();
                let shards: Vec<ShardId> = r.shards.keys().cloned().collect();
                for shard in shards {
                    if r.stopping.insert(shard.clone()) {
                        let handle = r.shards[&shard].clone();
                        let stopped = stopped.clone();
                        tokio::spawn(async move {
                            handle.hand_off().await;
                            let _ = stopped.send(shard);
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn request_leave(&self, r: &mut Routing<M>) {
        if self.hosts {
            r.last_leave_request = Some(Instant::now());
            self.to_coordinator(CoordinatorMessage::GracefulShutdown { region: self.me });
        }
    }

    fn tick(&self, r: &mut Routing<M>) {
        let now = Instant::now();
        if r.terminated {
            return;
        }
        if !r.registered
            && r.refused.is_none()
            && r.last_register
                .is_none_or(|at| now.duration_since(at) >= self.settings.retry_interval)
        {
            r.last_register = Some(now);
            let number_of_shards = self.settings.number_of_shards;
            self.to_coordinator(if self.hosts {
                CoordinatorMessage::Register {
                    region: self.me,
                    number_of_shards,
                }
            } else {
                CoordinatorMessage::RegisterProxy {
                    proxy: self.me,
                    number_of_shards,
                }
            });
        }
        if r.registered {
            let shards: Vec<ShardId> = r.buffers.keys().cloned().collect();
            for shard in shards {
                self.request_home(r, &shard, false);
            }
        }
        if r.leaving
            && !r.shards.is_empty()
            && r.last_leave_request
                .is_none_or(|at| now.duration_since(at) >= self.settings.retry_interval)
        {
            self.request_leave(r);
        }
    }

    fn to_coordinator(&self, message: CoordinatorMessage) {
        if self.coordinator.tell(message).is_err() {
            tracing::debug!("coordinator proxy full: message dropped (it is repeated)");
        }
    }

    fn drop_one(&self, r: &mut Routing<M>, why: &str) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if !r.warned_drop {
            r.warned_drop = true;
            tracing::warn!(type_name = %self.type_name, why,
                "sharding region dropped a message (logged once, counted)");
        } else {
            tracing::debug!(type_name = %self.type_name, why, "sharding region dropped a message");
        }
    }
}
