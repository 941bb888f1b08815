//! The DNS-over-HTTPS endpoint (RFC 8484) over the zone of [`crate::dns`]:
//! the HTTP side (GET `?dns=`, POST `application/dns-message`), the counters
//! and the injected faults; `dns` answers the questions.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use simple_dns::{Packet, PacketFlag, CLASS, OPCODE, QCLASS, RCODE};

use crate::dns::{
    build_answer, malformed_message, qtype_name, question_key, DnsAnswer, Resolution, DEFAULT_TTL,
    DNS_MESSAGE,
};
use crate::state::SharedState;

fn dns_message(bytes: Vec<u8>, max_age: u32) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    resp
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// `GET /dns-query?dns=<base64url of the query, unpadded>`.
pub async fn doh_get(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let params: Vec<(String, String)> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let Some((_, dns)) = params.iter().find(|(k, _)| k == "dns") else {
        return text(StatusCode::BAD_REQUEST, "missing the dns parameter");
    };
    // RFC 8484 wants no padding; a padded one is still clear enough to take.
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(dns.trim_end_matches('='))
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "the dns parameter is not base64url",
        );
    };
    serve(&state, &bytes).await
}

/// `POST /dns-query` with the query as the body (`content-type: application/dns-message`;
/// any other media type gets 415, as RFC 8484 allows).
pub async fn doh_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(DNS_MESSAGE)) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be {DNS_MESSAGE}"),
        );
    }
    serve(&state, &body).await
}

/// Answers one DoH query: parsed, counted, faulted as a test asked, resolved.
async fn serve(state: &SharedState, bytes: &[u8]) -> Response {
    let query = match Packet::parse(bytes) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not a DNS message: {e}")),
    };
    if query.has_flags(PacketFlag::RESPONSE) {
        return text(StatusCode::BAD_REQUEST, "a DNS response, not a query");
    }
    let [question] = query.questions.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "a query has exactly one question, this one {}",
                query.questions.len()
            ),
        );
    };
    let name = question_key(question);
    state
        .calls
        .record_dns_query(&name, &qtype_name(question.qtype));
    let fault = state.dns.take_fault(&name);
    if let Some(f) = fault.filter(|f| !f.delay.is_zero()) {
        // Only this request waits; the server goes on answering others.
        tokio::time::sleep(f.delay).await;
    }
    let res = match fault.map(|f| f.answer) {
        Some(DnsAnswer::Http500) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: internal server error",
            )
        }
        Some(DnsAnswer::Malformed) => return dns_message(malformed_message(query.id()), 0),
        Some(DnsAnswer::Servfail) => Resolution::fault(RCODE::ServerFailure, 0),
        Some(DnsAnswer::Nxdomain) => Resolution::fault(RCODE::NameError, DEFAULT_TTL),
        Some(DnsAnswer::Empty) => Resolution::fault(RCODE::NoError, DEFAULT_TTL),
        Some(DnsAnswer::Slow) | None => {
            if query.opcode() != OPCODE::StandardQuery {
                Resolution::fault(RCODE::NotImplemented, 0)
            } else if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
                // The zone is all class IN.
                Resolution::fault(RCODE::NoError, DEFAULT_TTL)
            } else {
                state.dns.resolve(&name, question.qtype)
            }
        }
    };
    match build_answer(&query, &res) {
        Ok(bytes) => dns_message(bytes, res.max_age),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
