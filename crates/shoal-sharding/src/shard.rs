//! The shard: hosts the entities of one shard on this node.
//!
//! One tokio task per shard owns the entity table; the region talks to it through a
//! [`ShardHandle`]. Messages for one entity keep their order: they go through the shard's
//! bounded queue and are forwarded to the entity in arrival order, and while an entity is being
//! started (its start recorded) or stopped (passivation) they wait in a bounded per-entity
//! buffer that is delivered to the next incarnation before anything newer.
//!
//! * **Start on demand.** An entity is started (by the [`EntityFactory`]) on its first message.
//! * **Passivation.** An entity is passivated (sent the stop message, or stopped gracefully)
//!   when it has received no message for `idle_timeout`, when the shard has more than
//!   `active_entity_limit` active entities (the least recently used goes first), or when it
//!   asks for it ([`EntityContext::passivate`]). An entity that stops by itself is removed; the
//!   next message starts it again.
//! * **Hand-off.** [`ShardHandle::hand_off`] stops every entity (stop message; kill after
//!   `hand_off_timeout`) and ends the shard.
//! * **Remember entities.** With [`RememberSettings`] the shard keeps a log of its started
//!   entities in the journal (`EntityStarted` / `EntityStopped` events, fenced appends), and on
//!   start restarts the remembered ones at a bounded rate. A fencing conflict means another
//!   instance of the shard writes the log: this one stops.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_actor::{ActorRef, ActorSystem, StopReason, TellError};
use shoal_persistence::Event;
use shoal_persistence::codec::{Upcasters, encode_json};
use shoal_persistence::store::{
    AtomicWrite, EventRecord, PersistenceId, Store, StoreError, now_millis,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::shard_id::{EntityId, ShardId};

/// Capacity of a shard's inbound queue; [`ShardHandle::deliver`] fails when it is full.
const SHARD_QUEUE_CAPACITY: usize = 4096;

/// Deliveries handled per wake-up of a shard before it looks at its other sources again.
const DRAIN_BATCH: usize = 64;

/// Most remember-entities events in one atomic write.
const MAX_EVENTS_PER_WRITE: usize = 100;

/// Page size when replaying the remember-entities log.
const REPLAY_PAGE: usize = 1000;

/// Retry delays when reading the remember-entities log fails.
const RECOVERY_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Shortest period of the remembered-entity restart ticker.
const MIN_RESTART_PERIOD: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Public and crate interface
// ---------------------------------------------------------------------------------------------

/// What an entity knows about its place in sharding; given to the behavior factory for each
/// entity incarnation.
///
/// Cheap to clone. Belongs to one incarnation: a passivation request from an incarnation that
/// has already stopped is ignored.
pub struct EntityContext<M> {
    inner: Arc<ContextInner>,
    _msg: PhantomData<fn() -> M>,
}

struct ContextInner {
    entity_id: EntityId,
    shard_id: ShardId,
    incarnation: u64,
    passivation_requested: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
}

impl<M> Clone for EntityContext<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for EntityContext<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityContext")
            .field("entity_id", &self.inner.entity_id)
            .field("shard_id", &self.inner.shard_id)
            .finish_non_exhaustive()
    }
}

impl<M> EntityContext<M> {
    /// The id of this entity.
    pub fn entity_id(&self) -> &EntityId {
        &self.inner.entity_id
    }

    /// The shard this entity lives in.
    pub fn shard_id(&self) -> &ShardId {
        &self.inner.shard_id
    }

    /// Asks the shard to passivate this entity: the shard sends it the stop message (or stops
    /// it gracefully when no stop message is configured). Commands that arrive meanwhile are
    /// buffered by the shard and delivered to the entity's next incarnation, in order.
    ///
    /// Calling it more than once (or after the entity has stopped) has no further effect.
    pub fn passivate(&self) {
        if !self
            .inner
            .passivation_requested
            .swap(true, Ordering::AcqRel)
        {
            // The shard may be gone already: then there is nothing to passivate from.
            let _ = self.inner.control.send(Control::Passivate {
                entity_id: self.inner.entity_id.clone(),
                incarnation: self.inner.incarnation,
            });
        }
    }
}

/// Starts (spawns) one entity incarnation; called by the shard on demand.
pub(crate) type EntityFactory<M> =
    Arc<dyn Fn(&ActorSystem, EntityContext<M>) -> ActorRef<M> + Send + Sync>;

/// Remember-entities settings of a shard.
pub(crate) struct RememberSettings {
    /// Where the shard's log of started entities is kept.
    pub(crate) store: Arc<dyn Store>,
    /// The entity type name (must not contain `|`).
    pub(crate) type_name: String,
    /// How many remembered entities are restarted per second when the shard starts (at least
    /// 1 is used).
    pub(crate) max_starts_per_second: u32,
}

/// How a shard hosts its entities.
pub(crate) struct ShardSettings<M> {
    /// Passivate an entity that received no message for this long; `None` = never.
    pub(crate) idle_timeout: Option<Duration>,
    /// Passivate the least recently used entities beyond this many; `None` = unlimited.
    pub(crate) active_entity_limit: Option<usize>,
    /// The message that asks an entity to stop; without it the shard uses
    /// [`ActorRef::stop`].
    pub(crate) stop_message: Option<Arc<dyn Fn() -> M + Send + Sync>>,
    /// How long a hand-off waits for entities to stop before killing them.
    pub(crate) hand_off_timeout: Duration,
    /// Messages buffered per entity while it is started or passivated; more are dropped.
    pub(crate) entity_buffer: usize,
    /// Remember entities, if set.
    pub(crate) remember: Option<Arc<RememberSettings>>,
}

impl<M> Clone for ShardSettings<M> {
    fn clone(&self) -> Self {
        Self {
            idle_timeout: self.idle_timeout,
            active_entity_limit: self.active_entity_limit,
            stop_message: self.stop_message.clone(),
            hand_off_timeout: self.hand_off_timeout,
            entity_buffer: self.entity_buffer,
            remember: self.remember.clone(),
        }
    }
}

/// Why [`ShardHandle::deliver_direct`] handed a message back.
pub(crate) enum Direct<M> {
    /// The shard's queue is full.
    Full(M),
    /// The shard is handing off or has stopped.
    Refused(M),
}

/// A handle to a running shard; cheap to clone.
///
/// When every handle is dropped, the shard stops its entities as in a hand-off.
pub(crate) struct ShardHandle<M> {
    queue: mpsc::Sender<(EntityId, M)>,
    shared: Arc<Shared>,
}

impl<M> Clone for ShardHandle<M> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<M: Send + 'static> ShardHandle<M> {
    /// Starts the shard's task (in the current tokio runtime). With remember entities, the
    /// task first reads the shard's log, then restarts the remembered entities at the
    /// configured rate; messages delivered meanwhile wait in the shard's queue.
    pub(crate) fn start(
        shard_id: ShardId,
        settings: ShardSettings<M>,
        factory: EntityFactory<M>,
        system: ActorSystem,
    ) -> ShardHandle<M> {
        let (queue, queue_rx) = mpsc::channel(SHARD_QUEUE_CAPACITY);
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            shard_id: shard_id.clone(),
            accepting: AtomicBool::new(true),
            hand_off: Notify::new(),
            limit: watch::Sender::new(settings.active_entity_limit),
            done: watch::Sender::new(false),
            running: Mutex::new(BTreeSet::new()),
            dropped: AtomicU64::new(0),
        });
        let remember = match &settings.remember {
            None => Ok(None),
            Some(r) => {
                match PersistenceId::of(
                    &format!("shoal-sharding-{}", r.type_name),
                    shard_id.as_str(),
                ) {
                    Ok(pid) => Ok(Some(Remember {
                        settings: r.clone(),
                        pid,
                        writer_id: format!("shoal-sharding@{}", system.name()),
                        seq_nr: 0,
                        resync: false,
                        fenced: false,
                        remembered: BTreeSet::new(),
                        pending: Vec::new(),
                    })),
                    Err(e) => Err(e),
                }
            }
        };
        let limit_rx = shared.limit.subscribe();
        let shard = Shard {
            limit: settings.active_entity_limit,
            shared: shared.clone(),
            settings,
            factory,
            system,
            queue: queue_rx,
            control_tx: control,
            control_rx,
            limit_rx,
            entities: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            next_incarnation: 0,
            terminations: FuturesUnordered::new(),
            remember: None,
            write_in_flight: None,
            restart_queue: VecDeque::new(),
            restart_ticker: None,
            restarts_per_tick: 1,
            stopping: false,
            idle_timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            idle_timer_at: None,
        };
        tokio::spawn(shard.run(remember));
        ShardHandle { queue, shared }
    }

    /// Delivers `msg` to `entity_id`, starting the entity if needed; messages to one entity
    /// keep their order. Hands the message back if the shard is handing off or has stopped,
    /// or its queue is full.
    pub(crate) fn deliver(&self, entity_id: EntityId, msg: M) -> Result<(), M> {
        self.deliver_direct(entity_id, msg)
            .map_err(|(Direct::Full(m) | Direct::Refused(m))| m)
    }

    /// [`deliver`](Self::deliver) for the direct routes of entity refs: tells a full queue
    /// (`Full`, the sender's to handle) from a shard that no longer takes messages
    /// (`Refused`, for the region to route).
    pub(crate) fn deliver_direct(&self, entity_id: EntityId, msg: M) -> Result<(), Direct<M>> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Direct::Refused(msg));
        }
        self.queue.try_send((entity_id, msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((_, m)) => Direct::Full(m),
            mpsc::error::TrySendError::Closed((_, m)) => Direct::Refused(m),
        })
    }

    /// Stops every entity (the stop message, or a graceful stop; entities still running after
    /// `hand_off_timeout` are killed) and ends the shard; returns once all have terminated.
    /// Later [`deliver`](Self::deliver) calls fail. Remembered entities stay remembered: they
    /// restart where the shard starts next.
    ///
    /// Messages already accepted but not yet forwarded are delivered to running entities
    /// before their stop message; those for entities that are not running (or buffered for a
    /// starting or passivating entity) are dropped and counted. An entity that does not stop
    /// even when killed (a handler that never returns) is given up on, with an error logged,
    /// after a second `hand_off_timeout`.
    pub(crate) async fn hand_off(&self) {
        self.shared.accepting.store(false, Ordering::Release);
        self.shared.hand_off.notify_one();
        let mut done = self.shared.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    /// How many entities are running (including those being passivated).
    pub(crate) fn entity_count(&self) -> usize {
        lock(&self.shared.running).len()
    }

    /// The ids of the running entities (including those being passivated), sorted.
    #[cfg(test)]
    pub(crate) fn entity_ids(&self) -> Vec<EntityId> {
        lock(&self.shared.running).iter().cloned().collect()
    }

    /// Changes the active-entity limit; entities beyond a lower limit are passivated (least
    /// recently used first).
    pub(crate) fn set_active_entity_limit(&self, limit: Option<usize>) {
        self.shared.limit.send_replace(limit);
    }

    /// How many messages this shard has dropped (full entity buffers or mailboxes, failed
    /// start recording, messages left over at hand-off).
    #[cfg(test)]
    pub(crate) fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Remember-entities events
// ---------------------------------------------------------------------------------------------

/// An entity was started (it is restarted when its shard starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntityStarted {
    id: EntityId,
}

impl Event for EntityStarted {
    const MANIFEST: &'static str = "shoal.sharding.EntityStarted";
}

/// An entity was passivated (it is not restarted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntityStopped {
    id: EntityId,
}

impl Event for EntityStopped {
    const MANIFEST: &'static str = "shoal.sharding.EntityStopped";
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Started(EntityId),
    Stopped(EntityId),
}

impl Change {
    fn id(&self) -> &EntityId {
        match self {
            Change::Started(id) | Change::Stopped(id) => id,
        }
    }

    fn record(&self, seq_nr: u64, writer_id: &str) -> Result<EventRecord, StoreError> {
        let (manifest, version, payload) = match self {
            Change::Started(id) => (
                EntityStarted::MANIFEST,
                EntityStarted::VERSION,
                encode_json(&EntityStarted { id: id.clone() }),
            ),
            Change::Stopped(id) => (
                EntityStopped::MANIFEST,
                EntityStopped::VERSION,
                encode_json(&EntityStopped { id: id.clone() }),
            ),
        };
        Ok(EventRecord {
            seq_nr,
            manifest: manifest.to_owned(),
            schema_version: version,
            payload: payload.map_err(|e| StoreError::Rejected(e.to_string()))?,
            tags: Vec::new(),
            writer_id: writer_id.to_owned(),
            timestamp_ms: now_millis(),
        })
    }

    /// Decodes a stored event; `None` (with a warning) for a record this code does not know.
    fn decode(record: &EventRecord) -> Option<Change> {
        let upcasters = Upcasters::new();
        let decoded = match record.manifest.as_str() {
            EntityStarted::MANIFEST => upcasters
                .decode_event::<EntityStarted>(record)
                .map(|e| Change::Started(e.id)),
            EntityStopped::MANIFEST => upcasters
                .decode_event::<EntityStopped>(record)
                .map(|e| Change::Stopped(e.id)),
            other => {
                tracing::warn!(
                    manifest = other,
                    seq_nr = record.seq_nr,
                    "unknown remember-entities event; skipped"
                );
                return None;
            }
        };
        match decoded {
            Ok(change) => Some(change),
            Err(e) => {
                tracing::warn!(error = %e, seq_nr = record.seq_nr, "unreadable remember-entities event; skipped");
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shard task
// ---------------------------------------------------------------------------------------------

/// What the handles and the task share.
struct Shared {
    shard_id: ShardId,
    /// False once a hand-off began or the shard stopped.
    accepting: AtomicBool,
    hand_off: Notify,
    limit: watch::Sender<Option<usize>>,
    /// True once the shard task has ended.
    done: watch::Sender<bool>,
    running: Mutex<BTreeSet<EntityId>>,
    dropped: AtomicU64,
}

impl Shared {
    /// Counts a dropped message; warns on the first and every hundredth, debug otherwise.
    fn drop_message(&self, entity_id: &EntityId, why: &str) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(100) {
            tracing::warn!(shard = %self.shard_id, entity = %entity_id, why, dropped_total = total, "message to entity dropped");
        } else {
            tracing::debug!(shard = %self.shard_id, entity = %entity_id, why, dropped_total = total, "message to entity dropped");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the shard as ended when its task finishes (also on a panic).
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.accepting.store(false, Ordering::Release);
        lock(&self.0.running).clear();
        self.0.done.send_replace(true);
    }
}

/// Messages from entity contexts to their shard.
enum Control {
    Passivate {
        entity_id: EntityId,
        incarnation: u64,
    },
}

enum Entry<M> {
    /// Waiting for its `EntityStarted` to be stored.
    Starting { buffer: VecDeque<M> },
    /// Running and receiving messages.
    Active {
        actor: ActorRef<M>,
        incarnation: u64,
        /// Its key in the recency order.
        tick: u64,
        last_used: Instant,
    },
    /// Asked to stop (or found stopped); messages wait for the next incarnation.
    Stopping {
        actor: ActorRef<M>,
        incarnation: u64,
        passivated: bool,
        buffer: VecDeque<M>,
    },
}

struct Termination {
    entity_id: EntityId,
    incarnation: u64,
    reason: StopReason,
}

struct WriteOutcome {
    changes: Vec<Change>,
    /// The new highest sequence number.
    result: Result<u64, StoreError>,
}

struct Remember {
    settings: Arc<RememberSettings>,
    pid: PersistenceId,
    writer_id: String,
    /// Highest sequence number of the log, as far as this shard knows.
    seq_nr: u64,
    /// The last write's outcome is unknown: re-read the highest sequence number first.
    resync: bool,
    /// A conflict showed that another shard instance writes the log.
    fenced: bool,
    /// The entities the log (with the writes issued) says are started.
    remembered: BTreeSet<EntityId>,
    /// Changes not yet handed to the store.
    pending: Vec<Change>,
}

enum Wake<M> {
    HandOff,
    Control(Control),
    Terminated(Termination),
    Written(WriteOutcome),
    LimitChanged,
    IdleCheck,
    RestartTick,
    Deliver(EntityId, M),
    HandlesDropped,
}

struct Shard<M> {
    shared: Arc<Shared>,
    settings: ShardSettings<M>,
    factory: EntityFactory<M>,
    system: ActorSystem,
    queue: mpsc::Receiver<(EntityId, M)>,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    limit_rx: watch::Receiver<Option<usize>>,
    limit: Option<usize>,
    entities: BTreeMap<EntityId, Entry<M>>,
    /// The active entities by recency (oldest first).
    lru: BTreeMap<u64, EntityId>,
    next_tick: u64,
    next_incarnation: u64,
    terminations: FuturesUnordered<BoxFuture<'static, Termination>>,
    remember: Option<Remember>,
    write_in_flight: Option<BoxFuture<'static, WriteOutcome>>,
    /// Remembered entities still to be restarted.
    restart_queue: VecDeque<EntityId>,
    restart_ticker: Option<Interval>,
    restarts_per_tick: usize,
    /// Hand-off (or a fatal error) in progress: no starts, no restarts.
    stopping: bool,
    /// Fires when the least recently used entity becomes idle (reset only when that moment
    /// changes, not for every message).
    idle_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle_timer_at: Option<Instant>,
}

impl<M: Send + 'static> Shard<M> {
    async fn run(
        mut self,
        remember: Result<Option<Remember>, shoal_persistence::store::InvalidPersistenceId>,
    ) {
        let _done = DoneGuard(self.shared.clone());
        match remember {
            Ok(r) => self.remember = r,
            Err(e) => {
                tracing::error!(shard = %self.shared.shard_id, error = %e, "invalid remember-entities log id; shard stopped");
                self.shut_down().await;
                return;
            }
        }
        if self.remember.is_some() && !self.recover().await {
            self.shut_down().await;
            return;
        }
        self.main_loop().await;
        self.shut_down().await;
    }

    /// Reads the remember-entities log, retrying with backoff. False if a hand-off came first.
    async fn recover(&mut self) -> bool {
        let Some(r) = &mut self.remember else {
            return true;
        };
        let mut backoff = RECOVERY_BACKOFF_MIN;
        loop {
            let read = read_log(r.settings.store.clone(), r.pid.clone());
            let outcome = tokio::select! {
                biased;
                () = self.shared.hand_off.notified() => return false,
                outcome = read => outcome,
            };
            match outcome {
                Ok((seq_nr, remembered)) => {
                    r.seq_nr = seq_nr;
                    let mut ids: Vec<EntityId> = remembered.iter().cloned().collect();
                    ids.sort();
                    r.remembered = remembered;
                    tracing::debug!(shard = %self.shared.shard_id, remembered = ids.len(), "remember-entities log read");
                    self.restart_queue = ids.into();
                    if !self.restart_queue.is_empty() {
                        let rate = r.settings.max_starts_per_second.max(1);
                        let (period, per_tick) = restart_pacing(rate);
                        let mut ticker = tokio::time::interval(period);
                        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        self.restart_ticker = Some(ticker);
                        self.restarts_per_tick = per_tick;
                    }
                    return true;
                }
                Err(e) => {
                    tracing::warn!(shard = %self.shared.shard_id, error = %e, retry_in = ?backoff, "cannot read remember-entities log; retrying");
                    tokio::select! {
                        biased;
                        () = self.shared.hand_off.notified() => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX);
                }
            }
        }
    }

    async fn main_loop(&mut self) {
        loop {
            let idle_at = self.idle_deadline();
            if let Some(at) = idle_at
                && self.idle_timer_at != Some(at)
            {
                self.idle_timer.as_mut().reset(at);
                self.idle_timer_at = Some(at);
            }
            let wake = tokio::select! {
                biased;
                () = self.shared.hand_off.notified() => Wake::HandOff,
                Some(c) = self.control_rx.recv() => Wake::Control(c),
                Some(t) = self.terminations.next(), if !self.terminations.is_empty() => Wake::Terminated(t),
                out = poll_write(&mut self.write_in_flight), if self.write_in_flight.is_some() => Wake::Written(out),
                Ok(()) = self.limit_rx.changed() => Wake::LimitChanged,
                () = &mut self.idle_timer, if idle_at.is_some() => Wake::IdleCheck,
                () = tick_opt(&mut self.restart_ticker), if !self.restart_queue.is_empty() => Wake::RestartTick,
                m = self.queue.recv() => match m {
                    Some((id, msg)) => Wake::Deliver(id, msg),
                    None => Wake::HandlesDropped,
                },
            };
            match wake {
                Wake::HandOff => {
                    tracing::debug!(shard = %self.shared.shard_id, "hand-off");
                    return;
                }
                Wake::HandlesDropped => {
                    tracing::debug!(shard = %self.shared.shard_id, "every shard handle dropped; stopping");
                    return;
                }
                Wake::Control(Control::Passivate {
                    entity_id,
                    incarnation,
                }) => {
                    if matches!(self.entities.get(&entity_id), Some(Entry::Active { incarnation: i, .. }) if *i == incarnation)
                    {
                        self.passivate(&entity_id, "requested by the entity");
                    }
                }
                Wake::Terminated(t) => self.on_terminated(t),
                Wake::Written(out) => {
                    self.write_in_flight = None;
                    if !self.on_written(out) {
                        return;
                    }
                }
                Wake::LimitChanged => {
                    self.limit = *self.limit_rx.borrow_and_update();
                    self.enforce_limit();
                }
                Wake::IdleCheck => {
                    // A fired timer stays ready until it is reset.
                    self.idle_timer_at = None;
                    self.passivate_idle();
                }
                Wake::RestartTick => self.restart_some(),
                Wake::Deliver(id, msg) => {
                    self.deliver(id, msg);
                    // Whatever else is queued, before the next select (a hand-off waits at
                    // most this batch).
                    for _ in 1..DRAIN_BATCH {
                        match self.queue.try_recv() {
                            Ok((id, msg)) => self.deliver(id, msg),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }

    /// When the least recently used active entity becomes idle.
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.settings.idle_timeout?;
        let (_, id) = self.lru.first_key_value()?;
        match self.entities.get(id) {
            Some(Entry::Active { last_used, .. }) => Some(*last_used + idle),
            _ => None,
        }
    }

    fn deliver(&mut self, id: EntityId, msg: M) {
        match self.entities.get_mut(&id) {
            Some(Entry::Active {
                actor,
                incarnation,
                tick,
                last_used,
            }) => {
                self.lru.remove(tick);
                *tick = self.next_tick;
                self.next_tick += 1;
                *last_used = Instant::now();
                self.lru.insert(*tick, id.clone());
                match actor.tell(msg) {
                    Ok(()) => {}
                    Err(TellError::Full(_)) => self.shared.drop_message(&id, "entity mailbox full"),
                    Err(TellError::Closed(msg)) => {
                        // It stopped by itself; its termination notice is on the way. The
                        // message goes to the next incarnation.
                        let tick = *tick;
                        self.lru.remove(&tick);
                        let actor = actor.clone();
                        let incarnation = *incarnation;
                        self.entities.insert(
                            id,
                            Entry::Stopping {
                                actor,
                                incarnation,
                                passivated: false,
                                buffer: VecDeque::from([msg]),
                            },
                        );
                    }
                }
            }
            Some(Entry::Starting { buffer } | Entry::Stopping { buffer, .. }) => {
                if buffer.len() >= self.settings.entity_buffer {
                    self.shared.drop_message(&id, "entity buffer full");
                } else {
                    buffer.push_back(msg);
                }
            }
            None => self.start_entity(id, VecDeque::from([msg])),
        }
    }

    /// Starts an entity with `buffer` as its first messages — after recording the start
    /// first if remember entities is on and the log does not have it yet.
    fn start_entity(&mut self, id: EntityId, buffer: VecDeque<M>) {
        if let Some(r) = &mut self.remember
            && !r.remembered.contains(&id)
        {
            r.remembered.insert(id.clone());
            r.pending.push(Change::Started(id.clone()));
            self.entities.insert(id, Entry::Starting { buffer });
            self.write_next();
            return;
        }
        self.spawn_entity(id, buffer);
    }

    fn spawn_entity(&mut self, id: EntityId, buffer: VecDeque<M>) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let ctx = EntityContext {
            inner: Arc::new(ContextInner {
                entity_id: id.clone(),
                shard_id: self.shared.shard_id.clone(),
                incarnation,
                passivation_requested: AtomicBool::new(false),
                control: self.control_tx.clone(),
            }),
            _msg: PhantomData,
        };
        let factory = self.factory.clone();
        let system = &self.system;
        let actor = match std::panic::catch_unwind(AssertUnwindSafe(|| factory(system, ctx))) {
            Ok(actor) => actor,
            Err(_) => {
                tracing::error!(shard = %self.shared.shard_id, entity = %id, "entity factory panicked");
                self.entities.remove(&id);
                for _ in buffer {
                    self.shared.drop_message(&id, "entity could not be started");
                }
                return;
            }
        };
        let watched = actor.clone();
        let entity_id = id.clone();
        self.terminations.push(Box::pin(async move {
            let reason = watched.terminated().await;
            Termination {
                entity_id,
                incarnation,
                reason,
            }
        }));
        lock(&self.shared.running).insert(id.clone());
        for msg in buffer {
            if let Err(e) = actor.tell(msg) {
                let why = match e {
                    TellError::Full(_) => "entity mailbox full",
                    TellError::Closed(_) => "entity stopped at once",
                };
                self.shared.drop_message(&id, why);
            }
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        self.lru.insert(tick, id.clone());
        self.entities.insert(
            id,
            Entry::Active {
                actor,
                incarnation,
                tick,
                last_used: Instant::now(),
            },
        );
        self.enforce_limit();
    }

    /// Asks an active entity to stop; messages for it are buffered until it has.
    fn passivate(&mut self, id: &EntityId, why: &str) {
        let Some(Entry::Active {
            actor,
            incarnation,
            tick,
            ..
        }) = self.entities.remove(id)
        else {
            return;
        };
        tracing::debug!(shard = %self.shared.shard_id, entity = %id, why, "passivating entity");
        self.lru.remove(&tick);
        self.send_stop(&actor);
        self.entities.insert(
            id.clone(),
            Entry::Stopping {
                actor,
                incarnation,
                passivated: true,
                buffer: VecDeque::new(),
            },
        );
    }

    /// Sends the stop message (after the messages already in the mailbox), or stops the actor
    /// gracefully.
    fn send_stop(&self, actor: &ActorRef<M>) {
        match &self.settings.stop_message {
            Some(make) => match actor.tell(make()) {
                Ok(()) | Err(TellError::Closed(_)) => {}
                Err(TellError::Full(msg)) => {
                    let actor = actor.clone();
                    tokio::spawn(async move {
                        let _ = actor.send(msg).await;
                    });
                }
            },
            None => {
                let actor = actor.clone();
                tokio::spawn(async move { actor.stop().await });
            }
        }
    }

    fn passivate_idle(&mut self) {
        let Some(idle) = self.settings.idle_timeout else {
            return;
        };
        let now = Instant::now();
        let mut idle_ids = Vec::new();
        for id in self.lru.values() {
            match self.entities.get(id) {
                Some(Entry::Active { last_used, .. }) if *last_used + idle <= now => {
                    idle_ids.push(id.clone());
                }
                _ => break,
            }
        }
        for id in idle_ids {
            self.passivate(&id, "idle");
        }
    }

    fn enforce_limit(&mut self) {
        let Some(limit) = self.limit else {
            return;
        };
        while self.lru.len() > limit {
            let Some((_, id)) = self.lru.first_key_value() else {
                return;
            };
            let id = id.clone();
            self.passivate(&id, "active entity limit");
        }
    }

    fn restart_some(&mut self) {
        let mut started = 0;
        while started < self.restarts_per_tick {
            let Some(id) = self.restart_queue.pop_front() else {
                break;
            };
            if self.entities.contains_key(&id) {
                // Already started by a message.
                continue;
            }
            if self
                .remember
                .as_ref()
                .is_some_and(|r| !r.remembered.contains(&id))
            {
                continue;
            }
            self.spawn_entity(id, VecDeque::new());
            started += 1;
        }
        if self.restart_queue.is_empty() {
            self.restart_ticker = None;
        }
    }

    fn on_terminated(&mut self, t: Termination) {
        let current = match self.entities.get(&t.entity_id) {
            Some(Entry::Active { incarnation, .. } | Entry::Stopping { incarnation, .. }) => {
                *incarnation == t.incarnation
            }
            _ => false,
        };
        if !current {
            return;
        }
        lock(&self.shared.running).remove(&t.entity_id);
        match self.entities.remove(&t.entity_id) {
            Some(Entry::Active { tick, .. }) => {
                // Stopped by itself: simply removed (and still remembered, if remembering).
                tracing::debug!(shard = %self.shared.shard_id, entity = %t.entity_id, reason = %t.reason, "entity stopped");
                self.lru.remove(&tick);
            }
            Some(Entry::Stopping {
                passivated, buffer, ..
            }) => {
                if !buffer.is_empty() {
                    if self.stopping {
                        for _ in buffer {
                            self.shared.drop_message(&t.entity_id, "shard stopping");
                        }
                    } else {
                        self.start_entity(t.entity_id, buffer);
                    }
                } else if passivated
                    && let Some(r) = &mut self.remember
                    && !r.fenced
                {
                    r.remembered.remove(&t.entity_id);
                    r.pending.push(Change::Stopped(t.entity_id));
                    self.write_next();
                }
            }
            _ => {}
        }
    }

    /// Starts the next remember-entities write, if none is in flight.
    fn write_next(&mut self) {
        if self.write_in_flight.is_some() {
            return;
        }
        let Some(r) = &mut self.remember else {
            return;
        };
        if r.pending.is_empty() || r.fenced {
            return;
        }
        let n = r.pending.len().min(MAX_EVENTS_PER_WRITE);
        let changes: Vec<Change> = r.pending.drain(..n).collect();
        let store = r.settings.store.clone();
        let pid = r.pid.clone();
        let writer_id = r.writer_id.clone();
        let expected = r.seq_nr;
        let resync = r.resync;
        self.write_in_flight = Some(Box::pin(async move {
            let result = async {
                let expected = if resync {
                    store.highest_seq_nr(pid.clone()).await?
                } else {
                    expected
                };
                let events = changes
                    .iter()
                    .zip(1u64..)
                    .map(|(c, i)| c.record(expected + i, &writer_id))
                    .collect::<Result<Vec<_>, _>>()?;
                let write = AtomicWrite {
                    persistence_id: pid,
                    expected_seq_nr: expected,
                    events,
                };
                let last = write.last_seq_nr();
                store.append(write).await?;
                Ok(last)
            }
            .await;
            WriteOutcome { changes, result }
        }));
    }

    /// Applies a write's outcome. False when the log turned out to belong to another shard
    /// instance (the shard must stop).
    fn on_written(&mut self, out: WriteOutcome) -> bool {
        let Some(r) = &mut self.remember else {
            return true;
        };
        match out.result {
            Ok(seq_nr) => {
                r.seq_nr = seq_nr;
                r.resync = false;
                for change in out.changes {
                    if let Change::Started(id) = change
                        && let Some(Entry::Starting { .. }) = self.entities.get(&id)
                        && let Some(Entry::Starting { buffer }) = self.entities.remove(&id)
                    {
                        if self.stopping {
                            for _ in buffer {
                                self.shared.drop_message(&id, "shard stopping");
                            }
                        } else {
                            self.spawn_entity(id, buffer);
                        }
                    }
                }
            }
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                tracing::error!(
                    shard = %self.shared.shard_id,
                    pid = %r.pid,
                    expected,
                    actual,
                    "remember-entities log is written by another instance of this shard; stopping the shard"
                );
                r.fenced = true;
                r.pending.clear();
                self.fail_starts(&out.changes, "shard fenced");
                return false;
            }
            Err(e) => {
                tracing::warn!(shard = %self.shared.shard_id, error = %e, events = out.changes.len(), "cannot record entity starts/stops; the affected messages are dropped");
                if matches!(e, StoreError::Uncertain(_)) {
                    r.resync = true;
                }
                // The log's state for these entities is unknown: record them again next time.
                for change in &out.changes {
                    r.remembered.remove(change.id());
                }
                self.fail_starts(&out.changes, "entity start could not be recorded");
            }
        }
        self.write_next();
        true
    }

    /// Drops the buffers of entities whose start was not recorded.
    fn fail_starts(&mut self, changes: &[Change], why: &str) {
        for change in changes {
            if let Change::Started(id) = change
                && let Some(Entry::Starting { .. }) = self.entities.get(id)
                && let Some(Entry::Starting { buffer }) = self.entities.remove(id)
            {
                for _ in buffer {
                    self.shared.drop_message(id, why);
                }
            }
        }
    }

    /// Stops every entity (stop message; kill after the hand-off timeout), flushes pending
    /// remember-entities writes (bounded by the same timeout), and leaves the shard ended.
    async fn shut_down(&mut self) {
        self.stopping = true;
        self.shared.accepting.store(false, Ordering::Release);
        self.restart_queue.clear();
        self.restart_ticker = None;
        // Messages accepted before the hand-off: to running entities, before their stop.
        self.queue.close();
        while let Ok((id, msg)) = self.queue.try_recv() {
            match self.entities.get(&id) {
                Some(Entry::Active { actor, .. }) => {
                    if actor.tell(msg).is_err() {
                        self.shared
                            .drop_message(&id, "entity mailbox full or closed");
                    }
                }
                _ => self.shared.drop_message(&id, "shard stopping"),
            }
        }
        let ids: Vec<EntityId> = self.entities.keys().cloned().collect();
        for id in ids {
            match self.entities.remove(&id) {
                Some(Entry::Active {
                    actor,
                    incarnation,
                    tick,
                    ..
                }) => {
                    self.lru.remove(&tick);
                    self.send_stop(&actor);
                    self.entities.insert(
                        id,
                        Entry::Stopping {
                            actor,
                            incarnation,
                            passivated: false,
                            buffer: VecDeque::new(),
                        },
                    );
                }
                Some(Entry::Stopping {
                    actor,
                    incarnation,
                    passivated,
                    buffer,
                }) => {
                    for _ in buffer {
                        self.shared.drop_message(&id, "shard stopping");
                    }
                    self.entities.insert(
                        id,
                        Entry::Stopping {
                            actor,
                            incarnation,
                            passivated,
                            buffer: VecDeque::new(),
                        },
                    );
                }
                Some(Entry::Starting { buffer }) => {
                    for _ in buffer {
                        self.shared.drop_message(&id, "shard stopping");
                    }
                }
                None => {}
            }
        }
        let timeout = self.settings.hand_off_timeout;
        self.await_terminations(Instant::now() + timeout).await;
        if !self.entities.is_empty() {
            tracing::warn!(shard = %self.shared.shard_id, entities = self.entities.len(), ?timeout, "entities did not stop within the hand-off timeout; killing them");
            for entry in self.entities.values() {
                if let Entry::Stopping { actor, .. } | Entry::Active { actor, .. } = entry {
                    actor.kill();
                }
            }
            self.await_terminations(Instant::now() + timeout).await;
            if !self.entities.is_empty() {
                tracing::error!(shard = %self.shared.shard_id, entities = self.entities.len(), "entities did not stop after being killed; giving up on them");
            }
        }
        // Passivations that completed are recorded, within the hand-off timeout.
        let flush_deadline = Instant::now() + timeout;
        loop {
            self.write_next();
            let Some(write) = self.write_in_flight.as_mut() else {
                break;
            };
            tokio::select! {
                out = write => {
                    self.write_in_flight = None;
                    if !self.on_written(out) {
                        break;
                    }
                }
                () = tokio::time::sleep_until(flush_deadline) => {
                    tracing::warn!(shard = %self.shared.shard_id, "remember-entities writes did not finish within the hand-off timeout");
                    break;
                }
            }
        }
        self.entities.clear();
        self.lru.clear();
        lock(&self.shared.running).clear();
    }

    async fn await_terminations(&mut self, deadline: Instant) {
        while !self.entities.is_empty() && !self.terminations.is_empty() {
            tokio::select! {
                Some(t) = self.terminations.next() => self.on_terminated(t),
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// Reads the remember-entities log: its highest sequence number and the started entities.
async fn read_log(
    store: Arc<dyn Store>,
    pid: PersistenceId,
) -> Result<(u64, BTreeSet<EntityId>), StoreError> {
    let highest = store.highest_seq_nr(pid.clone()).await?;
    let mut remembered = BTreeSet::new();
    let mut from = 1;
    while from <= highest {
        let page = store
            .replay(pid.clone(), from, highest, REPLAY_PAGE)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        from = last.seq_nr + 1;
        for record in &page {
            match Change::decode(record) {
                Some(Change::Started(id)) => {
                    remembered.insert(id);
                }
                Some(Change::Stopped(id)) => {
                    remembered.remove(&id);
                }
                None => {}
            }
        }
    }
    Ok((highest, remembered))
}

/// The restart ticker's period and how many entities to start per tick for `rate` per second.
fn restart_pacing(rate: u32) -> (Duration, usize) {
    let period = Duration::from_secs(1) / rate;
    if period >= MIN_RESTART_PERIOD {
        (period, 1)
    } else {
        let ticks_per_second =
            (Duration::from_secs(1).as_millis() / MIN_RESTART_PERIOD.as_millis()) as u32;
        (MIN_RESTART_PERIOD, rate.div_ceil(ticks_per_second) as usize)
    }
}

async fn poll_write(write: &mut Option<BoxFuture<'static, WriteOutcome>>) -> WriteOutcome {
    match write {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use shoal_actor::{Actor, ActorError, Context, Props};
    use shoal_persistence::memory::MemoryStore;
    use shoal_persistence::store::{
        EventQuery, EventStream, Journal, Offset, PersistenceIdStream, QueryMode, SnapshotRecord,
        SnapshotSelection, SnapshotStore,
    };

    #[derive(Debug)]
    enum Msg {
        Cmd(u32),
        /// Asks the shard for passivation.
        Passivate,
        /// The configured stop message.
        Stop,
        /// Stops without the shard asking.
        SelfStop,
    }

    /// What the test entities did, shared with the test.
    #[derive(Clone, Default)]
    struct Probe {
        /// (entity, incarnation number of that entity, event)
        log: Arc<Mutex<Vec<(String, u32, String)>>>,
        starts: Arc<Mutex<BTreeMap<String, u32>>>,
        refs: Arc<Mutex<Vec<ActorRef<Msg>>>>,
        /// Entities that ignore the stop message.
        stuck: Arc<Mutex<BTreeSet<String>>>,
        /// How long an entity takes to handle the stop message.
        stop_delay: Arc<Mutex<Duration>>,
    }

    impl Probe {
        fn starts(&self, id: &str) -> u32 {
            lock(&self.starts).get(id).copied().unwrap_or(0)
        }

        /// The events of `id`, as "incarnation:event".
        fn events(&self, id: &str) -> Vec<String> {
            lock(&self.log)
                .iter()
                .filter(|(e, _, _)| e == id)
                .map(|(_, n, what)| format!("{n}:{what}"))
                .collect()
        }

        fn factory(&self) -> EntityFactory<Msg> {
            let probe = self.clone();
            Arc::new(move |system: &ActorSystem, ctx: EntityContext<Msg>| {
                let id = ctx.entity_id().as_str().to_owned();
                let incarnation = {
                    let mut starts = lock(&probe.starts);
                    let n = starts.entry(id.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let p = probe.clone();
                let actor = system.spawn(
                    &format!("entity-{id}"),
                    Props::new(move || TestEntity {
                        probe: p.clone(),
                        ctx: ctx.clone(),
                        incarnation,
                    }),
                );
                lock(&probe.refs).push(actor.clone());
                actor
            })
        }
    }

    struct TestEntity {
        probe: Probe,
        ctx: EntityContext<Msg>,
        incarnation: u32,
    }

    impl TestEntity {
        fn record(&self, what: impl Into<String>) {
            lock(&self.probe.log).push((
                self.ctx.entity_id().as_str().to_owned(),
                self.incarnation,
                what.into(),
            ));
        }
    }

    impl Actor for TestEntity {
        type Msg = Msg;

        async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
            self.record("start");
            Ok(())
        }

        async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
            match msg {
                Msg::Cmd(n) => self.record(format!("cmd {n}")),
                Msg::Passivate => self.ctx.passivate(),
                Msg::Stop => {
                    self.record("stop-msg");
                    if lock(&self.probe.stuck).contains(self.ctx.entity_id().as_str()) {
                        return Ok(());
                    }
                    let delay = *lock(&self.probe.stop_delay);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    ctx.stop();
                }
                Msg::SelfStop => ctx.stop(),
            }
            Ok(())
        }

        async fn stopped(&mut self, _: &mut Context<Self>, _: &StopReason) {
            self.record("stopped");
        }
    }

    fn settings() -> ShardSettings<Msg> {
        ShardSettings {
            idle_timeout: None,
            active_entity_limit: None,
            stop_message: Some(Arc::new(|| Msg::Stop)),
            hand_off_timeout: Duration::from_secs(10),
            entity_buffer: 100,
            remember: None,
        }
    }

    fn remember(store: &MemoryStore, rate: u32) -> Option<Arc<RememberSettings>> {
        remember_in(Arc::new(store.clone()), rate)
    }

    fn remember_in(store: Arc<dyn Store>, rate: u32) -> Option<Arc<RememberSettings>> {
        Some(Arc::new(RememberSettings {
            store,
            type_name: "Counter".into(),
            max_starts_per_second: rate,
        }))
    }

    fn eid(id: &str) -> EntityId {
        EntityId::new(id).unwrap()
    }

    fn start(
        probe: &Probe,
        settings: ShardSettings<Msg>,
        system: &ActorSystem,
    ) -> ShardHandle<Msg> {
        ShardHandle::start(
            ShardId::from_number(7),
            settings,
            probe.factory(),
            system.clone(),
        )
    }

    /// Lets the shard and entity tasks run without moving the (paused) clock.
    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    fn ids(shard: &ShardHandle<Msg>) -> Vec<String> {
        shard
            .entity_ids()
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_entity_starts_on_its_first_message() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(&probe, settings(), &system);
        settle().await;
        assert_eq!(shard.entity_count(), 0);
        assert_eq!(probe.starts("a"), 0);
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        settle().await;
        assert_eq!(probe.starts("a"), 1);
        assert_eq!(probe.events("a"), ["1:start", "1:cmd 1"]);
        assert_eq!(shard.entity_count(), 1);
        assert_eq!(ids(&shard), ["a"]);
        shard.deliver(eid("a"), Msg::Cmd(2)).unwrap();
        settle().await;
        assert_eq!(
            probe.starts("a"),
            1,
            "a running entity is not started again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn messages_to_one_entity_keep_their_order() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(&probe, settings(), &system);
        for n in 0..200 {
            shard.deliver(eid("a"), Msg::Cmd(n)).unwrap();
            shard.deliver(eid("b"), Msg::Cmd(1000 + n)).unwrap();
        }
        settle().await;
        let want_a: Vec<String> = std::iter::once("1:start".to_owned())
            .chain((0..200).map(|n| format!("1:cmd {n}")))
            .collect();
        let want_b: Vec<String> = std::iter::once("1:start".to_owned())
            .chain((0..200).map(|n| format!("1:cmd {}", 1000 + n)))
            .collect();
        assert_eq!(probe.events("a"), want_a);
        assert_eq!(probe.events("b"), want_b);
        assert_eq!(ids(&shard), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_entity_is_passivated_and_restarted_by_the_next_message() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(
            &probe,
            ShardSettings {
                idle_timeout: Some(Duration::from_secs(10)),
                ..settings()
            },
            &system,
        );
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        settle().await;
        // A message resets the idle clock.
        shard.deliver(eid("a"), Msg::Cmd(2)).unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        settle().await;
        assert_eq!(
            shard.entity_count(),
            1,
            "12 s after start but 6 s after use"
        );
        assert!(!probe.events("a").contains(&"1:stop-msg".to_owned()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            probe.events("a"),
            ["1:start", "1:cmd 1", "1:cmd 2", "1:stop-msg", "1:stopped"]
        );
        assert_eq!(shard.entity_count(), 0);
        shard.deliver(eid("a"), Msg::Cmd(3)).unwrap();
        settle().await;
        assert_eq!(probe.starts("a"), 2);
        assert_eq!(probe.events("a")[5..], ["2:start", "2:cmd 3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entity_is_passivated_beyond_the_limit() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(
            &probe,
            ShardSettings {
                active_entity_limit: Some(2),
                ..settings()
            },
            &system,
        );
        for id in ["a", "b", "a", "c"] {
            shard.deliver(eid(id), Msg::Cmd(1)).unwrap();
            settle().await;
        }
        assert_eq!(ids(&shard), ["a", "c"]);
        assert_eq!(
            probe.events("b"),
            ["1:start", "1:cmd 1", "1:stop-msg", "1:stopped"]
        );
        assert!(!probe.events("a").contains(&"1:stop-msg".to_owned()));
        // Lowering the limit passivates the least recently used of the rest (a).
        shard.set_active_entity_limit(Some(1));
        settle().await;
        assert_eq!(ids(&shard), ["c"]);
        assert!(probe.events("a").contains(&"1:stopped".to_owned()));
        // No limit: nothing more is passivated.
        shard.set_active_entity_limit(None);
        for id in ["a", "b", "d"] {
            shard.deliver(eid(id), Msg::Cmd(2)).unwrap();
        }
        settle().await;
        assert_eq!(ids(&shard), ["a", "b", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_sent_during_a_passivation_go_to_the_next_incarnation_in_order() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        *lock(&probe.stop_delay) = Duration::from_secs(1);
        let shard = start(
            &probe,
            ShardSettings {
                entity_buffer: 3,
                ..settings()
            },
            &system,
        );
        shard.deliver(eid("a"), Msg::Cmd(0)).unwrap();
        shard.deliver(eid("a"), Msg::Passivate).unwrap();
        settle().await;
        // The entity is handling the stop message (it takes 1 s); these wait in the shard.
        for n in 1..=4 {
            shard.deliver(eid("a"), Msg::Cmd(n)).unwrap();
        }
        settle().await;
        assert_eq!(probe.events("a"), ["1:start", "1:cmd 0", "1:stop-msg"]);
        assert_eq!(
            shard.dropped_messages(),
            1,
            "the buffer holds 3; the 4th is dropped"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        shard.deliver(eid("a"), Msg::Cmd(5)).unwrap();
        settle().await;
        assert_eq!(
            probe.events("a"),
            [
                "1:start",
                "1:cmd 0",
                "1:stop-msg",
                "1:stopped",
                "2:start",
                "2:cmd 1",
                "2:cmd 2",
                "2:cmd 3",
                "2:cmd 5"
            ]
        );
        assert_eq!(ids(&shard), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entity_that_stops_by_itself_is_removed_and_restarted_on_demand() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(&probe, settings(), &system);
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        shard.deliver(eid("a"), Msg::SelfStop).unwrap();
        settle().await;
        assert_eq!(shard.entity_count(), 0);
        assert_eq!(probe.events("a"), ["1:start", "1:cmd 1", "1:stopped"]);
        shard.deliver(eid("a"), Msg::Cmd(2)).unwrap();
        settle().await;
        assert_eq!(probe.events("a")[3..], ["2:start", "2:cmd 2"]);
        assert_eq!(ids(&shard), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn hand_off_stops_every_entity_and_kills_stragglers() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        lock(&probe.stuck).insert("stuck".to_owned());
        let shard = start(&probe, settings(), &system);
        for id in ["a", "b", "stuck"] {
            shard.deliver(eid(id), Msg::Cmd(1)).unwrap();
        }
        settle().await;
        assert_eq!(shard.entity_count(), 3);
        let began = Instant::now();
        shard.hand_off().await;
        let took = began.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "the stuck entity is killed after the hand-off timeout, took {took:?}"
        );
        for id in ["a", "b", "stuck"] {
            assert_eq!(
                probe.events(id),
                ["1:start", "1:cmd 1", "1:stop-msg", "1:stopped"],
                "{id}"
            );
        }
        assert!(lock(&probe.refs).iter().all(|r| r.stop_reason().is_some()));
        assert_eq!(shard.entity_count(), 0);
        assert!(matches!(
            shard.deliver(eid("a"), Msg::Cmd(2)),
            Err(Msg::Cmd(2))
        ));
        settle().await;
        assert_eq!(probe.starts("a"), 1);
        // A second hand-off returns at once.
        shard.hand_off().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stop_message_entities_are_stopped_gracefully() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(
            &probe,
            ShardSettings {
                stop_message: None,
                idle_timeout: Some(Duration::from_secs(1)),
                ..settings()
            },
            &system,
        );
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        shard.deliver(eid("b"), Msg::Cmd(1)).unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        shard.deliver(eid("b"), Msg::Cmd(2)).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        settle().await;
        assert_eq!(probe.events("a"), ["1:start", "1:cmd 1", "1:stopped"]);
        assert_eq!(ids(&shard), ["b"]);
        shard.hand_off().await;
        assert_eq!(
            probe.events("b"),
            ["1:start", "1:cmd 1", "1:cmd 2", "1:stopped"]
        );
    }

    async fn log_of(store: &MemoryStore) -> Vec<(String, String)> {
        let pid = PersistenceId::of("shoal-sharding-Counter", "7").unwrap();
        store
            .replay(pid, 1, u64::MAX, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                (r.manifest, v["id"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn remembered_entities_restart_with_the_shard_and_passivated_ones_do_not() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let store = MemoryStore::new();
        let with_remember = || ShardSettings {
            remember: remember(&store, 100),
            ..settings()
        };
        let shard = start(&probe, with_remember(), &system);
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        shard.deliver(eid("b"), Msg::Cmd(1)).unwrap();
        settle().await;
        assert_eq!(ids(&shard), ["a", "b"]);
        shard.deliver(eid("b"), Msg::Passivate).unwrap();
        settle().await;
        assert_eq!(ids(&shard), ["a"]);
        shard.hand_off().await;
        assert_eq!(
            log_of(&store).await,
            [
                ("shoal.sharding.EntityStarted".to_owned(), "a".to_owned()),
                ("shoal.sharding.EntityStarted".to_owned(), "b".to_owned()),
                ("shoal.sharding.EntityStopped".to_owned(), "b".to_owned()),
            ],
            "the hand-off records nothing"
        );

        let shard = start(&probe, with_remember(), &system);
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(probe.starts("a"), 2, "a restarts without a message");
        assert_eq!(probe.events("a").last().unwrap(), "2:start");
        assert_eq!(probe.starts("b"), 1, "b was passivated: not restarted");
        assert_eq!(ids(&shard), ["a"]);
        // b starts again on demand and is remembered again.
        shard.deliver(eid("b"), Msg::Cmd(2)).unwrap();
        settle().await;
        assert_eq!(probe.events("b").last().unwrap(), "2:cmd 2");
        shard.hand_off().await;
        assert_eq!(log_of(&store).await.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn remembered_entities_restart_at_a_bounded_rate() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let store = MemoryStore::new();
        let shard = start(
            &probe,
            ShardSettings {
                remember: remember(&store, 2),
                ..settings()
            },
            &system,
        );
        for n in 0..10 {
            shard.deliver(eid(&format!("e{n}")), Msg::Cmd(n)).unwrap();
        }
        settle().await;
        assert_eq!(shard.entity_count(), 10);
        shard.hand_off().await;

        let shard = start(
            &probe,
            ShardSettings {
                remember: remember(&store, 2),
                ..settings()
            },
            &system,
        );
        settle().await;
        let restarted = |probe: &Probe| {
            (0..10)
                .filter(|n| probe.starts(&format!("e{n}")) == 2)
                .count()
        };
        assert!(restarted(&probe) >= 1, "restarts begin at once");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        settle().await;
        let after_one_second = restarted(&probe);
        assert!(
            (2..=3).contains(&after_one_second),
            "2 per second: {after_one_second} restarted after 1.1 s"
        );
        // A message starts a remembered entity at once, without waiting for its turn.
        shard.deliver(eid("e9"), Msg::Cmd(99)).unwrap();
        settle().await;
        assert_eq!(probe.starts("e9"), 2);
        tokio::time::sleep(Duration::from_secs(4)).await;
        settle().await;
        assert_eq!(restarted(&probe), 10);
        assert_eq!(shard.entity_count(), 10);
        assert_eq!(probe.starts("e9"), 2, "not started twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fencing_conflict_stops_the_shard() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let store = MemoryStore::new();
        let shard = start(
            &probe,
            ShardSettings {
                remember: remember(&store, 100),
                ..settings()
            },
            &system,
        );
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        settle().await;
        assert_eq!(ids(&shard), ["a"]);
        // Another instance of the shard appends to the log.
        let pid = PersistenceId::of("shoal-sharding-Counter", "7").unwrap();
        let foreign = Change::Started(eid("x")).record(2, "other").unwrap();
        store
            .append(AtomicWrite {
                persistence_id: pid,
                expected_seq_nr: 1,
                events: vec![foreign],
            })
            .await
            .unwrap();
        shard.deliver(eid("b"), Msg::Cmd(1)).unwrap();
        settle().await;
        assert_eq!(
            probe.starts("b"),
            0,
            "b's start was not recorded: not started"
        );
        assert!(
            probe
                .events("a")
                .ends_with(&["1:stop-msg".to_owned(), "1:stopped".to_owned()])
        );
        assert!(shard.deliver(eid("a"), Msg::Cmd(2)).is_err());
        assert_eq!(shard.entity_count(), 0);
        // The shard has ended: a hand-off returns at once.
        tokio::time::timeout(Duration::from_secs(1), shard.hand_off())
            .await
            .unwrap();
    }

    /// A memory store whose appends fail while `failing` is set.
    #[derive(Clone)]
    struct FlakyStore {
        inner: MemoryStore,
        failing: Arc<AtomicBool>,
    }

    impl Journal for FlakyStore {
        fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>> {
            if self.failing.load(Ordering::SeqCst) {
                return Box::pin(async { Err(StoreError::Unavailable("down".into())) });
            }
            self.inner.append(write)
        }
        fn replay(
            &self,
            pid: PersistenceId,
            from: u64,
            to: u64,
            max: usize,
        ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
            self.inner.replay(pid, from, to, max)
        }
        fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>> {
            if self.failing.load(Ordering::SeqCst) {
                return Box::pin(async { Err(StoreError::Unavailable("down".into())) });
            }
            self.inner.highest_seq_nr(pid)
        }
        fn delete_to(&self, pid: PersistenceId, to: u64) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.delete_to(pid, to)
        }
    }

    impl SnapshotStore for FlakyStore {
        fn save(&self, s: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.save(s)
        }
        fn load(
            &self,
            pid: PersistenceId,
            sel: SnapshotSelection,
        ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
            self.inner.load(pid, sel)
        }
        fn delete(
            &self,
            pid: PersistenceId,
            sel: SnapshotSelection,
        ) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.delete(pid, sel)
        }
    }

    impl EventQuery for FlakyStore {
        fn events_by_persistence_id(
            &self,
            _: PersistenceId,
            _: u64,
            _: u64,
            _: QueryMode,
        ) -> EventStream {
            Box::pin(stream::empty())
        }
        fn events_by_tag(&self, _: String, _: Offset, _: QueryMode) -> EventStream {
            Box::pin(stream::empty())
        }
        fn persistence_ids(&self, _: QueryMode) -> PersistenceIdStream {
            Box::pin(stream::empty())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_error_fails_the_delivery_and_the_next_message_retries() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let store = FlakyStore {
            inner: MemoryStore::new(),
            failing: Arc::new(AtomicBool::new(false)),
        };
        let shard = start(
            &probe,
            ShardSettings {
                remember: remember_in(Arc::new(store.clone()), 100),
                ..settings()
            },
            &system,
        );
        settle().await;
        store.failing.store(true, Ordering::SeqCst);
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        shard.deliver(eid("a"), Msg::Cmd(2)).unwrap();
        settle().await;
        assert_eq!(probe.starts("a"), 0);
        assert_eq!(shard.dropped_messages(), 2);
        assert_eq!(shard.entity_count(), 0);
        store.failing.store(false, Ordering::SeqCst);
        shard.deliver(eid("a"), Msg::Cmd(3)).unwrap();
        settle().await;
        assert_eq!(probe.events("a"), ["1:start", "1:cmd 3"]);
        assert_eq!(log_of(&store.inner).await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_handle_stops_the_entities() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let shard = start(&probe, settings(), &system);
        shard.deliver(eid("a"), Msg::Cmd(1)).unwrap();
        settle().await;
        let other = shard.clone();
        drop(shard);
        settle().await;
        assert_eq!(
            probe.events("a"),
            ["1:start", "1:cmd 1"],
            "a clone is still alive"
        );
        drop(other);
        settle().await;
        assert_eq!(
            probe.events("a"),
            ["1:start", "1:cmd 1", "1:stop-msg", "1:stopped"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_entity_type_name_with_a_separator_stops_the_shard() {
        let system = ActorSystem::new("t");
        let probe = Probe::default();
        let store = MemoryStore::new();
        let shard = start(
            &probe,
            ShardSettings {
                remember: Some(Arc::new(RememberSettings {
                    store: Arc::new(store),
                    type_name: "Bad|Name".into(),
                    max_starts_per_second: 10,
                })),
                ..settings()
            },
            &system,
        );
        settle().await;
        assert!(shard.deliver(eid("a"), Msg::Cmd(1)).is_err());
        tokio::time::timeout(Duration::from_secs(1), shard.hand_off())
            .await
            .unwrap();
        assert_eq!(probe.starts("a"), 0);
    }

    #[test]
    fn restart_pacing_spreads_starts_over_the_second() {
        assert_eq!(restart_pacing(1), (Duration::from_secs(1), 1));
        assert_eq!(restart_pacing(2), (Duration::from_millis(500), 1));
        assert_eq!(restart_pacing(100), (Duration::from_millis(10), 1));
        assert_eq!(restart_pacing(1000), (Duration::from_millis(10), 10));
        assert_eq!(restart_pacing(1001), (Duration::from_millis(10), 11));
    }
}
