//! The metadata exchange response as a hostile server streams it. The first
//! byte picks the service (bit 0) and how many bytes each read returns (the
//! rest); the stream follows. A response is accepted only when its header
//! announces at most 16 KiB and its body decodes to OK; any decoded body
//! re-encodes to a canonical body that decodes to the same message and is
//! judged the same way.
#![no_main]

use std::io::{self, Read};

use gcp_db_connector::fuzzing::{self, Mdx};
use libfuzzer_sys::fuzz_target;

/// Returns at most `chunk` bytes a read, as a TCP stream may.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn round_trip(mdx: Mdx, body: &[u8]) {
    let Some((code, message)) = fuzzing::mdx_decode(mdx, body) else {
        assert!(fuzzing::mdx_check_response(mdx, body).is_err());
        return;
    };
    let canonical = fuzzing::mdx_encode(mdx, code, &message);
    assert_eq!(
        fuzzing::mdx_decode(mdx, &canonical),
        Some((code, message.clone()))
    );
    assert_eq!(fuzzing::mdx_encode(mdx, code, &message), canonical);
    assert_eq!(
        fuzzing::mdx_check_response(mdx, body).is_ok(),
        fuzzing::mdx_check_response(mdx, &canonical).is_ok()
    );
    assert_eq!(fuzzing::mdx_check_response(mdx, body).is_ok(), code == 1);
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let mdx = if first & 1 == 0 {
        Mdx::CloudSql
    } else {
        Mdx::AlloyDb
    };
    let mut reader = Trickle {
        data: stream,
        chunk: usize::from(first >> 1) + 1,
    };
    let result = fuzzing::mdx_read_response(mdx, &mut reader);
    let consumed = stream.len() - reader.data.len();
    let header_len = mdx.header_len();
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    if let Some(header) = stream.get(..header_len) {
        if let Ok(len) = fuzzing::mdx_response_length(mdx, header) {
            assert!(len <= 16 * 1024);
            if let Some(body) = stream.get(header_len..header_len + len) {
                round_trip(mdx, body);
                assert_eq!(
                    result.is_ok(),
                    fuzzing::mdx_check_response(mdx, body).is_ok()
                );
            }
        } else {
            assert!(result.is_err());
        }
    }
    if result.is_ok() {
        // Not a byte past the response: the database protocol follows it.
        let header = &stream[..header_len];
        let len = fuzzing::mdx_response_length(mdx, header).unwrap_or(usize::MAX);
        assert_eq!(consumed, header_len + len);
    }
    round_trip(mdx, stream);
});
