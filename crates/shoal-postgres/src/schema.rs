//! The schema (created or checked on start) and every SQL statement of the store.

use tokio_postgres::Client;

use crate::error::PostgresError;

/// The version of the store's schema that this build creates and understands, kept in the
/// table `schema_info`. A schema with a newer version is refused on start.
pub const SCHEMA_VERSION: i32 = 1;

/// The DDL of the store (the file `schema.sql` of this crate): unqualified names, to be run
/// with `search_path` set to the target schema. See the [crate docs](crate#schema).
pub const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// Whether every table of the store exists in `schema`.
async fn tables_present(client: &Client, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM unnest($2::text[]) AS t(name) \
             WHERE to_regclass(format('%I.%I', $1::text, t.name)) IS NOT NULL",
            &[&schema, &TABLES],
        )
        .await?;
    Ok(row.get::<_, i64>(0) == TABLES.len() as i64)
}

/// The first key of the ordering lock, `pg_advisory_xact_lock(ORDERING_LOCK_CLASS, objid)`
/// (the bytes "SHOA"); the second is the OID of the schema's `journal` table. See
/// `docs/postgres-ordering.md`.
pub const ORDERING_LOCK_CLASS: i32 = 0x5348_4f41;

/// Key of the advisory lock that serializes schema creation across nodes starting at once.
const CREATE_LOCK: (i32, i32) = (ORDERING_LOCK_CLASS, 0);

/// The tables a complete schema has.
const TABLES: &[&str] = &[
    "journal",
    "event_tags",
    "persistence_ids",
    "journal_offset",
    "snapshots",
    "schema_info",
];

/// Creates (if asked) and checks the schema. Returns the second key of the ordering lock.
pub(crate) async fn prepare(
    client: &Client,
    schema: &str,
    create: bool,
) -> Result<i32, PostgresError> {
    let pg = |context: &'static str| move |source| PostgresError::Postgres { context, source };
    let complete = tables_present(client, schema)
        .await
        .map_err(pg("checking the schema"))?;
    if !complete && create {
        // Concurrent `CREATE … IF NOT EXISTS` can still collide in the catalogs; one node at
        // a time. Only when something is missing: even `CREATE INDEX IF NOT EXISTS` locks the
        // table, which would contend with other nodes' writers.
        let ddl = format!(
            "BEGIN;\n\
             SELECT pg_advisory_xact_lock({}, {});\n\
             CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n\
             SET LOCAL search_path TO \"{schema}\";\n\
             {SCHEMA_SQL}\n\
             COMMIT;",
            CREATE_LOCK.0, CREATE_LOCK.1
        );
        if let Err(e) = client.batch_execute(&ddl).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(pg("creating the schema")(e));
        }
    }
    if !complete
        && !tables_present(client, schema)
            .await
            .map_err(pg("checking the schema"))?
    {
        return Err(PostgresError::MissingSchema {
            schema: schema.to_owned(),
        });
    }
    let version: i32 = client
        .query_one(
            &format!("SELECT version FROM \"{schema}\".schema_info"),
            &[],
        )
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(PostgresError::UnsupportedSchemaVersion {
            schema: schema.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let objid: i32 = client
        .query_one(
            &format!("SELECT '\"{schema}\".journal'::regclass::oid::int4"),
            &[],
        )
        .await
        .map_err(pg("looking up the journal table"))?
        .get(0);
    Ok(objid)
}

/// The columns of an event as the queries read them, in [`crate::query::event_row`] order.
const EVENT_COLUMNS: &str = "j.ordering, j.persistence_id, j.seq_nr, j.manifest, \
     j.schema_version, COALESCE(j.payload_bytes, convert_to(j.payload::text, 'UTF8')), j.tags, \
     j.writer_id, j.timestamp_ms";

/// Every statement, qualified with the store's schema.
#[derive(Debug)]
pub(crate) struct Sql {
    /// `NOTIFY` channel of this schema's commits.
    pub(crate) channel: String,
    pub(crate) lock: String,
    pub(crate) append_batch: String,
    pub(crate) replay: String,
    pub(crate) highest: String,
    pub(crate) delete_to: String,
    pub(crate) events_by_pid: String,
    pub(crate) events_by_tag: String,
    pub(crate) persistence_ids: String,
    pub(crate) last_ordering: String,
    pub(crate) save_snapshot: String,
    pub(crate) load_snapshot: String,
    pub(crate) delete_snapshots: String,
}

impl Sql {
    /// The statements for `schema`, with the ordering lock's second key and the query page
    /// size (written into the page queries, so that every plan knows it).
    pub(crate) fn new(schema: &str, lock_objid: i32, page_size: usize) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            channel: channel_name(schema),
            // Also marks the transaction as a batch transaction (a transaction-local setting);
            // the batch statement does nothing without the mark. So if BEGIN ever failed
            // without ending the session, the batch could not run (and commit) on its own,
            // outside the lock.
            lock: format!(
                "SELECT set_config('shoal.batch', 'on', true), \
                        pg_advisory_xact_lock({ORDERING_LOCK_CLASS}, {lock_objid})"
            ),
            append_batch: append_batch(&s),
            replay: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.journal j \
                 WHERE j.persistence_id = $1 AND j.seq_nr >= $2 AND j.seq_nr <= $3 \
                 ORDER BY j.seq_nr LIMIT $4"
            ),
            highest: format!(
                "SELECT highest_seq_nr FROM {s}.persistence_ids WHERE persistence_id = $1"
            ),
            // The fence row in `persistence_ids` stays: deletion never lowers it.
            delete_to: format!(
                "WITH deleted AS ( \
                     DELETE FROM {s}.journal WHERE persistence_id = $1 AND seq_nr <= $2 \
                     RETURNING ordering, tags) \
                 DELETE FROM {s}.event_tags t \
                 USING (SELECT u.tag, d.ordering FROM deleted d \
                        CROSS JOIN LATERAL unnest(d.tags) AS u(tag)) x \
                 WHERE t.tag = x.tag AND t.ordering = x.ordering"
            ),
            events_by_pid: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.journal j \
                 WHERE j.persistence_id = $1 AND j.seq_nr >= $2 AND j.seq_nr <= $3 \
                 ORDER BY j.seq_nr LIMIT {page_size}"
            ),
            // The page of tag rows first (in index order), then each event by its ordering:
            // the shape is fixed (`LIMIT 1` keeps the lateral subquery from being flattened
            // into a join), because a planner free to choose may scan the journal from its
            // start (a merge join) or sort every later row (a bitmap scan) for each page.
            events_by_tag: format!(
                "SELECT {EVENT_COLUMNS} \
                 FROM (SELECT ordering FROM {s}.event_tags \
                       WHERE tag = $1 AND ordering > $2 \
                       ORDER BY ordering LIMIT {page_size}) t \
                 CROSS JOIN LATERAL (SELECT * FROM {s}.journal j0 \
                                     WHERE j0.ordering = t.ordering LIMIT 1) j \
                 ORDER BY t.ordering"
            ),
            persistence_ids: format!(
                "SELECT persistence_id, first_ordering FROM {s}.persistence_ids \
                 WHERE first_ordering > $1 ORDER BY first_ordering LIMIT {page_size}"
            ),
            last_ordering: format!("SELECT last_ordering FROM {s}.journal_offset WHERE id = 1"),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS o (persistence_id, seq_nr, manifest, \
                     schema_version, payload, payload_bytes, timestamp_ms) \
                 SELECT $1::text, $2::int8, $3::text, $4::int8, v.doc, \
                        CASE WHEN $5::text IS NULL THEN $6::bytea \
                             WHEN v.doc::text = $5::text THEN NULL \
                             ELSE convert_to($5::text, 'UTF8') END, \
                        $7::int8 \
                 FROM (SELECT $5::text::jsonb AS doc) v \
                 ON CONFLICT (persistence_id, seq_nr) DO UPDATE SET \
                     manifest = excluded.manifest, schema_version = excluded.schema_version, \
                     payload = excluded.payload, payload_bytes = excluded.payload_bytes, \
                     timestamp_ms = excluded.timestamp_ms"
            ),
            load_snapshot: format!(
                "SELECT seq_nr, manifest, schema_version, \
                     COALESCE(payload_bytes, convert_to(payload::text, 'UTF8')), timestamp_ms \
                 FROM {s}.snapshots \
                 WHERE persistence_id = $1 AND seq_nr >= $2 AND seq_nr <= $3 \
                 ORDER BY seq_nr DESC LIMIT 1"
            ),
            delete_snapshots: format!(
                "DELETE FROM {s}.snapshots \
                 WHERE persistence_id = $1 AND seq_nr >= $2 AND seq_nr <= $3"
            ),
        }
    }
}

/// The `NOTIFY` channel of a schema: a short identifier derived from its name (FNV-1a), so
/// that any schema name fits PostgreSQL's 63-byte limit.
fn channel_name(schema: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("shoal_journal_{hash:016x}")
}

/// The group commit statement: fences, orderings, events, tags and the commit notification
/// of a whole batch in one statement. Run right after taking the ordering lock.
///
/// Parameters: per append `$1` persistence ids, `$2` expected and `$3` last sequence numbers,
/// `$4` index of the append's first event (0-based); `$5` the number of events; per event
/// `$6` its append's index (1-based), `$7` its persistence id, `$8` seq_nr, `$9` manifest,
/// `$10` schema version, `$11` payload as JSON text (or NULL), `$12` payload bytes (or NULL),
/// `$13` tags as an array literal, `$14` writer id, `$15` timestamp; `$16` the notification
/// channel. A batch holds at most one append per persistence id.
///
/// Without the mark set by the lock statement (see [`Sql::lock`]), `req` and `base` are empty
/// and the statement changes nothing and returns no row.
///
/// The fence: the statement's snapshot, taken after the lock was granted, shows every log's
/// `persistence_ids.highest_seq_nr` as committed by every earlier holder of the lock, and only
/// holders of the lock change it. An append passes if that value (0 for an unknown log)
/// equals its expectation; then its fence row is advanced to its last sequence number (or
/// created, for a new log) and its events are inserted. The primary key
/// `(persistence_id, seq_nr)` stands behind it. Which appends passed reaches the event rows as
/// a `bool[]` indexed by append, not through a join of the batch's rows with each other, so
/// that the plan stays linear in the batch size whatever the planner's row estimates.
///
/// Every event of the batch gets an ordering, `base + its 1-based index`, so orderings follow
/// the batch order and per-id sequence order; the orderings of refused appends are never
/// used. Returns one row per append: its index, whether it passed the fence, the highest
/// sequence number stored before the statement (what a refused append is told), the batch's
/// base ordering, and the number of notifications sent (1; returned so that the planner cannot
/// drop the unreferenced `notified` CTE, which would then never run).
fn append_batch(s: &str) -> String {
    format!(
        "WITH state AS MATERIALIZED ( \
             SELECT r.pid, r.expected, r.last, r.first_ev, r.i, \
                    COALESCE((SELECT h.highest_seq_nr FROM {s}.persistence_ids h \
                              WHERE h.persistence_id = r.pid), 0) AS stored \
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
                  WITH ORDINALITY AS r(pid, expected, last, first_ev, i) \
             WHERE current_setting('shoal.batch', true) = 'on' \
         ), \
         passed AS ( \
             SELECT array_agg(state.stored = state.expected ORDER BY state.i) AS ok \
             FROM state \
         ), \
         base AS ( \
             UPDATE {s}.journal_offset SET last_ordering = last_ordering + $5::int8 \
             WHERE id = 1 AND current_setting('shoal.batch', true) = 'on' \
             RETURNING last_ordering - $5::int8 AS base \
         ), \
         advanced AS ( \
             UPDATE {s}.persistence_ids p SET highest_seq_nr = state.last \
             FROM state \
             WHERE state.expected > 0 AND state.stored = state.expected \
               AND p.persistence_id = state.pid \
         ), \
         created AS ( \
             INSERT INTO {s}.persistence_ids (persistence_id, highest_seq_nr, first_ordering) \
             SELECT state.pid, state.last, base.base + state.first_ev + 1 \
             FROM state CROSS JOIN base \
             WHERE state.expected = 0 AND state.stored = 0 \
         ), \
         ev AS ( \
             SELECT * FROM unnest($6::int4[], $7::text[], $8::int8[], $9::text[], \
                                  $10::int8[], $11::text[], $12::bytea[], $13::text[], \
                                  $14::text[], $15::int8[]) \
                  WITH ORDINALITY AS e(req, pid, seq_nr, manifest, schema_version, json, \
                                       bytes, tags, writer_id, timestamp_ms, n) \
         ), \
         inserted AS ( \
             INSERT INTO {s}.journal (ordering, persistence_id, seq_nr, manifest, \
                 schema_version, payload, payload_bytes, tags, writer_id, timestamp_ms) \
             SELECT base.base + ev.n, ev.pid, ev.seq_nr, ev.manifest, \
                    ev.schema_version, doc.doc, \
                    CASE WHEN ev.json IS NULL THEN ev.bytes \
                         WHEN doc.doc::text = ev.json THEN NULL \
                         ELSE convert_to(ev.json, 'UTF8') END, \
                    ev.tags::text[], ev.writer_id, ev.timestamp_ms \
             FROM ev \
             CROSS JOIN base \
             CROSS JOIN LATERAL (SELECT ev.json::jsonb AS doc OFFSET 0) doc \
             WHERE (SELECT passed.ok FROM passed)[ev.req] \
             RETURNING ordering, tags \
         ), \
         tagged AS ( \
             INSERT INTO {s}.event_tags (tag, ordering) \
             SELECT u.tag, inserted.ordering \
             FROM inserted CROSS JOIN LATERAL unnest(inserted.tags) AS u(tag) \
         ), \
         notified AS ( \
             SELECT pg_notify($16::text, (base.base + $5::int8)::text) AS done FROM base \
         ) \
         SELECT state.i, state.stored = state.expected AS ok, state.stored, nb.base, \
                nb.notified \
         FROM state \
         CROSS JOIN (SELECT base.base, (SELECT count(*) FROM notified) AS notified \
                     FROM base) nb"
    )
}
