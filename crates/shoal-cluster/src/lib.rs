//! Cluster membership (being written).
