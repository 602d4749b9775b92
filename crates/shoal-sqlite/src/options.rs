//! [`SqliteOptions`]: where the database lives and how the store uses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SqliteError;

/// How hard SQLite works to make a commit survive a crash (`PRAGMA synchronous`).
///
/// The store always runs in WAL mode; this only chooses when the WAL is fsync'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=FULL`: the WAL is fsync'd on every commit, so an acknowledged append
    /// survives a power loss. This is what rule 4 of the storage boundary ("acknowledged means
    /// durable") asks for, and the default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsync'd only at checkpoints. Commits survive a crash
    /// of the process but the last ones may be lost on power loss or an OS crash. Only for
    /// deployments that accept that weaker promise (tests, caches, benchmarks of the CPU path).
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options of [`SqliteStore::open_with`](crate::SqliteStore::open_with).
///
/// Make one with [`SqliteOptions::new`] and adjust it with the `with_*` methods (or assign the
/// public fields); every field has a documented default.
///
/// ```
/// use shoal_sqlite::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new("/var/lib/shoal/journal.db")
///     .with_read_connections(8)
///     .with_max_batch_size(512);
/// assert_eq!(options.synchronous, Synchronous::Full);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The database file. Created (with its schema) if missing; SQLite adds `-wal` and `-shm`
    /// files beside it.
    pub path: PathBuf,
    /// Number of read-only connections serving replays, loads and queries. Default 4.
    pub read_connections: usize,
    /// The most requests (appends, deletions, snapshot writes) committed in one transaction
    /// by the writer thread. Default 1024.
    pub max_batch_size: usize,
    /// Capacity of the bounded queue in front of the writer thread; a full queue makes callers
    /// wait (back-pressure). Default 4096.
    pub queue_capacity: usize,
    /// Durability of a commit. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Rows fetched per page by the query streams; the most a slow consumer makes the store
    /// buffer per stream. Default 256.
    pub query_page_size: usize,
    /// WAL pages after which a commit checkpoints the WAL into the database file
    /// (`PRAGMA wal_autocheckpoint`). Default 10 000 (about 40 MiB with 4 KiB pages): with
    /// many busy entities every commit rewrites one index page per entity, and checkpointing
    /// less often writes each such page to the database once instead of once per commit,
    /// which measured about 30 % more appends per second than SQLite's default of 1 000.
    pub checkpoint_pages: u32,
    /// How long a connection waits for a lock held by another process before giving up with
    /// [`StoreError::Unavailable`](shoal_persistence::store::StoreError::Unavailable).
    /// Default 5 s.
    pub busy_timeout: Duration,
}

impl SqliteOptions {
    /// Default options for the database at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            read_connections: 4,
            max_batch_size: 1024,
            queue_capacity: 4096,
            synchronous: Synchronous::Full,
            query_page_size: 256,
            checkpoint_pages: 10_000,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// Sets [`read_connections`](Self::read_connections).
    pub fn with_read_connections(mut self, n: usize) -> Self {
        self.read_connections = n;
        self
    }

    /// Sets [`max_batch_size`](Self::max_batch_size).
    pub fn with_max_batch_size(mut self, n: usize) -> Self {
        self.max_batch_size = n;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets [`synchronous`](Self::synchronous).
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets [`query_page_size`](Self::query_page_size).
    pub fn with_query_page_size(mut self, rows: usize) -> Self {
        self.query_page_size = rows;
        self
    }

    /// Sets [`checkpoint_pages`](Self::checkpoint_pages).
    pub fn with_checkpoint_pages(mut self, pages: u32) -> Self {
        self.checkpoint_pages = pages;
        self
    }

    /// Sets [`busy_timeout`](Self::busy_timeout).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SqliteError> {
        let positive = [
            ("read_connections", self.read_connections),
            ("max_batch_size", self.max_batch_size),
            ("queue_capacity", self.queue_capacity),
            ("query_page_size", self.query_page_size),
            ("checkpoint_pages", self.checkpoint_pages as usize),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(SqliteError::InvalidOptions(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        if self.query_page_size > i64::MAX as usize {
            return Err(SqliteError::InvalidOptions(
                "query_page_size is too large".into(),
            ));
        }
        Ok(())
    }
}
