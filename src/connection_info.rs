//! What a refresh produces and a dial consumes, for either service: the
//! instance's addresses, whom to trust and how to recognise the server, the
//! client certificate chain, when it all expires, and which metadata exchange
//! follows the handshake.

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use crate::credentials::Secret;
use crate::{Error, IpType};

/// Everything a dial needs, valid until `expiry`.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub addresses: Addresses,
    /// The only trust anchors: Cloud SQL's serverCaCert (every certificate of
    /// it), AlloyDB's caCert.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// How the server certificate must name the instance.
    pub identity: ServerIdentity,
    /// The client certificate first, then its issuers (AlloyDB's proxy needs
    /// the intermediate).
    pub client_chain: Vec<CertificateDer<'static>>,
    /// The certificate's NotAfter, capped by the expiry of a token the
    /// connection relies on (Cloud SQL IAM login, AlloyDB exchange token).
    pub expiry: SystemTime,
    /// The exchange to run right after the handshake.
    pub mdx: MdxKind,
    /// The server-side proxy's port.
    pub port: u16,
}

/// The instance's addresses by IP type.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub public: Option<IpAddr>,
    pub private: Option<IpAddr>,
    /// The PSC DNS name, without the trailing dot.
    pub psc: Option<String>,
}

/// Where to dial: an IP, or the PSC DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Ip(IpAddr),
    Dns(String),
}

/// Who the server certificate must say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerIdentity {
    /// Cloud SQL (Go connector's algorithm): a SAN DNS name equal to the
    /// instance's DNS name, else the CN `project:instance`.
    CloudSql {
        /// The instance's DNS name, without trailing dot, if it has one.
        dns_name: Option<String>,
        /// `project:instance`.
        common_name: String,
    },
    /// AlloyDB: the address dialled, as an IP SAN (or a DNS SAN for PSC).
    Address,
}

/// Which metadata exchange follows the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MdxKind {
    /// None: the database protocol starts at once.
    None,
    /// Cloud SQL's `CSQLMDEX` exchange (connectSettings lists it).
    CloudSql,
    /// AlloyDB's exchange, carrying this alloydb.login token; `iam` selects
    /// AUTO_IAM over DB_NATIVE.
    AlloyDb { token: Secret, iam: bool },
}

impl ConnectionInfo {
    /// The address of `ip_type`, or a typed error naming what is missing.
    pub(crate) fn target(
        &self,
        ip_type: IpType,
        instance: &impl fmt::Display,
    ) -> Result<Target, Error> {
        let target = match ip_type {
            IpType::Public => self.addresses.public.map(Target::Ip),
            IpType::Private => self.addresses.private.map(Target::Ip),
            IpType::Psc => self.addresses.psc.clone().map(Target::Dns),
        };
        target.ok_or_else(|| Error::IpTypeNotAvailable {
            instance: instance.to_string(),
            ip_type,
        })
    }
}

/// Google's DNS names end with a dot; names are compared without it.
pub(crate) fn strip_dot(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}
