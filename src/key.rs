//! The connector's RSA-2048 key: made once per connector, on first need, and
//! reused by every refresh (as Google's connectors do).

use std::sync::{Arc, Mutex};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use crate::keygen::{self, KEY_BITS};

/// A key pair with the encodings the refresh and the handshake need.
pub(crate) struct ClientKey {
    pkcs8_der: Vec<u8>,
    /// SubjectPublicKeyInfo DER, compared with the certificate's key.
    pub spki_der: Vec<u8>,
    /// SubjectPublicKeyInfo PEM (`PUBLIC KEY`), sent to generateEphemeralCert.
    pub public_pem: String,
}

impl ClientKey {
    pub(crate) fn generate() -> Result<Self, Error> {
        Self::from_private(&keygen::rsa_2048()?)
    }

    /// A caller's key (as Go's `WithRSAKey`), PEM PKCS#8 or PKCS#1. The
    /// message never echoes the PEM.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| {
                Error::invalid_config(
                    "rsa-private-key is not an RSA private key in PEM (PKCS#8 or PKCS#1)",
                )
            })?;
        if key.n().bits() < KEY_BITS {
            return Err(Error::invalid_config(format!(
                "rsa-private-key has {} bits; Cloud SQL needs at least {KEY_BITS}",
                key.n().bits()
            )));
        }
        Self::from_private(&key)
    }

    /// A key kept in a host store (PKCS#8 DER), as [`Self::pkcs8_der`] wrote it.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|_| Error::invalid_config("the stored key is not an RSA PKCS#8 key"))?;
        Self::from_private(&key)
    }

    /// The private key, PKCS#8 DER (for a host store).
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    fn from_private(key: &RsaPrivateKey) -> Result<Self, Error> {
        let public = key.to_public_key();
        Ok(Self {
            pkcs8_der: key
                .to_pkcs8_der()
                .map_err(encoding_error)?
                .as_bytes()
                .to_vec(),
            spki_der: public
                .to_public_key_der()
                .map_err(encoding_error)?
                .into_vec(),
            public_pem: public
                .to_public_key_pem(LineEnding::LF)
                .map_err(encoding_error)?,
        })
    }

    /// The private key for rustls's client authentication.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8_der.clone()))
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

fn encoding_error(e: impl std::fmt::Display) -> Error {
    Error::invalid_config(format!("RSA key encoding failed: {e}"))
}

/// Generates the key on first use, once, however many threads ask.
#[derive(Default)]
pub(crate) struct KeySlot(Mutex<Option<Arc<ClientKey>>>);

impl KeySlot {
    /// A slot holding the caller's key; nothing is generated.
    pub(crate) fn with_key(key: ClientKey) -> Self {
        Self(Mutex::new(Some(Arc::new(key))))
    }

    /// The key, if there is one yet.
    pub(crate) fn current(&self) -> Option<Arc<ClientKey>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adopts `key` (one a host store kept) unless the slot has one already.
    pub(crate) fn offer(&self, key: Arc<ClientKey>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(key);
    }

    /// The key, and whether this call generated it.
    pub(crate) fn get(&self) -> Result<(Arc<ClientKey>, bool), Error> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok((k.clone(), false));
        }
        let k = Arc::new(ClientKey::generate()?);
        *slot = Some(k.clone());
        Ok((k, true))
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;

    use super::*;

    #[test]
    fn generates_rsa_2048_with_spki_pem_once() {
        let slot = KeySlot::default();
        let (k, generated) = slot.get().unwrap();
        assert!(generated);
        assert!(k.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = rsa::RsaPublicKey::from_public_key_pem(&k.public_pem).unwrap();
        assert_eq!(public.n().bits(), 2048);
        assert_eq!(public.e(), &rsa::BigUint::from(65537u32));
        assert_eq!(
            public.to_public_key_der().unwrap().as_bytes(),
            k.spki_der.as_slice()
        );

        let (again, generated) = slot.get().unwrap();
        assert!(!generated);
        assert!(Arc::ptr_eq(&k, &again));
    }

    #[test]
    fn accepts_a_callers_key_in_pkcs8_or_pkcs1() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let a = ClientKey::from_pem(&pkcs8).unwrap();
        let b = ClientKey::from_pem(&pkcs1).unwrap();
        assert_eq!(a.spki_der, b.spki_der);
        let (k, generated) = KeySlot::with_key(a).get().unwrap();
        assert!(!generated);
        assert_eq!(k.spki_der, b.spki_der);
    }

    #[test]
    fn refuses_weak_or_malformed_keys_without_echoing_them() {
        let small = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let e = ClientKey::from_pem(&pem).unwrap_err().to_string();
        assert!(e.contains("1024 bits"), "{e}");
        let e = ClientKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not an RSA private key") && !e.contains("c2VjcmV0"),
            "{e}"
        );
    }
}
