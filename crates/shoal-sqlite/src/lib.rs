//! The embedded default store of Shoal: journal, snapshots and queries in one SQLite file.
//!
//! [`SqliteStore`] implements the storage boundary of `shoal-persistence`
//! ([`Journal`], [`SnapshotStore`], [`EventQuery`], hence [`Store`]) and passes its
//! conformance suite.
//!
//! ```no_run
//! use std::sync::Arc;
//! use shoal_persistence::store::Store;
//! use shoal_sqlite::SqliteStore;
//!
//! # fn main() -> Result<(), shoal_sqlite::SqliteError> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open("journal.db")?);
//! # Ok(()) }
//! ```
//!
//! [`SqliteStore::open`] is synchronous (it opens the file, lets SQLite recover the WAL and
//! creates or checks the schema); [`SqliteStore::open_with`] takes [`SqliteOptions`]. The
//! store's operations run on a Tokio runtime.
//!
//! # Writing: one thread, group commit
//!
//! SQLite allows one writer at a time, so the store has exactly one writing connection, owned
//! by one `std::thread`. Appends, deletions and snapshot writes are queued to it on a bounded
//! channel (a full queue makes callers wait). The thread blocks for the first request, drains
//! whatever else is queued (at most [`SqliteOptions::max_batch_size`]) and runs all of it in
//! **one** `BEGIN IMMEDIATE` transaction:
//!
//! * each request runs inside its own `SAVEPOINT`. An append first passes the **fence**: the
//!   log's row in `persistence_ids` is advanced from `expected_seq_nr` to the write's last
//!   sequence number by a conditional `UPDATE` (or created, for `expected_seq_nr == 0`); if no
//!   row changed, the stored value differs and the write fails with
//!   [`StoreError::Conflict`] alone. Then its events and tag index rows are inserted, and the
//!   savepoint is released. A request that fails is rolled back to its savepoint, so it never
//!   leaves half a write behind, and the batch goes on;
//! * a single `COMMIT` — a single fsync of the WAL with `synchronous=FULL` — makes the whole
//!   batch durable, and only then is any request answered. Under load the cost of the fsync is
//!   shared by every request of the batch, which is where the throughput comes from.
//!
//! If the batch cannot be committed, no request of it is answered `Ok`: when SQLite left the
//! transaction open the store rolls it back and answers [`StoreError::Unavailable`] (nothing was
//! stored); when the transaction ended in the error, whether it reached the WAL is unknown and
//! the answer is [`StoreError::Uncertain`]. Writes of one persistence id contend within a batch
//! exactly as across batches: of two appends with the same expectation, the first passes the
//! fence and the second gets a conflict.
//!
//! The WAL is checkpointed into the database file by the writer thread, as part of the commit
//! that fills it past [`SqliteOptions::checkpoint_pages`] pages.
//!
//! Dropping an append future after its request was queued does not withdraw the request; it
//! may still be committed (the entity recovers by reading its highest sequence number).
//!
//! # Offsets are commit order, so tag streams never skip
//!
//! An event's [`Offset`](shoal_persistence::store::Offset) is its `events.ordering`, an
//! `INTEGER PRIMARY KEY AUTOINCREMENT`. Orderings are assigned while inserting, inside write
//! transactions, and SQLite runs write transactions strictly one after another (here, all on
//! the one writer thread). So every ordering assigned by a transaction is greater than every
//! ordering of every transaction committed before it, and a reader's snapshot always holds a
//! *prefix* of the orderings: an ordering that becomes visible later is always above every
//! ordering visible now. A tag stream that has delivered offset `X` can therefore never see a
//! new event at or below `X` (rule 7). `AUTOINCREMENT` (rather than a plain rowid) keeps this
//! true after deletions: SQLite never reuses an ordering, even one of a deleted newest event.
//! (A rolled-back batch's orderings are reused, but they were never visible.)
//!
//! # Reading
//!
//! Replays, highest sequence numbers, snapshot loads and queries run on a small pool of read
//! connections ([`SqliteOptions::read_connections`]) via `tokio::task::spawn_blocking`. WAL
//! mode lets them read committed data while the writer writes. Query streams are `'static`,
//! fetch [`SqliteOptions::query_page_size`] rows per page (so a slow consumer holds back the
//! query rather than growing memory) and come finite or live. After each commit the writer
//! publishes the highest committed ordering on a `tokio::sync::watch` channel; a live stream
//! that has caught up waits on it — no polling, no sleeping — and marks it seen *before* every
//! fetch, so a commit its fetch did not see always wakes it.
//!
//! # Schema
//!
//! Created on first open, versioned in `PRAGMA user_version` ([`SCHEMA_VERSION`]) and marked
//! with `PRAGMA application_id`. A file with a newer version is refused
//! ([`SqliteError::UnsupportedSchemaVersion`]), as is another application's file.
//!
//! * `events(ordering INTEGER PRIMARY KEY AUTOINCREMENT, persistence_id, seq_nr, manifest,
//!   schema_version, payload BLOB, tags, writer_id, timestamp_ms, UNIQUE(persistence_id,
//!   seq_nr))` — `tags` repeats the event's tags (length-prefixed) for replay;
//! * `event_tags(tag, ordering, PRIMARY KEY(tag, ordering)) WITHOUT ROWID` — the index tag
//!   queries scan;
//! * `persistence_ids(id INTEGER PRIMARY KEY AUTOINCREMENT, persistence_id UNIQUE,
//!   highest_seq_nr)` — the fence; kept by `delete_to` so that the fence survives deletion;
//!   `id` orders the persistence id query by first write;
//! * `snapshots(persistence_id, seq_nr, manifest, schema_version, payload, timestamp_ms,
//!   PRIMARY KEY(persistence_id, seq_nr))`.
//!
//! Sequence numbers are stored as SQLite's signed 64-bit integers; a write beyond `i64::MAX`
//! is [rejected](shoal_persistence::store::StoreError::Rejected), as is an event that repeats a
//! tag.
//!
//! # Shutting down
//!
//! The writer thread and connections live as long as any clone of the store or any stream
//! from it. [`SqliteStore::close`] stops them early: queued requests are still committed,
//! later ones get [`StoreError::Closed`].
//!
//! [`Journal`]: shoal_persistence::store::Journal
//! [`SnapshotStore`]: shoal_persistence::store::SnapshotStore
//! [`EventQuery`]: shoal_persistence::store::EventQuery
//! [`Store`]: shoal_persistence::store::Store
//! [`StoreError::Conflict`]: shoal_persistence::store::StoreError::Conflict
//! [`StoreError::Unavailable`]: shoal_persistence::store::StoreError::Unavailable
//! [`StoreError::Uncertain`]: shoal_persistence::store::StoreError::Uncertain
//! [`StoreError::Closed`]: shoal_persistence::store::StoreError::Closed

mod error;
mod options;
mod query;
mod reader;
mod schema;
mod store;
mod writer;

pub use error::SqliteError;
pub use options::{SqliteOptions, Synchronous};
pub use schema::SCHEMA_VERSION;
pub use store::SqliteStore;
