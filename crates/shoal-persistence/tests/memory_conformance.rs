//! The store conformance suite, run on [`MemoryStore`].

use std::sync::Arc;

use shoal_persistence::memory::MemoryStore;
use shoal_persistence::store::Store;

shoal_persistence::store_conformance_tests!(async {
    (Arc::new(MemoryStore::new()) as Arc<dyn Store>, ())
});
