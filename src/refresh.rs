//! The shape both services' refreshes share (`cloudsql::refresh`,
//! `alloydb::refresh`): the Admin API call that needs no key goes out first,
//! the RSA key is generated while it travels, then the call carrying the
//! key's public half; both are awaited, 5xx answers retried.

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
    /// Runs `first`, makes (or reuses) the key while it travels, runs
    /// `second(key)`; returns both successful answers and the key. Fills in
    /// the key generation and Admin API timings.
    pub(crate) fn two_calls(
        &self,
        first: Call,
        second: impl FnOnce(&ClientKey) -> Result<Call, Error>,
        deadline: Instant,
        timings: &mut ConnectTimings,
    ) -> Result<(Response, Response, Arc<ClientKey>), Error> {
        let admin_started = Instant::now();
        let first_pending = http::start(&first.req, deadline)?;

        let key_started = Instant::now();
        let (key, generated) = self.key.get()?;
        let key_time = key_started.elapsed();
        if generated {
            timings.key_generation = key_time;
        }

        let second = second(&key)?;
        let second_pending = http::start(&second.req, deadline)?;

        // On a failure of the first, the second is dropped (cancelled).
        let a = google_api::finish(first_pending, &first.req, deadline, || first.name)?;
        let b = google_api::finish(second_pending, &second.req, deadline, || second.name)?;
        // The Admin API's own share: what was not hidden behind key generation.
        timings.admin_api = admin_started.elapsed().saturating_sub(key_time);
        Ok((a, b, key))
    }
}
