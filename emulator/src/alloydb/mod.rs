//! AlloyDB, emulated the way Google serves it to its connectors (the project's
//! shared/spec/alloydb-protocol.md): the AlloyDB Admin API calls `connectionInfo` and
//! `generateClientCertificate` (`admin`), a CA per cluster and a server certificate per
//! instance (`certs`), and per instance a TLS 1.3 proxy on port 5433 of each of its
//! addresses (`proxy`) that runs the mandatory metadata exchange (`mdx`) before it relays
//! to a real PostgreSQL, logging IAM principals in without a password. `spec` reads an
//! instance's configuration and `instance` holds it at run time.
//!
//! Everything else is shared with Cloud SQL: tokens, call counters, faults, Google's error
//! bodies, the proxy's accept loop, TLS set-up and relay, and the Postgres IAM login.

pub mod admin;
pub mod certs;
pub mod instance;
pub mod mdx;
pub mod proxy;
pub mod spec;
