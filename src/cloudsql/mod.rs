//! Cloud SQL: instance connection names, the two Admin API calls, the
//! refresh that turns their answers into the plan of a dial, the metadata
//! exchange, and the facts of the service (port, scopes, endpoint).

pub(crate) mod admin;
pub(crate) mod dns_name;
pub(crate) mod instance_name;
pub(crate) mod mdx;
pub(crate) mod refresh;

use std::sync::Arc;
use std::time::Instant;

use instance_name::InstanceName;
use mdx::CloudSqlExchange;

use crate::config::Config;
use crate::connection_info::{ConnectionInfo, InstanceFacts, ServerIdentity};
use crate::credentials::token::{Role, Scope};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::mdx::ExchangeRecord;
use crate::refresh::RefreshContext;
use crate::service::{Refreshed, Service};

/// The Cloud SQL server-side proxy's port.
pub const CLOUD_SQL_PORT: u16 = 3307;

/// Admin API calls.
pub(crate) const ADMIN_SCOPE: Scope = Scope {
    url: "https://www.googleapis.com/auth/sqlservice.admin",
    role: Role::Api,
};

/// Automatic or manual IAM database login.
pub(crate) const LOGIN_SCOPE: Scope = Scope {
    url: "https://www.googleapis.com/auth/sqlservice.login",
    role: Role::Login {
        api_token_will_do: false,
    },
};

/// The Cloud SQL Admin API of `config`: the configured one, else
/// `https://sqladmin.UNIVERSE` ([`DEFAULT_ADMIN_ENDPOINT`](admin::DEFAULT_ADMIN_ENDPOINT) in Google's).
pub(crate) fn admin_endpoint(config: &Config) -> String {
    config
        .admin_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://sqladmin.{}", config.universe()))
}

impl Service for InstanceName {
    /// Public: Google's default for Cloud SQL.
    fn default_ip_type(&self) -> IpType {
        IpType::Public
    }

    fn refresh(
        &self,
        ctx: &RefreshContext<'_>,
        iam: bool,
        deadline: Instant,
    ) -> Result<Refreshed, Error> {
        refresh::refresh(self, ctx, iam, deadline)
    }

    /// The configured one, else `https://sqladmin.UNIVERSE`
    /// ([`DEFAULT_ADMIN_ENDPOINT`] in Google's).
    fn admin_endpoint(&self, config: &Config) -> String {
        admin_endpoint(config)
    }

    /// Port 3307; the server certificate names the instance's DNS name as a
    /// SAN or `project:instance` as its CN; no SNI (Cloud SQL's PSC endpoints
    /// refuse it); the exchange, when the instance lists it, carries no
    /// token (an IAM login is in the certificate).
    fn plan(&self, facts: InstanceFacts, user_agent: &str) -> Result<ConnectionInfo, Error> {
        let exchange = match facts.exchange {
            None => None,
            Some(ExchangeRecord {
                login_token: None,
                auto_iam: false,
            }) => Some(Arc::new(CloudSqlExchange {
                user_agent: user_agent.to_string(),
            }) as _),
            Some(_) => {
                return Err(Error::instance_metadata(format!(
                    "{self}: a Cloud SQL metadata exchange carries no token"
                )))
            }
        };
        Ok(ConnectionInfo {
            addresses: facts.addresses,
            port: CLOUD_SQL_PORT,
            trust_anchors: facts.trust_anchors,
            identity: ServerIdentity::DnsNameOrCommonName {
                dns_name: facts.dns_name,
                common_name: self.legacy_common_name(),
            },
            sni: false,
            client_chain: facts.client_chain,
            expiry: facts.expiry,
            exchange,
        })
    }
}
