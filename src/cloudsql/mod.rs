//! Cloud SQL: instance connection names, the two Admin API calls, the
//! refresh that turns their answers into the plan of a dial, the metadata
//! exchange, and the facts of the service (port, scopes, endpoint).

pub(crate) mod admin;
pub(crate) mod instance_name;
pub(crate) mod mdx;
pub(crate) mod refresh;

use std::sync::Arc;
use std::time::Instant;

use instance_name::InstanceName;
use mdx::CloudSqlExchange;

use crate::credentials::token::{Role, Scope};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::mdx::{ExchangeRecord, MetadataExchange};
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

    /// Cloud SQL's exchange carries no token.
    fn restore_exchange(
        &self,
        record: ExchangeRecord,
        user_agent: &str,
    ) -> Option<Arc<dyn MetadataExchange>> {
        let ExchangeRecord {
            login_token: None,
            auto_iam: false,
        } = record
        else {
            return None;
        };
        Some(Arc::new(CloudSqlExchange {
            user_agent: user_agent.to_string(),
        }))
    }
}
