//! The shape both services' refreshes share (`cloudsql::refresh`,
//! `alloydb::refresh`): the token requests go out first, the RSA key is
//! generated while they travel (in wasm it is the longest step of a cold
//! connect, and the network waits hide behind it), then both Admin API calls
//! are sent together and awaited, 5xx answers retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::credentials::TokenSource;
use crate::error::Error;
use crate::google_api::{self, ApiClient};
use crate::http::{Request, Response, Transport};
use crate::key::{ClientKey, KeySlot};

/// What a refresh uses, borrowed from the connector.
pub(crate) struct RefreshContext<'a> {
    pub config: &'a Config,
    pub user_agent: &'a str,
    pub tokens: &'a TokenSource,
    pub key: &'a KeySlot,
    pub transport: &'a dyn Transport,
}

/// How long each step of a refresh took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RefreshTimings {
    /// Getting the tokens, less what was hidden behind key generation.
    pub token: Duration,
    /// The Admin API calls.
    pub admin_api: Duration,
    /// Generating the RSA key (zero if the connector had one).
    pub key_generation: Duration,
}

/// An Admin API request and its name for errors (`connectSettings for p:r:i`).
pub(crate) struct Call {
    pub req: Request,
    pub name: String,
}

impl RefreshContext<'_> {
    /// A service's Admin API at `endpoint`, called with the connector's
    /// user agent and quota project.
    pub(crate) fn admin_api(&self, endpoint: &str) -> ApiClient {
        ApiClient::new(
            endpoint,
            self.user_agent.to_string(),
            self.config.quota_project.clone(),
        )
    }

    /// Runs `tokens` (which starts the token requests), makes (or reuses) the
    /// key while they travel, then `wait`s for the tokens. Fills in the token
    /// and key generation timings.
    pub(crate) fn tokens_and_key<P, T>(
        &self,
        tokens: impl FnOnce() -> P,
        wait: impl FnOnce(P) -> Result<T, Error>,
        deadline: Instant,
        timings: &mut RefreshTimings,
    ) -> Result<(T, Arc<ClientKey>), Error> {
        let started = Instant::now();
        let pending = tokens();
        let key_started = Instant::now();
        let (key, generated) = self.key.get(deadline)?;
        let key_time = key_started.elapsed();
        if generated {
            timings.key_generation = key_time;
        }
        let tokens = wait(pending)?;
        timings.token = started.elapsed().saturating_sub(key_time);
        Ok((tokens, key))
    }

    /// Sends both Admin API calls, then waits for both; fills in the Admin
    /// API timing.
    pub(crate) fn two_calls(
        &self,
        first: Call,
        second: Call,
        deadline: Instant,
        timings: &mut RefreshTimings,
    ) -> Result<(Response, Response), Error> {
        let started = Instant::now();
        let first_pending = self.transport.start(&first.req, deadline)?;
        let second_pending = self.transport.start(&second.req, deadline)?;
        // On a failure of the first, the second is dropped (cancelled).
        let a = google_api::finish(first_pending, &first.req, self.transport, deadline, || {
            first.name
        })?;
        let b = google_api::finish(
            second_pending,
            &second.req,
            self.transport,
            deadline,
            || second.name,
        )?;
        timings.admin_api = started.elapsed();
        Ok((a, b))
    }
}
