//! The shape both services' refreshes share (`cloudsql::refresh`,
//! `alloydb::refresh`): the token requests go out first, the RSA key is
//! generated while they travel (in wasm it is the longest step of a cold
//! connect, and the network waits hide behind it), then both Admin API calls
//! are sent together and awaited, 5xx answers retried.

use std::sync::Arc;
use std::time::Instant;

use crate::credentials::TokenSource;
use crate::http::{self, Request, Response};
use crate::key::{ClientKey, KeySlot};
use crate::{google_api, ConnectTimings, Error};

/// What a refresh uses, borrowed from the connector; `A` is the service's
/// Admin API client.
pub(crate) struct Refresher<'a, A> {
    pub admin: &'a A,
    pub tokens: &'a TokenSource,
    pub key: &'a KeySlot,
}

/// An Admin API request and its name for errors (`connectSettings for p:r:i`).
pub(crate) struct Call {
    pub req: Request,
    pub name: String,
}

impl<A> Refresher<'_, A> {
    /// Runs `tokens` (which starts the token requests), makes (or reuses) the
    /// key while they travel, then `wait` for the tokens. Fills in the token
    /// and key generation timings (the token's share: what was not hidden
    /// behind key generation).
    pub(crate) fn tokens_and_key<P, T>(
        &self,
        tokens: impl FnOnce() -> P,
        wait: impl FnOnce(P) -> Result<T, Error>,
        timings: &mut ConnectTimings,
    ) -> Result<(T, Arc<ClientKey>), Error> {
        let started = Instant::now();
        let pending = tokens();
        let key_started = Instant::now();
        let (key, generated) = self.key.get()?;
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
        timings: &mut ConnectTimings,
    ) -> Result<(Response, Response), Error> {
        let started = Instant::now();
        let first_pending = http::start(&first.req, deadline)?;
        let second_pending = http::start(&second.req, deadline)?;
        // On a failure of the first, the second is dropped (cancelled).
        let a = google_api::finish(first_pending, &first.req, deadline, || first.name)?;
        let b = google_api::finish(second_pending, &second.req, deadline, || second.name)?;
        timings.admin_api = started.elapsed();
        Ok((a, b))
    }
}
