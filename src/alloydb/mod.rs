//! AlloyDB: instance URIs, the two Admin API calls, the refresh that turns
//! their answers into the plan of a dial, the metadata exchange, and the
//! facts of the service (port, scopes, endpoint).

pub(crate) mod admin;
pub(crate) mod instance_uri;
pub(crate) mod mdx;
pub(crate) mod refresh;

use std::sync::Arc;
use std::time::Instant;

use instance_uri::AlloyDbInstanceUri;
use mdx::AlloyDbExchange;

use crate::config::Config;
use crate::connection_info::{ConnectionInfo, InstanceFacts, ServerIdentity};
use crate::credentials::token::{Role, Scope};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::refresh::RefreshContext;
use crate::service::{Refreshed, Service};

/// The AlloyDB server-side proxy's port.
pub const ALLOYDB_PORT: u16 = 5433;

/// Admin API calls: AlloyDB takes only cloud-platform.
pub(crate) const ADMIN_SCOPE: Scope = Scope {
    url: "https://www.googleapis.com/auth/cloud-platform",
    role: Role::Api,
};

/// The metadata exchange's token: the instances.connect check and AUTO_IAM.
/// A caller's API token stands for it, as in Go's `WithTokenSource`.
pub(crate) const LOGIN_SCOPE: Scope = Scope {
    url: "https://www.googleapis.com/auth/alloydb.login",
    role: Role::Login {
        api_token_will_do: true,
    },
};

impl Service for AlloyDbInstanceUri {
    /// Private: AlloyDB's default.
    fn default_ip_type(&self) -> IpType {
        IpType::Private
    }

    fn refresh(
        &self,
        ctx: &RefreshContext<'_>,
        iam: bool,
        deadline: Instant,
    ) -> Result<Refreshed, Error> {
        refresh::refresh(self, ctx, iam, deadline)
    }

    /// The configured one, else `https://alloydb.UNIVERSE`
    /// ([`DEFAULT_ALLOYDB_ADMIN_ENDPOINT`] in Google's).
    fn admin_endpoint(&self, config: &Config) -> String {
        config
            .alloydb_admin_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://alloydb.{}", config.universe()))
    }

    /// Port 5433; the server certificate names the address dialled as a
    /// SAN, and a PSC name goes out as SNI (as AlloyDB's connectors do); the
    /// exchange always runs, with its alloydb.login token.
    fn plan(&self, facts: InstanceFacts, user_agent: &str) -> Result<ConnectionInfo, Error> {
        let token = facts.exchange.as_ref().and_then(|e| e.login_token.clone());
        let (Some(token), None) = (token, &facts.dns_name) else {
            return Err(Error::instance_metadata(format!(
                "{self}: an AlloyDB plan needs the exchange's token and names no server DNS name"
            )));
        };
        Ok(ConnectionInfo {
            addresses: facts.addresses,
            port: ALLOYDB_PORT,
            trust_anchors: facts.trust_anchors,
            identity: ServerIdentity::AddressDialled,
            sni: true,
            client_chain: facts.client_chain,
            expiry: facts.expiry,
            exchange: Some(Arc::new(AlloyDbExchange {
                user_agent: user_agent.to_string(),
                token,
                iam: facts.exchange.is_some_and(|e| e.auto_iam),
            })),
        })
    }
}
