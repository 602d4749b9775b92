//! Typed actors on tokio (being written).
