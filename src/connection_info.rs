//! The plan of a dial, whichever service made it: the instance's addresses
//! and the proxy's port, whom to trust and how to recognise the server,
//! whether to send SNI, the client certificate chain, when it all expires,
//! and the metadata exchange that follows the handshake. A service's refresh
//! fills it in (`cloudsql::refresh`, `alloydb::refresh`); nothing below the
//! connector asks which service it is for.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use crate::error::Error;
use crate::ip_type::IpType;
use crate::mdx::{ExchangeRecord, MetadataExchange};

/// Everything a dial needs, valid until `expiry`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub addresses: Addresses,
    /// The server-side proxy's port.
    pub port: u16,
    /// The only trust anchors of the server's chain.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// How the server certificate must name the instance.
    pub identity: ServerIdentity,
    /// Whether the handshake sends a DNS target's name as SNI (an IP target
    /// never carries SNI).
    pub sni: bool,
    /// The client certificate first, then its issuers.
    pub client_chain: Vec<CertificateDer<'static>>,
    /// The certificate's NotAfter, capped by the expiry of a token the
    /// connection relies on.
    pub expiry: SystemTime,
    /// The exchange to run right after the handshake, if any.
    pub exchange: Option<Arc<dyn MetadataExchange>>,
}

/// What a refresh learned from the Admin API: the part of a dial's plan that
/// is not a fact of the service, and all that a host store keeps of it. The
/// instance's service makes the plan from it (`Service::plan`).
#[derive(Debug, Clone)]
pub(crate) struct InstanceFacts {
    pub addresses: Addresses,
    /// The only trust anchors of the server's chain.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// The DNS name the server certificate may carry (Cloud SQL's), without
    /// trailing dot.
    pub dns_name: Option<String>,
    /// The client certificate first, then its issuers.
    pub client_chain: Vec<CertificateDer<'static>>,
    /// When the plan stops being good: the certificate's NotAfter, capped by
    /// the expiry of a token the connection relies on.
    pub expiry: SystemTime,
    /// What the metadata exchange carries, if the instance wants one.
    pub exchange: Option<ExchangeRecord>,
}

/// The instance's addresses by IP type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub public: Option<IpAddr>,
    pub private: Option<IpAddr>,
    /// The PSC DNS name, without the trailing dot.
    pub psc: Option<String>,
}

impl Addresses {
    /// Why an address is not one an instance can have, if one is not: no
    /// address at all, an IP no host can be at, a PSC name that is not a
    /// DNS name. A refresh and a host store's entry are held to the same.
    pub(crate) fn problem(&self) -> Option<String> {
        let bad_ip = |ip: &IpAddr| {
            ip.is_unspecified()
                || ip.is_multicast()
                || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        };
        if *self == Addresses::default() {
            return Some("no IP address and no PSC DNS name".into());
        }
        if let Some(ip) = self
            .public
            .iter()
            .chain(&self.private)
            .find(|ip| bad_ip(ip))
        {
            return Some(format!("the address {ip}, where no instance can be"));
        }
        match &self.psc {
            Some(name)
                if !matches!(
                    rustls_pki_types::ServerName::try_from(name.as_str()),
                    Ok(rustls_pki_types::ServerName::DnsName(_))
                ) =>
            {
                Some(format!(
                    "the PSC DNS name {:?}, which is not a DNS name",
                    name.escape_debug().to_string()
                ))
            }
            _ => None,
        }
    }
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
    /// A SAN DNS name equal to `dns_name`, else the subject CN `common_name`
    /// (Go connector's algorithm; legacy certificates carry no SAN).
    DnsNameOrCommonName {
        /// The instance's DNS name, without trailing dot, if it has one.
        dns_name: Option<String>,
        common_name: String,
    },
    /// The address dialled, as an IP SAN (or a DNS SAN for a name).
    AddressDialled,
}

impl ConnectionInfo {
    /// What of the plan a refresh learned, as a host store keeps it.
    pub(crate) fn facts(&self) -> InstanceFacts {
        InstanceFacts {
            addresses: self.addresses.clone(),
            trust_anchors: self.trust_anchors.clone(),
            dns_name: match &self.identity {
                ServerIdentity::DnsNameOrCommonName { dns_name, .. } => dns_name.clone(),
                ServerIdentity::AddressDialled => None,
            },
            client_chain: self.client_chain.clone(),
            expiry: self.expiry,
            exchange: self.exchange.as_ref().map(|e| e.record()),
        }
    }

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
        target.ok_or_else(|| Error::ip_type_not_available(instance, ip_type))
    }
}

/// Google's DNS names end with a dot; names are compared without it.
pub(crate) fn strip_dot(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}
