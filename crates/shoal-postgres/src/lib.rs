//! The PostgreSQL store of Shoal: journal, snapshots and queries in one schema of a database
//! that every node of a cluster shares.
//!
//! [`PostgresStore`] implements the storage boundary of `shoal-persistence`
//! ([`Journal`], [`SnapshotStore`], [`EventQuery`], hence [`Store`]) and passes its
//! conformance suite.
//!
//! ```no_run
//! use std::sync::Arc;
//! use shoal_persistence::store::Store;
//! use shoal_postgres::{PostgresConfig, PostgresStore};
//!
//! # async fn example() -> Result<(), shoal_postgres::PostgresError> {
//! let store = PostgresStore::connect(
//!     PostgresConfig::new("postgres://shoal@db.internal/shoal").with_schema("shop"),
//! )
//! .await?;
//! let store: Arc<dyn Store> = Arc::new(store);
//! # Ok(()) }
//! ```
//!
//! Built on `tokio-postgres` with a `deadpool-postgres` pool, without TLS. The store's tasks
//! run on the Tokio runtime [`PostgresStore::connect`] is called on.
//!
//! # Writing: group commit under one ordering lock
//!
//! Appends from every entity of a node are queued to a few writer tasks
//! ([`PostgresConfig::writer_connections`], each with its own connection). A writer takes
//! everything queued (up to [`PostgresConfig::max_batch_events`] /
//! [`max_batch_bytes`](PostgresConfig::max_batch_bytes), at most one append per persistence
//! id) and sends one transaction, pipelined in **one round trip**: `BEGIN`, the ordering lock
//! (`pg_advisory_xact_lock`), one statement for the whole batch, `COMMIT`. The batch statement
//! passes the arrays of all appends and events through `unnest` and, in one go:
//!
//! * checks every append's **fence**: the log's row in `persistence_ids` holds the highest
//!   sequence number ever written; the append passes if it equals `expected_seq_nr` (no row:
//!   0), and the row is then advanced to the write's last sequence number (or created, for a
//!   new log). Under the ordering lock no other writer can move it between check and update,
//!   and the primary key `(persistence_id, seq_nr)` stands behind it. An append whose
//!   expectation does not match fails alone with [`StoreError::Conflict`] carrying the stored
//!   value; the others of the batch commit. `delete_to` never touches the row, so the fence
//!   survives deletion;
//! * takes a block of **orderings** from `journal_offset` and inserts the events that passed,
//!   with their tag rows (and a `persistence_ids` row for a new log), atomically per append
//!   (the whole batch is one transaction);
//! * notifies the schema's channel with the highest ordering (`pg_notify`).
//!
//! Only after `COMMIT` returns (with `synchronous_commit=on`, which the store sets on its
//! sessions) is any append answered. If the server refuses the batch, nothing was stored: it
//! is retried with payloads as `bytea` when the server refused a JSON payload, else split into
//! single appends so that a bad one fails alone ([`StoreError::Rejected`]). If the connection
//! breaks before the `COMMIT` is answered, the outcome is unknown and every append of the
//! batch gets [`StoreError::Uncertain`]; the writer reconnects for the next batch. With the
//! database down, appends fail fast with [`StoreError::Unavailable`].
//!
//! Dropping an append future after its request was queued does not withdraw it.
//!
//! # The global order never skips
//!
//! An event's [`Offset`](shoal_persistence::store::Offset) is its `journal.ordering`. Every
//! transaction that assigns orderings takes the transaction-scoped advisory lock first and
//! holds it until its commit, so transactions assign orderings one after another, **in commit
//! order**, across all nodes: a reader that has seen ordering `X` committed can never later
//! see a new event at or below `X`, with no gap timeout. See `docs/postgres-ordering.md` for
//! the argument, the alternatives, and the rule for anything else that writes the journal.
//!
//! # Reading
//!
//! Replays, highest sequence numbers, snapshots and query pages run on the pool
//! ([`PostgresConfig::pool_size`]). Query streams are `'static` and fetch
//! [`PostgresConfig::query_page_size`] rows per page, one page ahead; each fetch is a task of
//! its own, so a stream that is not polled holds no connection (see [`EventQuery`]'s rule 7).
//! Tag queries take a page of `event_tags (tag, ordering)` in index order, then each event by
//! its ordering; the statements fix that shape, and the pool's sessions run with
//! `enable_bitmapscan=off`, so that no page ever costs more than its own rows, whatever the
//! planner's statistics say (a bitmap scan would sort every later row for each page).
//!
//! Live streams wait on a `watch` of the highest committed ordering, raised by the local
//! writers after each commit, and by a listener task that `LISTEN`s on a dedicated connection
//! for other nodes' commits. Notifications are lost while that connection is down, so the
//! listener also polls `journal_offset` on every reconnect and every
//! [`PostgresConfig::poll_interval`]. A live stream that fails to fetch (the database is down)
//! yields the error and tries again later; a finite stream ends with it.
//!
//! # Payloads
//!
//! With [`PayloadStorage::Jsonb`] (the default), JSON payloads are stored as `jsonb` so that
//! they can be queried with SQL; everything round-trips byte for byte (see
//! [`PayloadStorage`]). [`PayloadStorage::Bytea`] stores every payload as `bytea` only.
//!
//! # Schema
//!
//! Created on start unless [`PostgresConfig::create_schema`] is off; the same DDL ships as
//! `schema.sql` ([`SCHEMA_SQL`]) for DBAs. Versioned in `schema_info` ([`SCHEMA_VERSION`]); a
//! newer schema is refused. Tables (in the configured schema):
//!
//! * `journal (persistence_id, seq_nr, ordering, manifest, schema_version, payload jsonb,
//!   payload_bytes bytea, tags text[], writer_id, timestamp_ms)`, primary key
//!   `(persistence_id, seq_nr)`, unique `ordering`;
//! * `event_tags (tag, ordering)` — what tag queries scan;
//! * `persistence_ids (persistence_id, highest_seq_nr, first_ordering)` — the fence (kept by
//!   `delete_to`), and the order of the persistence id query (a log's position is the
//!   ordering of its first event, so that query never skips either);
//! * `journal_offset (last_ordering)` — the last ordering handed out;
//! * `snapshots (persistence_id, seq_nr, manifest, schema_version, payload, payload_bytes,
//!   timestamp_ms)`;
//! * `schema_info (version)`.
//!
//! Sequence numbers are `bigint`s: a write beyond `i64::MAX` is rejected, as is text holding
//! NUL (manifests, writer ids, tags), which PostgreSQL cannot store.
//!
//! [`Journal`]: shoal_persistence::store::Journal
//! [`SnapshotStore`]: shoal_persistence::store::SnapshotStore
//! [`EventQuery`]: shoal_persistence::store::EventQuery
//! [`Store`]: shoal_persistence::store::Store
//! [`StoreError::Conflict`]: shoal_persistence::store::StoreError::Conflict
//! [`StoreError::Rejected`]: shoal_persistence::store::StoreError::Rejected
//! [`StoreError::Unavailable`]: shoal_persistence::store::StoreError::Unavailable
//! [`StoreError::Uncertain`]: shoal_persistence::store::StoreError::Uncertain

mod config;
mod error;
mod listener;
mod payload;
mod query;
mod schema;
mod store;
mod writer;

pub use config::{PayloadStorage, PostgresConfig};
pub use error::PostgresError;
pub use schema::{ORDERING_LOCK_CLASS, SCHEMA_SQL, SCHEMA_VERSION};
pub use store::PostgresStore;
