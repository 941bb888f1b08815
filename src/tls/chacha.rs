//! TLS 1.3's ChaCha20-Poly1305 record protection on libcrux: HACL*'s
//! formally verified portable code, about twice RustCrypto's throughput in
//! wasm (no SIMD there for either; BENCHMARKS.md row 4 has the figures).
//!
//! Only external crates here: bench/aead_ceiling.rs includes this file to
//! time exactly what the connector runs.

use rustls::crypto::cipher::{
    self, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};

const KEY_LEN: usize = libcrux_chacha20poly1305::KEY_LEN;
const TAG_LEN: usize = libcrux_chacha20poly1305::TAG_LEN;

/// The AEAD of `TLS13_CHACHA20_POLY1305_SHA256` (RFC 8446 §5.2, RFC 8439).
#[derive(Debug)]
pub(crate) struct ChaCha20Poly1305;

impl Tls13AeadAlgorithm for ChaCha20Poly1305 {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Cipher::new(&key, iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Cipher::new(&key, iv))
    }

    fn key_len(&self) -> usize {
        KEY_LEN
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }
}

/// One direction's key and IV, and a buffer the records pass through
/// (libcrux takes its input and output as separate slices).
struct Cipher {
    key: [u8; KEY_LEN],
    iv: Iv,
    scratch: Vec<u8>,
}

impl Cipher {
    fn new(key: &AeadKey, iv: Iv) -> Self {
        let mut k = [0u8; KEY_LEN];
        // rustls hands a ChaCha20 suite a 32-byte key (key_len above).
        let given = key.as_ref();
        k[..given.len().min(KEY_LEN)].copy_from_slice(&given[..given.len().min(KEY_LEN)]);
        Self {
            key: k,
            iv,
            scratch: Vec::new(),
        }
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
        zeroize::Zeroize::zeroize(&mut self.scratch);
    }
}

impl MessageEncrypter for Cipher {
    fn encrypt(
        &mut self,
        m: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, rustls::Error> {
        let total_len = self.encrypted_payload_len(m.payload.len());
        // TLSInnerPlaintext: the content, then its real type.
        self.scratch.clear();
        m.payload.copy_to_vec(&mut self.scratch);
        self.scratch.extend_from_slice(&m.typ.to_array());

        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_slice(&self.scratch);
        payload.extend_from_slice(&[0u8; TAG_LEN]);
        let (sealed, tag) = payload.as_mut().split_at_mut(self.scratch.len());
        let tag: &mut [u8; TAG_LEN] = tag.try_into().map_err(|_| rustls::Error::EncryptError)?;
        let nonce = cipher::Nonce::new(&self.iv, seq).0;
        let aad = cipher::make_tls13_aad(total_len);
        libcrux_chacha20poly1305::encrypt_detached(
            &self.key,
            &self.scratch,
            sealed,
            tag,
            &aad,
            &nonce,
        )
        .map_err(|_| rustls::Error::EncryptError)?;
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Cipher {
    fn decrypt<'a>(
        &mut self,
        mut m: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, rustls::Error> {
        let payload = &mut m.payload;
        let aad = cipher::make_tls13_aad(payload.len());
        let Some(sealed_len) = payload.len().checked_sub(TAG_LEN) else {
            return Err(rustls::Error::DecryptError);
        };
        let nonce = cipher::Nonce::new(&self.iv, seq).0;
        let (sealed, tag) = payload.split_at(sealed_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| rustls::Error::DecryptError)?;
        self.scratch.clear();
        self.scratch.resize(sealed_len, 0);
        // HACL* checks the tag before it decrypts: nothing unauthenticated
        // reaches the scratch buffer.
        libcrux_chacha20poly1305::decrypt_detached(
            &self.key,
            &mut self.scratch,
            sealed,
            tag,
            &aad,
            &nonce,
        )
        .map_err(|_| rustls::Error::DecryptError)?;
        payload[..sealed_len].copy_from_slice(&self.scratch);
        payload.truncate(sealed_len);
        m.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::cipher::OutboundChunks;

    use super::*;

    fn seal(c: &mut Cipher, plaintext: &[u8], seq: u64) -> Vec<u8> {
        let msg = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(plaintext),
        };
        c.encrypt(msg, seq).unwrap().encode()
    }

    fn cipher(
        alg: &dyn Tls13AeadAlgorithm,
    ) -> (Box<dyn MessageEncrypter>, Box<dyn MessageDecrypter>) {
        let key = || AeadKey::from([0x42u8; 32]);
        let iv = || Iv::new([7u8; 12]);
        (alg.encrypter(key(), iv()), alg.decrypter(key(), iv()))
    }

    /// Records sealed by RustCrypto's implementation open here, and the
    /// other way round; a changed byte or sequence number is refused.
    #[test]
    fn interoperates_with_rustcrypto_and_refuses_forgeries() {
        let rustcrypto = rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256
            .tls13()
            .unwrap()
            .aead_alg;
        let ours: &dyn Tls13AeadAlgorithm = &ChaCha20Poly1305;
        for (from, to) in [(rustcrypto, ours), (ours, rustcrypto), (ours, ours)] {
            let (mut enc, _) = cipher(from);
            let (_, mut dec) = cipher(to);
            for (seq, len) in [(0u64, 0usize), (1, 1), (2, 16 * 1024), (3, 1000)] {
                let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let msg = OutboundPlainMessage {
                    typ: ContentType::ApplicationData,
                    version: ProtocolVersion::TLSv1_2,
                    payload: OutboundChunks::Single(&plaintext),
                };
                let mut record = enc.encrypt(msg, seq).unwrap().encode();
                assert_eq!(record.len(), 5 + len + 1 + TAG_LEN);
                let body = &mut record[5..];
                let opened = dec
                    .decrypt(
                        InboundOpaqueMessage::new(
                            ContentType::ApplicationData,
                            ProtocolVersion::TLSv1_2,
                            body,
                        ),
                        seq,
                    )
                    .unwrap();
                assert_eq!(opened.typ, ContentType::ApplicationData);
                assert_eq!(opened.payload, &plaintext[..]);
            }
        }

        let mut c = Cipher::new(&AeadKey::from([0x42u8; 32]), Iv::new([7u8; 12]));
        let record = seal(&mut c, b"SELECT 1", 9);
        let open = |c: &mut Cipher, mut body: Vec<u8>, seq| {
            c.decrypt(
                InboundOpaqueMessage::new(
                    ContentType::ApplicationData,
                    ProtocolVersion::TLSv1_2,
                    &mut body,
                ),
                seq,
            )
            .map(|m| m.payload.to_vec())
        };
        assert_eq!(open(&mut c, record[5..].to_vec(), 9).unwrap(), b"SELECT 1");
        assert!(open(&mut c, record[5..].to_vec(), 10).is_err());
        for i in 5..record.len() {
            let mut forged = record[5..].to_vec();
            forged[i - 5] ^= 1;
            assert!(open(&mut c, forged, 9).is_err(), "byte {i}");
        }
        assert!(open(&mut c, vec![0u8; TAG_LEN - 1], 9).is_err());
    }
}
