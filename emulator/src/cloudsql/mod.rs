//! Cloud SQL, emulated the way Google serves it to its connectors (the project's
//! shared/spec/cloudsql-protocol.md): the SQL Admin API calls `connectSettings` and
//! `generateEphemeralCert` (`admin`), per instance a server CA hierarchy, server
//! certificates and a client CA (`certs`), and per instance a TLS 1.3 proxy on port 3307
//! of each of its addresses (`proxy`) that, where configured, answers the metadata
//! exchange (`mdx`) and checks IAM logins before it relays to the instance's database.
//! `spec` reads an instance's configuration and `instance` holds it at run time.
//!
//! Everything else is shared with AlloyDB: tokens, call counters, faults, Google's error
//! bodies, the proxy's accept loop, TLS set-up and relay, and the IAM logins.

pub mod admin;
pub mod certs;
pub mod instance;
pub mod mdx;
pub mod proxy;
pub mod spec;
