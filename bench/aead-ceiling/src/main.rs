//! The raw AEAD ceiling of the connector's TLS record layer: how fast its
//! TLS 1.3 suites decrypt full 16 KiB records, and nothing else (no sockets,
//! no rustls state machine, no component boundary). Built for wasm32-wasip2
//! it bounds the connector's throughput (BENCHMARKS.md row 4); bench/run.py
//! runs it beside that row:
//!
//! ```sh
//! cargo build --profile wasm --target wasm32-wasip2 -p aead-ceiling
//! wasmtime run target/wasm32-wasip2/wasm/aead-ceiling.wasm [MB]
//! ```
//!
//! Prints one JSON object per implementation: `{"suite": …, "mb_per_s": …}`,
//! the best of several passes (the one least disturbed by other load).

use std::time::Instant;

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, OutboundChunks, OutboundPlainMessage, Tls13AeadAlgorithm,
};
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite};

/// The connector's own ChaCha20-Poly1305 record protection, the very file.
#[path = "../../../src/tls/chacha.rs"]
#[allow(dead_code)]
mod chacha;

/// TLS's largest record: 2^14 bytes of plaintext.
const RECORD: usize = 16 * 1024;
const PASSES: usize = 5;

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let rustcrypto = |suite: SupportedCipherSuite| match suite.tls13() {
        Some(s) => s.aead_alg,
        None => unreachable!("a TLS 1.3 suite"),
    };
    // What the connector's provider (src/tls.rs) uses, in its order (the
    // 256-bit AES suite: rustls takes no 16-byte key from outside), then
    // what it replaced.
    let suites: [(&str, &dyn Tls13AeadAlgorithm); 3] = [
        ("chacha20poly1305", &chacha::ChaCha20Poly1305),
        (
            "aes256gcm",
            rustcrypto(rustls_rustcrypto::TLS13_AES_256_GCM_SHA384),
        ),
        (
            "chacha20poly1305 (RustCrypto)",
            rustcrypto(rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256),
        ),
    ];
    for (name, aead) in suites {
        let rate = decrypt_rate(aead, mb);
        println!("{{\"suite\": \"{name}\", \"mb_per_s\": {rate:.1}}}");
    }
}

/// MB/s (10^6 bytes of plaintext a second) decrypting `mb` MB of records.
fn decrypt_rate(aead: &dyn Tls13AeadAlgorithm, mb: usize) -> f64 {
    let key = || AeadKey::from([7u8; 32]);
    let iv = || Iv::new([9u8; 12]);
    // Real records, sealed by the suite's own encrypter, one per sequence
    // number, as a server sends them.
    let mut encrypter = aead.encrypter(key(), iv());
    let plaintext = vec![b'x'; RECORD];
    let sealed: Vec<Vec<u8>> = (0..4u64)
        .map(|seq| {
            let msg = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(&plaintext),
            };
            let record = encrypter.encrypt(msg, seq).expect("sealed").encode();
            record[5..].to_vec() // without the record header
        })
        .collect();

    let count = (mb * 1_000_000).div_ceil(RECORD);
    let mut buf = vec![0u8; sealed[0].len()];
    let mut best = 0f64;
    for _ in 0..PASSES {
        let mut decrypter = aead.decrypter(key(), iv());
        let started = Instant::now();
        for i in 0..count {
            let seq = i % sealed.len();
            // rustls decrypts in place in its receive buffer: the copy stands
            // for the bytes arriving there.
            buf.copy_from_slice(&sealed[seq]);
            let msg = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                &mut buf,
            );
            let plain = decrypter.decrypt(msg, seq as u64).expect("opened");
            assert_eq!(plain.payload.len(), RECORD);
        }
        let secs = started.elapsed().as_secs_f64();
        best = best.max((count * RECORD) as f64 / 1e6 / secs);
    }
    best
}
