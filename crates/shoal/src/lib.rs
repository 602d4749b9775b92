//! Shoal: distribute application state across a cluster — entities that live in one place,
//! persisted as events, recovered after any crash.
//!
//! This crate is the one dependency a service needs; it re-exports the parts:
//!
//! * [`actor`] — typed actors on tokio ([`shoal_actor`]).
//! * [`persistence`] — event-sourced entities, store traits, the in-memory store
//!   ([`shoal_persistence`]).
//! * [`sqlite`] — the embedded default store ([`shoal_sqlite`]).
//! * [`postgres`] — the PostgreSQL store a cluster shares ([`shoal_postgres`]).
//! * [`store_url`] — choose and open a store from a URL (`memory:`, `sqlite:PATH`), as a
//!   service's `--store` flag does.
//! * [`remote`], [`cluster`], [`sharding`], [`management`] — remoting, membership and
//!   singletons, cluster sharding, the management HTTP.
//! * [`node`] — start all of it as one cluster node.
//!
//! `use shoal::prelude::*;` brings the names an entity and a service use.

pub use shoal_actor as actor;
pub use shoal_cluster as cluster;
pub use shoal_management as management;
pub use shoal_persistence as persistence;
pub use shoal_postgres as postgres;
pub use shoal_remote as remote;
pub use shoal_sharding as sharding;
pub use shoal_sqlite as sqlite;

pub mod node;
pub mod store_url;

/// The names most services use.
pub mod prelude {
    pub use crate::store_url::{StoreUrl, StoreUrlError, open_store};
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
