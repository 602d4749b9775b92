//! The event-sourced entity: the user-facing trait and the actor that runs it.
//!
//! ```text
//!            started()                     command
//!  Recovering ────────► Running ◄──────────────────────┐
//!   │ snapshot + events   │ on_command → Effect         │
//!   │                     ├─ none/reply: side effects ──┤
//!   │                     ├─ persist: append (fenced) ──┤ commit → apply → side effects
//!   │                     │     conflict ─► Stopped (never acknowledges)
//!   │                     │     failure  ─► replies fail, restart with backoff → Recovering
//!   ▼                     └─ stop ───────► Stopped
//!  RecoveryFailed ─► restart with backoff
//! ```
//!
//! Commands that arrive while a write is in flight wait in the entity's bounded mailbox: the
//! entity handles the next command only after the previous one's events are committed and its
//! side effects have run.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{Actor, ActorError, ActorRef, ActorSystem, Context, Props, SupervisorStrategy};

use crate::codec::{Event, decode_snapshot, encode_json};
use crate::effect::{Action, Effect, SideEffect};
use crate::persistence::{EntitySettings, Persistence};
use crate::store::{
    AtomicWrite, EventRecord, PersistenceId, SnapshotRecord, SnapshotSelection, StoreError,
    now_millis,
};

/// An event-sourced entity: commands in, events persisted, state rebuilt from events.
///
/// `on_command` decides ([`Effect`]); `on_event` applies a committed event to the state and
/// must be pure and deterministic — it is also what recovery runs.
pub trait EventSourced: Send + Sized + 'static {
    /// The entity's protocol. Requests carry [`ReplyTo`](shoal_actor::ReplyTo) handles.
    type Command: Send + 'static;
    /// What is persisted.
    type Event: Event;
    /// The state, rebuilt from the latest snapshot plus the events after it.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// The entity type name: the first part of every persistence id, e.g. `"ShoppingCart"`.
    const TYPE_NAME: &'static str;
    /// Names the state type in snapshots.
    const STATE_MANIFEST: &'static str = Self::TYPE_NAME;
    /// The schema version of snapshots; a snapshot of another version is ignored (events are
    /// replayed instead).
    const STATE_VERSION: u32 = 1;

    /// Decides what a command does.
    fn on_command(
        &self,
        ctx: &EntityContext,
        state: &Self::State,
        command: Self::Command,
    ) -> Effect<Self>;

    /// Applies a committed event.
    fn on_event(state: &mut Self::State, event: &Self::Event);

    /// Tags of an event, for queries by tag. None by default.
    fn tags(&self, event: &Self::Event) -> Vec<String> {
        let _ = event;
        Vec::new()
    }

    /// Called once recovery has rebuilt the state, before the first command.
    fn on_recovery_completed(
        &mut self,
        ctx: &EntityContext,
        state: &Self::State,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, state);
        async {}
    }

    /// Called when recovery fails; the entity then restarts with backoff.
    fn on_recovery_failed(&mut self, ctx: &EntityContext, error: &PersistenceError) {
        let _ = (ctx, error);
    }
}

/// What an entity knows about itself.
#[derive(Debug, Clone)]
pub struct EntityContext {
    /// The entity's log.
    pub persistence_id: PersistenceId,
    /// The sequence number of the last committed event (0 before the first).
    pub seq_nr: u64,
}

impl EntityContext {
    /// The entity id (the persistence id without the type name).
    pub fn entity_id(&self) -> &str {
        self.persistence_id.entity_id()
    }
}

/// Why an entity could not recover or persist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistenceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event or snapshot could not be decoded, or an event not encoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
}

/// The actor that runs an [`EventSourced`] behavior (opaque: get its [`Props`] from
/// [`Persistence::props`], or spawn it through [`Entities`](crate::Entities)).
pub struct EntityActor<E: EventSourced> {
    behavior: E,
    state: E::State,
    ectx: EntityContext,
    persistence: Persistence,
    settings: Arc<EntitySettings>,
    writer_id: String,
}

/// Starts the actor for entity `entity_id` of type `E`.
pub(crate) fn spawn_entity<E: EventSourced>(
    system: &ActorSystem,
    persistence: &Persistence,
    persistence_id: PersistenceId,
    factory: impl FnMut() -> E + Send + 'static,
    settings: Arc<EntitySettings>,
) -> ActorRef<E::Command> {
    let name = persistence_id.to_string();
    system.spawn(
        &name,
        entity_props(persistence, persistence_id, factory, settings),
    )
}

/// The props of the actor for `persistence_id`.
pub(crate) fn entity_props<E: EventSourced>(
    persistence: &Persistence,
    persistence_id: PersistenceId,
    mut factory: impl FnMut() -> E + Send + 'static,
    settings: Arc<EntitySettings>,
) -> Props<EntityActor<E>> {
    let persistence = persistence.clone();
    let mailbox = settings.mailbox_capacity;
    let strategy = SupervisorStrategy::Restart(settings.backoff.clone());
    Props::new(move || EntityActor {
        behavior: factory(),
        state: E::State::default(),
        ectx: EntityContext {
            persistence_id: persistence_id.clone(),
            seq_nr: 0,
        },
        writer_id: persistence.writer_id().to_owned(),
        persistence: persistence.clone(),
        settings: settings.clone(),
    })
    .with_supervision(strategy)
    .with_mailbox_capacity(mailbox)
}

impl<E: EventSourced> EntityActor<E> {
    async fn recover(&mut self) -> Result<(), PersistenceError> {
        let _permit = self.persistence.recovery_permit().await;
        let pid = self.ectx.persistence_id.clone();
        let store = self.persistence.store();
        let mut state = E::State::default();
        let mut seq_nr = 0;
        if let Some(snapshot) = store.load(pid.clone(), SnapshotSelection::ALL).await? {
            match decode_snapshot::<E::State>(&snapshot, E::STATE_MANIFEST, E::STATE_VERSION) {
                Ok(s) => {
                    state = s;
                    seq_nr = snapshot.seq_nr;
                }
                Err(error) => {
                    tracing::warn!(%pid, %error, "ignoring unreadable snapshot; replaying events")
                }
            }
        }
        let page = self.settings.replay_page_size.max(1);
        loop {
            let events = store
                .replay(pid.clone(), seq_nr + 1, u64::MAX, page)
                .await?;
            let n = events.len();
            for record in &events {
                let event: E::Event = self.settings.upcasters.decode_event(record)?;
                E::on_event(&mut state, &event);
                seq_nr = record.seq_nr;
            }
            if n < page {
                break;
            }
        }
        // Events may have been deleted beyond what was replayed; the fence continues after
        // the highest number ever written.
        let highest = store.highest_seq_nr(pid.clone()).await?;
        self.state = state;
        self.ectx.seq_nr = seq_nr.max(highest);
        Ok(())
    }

    fn encode(&self, events: &[E::Event]) -> Result<Vec<EventRecord>, PersistenceError> {
        let now = now_millis();
        events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                Ok(EventRecord {
                    seq_nr: self.ectx.seq_nr + 1 + i as u64,
                    manifest: E::Event::MANIFEST.to_owned(),
                    schema_version: E::Event::VERSION,
                    payload: encode_json(event)?,
                    tags: self.behavior.tags(event),
                    writer_id: self.writer_id.clone(),
                    timestamp_ms: now,
                })
            })
            .collect()
    }

    async fn maybe_snapshot(&mut self, before: u64) {
        let Some(every) = self.settings.snapshot_every.filter(|n| *n > 0) else {
            return;
        };
        let after = self.ectx.seq_nr;
        if before / every == after / every {
            return;
        }
        let pid = self.ectx.persistence_id.clone();
        let store = self.persistence.store();
        let payload = match encode_json(&self.state) {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%pid, %error, "cannot encode snapshot");
                return;
            }
        };
        let record = SnapshotRecord {
            persistence_id: pid.clone(),
            seq_nr: after,
            manifest: E::STATE_MANIFEST.to_owned(),
            schema_version: E::STATE_VERSION,
            payload,
            timestamp_ms: now_millis(),
        };
        if let Err(error) = store.save(record).await {
            tracing::warn!(%pid, %error, "snapshot failed; recovery will replay more events");
            return;
        }
        // Keep the newest `keep_snapshots` snapshots: delete those older than the oldest kept.
        let keep = u64::from(self.settings.keep_snapshots.max(1));
        let oldest_kept = after.saturating_sub(every * (keep - 1));
        if oldest_kept > 0 {
            let older = SnapshotSelection {
                min_seq_nr: 0,
                max_seq_nr: oldest_kept - 1,
            };
            if let Err(error) = store.delete(pid.clone(), older).await {
                tracing::warn!(%pid, %error, "deleting old snapshots failed");
            }
            if self.settings.delete_events_on_snapshot
                && let Err(error) = store.delete_to(pid.clone(), oldest_kept).await
            {
                tracing::warn!(%pid, %error, "deleting events covered by snapshots failed");
            }
        }
    }
}

impl<E: EventSourced> Actor for EntityActor<E> {
    type Msg = E::Command;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        match self.recover().await {
            Ok(()) => {
                self.behavior
                    .on_recovery_completed(&self.ectx, &self.state)
                    .await;
                Ok(())
            }
            Err(error) => {
                tracing::error!(pid = %self.ectx.persistence_id, %error, "recovery failed");
                self.behavior.on_recovery_failed(&self.ectx, &error);
                Err(ActorError::new(format!("recovery failed: {error}")))
            }
        }
    }

    async fn handle(
        &mut self,
        ctx: &mut Context<Self>,
        command: E::Command,
    ) -> Result<(), ActorError> {
        let effect = self.behavior.on_command(&self.ectx, &self.state, command);
        let Effect {
            action,
            side_effects,
            stop_after,
        } = effect;
        match action {
            Action::None => {}
            Action::Unhandled => {
                tracing::debug!(pid = %self.ectx.persistence_id, "unhandled command");
            }
            Action::Stop => ctx.stop(),
            Action::Persist(events) => {
                let records = match self.encode(&events) {
                    Ok(r) => r,
                    Err(error) => {
                        // Nothing was written; the entity stays as it was.
                        tracing::error!(pid = %self.ectx.persistence_id, %error, "cannot encode event");
                        fail_all(side_effects, &format!("cannot encode event: {error}"));
                        return Ok(());
                    }
                };
                let before = self.ectx.seq_nr;
                let write = AtomicWrite {
                    persistence_id: self.ectx.persistence_id.clone(),
                    expected_seq_nr: before,
                    events: records,
                };
                match self.persistence.store().append(write).await {
                    Ok(()) => {
                        for event in &events {
                            E::on_event(&mut self.state, event);
                        }
                        self.ectx.seq_nr = before + events.len() as u64;
                        run_all(side_effects, &self.state);
                        self.maybe_snapshot(before).await;
                        if stop_after {
                            ctx.stop();
                        }
                        return Ok(());
                    }
                    Err(error @ StoreError::Conflict { .. }) => {
                        // Another writer owns this log: stop, never acknowledge.
                        tracing::error!(
                            pid = %self.ectx.persistence_id,
                            %error,
                            "another writer appended to this entity's log; stopping"
                        );
                        fail_all(side_effects, &format!("persist refused: {error}"));
                        ctx.stop();
                        return Ok(());
                    }
                    Err(error) => {
                        fail_all(side_effects, &format!("persist failed: {error}"));
                        return Err(ActorError::new(format!("persist failed: {error}")));
                    }
                }
            }
        }
        run_all(side_effects, &self.state);
        if stop_after {
            ctx.stop();
        }
        Ok(())
    }
}

fn run_all<S>(side_effects: Vec<SideEffect<S>>, state: &S) {
    for effect in side_effects {
        match effect {
            SideEffect::Run(f) => f(state),
            SideEffect::Reply(r) => r.complete(state),
        }
    }
}

fn fail_all<S>(side_effects: Vec<SideEffect<S>>, reason: &str) {
    for effect in side_effects {
        if let SideEffect::Reply(r) = effect {
            r.fail(reason);
        }
    }
}
