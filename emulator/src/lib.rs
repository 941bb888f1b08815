//! A local emulator of Google's side of Cloud SQL and AlloyDB connections: the SQL Admin
//! API (v1beta4 and v1), the AlloyDB Admin API's connector calls (v1alpha, v1beta, v1), an
//! OAuth2 token endpoint, STS token exchange for workload identity federation (against an
//! OIDC identity provider of its own), IAM Credentials' `generateAccessToken` for service
//! account impersonation, a GCE metadata server and server-side TLS proxies per instance,
//! so connectors can be tested on one machine without a cloud account. The proxies also
//! answer the metadata exchanges and perform automatic IAM database authentication for
//! Postgres (Cloud SQL and AlloyDB) and MySQL. See the project's
//! shared/spec/cloudsql-protocol.md §3, §6, §7 and §8.3, and shared/spec/alloydb-protocol.md.
//!
//! The two services are laid out alike: `cloudsql` and `alloydb` each hold their Admin
//! API (`admin`), PKI (`certs`), running instances (`instance`), metadata exchange
//! (`mdx`), proxy (`proxy`) and configuration (`spec`). What they share sits at the top,
//! often under the same name (`admin`, `certs`, `instance`, `proxy`, `spec`, `state`,
//! and the tokens, counters, faults and wire protocols); the service folders import from
//! it, never the other way round. Only `app`, `config`, `control` and `server` see both
//! services, to dispatch between them.
//!
//! The identity services stand beside them: `sts` (token exchange) and `iamcredentials`
//! (`generateAccessToken`, with the fixed IAM policy in `iamcredentials::policy`) serve
//! their own paths on the admin server; what they share sits at the top as well: the
//! principals and credential files (`credentials`), the workload identity pool and its
//! `external_account` files (`workload_identity`) and the OIDC identity provider whose
//! subject tokens STS verifies (`idp`).

pub mod admin;
pub mod alloydb;
pub mod app;
pub mod calls;
pub mod certs;
pub mod client_tls;
pub mod cloudsql;
pub mod config;
pub mod control;
pub mod credentials;
pub mod dns;
pub mod doh;
pub mod errors;
pub mod faults;
pub mod iam;
pub mod iamcredentials;
pub mod idp;
pub mod inbound;
pub mod instance;
pub mod jwt;
pub mod metadata;
pub mod mysql;
pub mod oauth;
pub mod pgwire;
pub mod proto;
pub mod proxy;
pub mod server;
pub mod spec;
pub mod state;
pub mod sts;
pub mod tamper;
pub mod tokens;
pub mod workload_identity;

pub use config::Options;
pub use server::{start, Ready, Running};
