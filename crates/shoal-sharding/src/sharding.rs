//! The public API: [`Sharding`] (one per node), [`Entity`] (an entity type's definition),
//! [`ShardRegion`] (the node's handle for one type) and [`EntityRef`] (one entity, anywhere).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{Actor, ActorSystem, AskError, Backoff, Props, SupervisorStrategy, TellError};
use shoal_cluster::{Cluster, ClusterSingleton, SingletonProxy, SingletonSettings};
use shoal_persistence::store::{PersistenceId, Store};
use shoal_persistence::{EntitySettings, EventSourced, Persistence};
use shoal_remote::{RegisterError, Remote, RemoteReplyTo};
use tokio::sync::{mpsc, oneshot};

use crate::coordinator::{COORDINATOR_LOG_TYPE, Coordinator};
use crate::protocol::{CoordinatorMessage, CoordinatorView, Names, RegionMessage, RegionStats};
use crate::region::{LocalRoutes, Region, RegionCounters, RegionInput, ValidateId};
use crate::settings::ShardingSettings;
use crate::shard::{Direct, EntityContext, EntityFactory, RememberSettings, ShardSettings};
use crate::shard_id::{HashShardExtractor, ShardExtractor};
use crate::{EntityId, IdError, RegionId, ShardId};

/// Capacity of the channel from a node's entity refs to its region.
const REGION_INPUT: usize = 16_384;

/// Why an entity type could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ShardingError {
    /// The settings cannot work.
    #[error("sharding of {type_name:?}: {reason}")]
    InvalidSettings {
        /// The entity type.
        type_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The type was already started on this node, or a name is taken on the Remote.
    #[error("sharding of {type_name:?}: {source}")]
    Register {
        /// The entity type.
        type_name: String,
        /// What the Remote said.
        source: RegisterError,
    },
    /// The coordinator singleton could not be started.
    #[error("sharding of {type_name:?}: {reason}")]
    Coordinator {
        /// The entity type.
        type_name: String,
        /// Why.
        reason: String,
    },
}

/// Why an [`EntityRef`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityRefError {
    /// The entity id is empty.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The entity type refuses this id (e.g. too long for a persistence id).
    #[error("invalid entity id: {0}")]
    Invalid(String),
}

/// The definition of one sharded entity type: its name, how to start an entity, settings.
pub struct Entity<M> {
    type_name: String,
    factory: EntityFactory<M>,
    validate: Option<ValidateId>,
    stop_message: Option<Arc<dyn Fn() -> M + Send + Sync>>,
    extractor: Option<Arc<dyn ShardExtractor>>,
    settings: ShardingSettings,
}

impl<M: Send + 'static> Entity<M> {
    /// Entities of `type_name` made by `behavior` (called for every incarnation; the context
    /// carries the entity id and lets the entity ask for passivation).
    pub fn new<A>(
        type_name: impl Into<String>,
        behavior: impl Fn(EntityContext<M>) -> Props<A> + Send + Sync + 'static,
    ) -> Self
    where
        A: Actor<Msg = M>,
    {
        let type_name = type_name.into();
        let prefix = type_name.clone();
        let factory: EntityFactory<M> =
            Arc::new(move |system: &ActorSystem, ctx: EntityContext<M>| {
                let name = format!("{prefix}.{}", ctx.entity_id());
                system.spawn(&name, behavior(ctx))
            });
        Entity {
            type_name,
            factory,
            validate: None,
            stop_message: None,
            extractor: None,
            settings: ShardingSettings::default(),
        }
    }

    /// Event-sourced entities of type `E` (its `TYPE_NAME` names the sharded type): each
    /// recovers from `persistence`'s journal when it starts, wherever its shard lives, and the
    /// journal's fence keeps a second incarnation from writing.
    pub fn event_sourced<E>(
        persistence: &Persistence,
        behavior: impl Fn(&EntityContext<M>) -> E + Send + Sync + 'static,
        entity_settings: EntitySettings,
    ) -> Self
    where
        E: EventSourced<Command = M>,
    {
        let type_name = E::TYPE_NAME.to_owned();
        let persistence = persistence.clone();
        let behavior = Arc::new(behavior);
        let factory: EntityFactory<M> =
            Arc::new(move |system: &ActorSystem, ctx: EntityContext<M>| {
                let name = format!("{}.{}", E::TYPE_NAME, ctx.entity_id());
                let (b, c) = (behavior.clone(), ctx.clone());
                let props = persistence
                    .props::<E>(
                        ctx.entity_id().as_str(),
                        move || b(&c),
                        entity_settings.clone(),
                    )
                    .expect("entity ids are validated before delivery");
                system.spawn(&name, props)
            });
        Entity {
            type_name,
            factory,
            validate: Some(Arc::new(|id: &EntityId| {
                PersistenceId::of(E::TYPE_NAME, id.as_str())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })),
            stop_message: None,
            extractor: None,
            settings: ShardingSettings::default(),
        }
    }

    /// Use these settings.
    pub fn with_settings(mut self, settings: ShardingSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Stop entities (passivation, hand-off) by sending them this message instead of
    /// stopping them from outside; a persistent entity finishes what it is doing first.
    pub fn with_stop_message(mut self, stop: impl Fn() -> M + Send + Sync + 'static) -> Self {
        self.stop_message = Some(Arc::new(stop));
        self
    }

    /// Map entity ids to shards another way (all nodes must use the same extractor).
    pub fn with_extractor(mut self, extractor: impl ShardExtractor + 'static) -> Self {
        self.extractor = Some(Arc::new(extractor));
        self
    }
}

/// Cluster sharding on one node: start entity types with [`init`](Self::init).
#[derive(Clone)]
pub struct Sharding {
    cluster: Cluster,
    remote: Remote,
    system: ActorSystem,
    store: Arc<dyn Store>,
    regions: Arc<Mutex<HashMap<String, RegionEntry>>>,
}

#[derive(Clone)]
struct RegionEntry {
    input: Arc<dyn Any + Send + Sync>,
    stats: mpsc::Sender<RegionInputStats>,
    coordinator: SingletonProxy<CoordinatorMessage>,
}

/// A type-erased stats or shutdown request to a region.
enum RegionInputStats {
    Stats(oneshot::Sender<RegionStats>),
    Shutdown(oneshot::Sender<()>),
}

impl std::fmt::Debug for Sharding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharding")
            .field("node", &self.remote.local())
            .finish_non_exhaustive()
    }
}

impl Sharding {
    /// Sharding on this node: `cluster` for membership, `remote` for messages (the cluster
    /// should run over it: `RemoteLink`), `system` for entity actors, `store` for the
    /// coordinators' and remembered entities' logs (shared by all nodes: PostgreSQL in
    /// production).
    pub fn new(
        cluster: &Cluster,
        remote: &Remote,
        system: &ActorSystem,
        store: Arc<dyn Store>,
    ) -> Self {
        Sharding {
            cluster: cluster.clone(),
            remote: remote.clone(),
            system: system.clone(),
            store,
            regions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Start sharding `entity` on this node: a region (if the node has the settings' role)
    /// or a proxy, and the type's coordinator singleton. Every node that sends to the type
    /// calls this, with the same type name and settings.
    pub fn init<M>(&self, entity: Entity<M>) -> Result<ShardRegion<M>, ShardingError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        let Entity {
            type_name,
            factory,
            validate,
            stop_message,
            extractor,
            settings,
        } = entity;
        let invalid = |reason: String| ShardingError::InvalidSettings {
            type_name: type_name.clone(),
            reason,
        };
        settings.validate().map_err(invalid)?;
        PersistenceId::of(COORDINATOR_LOG_TYPE, &type_name)
            .map_err(|e| invalid(format!("type name: {e}")))?;
        if type_name.contains('|') || type_name.len() > 128 {
            return Err(invalid(
                "the type name must not contain '|' or exceed 128 bytes".into(),
            ));
        }
        let extractor = match extractor {
            Some(e) => e,
            None => Arc::new(
                HashShardExtractor::new(settings.number_of_shards)
                    .map_err(|e| invalid(e.to_string()))?,
            ),
        };
        let settings = Arc::new(settings);
        let names = Names::new(&type_name);
        let hosts = settings
            .role
            .as_ref()
            .is_none_or(|r| self.cluster.roles().contains(r));
        let register_error = |source| ShardingError::Register {
            type_name: type_name.clone(),
            source,
        };
        let (_, inbox) = self
            .remote
            .register_channel::<RegionMessage<M>>(&names.region, 65_536)
            .map_err(register_error)?;

        // The coordinator: a singleton on the oldest node of the role.
        let mut singleton = SingletonSettings::new(names.coordinator.clone())
            .with_removal_margin(settings.removal_margin);
        singleton.role = settings.role.clone();
        singleton.buffer_size = 10_000;
        let (remote, store, cluster_state, coordinator_settings, name) = (
            self.remote.clone(),
            self.store.clone(),
            self.cluster.state(),
            settings.clone(),
            type_name.clone(),
        );
        let coordinator = ClusterSingleton::start(
            &self.cluster,
            &self.remote,
            &self.system,
            singleton,
            move || {
                let (remote, store, cluster, settings, name) = (
                    remote.clone(),
                    store.clone(),
                    cluster_state.clone(),
                    coordinator_settings.clone(),
                    name.clone(),
                );
                Props::new(move || {
                    Coordinator::<M>::new(
                        &name,
                        remote.clone(),
                        store.clone(),
                        cluster.clone(),
                        settings.clone(),
                    )
                })
                // A coordinator that cannot read or write the journal retries forever: without
                // it no shard gets a home.
                .with_supervision(SupervisorStrategy::Restart(Backoff {
                    min: Duration::from_millis(200),
                    max: Duration::from_secs(5),
                    max_restarts: u32::MAX,
                    ..Backoff::default()
                }))
            },
        )
        .map_err(|e| ShardingError::Coordinator {
            type_name: type_name.clone(),
            reason: e.to_string(),
        })?;

        let remember = settings.remember_entities.then(|| {
            Arc::new(RememberSettings {
                store: self.store.clone(),
                type_name: type_name.clone(),
                max_starts_per_second: settings.remember_entities_starts_per_second,
            })
        });
        // As in Akka, automatic passivation is off for remembered entities (it would
        // forget them); entities may still ask to be passivated.
        let automatic = !settings.remember_entities;
        let shard_settings = ShardSettings {
            idle_timeout: settings.passivation_idle_timeout.filter(|_| automatic),
            active_entity_limit: settings.active_entity_limit.filter(|_| automatic),
            stop_message,
            hand_off_timeout: settings.hand_off_timeout,
            entity_buffer: settings.entity_buffer,
            remember,
        };
        let counters = Arc::new(RegionCounters::default());
        let routes = LocalRoutes::default();
        let (tx, rx) = mpsc::channel(REGION_INPUT);
        let region = Region {
            me: self.remote.local(),
            type_name: type_name.clone(),
            names,
            hosts,
            remote: self.remote.clone(),
            system: self.system.clone(),
            settings: settings.clone(),
            extractor: extractor.clone(),
            validate: validate.clone(),
            factory,
            shard_settings,
            coordinator: coordinator.clone(),
            cluster: self.cluster.state(),
            counters: counters.clone(),
            routes: routes.clone(),
        };
        let span = tracing::info_span!("region", type_name = %type_name);
        tokio::spawn(tracing::Instrument::instrument(region.run(rx, inbox), span));

        // Type-erased control channel for stats and shutdown.
        let (stats_tx, mut stats_rx) = mpsc::channel::<RegionInputStats>(16);
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(request) = stats_rx.recv().await {
                let input = match request {
                    RegionInputStats::Stats(reply) => RegionInput::Stats(reply),
                    RegionInputStats::Shutdown(done) => RegionInput::Shutdown(done),
                };
                if forward.send(input).await.is_err() {
                    break;
                }
            }
        });
        let handle = ShardRegion {
            inner: Arc::new(RegionHandle {
                type_name: type_name.clone(),
                tx,
                remote: self.remote.clone(),
                validate,
                extractor,
                counters,
                routes,
            }),
        };
        self.regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                type_name,
                RegionEntry {
                    input: Arc::new(handle.clone()),
                    stats: stats_tx,
                    coordinator,
                },
            );
        Ok(handle)
    }

    /// The region handle of a type started with [`init`](Self::init) on this node.
    pub fn region<M>(&self, type_name: &str) -> Option<ShardRegion<M>>
    where
        M: Send + 'static,
    {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = regions.get(type_name)?;
        entry.input.downcast_ref::<ShardRegion<M>>().cloned()
    }

    /// The entity types started on this node.
    pub fn type_names(&self) -> Vec<String> {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = regions.keys().cloned().collect();
        names.sort();
        names
    }

    /// Where the shards of `type_name` live and how many entities run in each, asked from
    /// the coordinator and then from every region (for `GET /cluster/shards/{type}`).
    pub async fn shard_distribution(
        &self,
        type_name: &str,
        timeout: Duration,
    ) -> Result<Vec<RegionShards>, AskError> {
        let coordinator = {
            let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = regions.get(type_name) else {
                return Err(AskError::Failed(format!(
                    "no entity type {type_name:?} on this node"
                )));
            };
            entry.coordinator.clone()
        };
        let view: CoordinatorView = coordinator
            .ask(CoordinatorMessage::GetState, timeout)
            .await?;
        let names = Names::new(type_name);
        // Every region is asked at once: an unreachable one costs one timeout, not one each.
        // The region answers stats whatever its message type: the request has no body of
        // the entity's type, so it encodes the same for every `RegionMessage<M>`.
        let asks = view.regions.iter().map(|(region, _)| {
            let target = self
                .remote
                .resolve::<RegionMessage<()>>(*region, &names.region);
            async move {
                self.region_stats(type_name, *region, &target, timeout)
                    .await
            }
        });
        let stats = futures_util::future::join_all(asks).await;
        let out = view
            .regions
            .into_iter()
            .zip(stats)
            .map(|((region, shards), stats)| RegionShards {
                region,
                shards: shards
                    .into_iter()
                    .map(|s| {
                        let entities = stats.as_ref().and_then(|st| st.shards.get(&s).copied());
                        (s, entities)
                    })
                    .collect(),
                reachable: stats.is_some(),
            })
            .collect();
        Ok(out)
    }

    async fn region_stats(
        &self,
        type_name: &str,
        region: RegionId,
        target: &shoal_remote::RemoteRef<RegionMessage<()>>,
        timeout: Duration,
    ) -> Option<RegionStats> {
        if region == self.remote.local() {
            let stats = {
                let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
                regions.get(type_name)?.stats.clone()
            };
            let (tx, rx) = oneshot::channel();
            stats.send(RegionInputStats::Stats(tx)).await.ok()?;
            return tokio::time::timeout(timeout, rx).await.ok()?.ok();
        }
        target.ask(RegionMessage::GetStats, timeout).await.ok()
    }

    /// Hand off every shard hosted on this node (all types) and wait until none is left or
    /// `timeout` passes; call it before leaving the cluster so that no message is lost.
    /// Returns whether every region finished.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let senders: Vec<_> = {
            let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
            regions.values().map(|e| e.stats.clone()).collect()
        };
        let mut waits = Vec::new();
        for sender in senders {
            let (tx, rx) = oneshot::channel();
            if sender.send(RegionInputStats::Shutdown(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        let all = futures_util::future::join_all(waits);
        matches!(tokio::time::timeout(timeout, all).await, Ok(r) if r.iter().all(Result::is_ok))
    }
}

/// One region's shards in [`Sharding::shard_distribution`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionShards {
    /// The region's node.
    pub region: RegionId,
    /// Its shards with their running entity counts (`None` when the region did not answer).
    pub shards: Vec<(ShardId, Option<usize>)>,
    /// Whether the region answered.
    pub reachable: bool,
}

struct RegionHandle<M> {
    type_name: String,
    tx: mpsc::Sender<RegionInput<M>>,
    remote: Remote,
    validate: Option<ValidateId>,
    extractor: Arc<dyn ShardExtractor>,
    counters: Arc<RegionCounters>,
    /// Shards running here that accept messages directly (see `region`).
    routes: LocalRoutes<M>,
}

/// This node's handle for one sharded entity type. Cheap to clone.
pub struct ShardRegion<M> {
    inner: Arc<RegionHandle<M>>,
}

impl<M> Clone for ShardRegion<M> {
    fn clone(&self) -> Self {
        ShardRegion {
            inner: self.inner.clone(),
        }
    }
}

impl<M> std::fmt::Debug for ShardRegion<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRegion")
            .field("type_name", &self.inner.type_name)
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> ShardRegion<M> {
    /// A handle to entity `entity_id`, wherever it lives (nothing is started until a
    /// message is sent).
    pub fn entity_ref(&self, entity_id: impl Into<String>) -> Result<EntityRef<M>, EntityRefError> {
        let entity_id = EntityId::new(entity_id)?;
        if let Some(validate) = &self.inner.validate {
            validate(&entity_id).map_err(EntityRefError::Invalid)?;
        }
        Ok(EntityRef {
            entity_id,
            region: self.inner.clone(),
        })
    }

    /// The shard `entity_id` belongs to.
    pub fn shard_of(&self, entity_id: &EntityId) -> ShardId {
        self.inner.extractor.shard_id(entity_id)
    }

    /// The entity type's name.
    pub fn type_name(&self) -> &str {
        &self.inner.type_name
    }

    /// Why the coordinator refused this node's region (another number of shards), if it did.
    pub fn refused(&self) -> Option<String> {
        self.inner
            .counters
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Messages this node's region dropped (buffer overflow, refused registration, …).
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }
}

/// One entity of a sharded type, wherever it lives. Cheap to clone.
pub struct EntityRef<M> {
    entity_id: EntityId,
    region: Arc<RegionHandle<M>>,
}

impl<M> Clone for EntityRef<M> {
    fn clone(&self) -> Self {
        EntityRef {
            entity_id: self.entity_id.clone(),
            region: self.region.clone(),
        }
    }
}

impl<M> std::fmt::Debug for EntityRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntityRef({}:{})", self.region.type_name, self.entity_id)
    }
}

impl<M: Send + 'static> EntityRef<M> {
    /// The entity's id.
    pub fn entity_id(&self) -> &EntityId {
        &self.entity_id
    }

    /// Sends `msg` without waiting; `Full` when this node's region, or the entity's shard
    /// when it runs on this node, is overloaded. Delivery is at most once (a message in
    /// flight when a node crashes is lost); messages from one sender to one entity keep
    /// their order.
    pub fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        // A shard running here takes the message itself (one task hop fewer); otherwise, or
        // if it refuses (handing off, stopped), the region routes it. The read lock is held
        // until the message is in one queue or the other: the region publishes a route only
        // under the write lock, after emptying its queue, so nothing sent through the region
        // can be overtaken by a later direct message.
        let routes = self.region.routes.read().unwrap_or_else(|e| e.into_inner());
        let msg = match routes.is_empty() {
            true => msg,
            false => {
                let shard = self.region.extractor.shard_id(&self.entity_id);
                match routes.get(&shard) {
                    Some(handle) => match handle.deliver_direct(self.entity_id.clone(), msg) {
                        Ok(()) => return Ok(()),
                        // Not through the region: a later message could overtake this one.
                        Err(Direct::Full(msg)) => return Err(TellError::Full(msg)),
                        Err(Direct::Refused(msg)) => msg,
                    },
                    None => msg,
                }
            }
        };
        let sent = self
            .region
            .tx
            .try_send(RegionInput::Deliver(self.entity_id.clone(), msg));
        drop(routes);
        sent.map_err(|e| match e {
            mpsc::error::TrySendError::Full(RegionInput::Deliver(_, m)) => TellError::Full(m),
            mpsc::error::TrySendError::Closed(RegionInput::Deliver(_, m)) => TellError::Closed(m),
            _ => unreachable!("we sent a Deliver"),
        })
    }

    /// Sends the request `make` builds around a reply handle and waits up to `timeout` for
    /// the answer (the timeout covers finding the shard's home and starting the entity).
    pub async fn ask<R>(
        &self,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.region
            .remote
            .ask_via(
                make,
                |msg| {
                    self.tell(msg).map_err(|e| match e {
                        TellError::Full(_) => AskError::MailboxFull,
                        TellError::Closed(_) => {
                            AskError::Failed("this node's sharding region has stopped".into())
                        }
                    })
                },
                timeout,
            )
            .await
    }
}
