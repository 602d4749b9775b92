//! Sharded daemon process: keep `n` named workers running across the cluster, each exactly
//! once, spread over the nodes and moved when membership changes (Akka's
//! `ShardedDaemonProcess`; projections run on it).
//!
//! It is built on [`Sharding::init`]: the entity type `daemon-{name}` has `n` shards and an
//! extractor that puts worker `i` (entity id `"i"`) alone in shard `i`, so the least-shard
//! strategy spreads the workers like shards. Each entity is a small wrapper actor that starts
//! the user's actor as its child and forwards messages to it. A keep-alive task on every node
//! pings all `n` workers every [`keep_alive_interval`](DaemonSettings::keep_alive_interval):
//! a worker whose shard moved (rebalance, a crashed or leaving node) is started again by the
//! next ping, without any other message.
//!
//! Workers are never passivated. A worker whose actor stops by itself is started again by the
//! next ping.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorRef, AskError, Context, Props, TellError};
use shoal_remote::RemoteReplyTo;
use tokio::time::MissedTickBehavior;

use crate::settings::ShardingSettings;
use crate::shard_id::{HashShardExtractor, ShardExtractor};
use crate::sharding::{Entity, EntityRef, ShardRegion, Sharding, ShardingError};
use crate::{EntityContext, EntityId, ShardId};

/// Settings of a [`ShardedDaemonProcess`].
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// How often every node pings every worker, so that workers whose shard moved start
    /// again. Default 10 s (Akka's `keep-alive-interval`).
    pub keep_alive_interval: Duration,
    /// The sharding settings of the daemon's entity type (role, hand-off timeout, intervals,
    /// allocation strategy, …). `number_of_shards` is replaced by the number of workers;
    /// passivation and remember-entities are switched off (the keep-alive does their work).
    pub sharding: ShardingSettings,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            keep_alive_interval: Duration::from_secs(10),
            sharding: ShardingSettings::default(),
        }
    }
}

/// What the daemon's entities receive: a keep-alive ping or a user message. The wrapper
/// actor's own notice that the user's actor stopped never crosses nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: DeserializeOwned"))]
enum DaemonMessage<M> {
    KeepAlive,
    User(M),
    #[serde(skip)]
    WorkerStopped,
}

/// Worker `i` has entity id `"i"` and lives alone in shard `"i"`.
struct DaemonExtractor {
    number_of_instances: u32,
    fallback: HashShardExtractor,
}

impl ShardExtractor for DaemonExtractor {
    fn shard_id(&self, entity_id: &EntityId) -> ShardId {
        match entity_id.as_str().parse::<u32>() {
            Ok(i) if i < self.number_of_instances && entity_id.as_str() == i.to_string() => {
                ShardId::from_number(i)
            }
            // Only this module makes entity ids; anything else still gets a valid shard.
            _ => self.fallback.shard_id(entity_id),
        }
    }
}

type Behavior<A> = Arc<dyn Fn(usize) -> Props<A> + Send + Sync>;

/// The daemon's entity: starts the user's actor for its index as a child, forwards user
/// messages to it, ignores pings, and stops when the child stops.
struct Worker<A: Actor> {
    index: usize,
    name: String,
    behavior: Behavior<A>,
    child: Option<ActorRef<A::Msg>>,
}

impl<A: Actor> Actor for Worker<A> {
    type Msg = DaemonMessage<A::Msg>;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let child = ctx.spawn(&self.name, (self.behavior)(self.index));
        ctx.watch(&child, |_| DaemonMessage::WorkerStopped);
        self.child = Some(child);
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Self::Msg) -> Result<(), ActorError> {
        match msg {
            DaemonMessage::KeepAlive => {}
            DaemonMessage::User(msg) => {
                if let Some(child) = &self.child
                    && child.send(msg).await.is_err()
                {
                    tracing::debug!(worker = %self.name, "daemon worker stopped: message dropped");
                }
            }
            DaemonMessage::WorkerStopped => {
                // Started again by the next keep-alive ping.
                tracing::debug!(worker = %self.name, "daemon worker stopped");
                ctx.stop();
            }
        }
        Ok(())
    }
}

/// A handle to a running sharded daemon process: `n` workers kept running across the
/// cluster. Cheap to clone.
pub struct ShardedDaemonProcess<M> {
    name: String,
    number_of_instances: usize,
    region: ShardRegion<DaemonMessage<M>>,
}

impl<M> Clone for ShardedDaemonProcess<M> {
    fn clone(&self) -> Self {
        ShardedDaemonProcess {
            name: self.name.clone(),
            number_of_instances: self.number_of_instances,
            region: self.region.clone(),
        }
    }
}

impl<M> std::fmt::Debug for ShardedDaemonProcess<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedDaemonProcess")
            .field("name", &self.name)
            .field("number_of_instances", &self.number_of_instances)
            .finish_non_exhaustive()
    }
}

impl<M> ShardedDaemonProcess<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Keep `number_of_instances` workers named `name` running across the cluster; worker
    /// `i` runs the actor `behavior(i)` makes. Every node that runs (or talks to) the
    /// daemon calls this with the same name, number and settings; nodes without the
    /// settings' role only ping and send.
    ///
    /// The sharded entity type is named `daemon-{name}` (see [`type_name`](Self::type_name),
    /// e.g. for `GET /cluster/shards/{type}`).
    pub fn init<A>(
        sharding: &Sharding,
        name: impl Into<String>,
        number_of_instances: usize,
        behavior: impl Fn(usize) -> Props<A> + Send + Sync + 'static,
        settings: DaemonSettings,
    ) -> Result<Self, ShardingError>
    where
        A: Actor<Msg = M>,
    {
        let name = name.into();
        let type_name = Self::type_name_of(&name);
        let invalid = |reason: &str| ShardingError::InvalidSettings {
            type_name: type_name.clone(),
            reason: reason.to_owned(),
        };
        let n = u32::try_from(number_of_instances)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("number_of_instances must be between 1 and u32::MAX"))?;
        if settings.keep_alive_interval.is_zero() {
            return Err(invalid("keep_alive_interval must be positive"));
        }
        let sharding_settings = ShardingSettings {
            number_of_shards: n,
            passivation_idle_timeout: None,
            active_entity_limit: None,
            remember_entities: false,
            ..settings.sharding
        };
        let behavior: Behavior<A> = Arc::new(behavior);
        let worker_name = name.clone();
        let entity = Entity::new(
            type_name.clone(),
            move |ctx: EntityContext<DaemonMessage<M>>| {
                let id = ctx.entity_id().as_str();
                // Ids are made by `ShardedDaemonProcess` only: always an index below n.
                let index = id.parse::<usize>().unwrap_or(0);
                let (name, behavior) = (format!("{worker_name}-{index}"), behavior.clone());
                Props::new(move || Worker {
                    index,
                    name: name.clone(),
                    behavior: behavior.clone(),
                    child: None,
                })
            },
        )
        .with_extractor(DaemonExtractor {
            number_of_instances: n,
            fallback: HashShardExtractor::new(n).expect("n > 0"),
        })
        .with_settings(sharding_settings);
        let region = sharding.init(entity)?;

        let refs: Vec<EntityRef<DaemonMessage<M>>> = (0..number_of_instances)
            .map(|i| region.entity_ref(i.to_string()).expect("a non-empty id"))
            .collect();
        let interval = settings.keep_alive_interval;
        let span = tracing::info_span!("daemon keep-alive", daemon = %name);
        tokio::spawn(tracing::Instrument::instrument(
            keep_alive(refs, interval),
            span,
        ));
        Ok(ShardedDaemonProcess {
            name,
            number_of_instances,
            region,
        })
    }

    /// Sends `msg` to worker `index` (wherever it runs; started if it is not running).
    /// Delivery is at most once. `Closed` also when `index` is out of range.
    pub fn tell(&self, index: usize, msg: M) -> Result<(), TellError<M>> {
        let Some(worker) = self.worker(index) else {
            return Err(TellError::Closed(msg));
        };
        worker.tell(DaemonMessage::User(msg)).map_err(|e| match e {
            TellError::Full(m) => TellError::Full(user(m)),
            TellError::Closed(m) => TellError::Closed(user(m)),
        })
    }

    /// Sends worker `index` the request `make` builds around a reply handle and waits up to
    /// `timeout` for the answer.
    pub async fn ask<R>(
        &self,
        index: usize,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let Some(worker) = self.worker(index) else {
            return Err(AskError::Failed(format!(
                "daemon {:?} has {} workers, no worker {index}",
                self.name, self.number_of_instances
            )));
        };
        worker
            .ask(|reply| DaemonMessage::User(make(reply)), timeout)
            .await
    }

    fn worker(&self, index: usize) -> Option<EntityRef<DaemonMessage<M>>> {
        (index < self.number_of_instances)
            .then(|| self.region.entity_ref(index.to_string()).ok())
            .flatten()
    }
}

impl<M> ShardedDaemonProcess<M> {
    /// The daemon's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many workers it keeps running.
    pub fn number_of_instances(&self) -> usize {
        self.number_of_instances
    }

    /// The name of its sharded entity type: `daemon-{name}`.
    pub fn type_name(&self) -> String {
        Self::type_name_of(&self.name)
    }

    fn type_name_of(name: &str) -> String {
        format!("daemon-{name}")
    }
}

fn user<M>(message: DaemonMessage<M>) -> M {
    match message {
        DaemonMessage::User(m) => m,
        _ => unreachable!("we sent a user message"),
    }
}

/// Pings every worker now and every `interval`, until this node's region has stopped.
async fn keep_alive<M: Send + 'static>(refs: Vec<EntityRef<DaemonMessage<M>>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for worker in &refs {
            match worker.tell(DaemonMessage::KeepAlive) {
                Ok(()) => {}
                Err(TellError::Full(_)) => {
                    tracing::debug!(worker = %worker.entity_id(), "region full: ping skipped");
                }
                Err(TellError::Closed(_)) => {
                    tracing::debug!("the region has stopped: keep-alive ends");
                    return;
                }
            }
        }
    }
}
