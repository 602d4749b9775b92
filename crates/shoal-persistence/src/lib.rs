//! Event-sourced entities for Shoal.
//!
//! An entity implements [`EventSourced`]: a command handler that returns an [`Effect`]
//! (persist events, reply, stop…) and a pure event handler. The runtime:
//!
//! * **recovers** the state from the latest snapshot plus the events after it, with a
//!   limit on how many entities recover at once ([`PersistenceSettings`]);
//! * **persists** the events of one command atomically through the [`store::Journal`],
//!   fenced by the expected sequence number — a second writer gets a conflict, stops and
//!   never acknowledges;
//! * runs **side effects and replies only after commit**; while a write is in flight, later
//!   commands wait in the bounded mailbox;
//! * on a failed write, **fails the command** with an error reply and **restarts** the
//!   entity with backoff (recovery re-reads the log);
//! * takes **snapshots** every N events, keeps the last M, optionally deletes covered events;
//! * **tags** events by a function, stores a **manifest and schema version** with each
//!   event, and **upcasts** old versions ([`codec::Upcasters`]).
//!
//! The storage boundary is in [`store`]; [`memory::MemoryStore`] is the in-memory backend,
//! and [`testing`] is the conformance suite every backend runs.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use shoal_actor::{ActorSystem, ReplyTo};
//! use shoal_persistence::{Effect, Entities, EntityContext, EntitySettings, Event, EventSourced, Persistence};
//! use shoal_persistence::memory::MemoryStore;
//!
//! struct Counter;
//! enum CounterCommand { Add(u64, ReplyTo<u64>) }
//! #[derive(Serialize, Deserialize)]
//! struct Added(u64);
//! impl Event for Added { const MANIFEST: &'static str = "Added"; }
//!
//! impl EventSourced for Counter {
//!     type Command = CounterCommand;
//!     type Event = Added;
//!     type State = u64;
//!     const TYPE_NAME: &'static str = "Counter";
//!     fn on_command(&self, _: &EntityContext, _: &u64, cmd: CounterCommand) -> Effect<Self> {
//!         match cmd {
//!             CounterCommand::Add(n, reply) => Effect::persist(Added(n)).then_reply(reply, |total| *total),
//!         }
//!     }
//!     fn on_event(state: &mut u64, event: &Added) { *state += event.0; }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let system = ActorSystem::new("example");
//! let persistence = Persistence::new(Arc::new(MemoryStore::new()));
//! let counters = Entities::new(&system, &persistence, || Counter, EntitySettings::default());
//! let c = counters.entity_ref("c-1").unwrap();
//! let total = c.ask(|r| CounterCommand::Add(2, r), Duration::from_secs(1)).await.unwrap();
//! assert_eq!(total, 2);
//! # }
//! ```

pub mod codec;
mod effect;
mod entity;
pub mod memory;
mod persistence;
pub mod store;
pub mod testing;

pub use codec::{Event, Upcasters};
pub use effect::Effect;
pub use entity::{EntityActor, EntityContext, EventSourced, PersistenceError};
pub use persistence::{Entities, EntitySettings, Persistence, PersistenceSettings};
