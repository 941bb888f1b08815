//! Connect to Google Cloud SQL and AlloyDB from WebAssembly, the way Google's
//! connectors do, with nothing but WASI host interfaces.
//!
//! A [`Connector`] gets an OAuth2 token, asks the instance's Admin API (Cloud
//! SQL or AlloyDB, the name tells which) for its connection info and a client
//! certificate for its RSA-2048 key, dials the instance's server-side proxy
//! (port 3307 Cloud SQL, 5433 AlloyDB), runs mutual TLS 1.3, verifies the
//! server's identity, runs the metadata exchange where the instance needs it,
//! and hands back a [`Connection`] over which a database driver speaks its own
//! protocol in plain text (the driver must not start TLS itself).
//!
//! Refresh is lazy: nothing runs in the background. Certificates are cached in
//! the connector until four minutes before they expire, and, with a host
//! [`Store`], across component instances (serverless hosts make one per
//! request).
//!
//! ```no_run
//! use std::io::Write;
//! use gcp_db_connector::{Config, ConnectOptions, Connector};
//!
//! let connector = Connector::new(Config::default())?;
//! let mut conn = connector.connect("my-project:us-central1:my-db", &ConnectOptions::default())?;
//! conn.write_all(b"...the database protocol...")?;
//! let alloydb = "projects/my-project/locations/us-central1/clusters/c/instances/i";
//! let mut conn = connector.connect(alloydb, &ConnectOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where each step lives (the README has the table): `instance` picks the
//! service from the name, `cloudsql` and `alloydb` hold everything of each
//! service (name, Admin API calls, refresh, metadata exchange, port, scopes)
//! behind the `service` trait, and fill in the service-neutral
//! `connection_info`; `credentials` gets tokens; `key` makes the RSA key;
//! `cache` stacks the sources of connection info (memory, host store,
//! refresh), limited by `rate_limit`; `connect` is the sans-IO dial (TCP, TLS
//! with `tls` and `verify`, the exchange read by `mdx`) and its blocking and
//! tokio pumps; `connector` composes them; `wasi` is the only code that calls
//! WASI directly. The WIT component (`gcp:db-connector/connector`) is this
//! library behind the thin export glue of the `gcp-db-connector-component`
//! crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod alloydb;
mod cache;
mod certs;
mod cloudsql;
mod config;
mod connect;
mod connection_info;
mod connector;
mod credentials;
mod dns;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod google_api;
mod http;
mod ids;
mod instance;
mod ip_type;
mod key;
mod keygen;
mod mdx;
mod rate_limit;
mod redact;
mod refresh;
mod retry;
mod rsa_sign;
mod secret;
mod service;
mod store;
#[cfg(test)]
mod testing;
mod tls;
mod verify;
mod wasi;

pub use alloydb::admin::DEFAULT_ALLOYDB_ADMIN_ENDPOINT;
pub use alloydb::instance_uri::AlloyDbInstanceUri;
pub use alloydb::ALLOYDB_PORT;
pub use cache::store::LEASE_WAIT;
pub use cache::REFRESH_BUFFER;
pub use cloudsql::admin::DEFAULT_ADMIN_ENDPOINT;
pub use cloudsql::instance_name::InstanceName;
pub use cloudsql::CLOUD_SQL_PORT;
pub use config::{Config, ConnectOptions, DEFAULT_DNS_RESOLVER, DEFAULT_FAILOVER_PERIOD};
pub use connect::blocking::Connection;
pub use connect::timings::ConnectTimings;
#[cfg(feature = "tokio")]
pub use connect::tokio::AsyncConnection;
pub use connector::Connector;
pub use credentials::file::DEFAULT_TOKEN_ENDPOINT;
pub use credentials::source::DEFAULT_METADATA_HOST;
pub use credentials::{Credentials, ServiceAccountImpersonation, DEFAULT_UNIVERSE_DOMAIN};
pub use error::{ApiError, Error, ErrorKind, VerificationCheck};
pub use instance::Instance;
pub use ip_type::{InvalidIpType, IpType};
pub use store::directory::DirectoryStore;
pub use store::Store;
#[cfg(all(target_os = "wasi", feature = "wasi-keyvalue"))]
pub use wasi::keyvalue::open_wasi_keyvalue;
