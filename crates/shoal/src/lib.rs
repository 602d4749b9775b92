//! Shoal facade (being written).
