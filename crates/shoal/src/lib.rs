//! Shoal: distribute application state across a cluster — entities that live in one place,
//! persisted as events, recovered after any crash.
//!
//! This crate is the one dependency a service needs; it re-exports the parts:
//!
//! * [`actor`] — typed actors on tokio ([`shoal_actor`]).
//! * [`persistence`] — event-sourced entities, store traits, the in-memory store
//!   ([`shoal_persistence`]).
//! * [`sqlite`] — the embedded default store ([`shoal_sqlite`]).
//!
//! `use shoal::prelude::*;` brings the names an entity and a service use.

pub use shoal_actor as actor;
pub use shoal_persistence as persistence;
pub use shoal_sqlite as sqlite;

/// The names most services use.
pub mod prelude {
    pub use shoal_actor::{
        Actor, ActorError, ActorRef, ActorSystem, AskError, Context, Props, ReplyTo,
        SupervisorStrategy,
    };
    pub use shoal_persistence::store::{PersistenceId, Store, StoreError};
    pub use shoal_persistence::{
        Effect, Entities, EntityContext, EntitySettings, Event, EventSourced, Persistence,
        PersistenceSettings,
    };
}
