//! [`PostgresError`] (starting the store) and the mapping of PostgreSQL errors onto
//! [`StoreError`] (operating it).

use shoal_persistence::store::StoreError;
use tokio_postgres::error::{DbError, Severity, SqlState};

/// Why [`PostgresStore::connect`](crate::PostgresStore::connect) failed.
///
/// Errors of a running store are [`StoreError`]s; this type only covers starting. It converts
/// into [`StoreError::Unavailable`] for code that treats every backend alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// A configuration value is out of range, or the URL does not parse.
    #[error("invalid PostgreSQL store configuration: {0}")]
    InvalidConfig(String),
    /// The database could not be reached or refused a statement while starting.
    #[error("PostgreSQL failed while {context}: {source}")]
    Postgres {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// `create_schema` is off and the schema's tables are missing: apply `schema.sql` first.
    #[error(
        "schema {schema:?} has no Shoal tables and create_schema is off; apply schema.sql \
         (see the shoal-postgres docs) or turn create_schema on"
    )]
    MissingSchema {
        /// The configured schema.
        schema: String,
    },
    /// The schema was created by a newer shoal-postgres. Nothing was changed.
    #[error(
        "schema {schema:?} has version {found}, newer than the newest this build of \
         shoal-postgres knows ({supported}); upgrade shoal-postgres"
    )]
    UnsupportedSchemaVersion {
        /// The configured schema.
        schema: String,
        /// The version stored in `schema_info`.
        found: i32,
        /// The newest version this build knows ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
        supported: i32,
    },
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The class (first two characters) of the error's SQLSTATE, if the server sent one.
pub(crate) fn class(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| &c.code()[..2])
}

/// Whether the server reported the error (rather than the connection failing).
pub(crate) fn is_db_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some()
}

/// Whether the error ends the connection: a non-server error (I/O, closed), a FATAL or PANIC
/// report, or a connection or shutdown class.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            fatal(db)
                || matches!(&db.code().code()[..2], "08" | "57")
                || *db.code() == SqlState::ADMIN_SHUTDOWN
        }
    }
}

fn fatal(db: &DbError) -> bool {
    matches!(
        db.parsed_severity(),
        Some(Severity::Fatal) | Some(Severity::Panic)
    )
}

/// Whether a server error reported on `COMMIT` leaves the outcome unknown (the session ended
/// while committing) rather than certainly rolled back.
pub(crate) fn commit_outcome_unknown(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => fatal(db),
    }
}

/// Maps an error of a read, or of a write that certainly did not commit, to the
/// [`StoreError`] that tells the caller what to do.
pub(crate) fn store_error(e: &tokio_postgres::Error) -> StoreError {
    match class(e) {
        // Data exceptions and program limits: this request cannot succeed as it is.
        Some("22" | "54") => StoreError::Rejected(format!("PostgreSQL refused the data: {e}")),
        _ => StoreError::Unavailable(describe(e)),
    }
}

/// Like [`store_error`], for reads: a data exception while reading means a stored row is
/// unreadable.
pub(crate) fn read_error(e: &tokio_postgres::Error) -> StoreError {
    match class(e) {
        Some("22") => StoreError::Corrupt(describe(e)),
        _ => StoreError::Unavailable(describe(e)),
    }
}

/// The error with the server's message, detail and code when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "PostgreSQL {}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => format!("PostgreSQL connection: {e}"),
    }
}

/// Maps a failure to get a pooled connection.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Closed => StoreError::Closed,
        P::Backend(e) => StoreError::Unavailable(describe(&e)),
        P::Timeout(kind) => StoreError::Unavailable(format!(
            "no PostgreSQL connection available in time ({kind:?})"
        )),
        other => StoreError::Unavailable(format!("PostgreSQL connection pool: {other}")),
    }
}
