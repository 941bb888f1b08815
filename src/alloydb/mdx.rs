//! The AlloyDB metadata exchange, right after the TLS handshake and before
//! any Postgres byte (`google.cloud.alloydb.connectors.v1`); `crate::mdx`
//! reads its response. It carries the alloydb.login token, which the server-side proxy
//! checks for `alloydb.instances.connect` and, under AUTO_IAM, logs the
//! database user in with.
//!
//! Both directions are a big-endian u32 length, then the protobuf message:
//!
//! ```text
//! MetadataExchangeRequest  { string user_agent = 1; AuthType auth_type = 2; string oauth2_token = 3; }
//! MetadataExchangeResponse { ResponseCode response_code = 1; string error = 2; }
//! ```

use prost::Message;

use crate::error::Error;
use crate::mdx::{self, ExchangeRecord, MetadataExchange};
use crate::secret::Secret;

/// The length prefix.
const HEADER_LEN: usize = 4;

/// AlloyDB's exchange: the alloydb.login token, and whether to log its
/// principal in (AUTO_IAM) or leave the login to the database (DB_NATIVE).
#[derive(Debug, Clone)]
pub(crate) struct AlloyDbExchange {
    pub user_agent: String,
    pub token: Secret,
    pub iam: bool,
}

impl MetadataExchange for AlloyDbExchange {
    fn request(&self) -> Vec<u8> {
        request(&self.user_agent, self.token.expose(), self.iam)
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
            login_token: Some(self.token.clone()),
            auto_iam: self.iam,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum AuthType {
    Unspecified = 0,
    DbNative = 1,
    AutoIam = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum ResponseCode {
    Unspecified = 0,
    Ok = 1,
    Error = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataExchangeRequest {
    #[prost(string, tag = "1")]
    user_agent: String,
    #[prost(enumeration = "AuthType", tag = "2")]
    auth_type: i32,
    #[prost(string, tag = "3")]
    oauth2_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataExchangeResponse {
    #[prost(enumeration = "ResponseCode", tag = "1")]
    response_code: i32,
    #[prost(string, tag = "2")]
    error: String,
}

/// The framed request: AUTO_IAM when `iam`, else DB_NATIVE; the token is sent
/// either way.
fn request(user_agent: &str, token: &str, iam: bool) -> Vec<u8> {
    let auth_type = if iam {
        AuthType::AutoIam
    } else {
        AuthType::DbNative
    };
    let body = MetadataExchangeRequest {
        user_agent: user_agent.to_string(),
        auth_type: auth_type as i32,
        oauth2_token: token.to_string(),
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    // Tokens are a few KiB at most.
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Checks the length prefix; returns the body length.
fn response_length(header: &[u8]) -> Result<usize, Error> {
    let Some(&[a, b, c, d]) = header.get(..HEADER_LEN) else {
        return Err(Error::metadata_exchange(
            "short metadata exchange response header",
        ));
    };
    // A Postgres ErrorResponse starts with 'E': the server is not expecting
    // the exchange (Go's connector once panicked on this, reading 0x45… as a
    // length).
    if a == b'E' {
        return Err(Error::metadata_exchange(
            "the server answered with a Postgres error instead of the metadata exchange; \
             it does not expect one on this port",
        ));
    }
    mdx::bounded_length([a, b, c, d])
}

/// Decodes a response body: `Ok` if the server accepted, else the server's
/// message as a metadata exchange error.
fn check_response(body: &[u8]) -> Result<(), Error> {
    let r = MetadataExchangeResponse::decode(body).map_err(mdx::malformed)?;
    mdx::outcome(r.response_code, &r.error)
}

/// A response body as (code, message), undecided (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_response(body: &[u8]) -> Option<(i32, String)> {
    MetadataExchangeResponse::decode(body)
        .ok()
        .map(|r| (r.response_code, r.error))
}

/// A response body, as the server-side proxy sends it (for the fuzz
/// targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn encode_response(code: i32, message: &str) -> Vec<u8> {
    MetadataExchangeResponse {
        response_code: code,
        error: message.to_string(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn exchange(iam: bool) -> AlloyDbExchange {
        AlloyDbExchange {
            user_agent: "ua/1".into(),
            token: Secret::new("tok".into()),
            iam,
        }
    }

    #[test]
    fn the_specs_ok_response_is_read_and_the_database_bytes_left() {
        let ex = exchange(true);
        assert_eq!(ex.request(), request("ua/1", "tok", true));
        let mut server: &[u8] = b"\x00\x00\x00\x02\x08\x01R";
        mdx::read_response(&mut server, &ex).unwrap();
        assert_eq!(server, b"R");
        assert_eq!(
            ex.record(),
            ExchangeRecord {
                login_token: Some(Secret::new("tok".into())),
                auto_iam: true
            }
        );
    }

    #[test]
    fn a_server_closing_mid_response_is_a_typed_error() {
        let cut = b"\x00\x00\x00\x0a\x08\x02\x12";
        let e = mdx::read_response(&mut &cut[..], &exchange(false)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MetadataExchange);
        assert!(e.message().contains("closed the connection"), "{e}");
    }

    #[test]
    fn request_bytes_are_the_specs() {
        // The spec's example: Go's user agent, AUTO_IAM, token "ya29.TOKEN".
        let ua = "alloydb-go-connector/1.18.4";
        let frame = request(ua, "ya29.TOKEN", true);
        let mut want = vec![0, 0, 0, 0x2b, 0x0a, 0x1b];
        want.extend_from_slice(ua.as_bytes());
        want.extend_from_slice(&[0x10, 0x02, 0x1a, 0x0a]);
        want.extend_from_slice(b"ya29.TOKEN");
        assert_eq!(frame, want);

        // DB_NATIVE is 1; a real token's length takes a two-byte varint.
        let token = "t".repeat(300);
        let frame = request("ua", &token, false);
        assert_eq!(&frame[4..10], &[0x0a, 2, b'u', b'a', 0x10, 0x01]);
        assert_eq!(&frame[10..13], &[0x1a, 0xac, 0x02]);
        assert_eq!(frame.len(), 4 + 6 + 3 + 300);
    }

    #[test]
    fn googles_responses_decode() {
        let ok = b"\x00\x00\x00\x02\x08\x01";
        assert_eq!(response_length(&ok[..4]).unwrap(), 2);
        check_response(&ok[4..]).unwrap();

        let denied = b"\x00\x00\x00\x0a\x08\x02\x12\x06denied";
        assert_eq!(response_length(&denied[..4]).unwrap(), 10);
        let e = check_response(&denied[4..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MetadataExchange);
        assert_eq!(e.message(), "the server refused the connection: denied");
    }

    #[test]
    fn bad_frames_are_typed_errors_never_panics() {
        // A Postgres ErrorResponse where the length belongs, and Go's 0x45000000.
        let e = response_length(b"E\x00\x00\x00").unwrap_err().to_string();
        assert!(e.contains("Postgres error"), "{e}");
        let e = response_length(&[0x00, 0x10, 0x00, 0x00])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1048576 bytes"), "{e}");
        assert!(response_length(b"\x00\x00").is_err());
        for body in [
            &[][..],          // no response code
            &[0x08, 0x00],    // UNSPECIFIED
            &[0x08, 0x07],    // unknown code
            &[0x08],          // truncated varint
            &[0x12, 9, b'x'], // error longer than the body
            &[0x0b],          // wire type 3 (groups)
            &[0xff; 11],      // varint longer than 10 bytes
        ] {
            let e = check_response(body).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MetadataExchange, "{body:?}");
        }
        // Unknown fields are skipped.
        check_response(&[0x18, 0x96, 0x01, 0x08, 0x01]).unwrap();
    }
}
