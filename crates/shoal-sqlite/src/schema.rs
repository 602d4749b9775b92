//! The on-disk schema, its version check, connection setup, and the SQL every other module
//! runs.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::SqliteError;
use crate::options::SqliteOptions;

/// The schema version this build writes and the newest it reads, kept in
/// `PRAGMA user_version`. Opening a file with a higher version fails with
/// [`SqliteError::UnsupportedSchemaVersion`].
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a Shoal database (`"SHOL"`), so that a Shoal file is recognised
/// and another application's file is refused.
pub(crate) const APPLICATION_ID: i64 = 0x5348_4F4C;

/// Version 1 of the schema.
///
/// * `events.ordering` is the global offset. `AUTOINCREMENT` guarantees it is never reused,
///   even after the newest events were deleted, so a tag reader never sees an offset at or
///   below one it already delivered.
/// * `events.tags` repeats the event's tags (length-prefixed UTF-8, `NULL` for none) so that
///   replays return them without a second lookup; `event_tags` is the index tag queries scan.
/// * `persistence_ids` keeps each log's highest sequence number (the fence, which survives
///   `delete_to`), and its `id` orders logs by first write.
const SCHEMA_V1: &str = "
CREATE TABLE events (
    ordering       INTEGER PRIMARY KEY AUTOINCREMENT,
    persistence_id TEXT    NOT NULL,
    seq_nr         INTEGER NOT NULL,
    manifest       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    tags           BLOB,
    writer_id      TEXT    NOT NULL,
    timestamp_ms   INTEGER NOT NULL,
    UNIQUE (persistence_id, seq_nr)
) STRICT;

CREATE TABLE event_tags (
    tag      TEXT    NOT NULL,
    ordering INTEGER NOT NULL,
    PRIMARY KEY (tag, ordering)
) STRICT, WITHOUT ROWID;

CREATE TABLE persistence_ids (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    persistence_id TEXT    NOT NULL UNIQUE,
    highest_seq_nr INTEGER NOT NULL
) STRICT;

CREATE TABLE snapshots (
    persistence_id TEXT    NOT NULL,
    seq_nr         INTEGER NOT NULL,
    manifest       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    timestamp_ms   INTEGER NOT NULL,
    PRIMARY KEY (persistence_id, seq_nr)
) STRICT;
";

// ---- writer statements -------------------------------------------------------------------

pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";
pub(crate) const SAVEPOINT: &str = "SAVEPOINT op";
pub(crate) const RELEASE: &str = "RELEASE op";
pub(crate) const ROLLBACK_TO: &str = "ROLLBACK TO op";

/// The fence for a new log: succeeds (1 change) only if the log has never been written.
pub(crate) const FENCE_NEW: &str = "INSERT INTO persistence_ids (persistence_id, highest_seq_nr) \
     VALUES (?1, ?2) ON CONFLICT (persistence_id) DO NOTHING";
/// The fence for an existing log: advances the highest sequence number (1 change) only if it
/// is the expected one.
pub(crate) const FENCE_ADVANCE: &str = "UPDATE persistence_ids SET highest_seq_nr = ?3 \
     WHERE persistence_id = ?1 AND highest_seq_nr = ?2";
pub(crate) const HIGHEST: &str =
    "SELECT highest_seq_nr FROM persistence_ids WHERE persistence_id = ?1";
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events \
     (persistence_id, seq_nr, manifest, schema_version, payload, tags, writer_id, timestamp_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
pub(crate) const INSERT_TAG: &str = "INSERT INTO event_tags (tag, ordering) VALUES (?1, ?2)";
pub(crate) const TAGGED_TO_DELETE: &str = "SELECT ordering, tags FROM events \
     WHERE persistence_id = ?1 AND seq_nr <= ?2 AND tags IS NOT NULL";
pub(crate) const DELETE_TAG: &str = "DELETE FROM event_tags WHERE tag = ?1 AND ordering = ?2";
pub(crate) const DELETE_EVENTS: &str =
    "DELETE FROM events WHERE persistence_id = ?1 AND seq_nr <= ?2";
pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots \
     (persistence_id, seq_nr, manifest, schema_version, payload, timestamp_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (persistence_id, seq_nr) DO UPDATE SET manifest = excluded.manifest, \
     schema_version = excluded.schema_version, payload = excluded.payload, \
     timestamp_ms = excluded.timestamp_ms";
pub(crate) const DELETE_SNAPSHOTS: &str =
    "DELETE FROM snapshots WHERE persistence_id = ?1 AND seq_nr >= ?2 AND seq_nr <= ?3";

// ---- reader statements -------------------------------------------------------------------

/// Events of one log in a sequence number range, with their offsets.
pub(crate) const EVENTS_BY_PID: &str = "SELECT ordering, seq_nr, manifest, schema_version, \
     payload, tags, writer_id, timestamp_ms FROM events \
     WHERE persistence_id = ?1 AND seq_nr >= ?2 AND seq_nr <= ?3 ORDER BY seq_nr LIMIT ?4";
/// Events carrying a tag after an offset. `CROSS JOIN` pins the plan: range-scan the tag index,
/// then look each event up by its rowid.
pub(crate) const EVENTS_BY_TAG: &str = "SELECT e.ordering, e.seq_nr, e.manifest, \
     e.schema_version, e.payload, e.tags, e.writer_id, e.timestamp_ms, e.persistence_id \
     FROM event_tags AS t CROSS JOIN events AS e ON e.ordering = t.ordering \
     WHERE t.tag = ?1 AND t.ordering > ?2 ORDER BY t.ordering LIMIT ?3";
pub(crate) const PERSISTENCE_IDS: &str =
    "SELECT id, persistence_id FROM persistence_ids WHERE id > ?1 ORDER BY id LIMIT ?2";
pub(crate) const LOAD_SNAPSHOT: &str = "SELECT seq_nr, manifest, schema_version, payload, \
     timestamp_ms FROM snapshots WHERE persistence_id = ?1 AND seq_nr >= ?2 AND seq_nr <= ?3 \
     ORDER BY seq_nr DESC LIMIT 1";
pub(crate) const HIGHEST_ORDERING: &str = "SELECT coalesce(max(ordering), 0) FROM events";

// ---- connections ----------------------------------------------------------------------------

fn sql_err(path: &Path, context: &'static str) -> impl FnOnce(rusqlite::Error) -> SqliteError {
    let path = path.to_path_buf();
    move |source| SqliteError::Sqlite {
        path,
        context,
        source,
    }
}

/// Opens the writer connection: WAL mode, the chosen `synchronous`, schema created or
/// checked.
pub(crate) fn open_writer(options: &SqliteOptions) -> Result<Connection, SqliteError> {
    let path = options.path.as_path();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path, "opening the database"))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(sql_err(path, "setting busy_timeout"))?;
    check_identity(&conn, path)?;

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql_err(path, "switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // foreign_keys: enforce constraints an operator adds to the schema (tests use one to make
    // a COMMIT fail). temp_store: savepoint sub-journals stay in memory. journal_size_limit:
    // after a checkpoint the WAL file shrinks back to at most 64 MiB.
    let pragmas = format!(
        "PRAGMA synchronous = {};
         PRAGMA wal_autocheckpoint = {};
         PRAGMA journal_size_limit = 67108864;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
        options.synchronous.pragma_value(),
        options.checkpoint_pages,
    );
    conn.execute_batch(&pragmas)
        .map_err(sql_err(path, "setting pragmas"))?;
    conn.set_prepared_statement_cache_capacity(64);
    create_or_check_schema(&conn, path)?;
    Ok(conn)
}

/// Opens a read connection (after the writer created the schema).
pub(crate) fn open_reader(options: &SqliteOptions) -> Result<Connection, SqliteError> {
    let path = options.path.as_path();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path, "opening a read connection"))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(sql_err(path, "setting busy_timeout"))?;
    // Read connections never write: `query_only` makes that a guarantee.
    conn.execute_batch("PRAGMA query_only = ON;")
        .map_err(sql_err(path, "setting pragmas of a read connection"))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Refuses a SQLite file that belongs to another application.
fn check_identity(conn: &Connection, path: &Path) -> Result<(), SqliteError> {
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sql_err(path, "reading application_id"))?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(SqliteError::ForeignDatabase {
            path: path.to_path_buf(),
            reason: format!("application_id is {app_id:#x}, not Shoal's {APPLICATION_ID:#x}"),
        });
    }
    Ok(())
}

/// Creates the schema in an empty file, or checks the version of an existing one. Runs in an
/// immediate transaction so that two processes opening a new file at once do not both create
/// it.
fn create_or_check_schema(conn: &Connection, path: &Path) -> Result<(), SqliteError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sql_err(path, "starting the schema transaction"))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_err(path, "reading user_version"))?;
    match version {
        0 => {
            let tables: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(sql_err(path, "inspecting the schema"))?;
            if tables != 0 {
                return Err(SqliteError::ForeignDatabase {
                    path: path.to_path_buf(),
                    reason: format!("it has {tables} schema objects but no Shoal schema version"),
                });
            }
            tx.execute_batch(SCHEMA_V1)
                .map_err(sql_err(path, "creating the schema"))?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(sql_err(path, "setting application_id"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql_err(path, "setting user_version"))?;
            tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "created schema");
        }
        SCHEMA_VERSION => {}
        found if found > SCHEMA_VERSION => {
            return Err(SqliteError::UnsupportedSchemaVersion {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        found => {
            return Err(SqliteError::ForeignDatabase {
                path: path.to_path_buf(),
                reason: format!("unknown schema version {found}"),
            });
        }
    }
    tx.commit().map_err(sql_err(path, "committing the schema"))
}

// ---- tags column ----------------------------------------------------------------------------

/// Encodes `tags` into `buf` for the `events.tags` column: for each tag its byte length as an
/// unsigned LEB128 number, then its UTF-8 bytes. Returns `None` (stored as `NULL`) for no tags.
pub(crate) fn encode_tags<'b>(tags: &[String], buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    if tags.is_empty() {
        return None;
    }
    buf.clear();
    for tag in tags {
        let mut len = tag.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                buf.push(byte);
                break;
            }
            buf.push(byte | 0x80);
        }
        buf.extend_from_slice(tag.as_bytes());
    }
    Some(buf)
}

/// Decodes the `events.tags` column; `None` if the bytes are not a valid encoding.
pub(crate) fn decode_tags(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    while !bytes.is_empty() {
        let mut len: usize = 0;
        let mut shift = 0u32;
        loop {
            let (&byte, rest) = bytes.split_first()?;
            bytes = rest;
            if shift >= usize::BITS {
                return None;
            }
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if len > bytes.len() {
            return None;
        }
        let (tag, rest) = bytes.split_at(len);
        tags.push(std::str::from_utf8(tag).ok()?.to_owned());
        bytes = rest;
    }
    Some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let long = "x".repeat(300);
        for tags in [
            vec![],
            vec!["a".to_owned()],
            vec![
                String::new(),
                "b|c".to_owned(),
                long,
                "ünïcode\u{0}".to_owned(),
            ],
        ] {
            let mut buf = Vec::new();
            let decoded = match encode_tags(&tags, &mut buf) {
                None => vec![],
                Some(bytes) => decode_tags(bytes).unwrap(),
            };
            assert_eq!(decoded, tags);
        }
        assert_eq!(decode_tags(&[5, b'a']), None);
        assert_eq!(decode_tags(&[0x80]), None);
        assert_eq!(decode_tags(&[1, 0xff]), None);
    }
}
