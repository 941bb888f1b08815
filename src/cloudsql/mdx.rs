//! The Cloud SQL metadata exchange (MDX), sent right after the TLS handshake
//! when `connectSettings` lists `CLIENT_PROTOCOL_TYPE` in
//! `mdxProtocolSupport` (Go connector `metadataexchange.go`). `crate::mdx`
//! reads its response.
//!
//! Both directions are framed as ASCII `CSQLMDEX`, a big-endian u32 length and
//! a protobuf message (`cloud.sql.connector.v1`):
//!
//! ```text
//! MetadataExchangeRequest  { string user_agent = 1; ClientProtocolType client_protocol_type = 2; }
//! MetadataExchangeResponse { ResponseStatusCode response_status_code = 1; string error_message = 2; }
//! ```

use prost::Message;

use crate::error::Error;
use crate::mdx::{self, ExchangeRecord, MetadataExchange};

/// Every MDX frame starts with this.
const SIGNATURE: &[u8; 8] = b"CSQLMDEX";
/// Signature and length.
const HEADER_LEN: usize = 12;

/// Cloud SQL's exchange: it tells the server that the driver reaches it
/// through the connector's TLS.
#[derive(Debug, Clone)]
pub(crate) struct CloudSqlExchange {
    pub user_agent: String,
}

impl MetadataExchange for CloudSqlExchange {
    fn request(&self) -> Vec<u8> {
        request(&self.user_agent)
    }

    fn header_len(&self) -> usize {
        HEADER_LEN
    }

    fn body_len(&self, header: &[u8]) -> Result<usize, Error> {
        response_length(header)
    }

    fn check(&self, body: &[u8]) -> Result<(), Error> {
        check_response(body)
    }

    fn record(&self) -> ExchangeRecord {
        ExchangeRecord {
            login_token: None,
            auto_iam: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum ClientProtocolType {
    Unspecified = 0,
    Tcp = 1,
    /// The driver reaches the connector through an in-process, already
    /// encrypted channel: Google's `TLS` case, which lets MySQL use
    /// `caching_sha2_password` without its own TLS.
    Tls = 2,
    Uds = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum ResponseStatusCode {
    Unspecified = 0,
    Ok = 1,
    Error = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataExchangeRequest {
    #[prost(string, tag = "1")]
    user_agent: String,
    #[prost(enumeration = "ClientProtocolType", tag = "2")]
    client_protocol_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataExchangeResponse {
    #[prost(enumeration = "ResponseStatusCode", tag = "1")]
    response_status_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The framed request.
fn request(user_agent: &str) -> Vec<u8> {
    let body = MetadataExchangeRequest {
        user_agent: user_agent.to_string(),
        client_protocol_type: ClientProtocolType::Tls as i32,
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(SIGNATURE);
    // A user agent is far below 4 GiB; the connector builds it.
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Checks a response header (signature and length); returns the body length.
fn response_length(header: &[u8]) -> Result<usize, Error> {
    let (Some(signature), Some(&[a, b, c, d])) = (header.get(..8), header.get(8..HEADER_LEN))
    else {
        return Err(Error::metadata_exchange(
            "short metadata exchange response header",
        ));
    };
    if signature != SIGNATURE {
        return Err(Error::metadata_exchange(
            "the server did not answer the metadata exchange (no CSQLMDEX signature)",
        ));
    }
    mdx::bounded_length([a, b, c, d])
}

/// Decodes a response body: `Ok` if the server accepted, else the server's
/// message as a metadata exchange error.
fn check_response(body: &[u8]) -> Result<(), Error> {
    let r = MetadataExchangeResponse::decode(body).map_err(mdx::malformed)?;
    mdx::outcome(r.response_status_code, &r.error_message)
}

/// A response body as (code, message), undecided (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_response(body: &[u8]) -> Option<(i32, String)> {
    MetadataExchangeResponse::decode(body)
        .ok()
        .map(|r| (r.response_status_code, r.error_message))
}

/// A response body, as the server-side proxy sends it (for the fuzz
/// targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn encode_response(code: i32, message: &str) -> Vec<u8> {
    MetadataExchangeResponse {
        response_status_code: code,
        error_message: message.to_string(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn exchange() -> CloudSqlExchange {
        CloudSqlExchange {
            user_agent: "ua/1".into(),
        }
    }

    #[test]
    fn googles_ok_response_is_read_and_the_database_bytes_left() {
        let ex = exchange();
        assert_eq!(ex.request(), request("ua/1"));
        let mut server: &[u8] = b"CSQLMDEX\x00\x00\x00\x02\x08\x01RHELLO";
        mdx::read_response(&mut server, &ex).unwrap();
        assert_eq!(server, b"RHELLO");
    }

    #[test]
    fn a_server_closing_mid_response_is_a_typed_error() {
        for bytes in [&b"CSQLMDEX\x00\x00\x00\x05\x08"[..], b"CSQL"] {
            let e = mdx::read_response(&mut &bytes[..], &exchange()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MetadataExchange);
            assert!(e.message().contains("closed the connection"), "{e}");
        }
    }

    #[test]
    fn request_bytes_match_the_proto() {
        let frame = request("ua/1");
        assert_eq!(&frame[..8], b"CSQLMDEX");
        assert_eq!(&frame[8..12], &[0, 0, 0, 8]);
        assert_eq!(&frame[12..], &[0x0a, 4, b'u', b'a', b'/', b'1', 0x10, 0x02]);

        // A user agent longer than 127 bytes takes a two-byte length varint.
        let long = "x".repeat(200);
        let frame = request(&long);
        assert_eq!(&frame[12..15], &[0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 12 + 3 + 200 + 2);
    }

    #[test]
    fn googles_ok_response_is_accepted() {
        // The Go connector's mock answers exactly `CSQLMDEX 00 00 00 02 08 01`.
        let frame = b"CSQLMDEX\x00\x00\x00\x02\x08\x01";
        assert_eq!(response_length(&frame[..12]).unwrap(), 2);
        check_response(&frame[12..]).unwrap();
    }

    #[test]
    fn an_error_response_carries_the_servers_message() {
        let mut body = vec![0x08, 0x02, 0x12, 5];
        body.extend_from_slice(b"nope!");
        let e = check_response(&body).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MetadataExchange);
        assert!(e.message().ends_with("nope!"), "{e}");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 3 varint, field 4 bytes, field 5 fixed32, then status OK
        let body = [
            0x18, 0x96, 0x01, 0x22, 2, b'h', b'i', 0x2d, 1, 2, 3, 4, 0x08, 0x01,
        ];
        check_response(&body).unwrap();
    }

    #[test]
    fn bad_frames_are_typed_errors_never_panics() {
        assert!(response_length(b"PGSQLXXX\x00\x00\x00\x02").is_err());
        assert!(response_length(b"CSQLMDEX").is_err());
        let e = response_length(b"CSQLMDEX\x00\x01\x00\x01")
            .unwrap_err()
            .to_string();
        assert!(e.contains("65537"), "{e}");
        for body in [
            &[][..],          // no status
            &[0x08],          // truncated varint
            &[0x08, 0x07],    // unknown status
            &[0x12, 9, b'x'], // message longer than the body
            &[0x0b],          // wire type 3 (groups)
            &[0xff; 11],      // varint longer than 10 bytes
            &[0x09, 1, 2],    // short fixed64
        ] {
            let e = check_response(body).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MetadataExchange, "{body:?}");
        }
    }
}
