//! Event-sourced entities for Shoal (being written).

pub mod memory;
pub mod store;
pub mod testing;
