//! Test harnesses for Shoal.
//!
//! [`TempPostgres`] starts a throwaway PostgreSQL server from the binaries installed on the
//! machine, for tests and benchmarks of the PostgreSQL store:
//!
//! ```no_run
//! use shoal_testkit::TempPostgres;
//!
//! let pg = TempPostgres::start();
//! println!("connect to {}", pg.url());
//! // … run the test; the server is stopped and its directory removed on drop.
//! ```
//!
//! [`ServiceProcess`] runs a Shoal service binary (one built on `shoal-service`) as a child
//! process and reads its start lines; [`HttpClient`] and [`Reply`] talk to its API.
//!
//! Tests that need PostgreSQL never skip themselves when it is missing: [`TempPostgres::start`]
//! panics with a message saying how to install it.

mod node;
mod postgres;
mod service;

pub use node::{NodeProcess, free_port, up_members};
pub use postgres::{TempPostgres, TempPostgresBuilder};
pub use service::{HttpClient, REQUEST_DEADLINE, Reply, ServiceProcess, read, service_command};
