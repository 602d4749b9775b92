//! Remoting for Shoal (being written): node identity, transports, framing, remote refs.

pub mod address;

pub use address::UniqueAddress;
