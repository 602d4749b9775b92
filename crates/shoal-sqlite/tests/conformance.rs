//! The store conformance suite of `shoal-persistence`, run against [`SqliteStore`]: once with
//! the default options, once with tiny pages, batches and queues so that every paging and
//! batching boundary is crossed.

use std::sync::Arc;

use shoal_persistence::store::Store;
use shoal_sqlite::{SqliteOptions, SqliteStore};

/// A store in a fresh temporary directory; the directory lives as long as the guard.
async fn store_in_temp_dir(
    options: fn(SqliteOptions) -> SqliteOptions,
) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open_with(options(SqliteOptions::new(dir.path().join("shoal.db"))))
        .expect("open SQLite store");
    (Arc::new(store) as Arc<dyn Store>, dir)
}

mod defaults {
    use super::*;

    shoal_persistence::store_conformance_tests!(store_in_temp_dir(|options| options));
}

mod small_pages_and_batches {
    use super::*;

    shoal_persistence::store_conformance_tests!(store_in_temp_dir(|options| {
        options
            .with_query_page_size(3)
            .with_max_batch_size(2)
            .with_queue_capacity(1)
            .with_read_connections(1)
    }));
}
