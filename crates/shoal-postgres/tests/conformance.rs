//! The store conformance suite of `shoal-persistence`, run against [`PostgresStore`] on a
//! throwaway PostgreSQL server shared by this test binary: once with the default
//! configuration, once with tiny pages and batches, one writer and pooled connection, and
//! payloads as `bytea`, so that every paging and batching boundary is crossed. Each case gets
//! a schema of its own.

use std::sync::Arc;

use shoal_persistence::store::Store;
use shoal_postgres::{PayloadStorage, PostgresConfig, PostgresStore};
use shoal_testkit::TempPostgres;

/// A store in a fresh schema of the shared server.
async fn store_in_fresh_schema(
    configure: fn(PostgresConfig) -> PostgresConfig,
) -> (Arc<dyn Store>, ()) {
    let pg = TempPostgres::shared();
    let schema = format!("conf_{:016x}", fastrand::u64(..));
    let config = configure(PostgresConfig::new(pg.url()).with_schema(schema));
    let store = PostgresStore::connect(config)
        .await
        .expect("connect to the test PostgreSQL");
    (Arc::new(store) as Arc<dyn Store>, ())
}

mod defaults {
    use super::*;

    shoal_persistence::store_conformance_tests!(store_in_fresh_schema(|config| config));
}

mod small_pages_and_batches {
    use super::*;

    shoal_persistence::store_conformance_tests!(store_in_fresh_schema(|config| {
        config
            .with_query_page_size(3)
            .with_max_batch_events(2)
            .with_queue_capacity(1)
            .with_pool_size(1)
            .with_writer_connections(1)
            .with_payload_storage(PayloadStorage::Bytea)
    }));
}
