//! The storage boundary: records, errors and the [`Journal`], [`SnapshotStore`] and
//! [`EventQuery`] traits every backend implements.
//!
//! # Rules every store follows
//!
//! These rules are what the rest of Shoal relies on; the conformance suite in
//! [`crate::testing`] checks each of them, and every backend runs it.
//!
//! 1. **An append is atomic per persistence id.** All events of one [`AtomicWrite`] are stored,
//!    or none is. No reader (replay or query) ever sees part of a write.
//! 2. **Per-id order is strict.** Sequence numbers of one persistence id start at 1 and have no
//!    gaps; replay returns them in ascending order.
//! 3. **Appends are fenced.** An [`AtomicWrite`] names the highest sequence number it expects to
//!    be stored (`expected_seq_nr`). If another value is stored, the write fails with
//!    [`StoreError::Conflict`] and nothing is written. Of several concurrent writers to one id
//!    with the same expectation, exactly one succeeds. This is the storage-level fence behind
//!    Shoal's single-writer invariant: an entity that gets a conflict stops and never
//!    acknowledges the command.
//! 4. **Acknowledged means durable.** `append` returns `Ok` only after the events are committed
//!    with the store's durability setting (fsync'd for the disk stores).
//! 5. **Uncertain is failure.** If the store cannot tell whether a write was committed (a lost
//!    connection during commit), it returns [`StoreError::Uncertain`], never `Ok`. The writer
//!    must re-read its highest sequence number (recover) before writing again.
//! 6. **Deletion keeps the fence.** [`Journal::delete_to`] removes events, but
//!    [`Journal::highest_seq_nr`] still reports the highest sequence number ever written, so a
//!    later writer continues after it.
//! 7. **Read side never skips.** [`EventQuery::events_by_tag`] delivers every committed event
//!    carrying the tag, with strictly increasing offsets; a reader that has delivered offset `X`
//!    never later sees a committed event with an offset at or below `X`. Live streams wake on
//!    commit and keep their memory bounded for slow consumers. A stream that is not being
//!    polled (a slow consumer, or one that dropped a `next()` future in a `select!` or a
//!    timeout) holds back only itself, never other queries or writes.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// The longest persistence id a store accepts, in bytes.
///
/// Chosen so that an entity type name plus a 256-byte entity id (the limit of the reference
/// services) always fits.
pub const MAX_PERSISTENCE_ID_BYTES: usize = 1024;

/// The separator between entity type and entity id in [`PersistenceId::of`].
pub const PERSISTENCE_ID_SEPARATOR: char = '|';

/// The unique name of one event-sourced entity's event log: `"{entity type}|{entity id}"`.
///
/// Cheap to clone (an `Arc<str>` inside). Never empty and at most
/// [`MAX_PERSISTENCE_ID_BYTES`] bytes long, no NUL; any other UTF-8 is allowed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistenceId(Arc<str>);

impl PersistenceId {
    /// Validates and wraps a raw persistence id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidPersistenceId> {
        let id: String = id.into();
        if id.is_empty() {
            return Err(InvalidPersistenceId::Empty);
        }
        if id.len() > MAX_PERSISTENCE_ID_BYTES {
            return Err(InvalidPersistenceId::TooLong { len: id.len() });
        }
        if id.contains('\0') {
            return Err(InvalidPersistenceId::ContainsNul);
        }
        Ok(Self(id.into()))
    }

    /// The persistence id of entity `entity_id` of type `entity_type`: `"{type}|{id}"`.
    ///
    /// The type name must not be empty nor contain the separator `|`, so that the combination
    /// is unambiguous; the entity id may contain anything but must not be empty.
    pub fn of(entity_type: &str, entity_id: &str) -> Result<Self, InvalidPersistenceId> {
        if entity_type.is_empty() || entity_type.contains(PERSISTENCE_ID_SEPARATOR) {
            return Err(InvalidPersistenceId::BadEntityType(entity_type.to_owned()));
        }
        if entity_id.is_empty() {
            return Err(InvalidPersistenceId::Empty);
        }
        Self::new(format!(
            "{entity_type}{PERSISTENCE_ID_SEPARATOR}{entity_id}"
        ))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The entity id part of an id made by [`PersistenceId::of`] (everything after the first
    /// `|`), or the whole id when it has no separator.
    pub fn entity_id(&self) -> &str {
        self.0
            .split_once(PERSISTENCE_ID_SEPARATOR)
            .map_or(&self.0, |(_, id)| id)
    }
}

impl fmt::Display for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Why a string is not a valid [`PersistenceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPersistenceId {
    /// The id (or the entity id part) is empty.
    #[error("persistence id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_PERSISTENCE_ID_BYTES`].
    #[error("persistence id is {len} bytes long; the limit is {MAX_PERSISTENCE_ID_BYTES}")]
    TooLong {
        /// Length of the refused id in bytes.
        len: usize,
    },
    /// The id contains a NUL character, which SQL text columns cannot store.
    #[error("persistence id must not contain NUL")]
    ContainsNul,
    /// The entity type name is empty or contains `|`.
    #[error("entity type name {0:?} must be non-empty and must not contain '|'")]
    BadEntityType(String),
}

/// One event as stored: a serialized payload with the metadata needed to decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Position in its persistence id's log, starting at 1.
    pub seq_nr: u64,
    /// Names the event's type, so that a codec knows how to decode the payload.
    pub manifest: String,
    /// Schema version of the payload; older versions are upcast on read.
    pub schema_version: u32,
    /// The serialized event (JSON by default).
    pub payload: Vec<u8>,
    /// Tags for [`EventQuery::events_by_tag`]; zero or more, no duplicates.
    pub tags: Vec<String>,
    /// Identifies the writing incarnation (for diagnosis of split brains).
    pub writer_id: String,
    /// Wall-clock time of the write, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// An atomic, fenced append of one or more events to one persistence id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicWrite {
    /// The log appended to.
    pub persistence_id: PersistenceId,
    /// The highest sequence number the writer believes is stored (0 for a new log).
    /// The events must be numbered `expected_seq_nr + 1, expected_seq_nr + 2, …`.
    pub expected_seq_nr: u64,
    /// The events, at least one.
    pub events: Vec<EventRecord>,
}

impl AtomicWrite {
    /// Checks the shape of the write (not the fence): at least one event, consecutive
    /// sequence numbers after `expected_seq_nr` (without overflowing `u64`), and no tag twice
    /// on one event. Stores call this before writing anything.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.events.is_empty() {
            return Err(StoreError::Rejected(
                "an atomic write needs at least one event".into(),
            ));
        }
        for (i, ev) in self.events.iter().enumerate() {
            let Some(want) = self.expected_seq_nr.checked_add(1 + i as u64) else {
                return Err(StoreError::Rejected(format!(
                    "write to {} overflows the sequence number range",
                    self.persistence_id
                )));
            };
            if ev.seq_nr != want {
                return Err(StoreError::Rejected(format!(
                    "event {i} of write to {} has seq_nr {}, expected {want}",
                    self.persistence_id, ev.seq_nr
                )));
            }
            for (j, tag) in ev.tags.iter().enumerate() {
                if ev.tags[..j].contains(tag) {
                    return Err(StoreError::Rejected(format!(
                        "event {} of write to {} carries tag {tag:?} twice",
                        ev.seq_nr, self.persistence_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The sequence number of the last event of this write (saturating; exact for a write
    /// that passed [`AtomicWrite::validate`]).
    pub fn last_seq_nr(&self) -> u64 {
        self.expected_seq_nr
            .saturating_add(self.events.len() as u64)
    }
}

/// A position in a store's global order of events, as used by tag queries.
///
/// Offsets of committed events are strictly increasing in commit order (not necessarily
/// consecutive). [`Offset::START`] is before every event; a query "after" an offset returns
/// only events with a greater offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// Before the first event.
    pub const START: Offset = Offset(0);
}

/// An event read through [`EventQuery`]: the record, its log and its global offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// The log the event belongs to.
    pub persistence_id: PersistenceId,
    /// The event's global position.
    pub offset: Offset,
    /// The stored event.
    pub event: EventRecord,
}

/// A stored snapshot of an entity's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The log this snapshot summarizes.
    pub persistence_id: PersistenceId,
    /// The state includes every event up to and including this sequence number.
    pub seq_nr: u64,
    /// Names the state type.
    pub manifest: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The serialized state.
    pub payload: Vec<u8>,
    /// Wall-clock time of the save, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Which snapshots of one persistence id an operation concerns: those with
/// `min_seq_nr <= seq_nr <= max_seq_nr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSelection {
    /// Lowest sequence number included.
    pub min_seq_nr: u64,
    /// Highest sequence number included.
    pub max_seq_nr: u64,
}

impl SnapshotSelection {
    /// Every snapshot.
    pub const ALL: SnapshotSelection = SnapshotSelection {
        min_seq_nr: 0,
        max_seq_nr: u64::MAX,
    };

    /// Snapshots up to and including `max_seq_nr`.
    pub fn up_to(max_seq_nr: u64) -> Self {
        Self {
            min_seq_nr: 0,
            max_seq_nr,
        }
    }

    /// Whether `seq_nr` is selected.
    pub fn contains(&self, seq_nr: u64) -> bool {
        self.min_seq_nr <= seq_nr && seq_nr <= self.max_seq_nr
    }
}

/// Whether a query stops at the events committed when it reached them, or waits for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    /// Finite: ends after the last event committed when the stream reaches the end.
    Current,
    /// Live: never ends; wakes when new events are committed.
    Live,
}

/// An error at the storage boundary. Each variant says whether anything was stored and
/// whether a retry is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The fence refused an append: the stored highest sequence number is not the one the
    /// writer expected. Nothing was written. Do not retry: another writer owns the log; the
    /// entity must stop.
    #[error("conflict on {persistence_id}: expected highest seq_nr {expected}, stored {actual}")]
    Conflict {
        /// The contested log.
        persistence_id: PersistenceId,
        /// What the writer expected to be stored.
        expected: u64,
        /// What was stored.
        actual: u64,
    },
    /// The request is malformed (empty write, bad numbering, oversized). Nothing was written;
    /// retrying the same request fails again.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The store could not be reached or refused to work. Nothing was written; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been committed. Treated as a failure: the writer must
    /// re-read the log's highest sequence number before writing again.
    #[error("outcome of write unknown: {0}")]
    Uncertain(String),
    /// Stored data could not be read back (corrupt row, unknown format). Nothing was changed.
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
    /// The store has been closed. Nothing was written.
    #[error("store closed")]
    Closed,
}

/// A stream of events from a query.
pub type EventStream = BoxStream<'static, Result<EventEnvelope, StoreError>>;

/// A stream of persistence ids from a query.
pub type PersistenceIdStream = BoxStream<'static, Result<PersistenceId, StoreError>>;

/// The write side of event storage: append, replay, highest sequence number, deletion.
///
/// See the [module docs](self) for the rules every implementation follows.
pub trait Journal: Send + Sync + 'static {
    /// Appends `write` atomically if the log's highest stored sequence number equals
    /// `write.expected_seq_nr`; otherwise fails with [`StoreError::Conflict`]. Returns only
    /// after the events are durable.
    fn append(&self, write: AtomicWrite) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `max` events of `pid` with `from_seq_nr <= seq_nr <= to_seq_nr`, ascending.
    /// Deleted events are not returned.
    fn replay(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;

    /// The highest sequence number ever written to `pid` (0 if none), deletions included.
    fn highest_seq_nr(&self, pid: PersistenceId) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Deletes the events of `pid` with `seq_nr <= to_seq_nr`. Idempotent.
    fn delete_to(
        &self,
        pid: PersistenceId,
        to_seq_nr: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Storage of entity state snapshots.
///
/// Saving a snapshot for an existing `(persistence id, seq_nr)` replaces it. `load` returns the
/// selected snapshot with the highest sequence number.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores `snapshot` durably.
    fn save(&self, snapshot: SnapshotRecord) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The selected snapshot of `pid` with the highest sequence number, if any.
    fn load(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>>;

    /// Deletes every selected snapshot of `pid`. Idempotent.
    fn delete(
        &self,
        pid: PersistenceId,
        selection: SnapshotSelection,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The read side: queries by persistence id, by tag, and of persistence ids.
///
/// Every query has a finite ([`QueryMode::Current`]) and a live ([`QueryMode::Live`]) form.
/// Streams fetch in bounded pages, so a slow consumer holds back the query instead of
/// growing memory. Streams are `'static`: they keep what they need of the store alive.
pub trait EventQuery: Send + Sync + 'static {
    /// Events of `pid` with `from_seq_nr <= seq_nr <= to_seq_nr` in sequence order. The live
    /// form ends once it has delivered `to_seq_nr`.
    fn events_by_persistence_id(
        &self,
        pid: PersistenceId,
        from_seq_nr: u64,
        to_seq_nr: u64,
        mode: QueryMode,
    ) -> EventStream;

    /// Events carrying `tag` with an offset greater than `after`, in offset order; per
    /// persistence id this is sequence order.
    fn events_by_tag(&self, tag: String, after: Offset, mode: QueryMode) -> EventStream;

    /// Every persistence id that has events (or had: deleted logs still count), each once, in
    /// order of first write. The live form then delivers new ids as they appear.
    fn persistence_ids(&self, mode: QueryMode) -> PersistenceIdStream;
}

/// A complete backend: journal, snapshots and queries. Implemented for every type that
/// implements the three traits; use `Arc<dyn Store>` to choose a backend at run time.
pub trait Store: Journal + SnapshotStore + EventQuery {}

impl<T: Journal + SnapshotStore + EventQuery> Store for T {}

/// Milliseconds since the Unix epoch, for record timestamps (metadata only; never used in
/// decisions).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_ids_are_validated() {
        assert_eq!(PersistenceId::new(""), Err(InvalidPersistenceId::Empty));
        assert_eq!(
            PersistenceId::new("a\0b"),
            Err(InvalidPersistenceId::ContainsNul)
        );
        let long = "x".repeat(MAX_PERSISTENCE_ID_BYTES + 1);
        assert!(matches!(
            PersistenceId::new(long),
            Err(InvalidPersistenceId::TooLong { .. })
        ));
        let pid = PersistenceId::of("Cart", "a|b").unwrap();
        assert_eq!(pid.as_str(), "Cart|a|b");
        assert_eq!(pid.entity_id(), "a|b");
        assert!(PersistenceId::of("Ca|rt", "x").is_err());
        assert!(PersistenceId::of("Cart", "").is_err());
    }
}
