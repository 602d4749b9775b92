//! The persistence extension: the store, the writer id, the recovery limit, per-type entity
//! settings, and a local directory of running entities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_actor::{ActorRef, ActorSystem, Backoff, Props};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::EventSourced;
use crate::codec::Upcasters;
use crate::entity::{EntityActor, entity_props, spawn_entity};
use crate::store::{InvalidPersistenceId, PersistenceId, Store};

/// Settings of the persistence extension.
#[derive(Debug, Clone)]
pub struct PersistenceSettings {
    /// How many entities may recover at the same time (others wait). Default 50.
    pub max_concurrent_recoveries: usize,
    /// Written with every event to identify this process. Default: `"{pid}-{random}"`.
    pub writer_id: Option<String>,
}

impl Default for PersistenceSettings {
    fn default() -> Self {
        Self {
            max_concurrent_recoveries: 50,
            writer_id: None,
        }
    }
}

/// Settings of one entity type.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// Save a snapshot every this many events (`None`: never).
    pub snapshot_every: Option<u64>,
    /// How many snapshots to keep (at least 1).
    pub keep_snapshots: u32,
    /// Delete the events covered by the oldest kept snapshot.
    pub delete_events_on_snapshot: bool,
    /// Restart backoff after a failed persist or recovery.
    pub backoff: Backoff,
    /// Mailbox capacity: commands wait here while a write is in flight.
    pub mailbox_capacity: usize,
    /// Events read per replay query during recovery.
    pub replay_page_size: usize,
    /// Upcasters for old event versions.
    pub upcasters: Upcasters,
}

impl Default for EntitySettings {
    fn default() -> Self {
        Self {
            snapshot_every: None,
            keep_snapshots: 2,
            delete_events_on_snapshot: false,
            backoff: Backoff {
                min: Duration::from_millis(200),
                max: Duration::from_secs(10),
                random_factor: 0.2,
                max_restarts: 20,
                within: Duration::from_secs(60),
            },
            mailbox_capacity: 1024,
            replay_page_size: 1000,
            upcasters: Upcasters::new(),
        }
    }
}

impl EntitySettings {
    /// Snapshot every `n` events, keeping `keep` snapshots.
    pub fn with_snapshots(mut self, every: u64, keep: u32) -> Self {
        self.snapshot_every = Some(every);
        self.keep_snapshots = keep.max(1);
        self
    }

    /// Sets the upcasters.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }
}

struct Inner {
    store: Arc<dyn Store>,
    writer_id: String,
    recoveries: Semaphore,
}

/// The persistence extension of one node: cheap to clone.
#[derive(Clone)]
pub struct Persistence {
    inner: Arc<Inner>,
}

impl Persistence {
    /// Persistence on `store` with default settings.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_settings(store, PersistenceSettings::default())
    }

    /// Persistence on `store` with `settings`.
    pub fn with_settings(store: Arc<dyn Store>, settings: PersistenceSettings) -> Self {
        let writer_id = settings
            .writer_id
            .unwrap_or_else(|| format!("{}-{:08x}", std::process::id(), fastrand::u32(..)));
        Self {
            inner: Arc::new(Inner {
                store,
                writer_id,
                recoveries: Semaphore::new(settings.max_concurrent_recoveries.max(1)),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The writer id stamped on events written through this extension.
    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }

    /// How many more entities could start recovering right now.
    pub fn available_recoveries(&self) -> usize {
        self.inner.recoveries.available_permits()
    }

    pub(crate) async fn recovery_permit(&self) -> SemaphorePermit<'_> {
        self.inner
            .recoveries
            .acquire()
            .await
            .expect("the recovery semaphore is never closed")
    }

    /// The props of entity `entity_id` of type `E`, to spawn it yourself (cluster sharding
    /// does, under its shards). The actor recovers on start, persists fenced, and restarts
    /// with the settings' backoff on failure.
    pub fn props<E: EventSourced>(
        &self,
        entity_id: &str,
        factory: impl FnMut() -> E + Send + 'static,
        settings: EntitySettings,
    ) -> Result<Props<EntityActor<E>>, InvalidPersistenceId> {
        let pid = PersistenceId::of(E::TYPE_NAME, entity_id)?;
        Ok(entity_props(self, pid, factory, Arc::new(settings)))
    }

    /// Starts entity `entity_id` of type `E` as a top-level actor. Prefer [`Entities`], which
    /// makes sure one node runs at most one instance per id.
    pub fn spawn<E: EventSourced>(
        &self,
        system: &ActorSystem,
        entity_id: &str,
        factory: impl FnMut() -> E + Send + 'static,
        settings: EntitySettings,
    ) -> Result<ActorRef<E::Command>, InvalidPersistenceId> {
        let pid = PersistenceId::of(E::TYPE_NAME, entity_id)?;
        Ok(spawn_entity(system, self, pid, factory, Arc::new(settings)))
    }
}

/// The running entities of one type on this node, started on first use: at most one
/// instance per entity id in this process.
///
/// This is the single-node stand-in for sharding; the journal's fence still guards against a
/// second writer elsewhere.
pub struct Entities<E: EventSourced> {
    system: ActorSystem,
    persistence: Persistence,
    factory: Arc<dyn Fn() -> E + Send + Sync>,
    settings: Arc<EntitySettings>,
    running: Mutex<HashMap<String, ActorRef<E::Command>>>,
}

impl<E: EventSourced> Entities<E> {
    /// A directory of entities of type `E`, built by `factory`.
    pub fn new(
        system: &ActorSystem,
        persistence: &Persistence,
        factory: impl Fn() -> E + Send + Sync + 'static,
        settings: EntitySettings,
    ) -> Self {
        Self {
            system: system.clone(),
            persistence: persistence.clone(),
            factory: Arc::new(factory),
            settings: Arc::new(settings),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The running entity `entity_id`, started (and recovered) if it is not running.
    pub fn entity_ref(
        &self,
        entity_id: &str,
    ) -> Result<ActorRef<E::Command>, InvalidPersistenceId> {
        let pid = PersistenceId::of(E::TYPE_NAME, entity_id)?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = running.get(entity_id).filter(|r| r.stop_reason().is_none()) {
            return Ok(r.clone());
        }
        let factory = self.factory.clone();
        let r = spawn_entity(
            &self.system,
            &self.persistence,
            pid,
            move || factory(),
            self.settings.clone(),
        );
        running.insert(entity_id.to_owned(), r.clone());
        Ok(r)
    }

    /// How many entities this directory has started and not seen stop.
    pub fn len(&self) -> usize {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|_, r| r.stop_reason().is_none());
        running.len()
    }

    /// Whether no entity is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
