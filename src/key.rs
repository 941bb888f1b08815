//! The connector's RSA-2048 key: made once per connector, on first need, and
//! reused by every refresh (as Google's connectors do).
//!
//! Every private-key operation on it (the TLS CertificateVerify signature)
//! runs on rsa 0.10, whose arithmetic is constant-time: the key is parsed once
//! here and handed to rustls as the connector's own signing key
//! ([`crate::tls`]), never as DER for another crate to load.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::PrivateKey;

use crate::error::Error;
use crate::keygen::{self, KEY_BITS};

/// A key pair with the encodings the refresh and the handshake need.
pub(crate) struct ClientKey {
    private: Arc<PrivateKey>,
    pkcs8_der: Vec<u8>,
    /// SubjectPublicKeyInfo DER, compared with the certificate's key.
    pub spki_der: Vec<u8>,
    /// SubjectPublicKeyInfo PEM (`PUBLIC KEY`), sent to generateEphemeralCert.
    pub public_pem: String,
}

impl ClientKey {
    pub(crate) fn generate() -> Result<Self, Error> {
        Self::from_private(keygen::rsa_2048()?)
    }

    /// A caller's key (as Go's `WithRSAKey`), PEM PKCS#8 or PKCS#1. The
    /// message never echoes the PEM.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| {
                Error::invalid_config(
                    "rsa-private-key is not an RSA private key in PEM (PKCS#8 or PKCS#1)",
                )
            })?;
        check_strength(&key).map_err(|e| Error::invalid_config(format!("rsa-private-key {e}")))?;
        Self::from_private(key)
    }

    /// A key kept in a host store (PKCS#8 DER), as [`Self::pkcs8_der`] wrote
    /// it, held to the same bar as a caller's key.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = PrivateKey::from_pkcs8_der(der)
            .map_err(|_| Error::invalid_config("the stored key is not an RSA PKCS#8 key"))?;
        check_strength(&key).map_err(|e| Error::invalid_config(format!("the stored key {e}")))?;
        Self::from_private(key)
    }

    /// The private key, PKCS#8 DER (for a host store).
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    fn from_private(key: PrivateKey) -> Result<Self, Error> {
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
            private: Arc::new(key),
        })
    }

    /// The private key, parsed and with its CRT values, for the TLS client
    /// signature ([`crate::tls`]).
    pub(crate) fn private_key(&self) -> &Arc<PrivateKey> {
        &self.private
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

/// At least [`KEY_BITS`] bits, and a public exponent FIPS 186-5 allows (odd,
/// 2^16 < e < 2^256). The error completes "the key …".
fn check_strength(key: &PrivateKey) -> Result<(), String> {
    let bits = key.n().bit_width() as usize;
    if bits < KEY_BITS {
        return Err(format!(
            "has {bits} bits; Cloud SQL needs at least {KEY_BITS}"
        ));
    }
    let e = key.e();
    let e_bits = e.bit_width();
    let odd = crypto_bigint::Integer::is_odd(e).to_bool();
    if e_bits <= 16 || e_bits > 256 || !odd {
        return Err("has a public exponent outside FIPS 186-5's (odd, above 2^16)".into());
    }
    Ok(())
}

fn encoding_error(e: impl std::fmt::Display) -> Error {
    Error::invalid_config(format!("RSA key encoding failed: {e}"))
}

/// Where a connector's key is kept beyond its instance (a host store, per
/// principal), so that a fresh instance reuses it instead of generating one.
pub(crate) trait KeyKeeper: Send + Sync {
    /// The kept key, if there is one and it holds up.
    fn load(&self, deadline: Instant) -> Option<ClientKey>;
    /// Claims the making of the kept key, so that instances starting
    /// together make one between them: the key another instance made
    /// meanwhile, or `None` to make it here and [`keep`](Self::keep) it.
    fn claim(&self, deadline: Instant) -> Option<ClientKey>;
    /// Keeps `key` for later instances and ends the claim; returns the key
    /// to use, which is another instance's if that one was kept instead.
    /// A failure to keep only costs later instances a key.
    fn keep(&self, key: ClientKey, deadline: Instant) -> ClientKey;
}

/// The connector's key: the caller's, or the one kept beyond the instance,
/// or else generated on first need, once, however many threads ask.
#[derive(Default)]
pub(crate) struct KeySlot {
    key: Mutex<Option<Arc<ClientKey>>>,
    keeper: Option<Arc<dyn KeyKeeper>>,
}

impl KeySlot {
    /// A slot holding the caller's key; nothing is generated.
    pub(crate) fn with_key(key: ClientKey) -> Self {
        Self {
            key: Mutex::new(Some(Arc::new(key))),
            keeper: None,
        }
    }

    /// An empty slot that looks for a key in `keeper` before generating
    /// one, and keeps there the one it generates.
    pub(crate) fn with_keeper(keeper: Arc<dyn KeyKeeper>) -> Self {
        Self {
            key: Mutex::new(None),
            keeper: Some(keeper),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<ClientKey>>> {
        self.key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key this instance holds, if any yet.
    pub(crate) fn current(&self) -> Option<Arc<ClientKey>> {
        self.lock().clone()
    }

    /// Whether a key made elsewhere can be this slot's: it holds one (the
    /// caller's, the same in every instance) or looks in a keeper.
    pub(crate) fn shares(&self) -> bool {
        self.keeper.is_some() || self.current().is_some()
    }

    /// The key without generating one: this instance's, else the kept one.
    pub(crate) fn existing(&self, deadline: Instant) -> Option<Arc<ClientKey>> {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = self
                .keeper
                .as_ref()
                .and_then(|k| k.load(deadline))
                .map(Arc::new);
        }
        slot.clone()
    }

    /// The key, and whether this call generated it.
    pub(crate) fn get(&self, deadline: Instant) -> Result<(Arc<ClientKey>, bool), Error> {
        if let Some(k) = self.existing(deadline) {
            return Ok((k, false));
        }
        let mut slot = self.lock();
        // Another thread may have made it meanwhile.
        if let Some(k) = slot.as_ref() {
            return Ok((k.clone(), false));
        }
        let (k, generated) = match &self.keeper {
            None => (ClientKey::generate()?, true),
            Some(keeper) => match keeper.claim(deadline) {
                Some(made_elsewhere) => (made_elsewhere, false),
                None => (keeper.keep(ClientKey::generate()?, deadline), true),
            },
        };
        let k = Arc::new(k);
        *slot = Some(k.clone());
        Ok((k, generated))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// A keeper in memory, counting what it is asked.
    #[derive(Default)]
    struct Kept(Mutex<(Option<Vec<u8>>, u32, u32)>);

    impl KeyKeeper for Kept {
        fn load(&self, _: Instant) -> Option<ClientKey> {
            let mut k = self.0.lock().unwrap();
            k.1 += 1;
            k.0.as_deref()
                .map(|der| ClientKey::from_pkcs8_der(der).unwrap())
        }
        fn claim(&self, _: Instant) -> Option<ClientKey> {
            None
        }
        fn keep(&self, key: ClientKey, _: Instant) -> ClientKey {
            let mut k = self.0.lock().unwrap();
            k.2 += 1;
            k.0 = Some(key.pkcs8_der().to_vec());
            key
        }
    }

    #[test]
    fn a_kept_key_serves_the_next_instance_and_one_is_made_only_when_none_is_kept() {
        let kept = Arc::new(Kept::default());
        let first = KeySlot::with_keeper(kept.clone());
        assert!(first.existing(soon()).is_none());
        let (made, generated) = first.get(soon()).unwrap();
        assert!(generated);
        let next = KeySlot::with_keeper(kept.clone());
        let (loaded, generated) = next.get(soon()).unwrap();
        assert!(!generated);
        assert_eq!(loaded.spki_der, made.spki_der);
        assert_eq!(kept.0.lock().unwrap().2, 1, "kept once");
    }

    #[test]
    fn generates_rsa_2048_with_spki_pem_once() {
        let slot = KeySlot::default();
        let (k, generated) = slot.get(soon()).unwrap();
        assert!(generated);
        assert!(k.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = rsa::PublicKey::from_public_key_pem(&k.public_pem).unwrap();
        assert_eq!(public.n().bit_width(), 2048);
        assert_eq!(public.e(), &rsa::BoxedUint::from(65537u32));
        assert_eq!(
            public.to_public_key_der().unwrap().as_bytes(),
            k.spki_der.as_slice()
        );

        let (again, generated) = slot.get(soon()).unwrap();
        assert!(!generated);
        assert!(Arc::ptr_eq(&k, &again));
    }

    #[test]
    fn accepts_a_callers_key_in_pkcs8_or_pkcs1() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let a = ClientKey::from_pem(&pkcs8).unwrap();
        let b = ClientKey::from_pem(&pkcs1).unwrap();
        assert_eq!(a.spki_der, b.spki_der);
        let (k, generated) = KeySlot::with_key(a).get(soon()).unwrap();
        assert!(!generated);
        assert_eq!(k.spki_der, b.spki_der);
    }

    #[test]
    fn refuses_weak_or_malformed_keys_without_echoing_them() {
        let small = PrivateKey::new(&mut getrandom::SysRng, 1024).unwrap();
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
