//! [`PostgresConfig`]: where the store connects and how it batches, pages and wakes.

use std::time::Duration;

use crate::error::PostgresError;

/// How event and snapshot payloads are stored.
///
/// Whatever the setting, every payload reads back byte for byte as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadStorage {
    /// A payload that is JSON goes into the `payload jsonb` column, so that it can be queried
    /// and indexed with SQL. `jsonb` normalizes its input (spacing, key order, duplicate keys,
    /// number spelling), so when the normalized text differs from the bytes written — as it
    /// does for the compact JSON of `serde_json` — the exact bytes are kept in
    /// `payload_bytes` too, and reads return those. A payload that is not JSON (or that
    /// `jsonb` cannot hold: a `\u0000` escape, a number beyond its range) goes into
    /// `payload_bytes` alone. The default.
    #[default]
    Jsonb,
    /// Every payload goes into `payload_bytes` (`bytea`) only: for binary codecs, and the
    /// cheapest to write.
    Bytea,
}

/// Configuration of a [`PostgresStore`](crate::PostgresStore).
///
/// ```
/// use std::time::Duration;
/// use shoal_postgres::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://shoal@db.internal/shoal")
///     .with_schema("carts")
///     .with_pool_size(16)
///     .with_poll_interval(Duration::from_millis(500));
/// assert_eq!(config.schema, "carts");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user[:password]@host[:port]/database[?options]` (or the
    /// key-value form `host=… user=…`), as understood by `tokio-postgres`. Without TLS.
    pub url: String,
    /// Connections of the pool that serves reads, snapshot writes and deletions (default 8).
    /// Live query streams take a connection only while fetching a page.
    pub pool_size: usize,
    /// Schema holding the store's tables (default `shoal`). Lowercase letters, digits and
    /// `_`, starting with a letter or `_`, at most 48 bytes.
    pub schema: String,
    /// Create the schema and tables on start if they are missing (default `true`). When
    /// `false`, a DBA applies `schema.sql` beforehand and the store refuses to start on a
    /// database without it.
    pub create_schema: bool,
    /// How payloads are stored (default [`PayloadStorage::Jsonb`]).
    pub payload_storage: PayloadStorage,
    /// Connections that commit batches of appends (default 2). They take turns on the
    /// ordering lock; with two, the next batch is already waiting at the server while the
    /// current one commits.
    pub writer_connections: usize,
    /// Most events in one batch (default 4096). A single write with more goes alone.
    pub max_batch_events: usize,
    /// Most payload bytes in one batch (default 8 MiB). A single larger write goes alone.
    pub max_batch_bytes: usize,
    /// Appends waiting for a writer (default 16384); beyond, callers wait.
    pub queue_capacity: usize,
    /// Rows per page of a query stream (default 1000). A stream holds at most two pages.
    pub query_page_size: usize,
    /// How often the store checks for commits of other nodes in case a `NOTIFY` was lost
    /// (default 1 s). It bounds how late a live stream can be when notifications fail.
    pub poll_interval: Duration,
    /// Limit on establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Limit on one batch commit round trip (default 30 s). A batch that takes longer is
    /// answered [`StoreError::Uncertain`](shoal_persistence::store::StoreError::Uncertain)
    /// and its connection dropped. Also the writer sessions'
    /// `idle_in_transaction_session_timeout` (at least 1 s), so that a writer whose client
    /// stalls in the middle of sending a batch cannot hold the ordering lock for longer.
    pub write_timeout: Duration,
}

impl PostgresConfig {
    /// The defaults, connecting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            schema: "shoal".to_owned(),
            create_schema: true,
            payload_storage: PayloadStorage::Jsonb,
            writer_connections: 2,
            max_batch_events: 4096,
            max_batch_bytes: 8 << 20,
            queue_capacity: 16384,
            query_page_size: 1000,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        }
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Sets [`schema`](Self::schema).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets [`create_schema`](Self::create_schema).
    pub fn with_create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }

    /// Sets [`payload_storage`](Self::payload_storage).
    pub fn with_payload_storage(mut self, storage: PayloadStorage) -> Self {
        self.payload_storage = storage;
        self
    }

    /// Sets [`writer_connections`](Self::writer_connections).
    pub fn with_writer_connections(mut self, n: usize) -> Self {
        self.writer_connections = n;
        self
    }

    /// Sets [`max_batch_events`](Self::max_batch_events).
    pub fn with_max_batch_events(mut self, n: usize) -> Self {
        self.max_batch_events = n;
        self
    }

    /// Sets [`max_batch_bytes`](Self::max_batch_bytes).
    pub fn with_max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets [`query_page_size`](Self::query_page_size).
    pub fn with_query_page_size(mut self, n: usize) -> Self {
        self.query_page_size = n;
        self
    }

    /// Sets [`poll_interval`](Self::poll_interval).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Checks the values and parses the URL.
    pub(crate) fn validate(&self) -> Result<tokio_postgres::Config, PostgresError> {
        let bad = |what: String| Err(PostgresError::InvalidConfig(what));
        if !valid_schema_name(&self.schema) {
            return bad(format!(
                "schema name {:?} must be 1 to 48 bytes of lowercase ASCII letters, digits and \
                 '_', not starting with a digit",
                self.schema
            ));
        }
        for (name, value) in [
            ("pool_size", self.pool_size),
            ("writer_connections", self.writer_connections),
            ("max_batch_events", self.max_batch_events),
            ("max_batch_bytes", self.max_batch_bytes),
            ("queue_capacity", self.queue_capacity),
            ("query_page_size", self.query_page_size),
        ] {
            if value == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must not be zero".into());
        }
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| PostgresError::InvalidConfig(format!("connection URL: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("shoal-postgres");
        }
        // Acknowledged means durable, whatever the server's default.
        let options = match pg.get_options() {
            Some(o) => format!("{o} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".to_owned(),
        };
        pg.options(&options);
        pg.keepalives(true);
        Ok(pg)
    }
}

fn valid_schema_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 48
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["shoal", "_x", "a1_b", &"a".repeat(48)] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Shoal",
            "a-b",
            "a b",
            "a\"b",
            &"a".repeat(49),
            "é",
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }

    #[test]
    fn validation() {
        assert!(PostgresConfig::new("postgres://u@h/db").validate().is_ok());
        assert!(
            PostgresConfig::new("postgres://u@h/db")
                .with_pool_size(0)
                .validate()
                .is_err()
        );
        assert!(
            PostgresConfig::new("not a url at all ://")
                .validate()
                .is_err()
        );
        let pg = PostgresConfig::new("postgres://u@h/db?options=-c%20work_mem%3D8MB")
            .validate()
            .unwrap();
        assert_eq!(
            pg.get_options(),
            Some("-c work_mem=8MB -c synchronous_commit=on")
        );
    }
}
