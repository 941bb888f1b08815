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

use crate::credentials::token::{Role, Scope};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::mdx::{ExchangeRecord, MetadataExchange};
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

    /// AlloyDB's exchange always carries its token.
    fn restore_exchange(
        &self,
        record: ExchangeRecord,
        user_agent: &str,
    ) -> Option<Arc<dyn MetadataExchange>> {
        Some(Arc::new(AlloyDbExchange {
            user_agent: user_agent.to_string(),
            token: record.login_token?,
            iam: record.auto_iam,
        }))
    }
}
