//! One DNS-over-HTTPS exchange (RFC 8484): the query POSTed as
//! `application/dns-message` to the resolver's URL, the answer read by
//! [`message`](super::message). A resolver that does not answer in time is a
//! timeout; one that answers with an HTTP error or not a DNS answer is a
//! [`Dns`](crate::ErrorKind::Dns) error naming the name and the resolver.

use std::time::Instant;

use super::message::{self, Answer, QueryType};
use crate::error::{Error, ErrorKind};
use crate::http::{redact_url, Request, Transport};
use crate::redact;

/// The media type of DoH queries and answers.
const DNS_MESSAGE: &str = "application/dns-message";

/// Asks `resolver` for `qname`'s records of type `qtype`; errors say `name`
/// (what the caller gave, and the CNAME it is at).
pub(crate) fn ask(
    transport: &dyn Transport,
    resolver: &str,
    qname: &str,
    name: &str,
    qtype: QueryType,
    deadline: Instant,
) -> Result<Answer, Error> {
    let at = redact_url(resolver);
    let query = message::query(qname, qtype).map_err(|e| Error::dns(format!("{name}: {}", e.0)))?;
    let req = Request::post(resolver.to_string(), DNS_MESSAGE, query).header("accept", DNS_MESSAGE);
    let resp = transport.send(&req, deadline).map_err(|e| match e.kind() {
        ErrorKind::Timeout => Error::timeout(format!(
            "the DNS query for {name} to {at} was not answered in time: {}",
            e.message()
        )),
        _ => Error::dns(format!("cannot ask {at} for {name}: {e}")).with_source(e),
    })?;
    if !resp.is_success() {
        return Err(Error::dns(format!(
            "{at} answered the query for {name} with HTTP {}: {}",
            resp.status,
            redact::server_text(&String::from_utf8_lossy(&resp.body), &[])
        )));
    }
    message::parse(&resp.body, qname, qtype).map_err(|e| {
        Error::dns(format!(
            "{at} answered the query for {name} with a malformed DNS message: {}",
            e.0
        ))
    })
}
