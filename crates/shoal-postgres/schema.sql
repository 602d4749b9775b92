-- Shoal PostgreSQL store, schema version 1.
--
-- The store creates this itself on start (create_schema = true, the default). Teams whose DBAs
-- create tables apply it by hand, into the schema the store is configured with, and start the
-- store with create_schema = false:
--
--     psql "$URL" -c 'CREATE SCHEMA IF NOT EXISTS shoal'
--     PGOPTIONS='-c search_path=shoal' psql "$URL" -v ON_ERROR_STOP=1 -f schema.sql
--
-- Names are unqualified on purpose: they land in the first schema of search_path.
-- See docs/postgres-ordering.md for why `ordering` never skips, and the rule for anything
-- else that inserts into `journal`.

-- Every event. One row per event; (persistence_id, seq_nr) is the storage-level fence behind
-- the single-writer invariant.
CREATE TABLE IF NOT EXISTS journal (
    persistence_id  text     NOT NULL,
    seq_nr          bigint   NOT NULL,
    -- Global position (the query offset): assigned under the ordering lock, so commit order.
    ordering        bigint   NOT NULL,
    manifest        text     NOT NULL,
    schema_version  bigint   NOT NULL,
    -- JSON payloads, queryable with SQL (NULL for payloads that are not JSON).
    payload         jsonb,
    -- The exact bytes when they are not JSON, or when jsonb's normalized text differs from
    -- them (reads return these when present, else payload::text).
    payload_bytes   bytea,
    tags            text[]   NOT NULL DEFAULT '{}',
    writer_id       text     NOT NULL,
    timestamp_ms    bigint   NOT NULL,
    PRIMARY KEY (persistence_id, seq_nr),
    CONSTRAINT journal_payload_present CHECK (payload IS NOT NULL OR payload_bytes IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS journal_ordering_idx ON journal (ordering);

-- The index tag queries scan: one row per (tag, event).
CREATE TABLE IF NOT EXISTS event_tags (
    tag       text    NOT NULL,
    ordering  bigint  NOT NULL,
    PRIMARY KEY (tag, ordering)
);

-- One row per log, written with its first event: the fence (the highest sequence number
-- ever written, advanced by every append and kept by deletions) and the ordering of the
-- log's first event, which orders the persistence id query.
CREATE TABLE IF NOT EXISTS persistence_ids (
    persistence_id  text    PRIMARY KEY,
    highest_seq_nr  bigint  NOT NULL,
    first_ordering  bigint  NOT NULL
) WITH (fillfactor = 80);
CREATE UNIQUE INDEX IF NOT EXISTS persistence_ids_first_ordering_idx
    ON persistence_ids (first_ordering);

-- The last ordering handed out. Updated only by a transaction that holds the ordering lock.
CREATE TABLE IF NOT EXISTS journal_offset (
    id             int     PRIMARY KEY CHECK (id = 1),
    last_ordering  bigint  NOT NULL
) WITH (fillfactor = 10);
INSERT INTO journal_offset (id, last_ordering) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS snapshots (
    persistence_id  text    NOT NULL,
    seq_nr          bigint  NOT NULL,
    manifest        text    NOT NULL,
    schema_version  bigint  NOT NULL,
    payload         jsonb,
    payload_bytes   bytea,
    timestamp_ms    bigint  NOT NULL,
    PRIMARY KEY (persistence_id, seq_nr),
    CONSTRAINT snapshots_payload_present CHECK (payload IS NOT NULL OR payload_bytes IS NOT NULL)
);

CREATE TABLE IF NOT EXISTS schema_info (
    id       int  PRIMARY KEY CHECK (id = 1),
    version  int  NOT NULL
);
INSERT INTO schema_info (id, version) VALUES (1, 1) ON CONFLICT (id) DO NOTHING;
