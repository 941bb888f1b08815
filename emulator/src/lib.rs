//! A local emulator of Google's side of Cloud SQL and AlloyDB connections: the SQL Admin
//! API (v1beta4 and v1), the AlloyDB Admin API's connector calls (v1alpha, v1beta, v1), an
//! OAuth2 token endpoint, a GCE metadata server and server-side TLS proxies per instance,
//! so connectors can be tested on one machine without a cloud account. The proxies also
//! answer the metadata exchanges and perform automatic IAM database authentication for
//! Postgres (Cloud SQL and AlloyDB) and MySQL. See the project's
//! shared/spec/cloudsql-protocol.md §3, §6, §7 and §8.3, and shared/spec/alloydb-protocol.md.

pub mod admin;
pub mod alloydb;
pub mod calls;
pub mod certs;
pub mod client_tls;
pub mod config;
pub mod control;
pub mod credentials;
pub mod errors;
pub mod faults;
pub mod iam;
pub mod inbound;
pub mod instance;
pub mod jwt;
pub mod mdx;
pub mod metadata;
pub mod mysql;
pub mod oauth;
pub mod pgwire;
pub mod proto;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tamper;
pub mod tokens;

pub use config::Options;
pub use server::{start, Ready, Running};
