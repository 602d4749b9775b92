//! [`SqliteError`] (opening the store) and the mapping of SQLite errors onto
//! [`StoreError`] (operating it).

use std::path::PathBuf;

use rusqlite::ErrorCode;
use shoal_persistence::store::StoreError;

/// Why [`SqliteStore::open`](crate::SqliteStore::open) failed.
///
/// Errors of a running store are [`StoreError`]s; this type only covers opening. It converts
/// into [`StoreError::Unavailable`] for code that treats every backend alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// An option is out of range (for example zero read connections).
    #[error("invalid SQLite store options: {0}")]
    InvalidOptions(String),
    /// SQLite refused an operation while the store was being opened.
    #[error("{}: SQLite failed while {context}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer shoal-sqlite whose schema this build does not
    /// know. Nothing was changed; upgrade shoal-sqlite (or open another file).
    #[error(
        "{}: schema version {found} is newer than the newest this build of shoal-sqlite knows \
         ({supported}); upgrade shoal-sqlite to open it",
        path.display()
    )]
    UnsupportedSchemaVersion {
        /// The database file.
        path: PathBuf,
        /// The version stored in the file (`PRAGMA user_version`).
        found: i64,
        /// The newest version this build knows ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
        supported: i64,
    },
    /// The file is a SQLite database of some other application. Nothing was changed.
    #[error("{} is not a Shoal database: {reason}", path.display())]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// SQLite would not switch the database to WAL mode (for example an in-memory database
    /// or a file system without shared memory support).
    #[error("{}: cannot use WAL journal mode (SQLite kept {mode:?})", path.display())]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the SQLite writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Maps an error of a read (or of a write statement that certainly did not commit) to the
/// [`StoreError`] that tells the caller what to do.
pub(crate) fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::TooBig => StoreError::Rejected(format!("too large for SQLite: {e}")),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}
