//! What the two services' instance specs share: the fields of a command-line SPEC
//! (`NAME,KEY=VALUE,...`) or config-file entry ([`FileInstance`]), where an address comes
//! from ([`AddressChoice`]), the backend check, and the cipher suite a proxy can be
//! narrowed to ([`TlsSuite`]). Each service turns a [`FileInstance`] into its own spec
//! (`cloudsql::spec`, `alloydb::spec`).

use std::net::IpAddr;

use serde::Deserialize;

/// Where an address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressChoice {
    /// A random free loopback address.
    Random,
    /// This one.
    Fixed(IpAddr),
}

impl AddressChoice {
    /// The fixed address, if any.
    pub fn fixed(self) -> Option<IpAddr> {
        match self {
            Self::Random => None,
            Self::Fixed(ip) => Some(ip),
        }
    }

    /// Parses `auto` or an IP address; `what` names the field in errors.
    pub fn parse(instance: &str, what: &str, value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Random),
            ip => ip.parse::<IpAddr>().map(Self::Fixed).map_err(|e| {
                format!("instance {instance}: bad {what} {ip:?} (expected auto or an IP): {e}")
            }),
        }
    }
}

/// Checks that `backend` is `HOST:PORT`.
fn check_backend(instance: &str, backend: &str) -> Result<(), String> {
    match backend.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "instance {instance}: bad backend {backend:?} (expected HOST:PORT)"
        )),
    }
}

/// A TLS 1.3 cipher suite an instance's proxy can be narrowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSuite {
    /// TLS_AES_128_GCM_SHA256.
    Aes128Gcm,
    /// TLS_AES_256_GCM_SHA384.
    Aes256Gcm,
    /// TLS_CHACHA20_POLY1305_SHA256.
    Chacha20Poly1305,
}

impl TlsSuite {
    /// `aes128gcm`, `aes256gcm` or `chacha20poly1305`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "aes128gcm" => Ok(Self::Aes128Gcm),
            "aes256gcm" => Ok(Self::Aes256Gcm),
            "chacha20poly1305" => Ok(Self::Chacha20Poly1305),
            other => Err(format!(
                "tls-suite {other:?} is not aes128gcm, aes256gcm or chacha20poly1305"
            )),
        }
    }
}

/// One instance in the JSON config file; the same fields as the command-line SPEC.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInstance {
    /// `project:region:name`, or an AlloyDB instance URI.
    pub name: String,
    /// `HOST:PORT` of the backend database.
    pub backend: Option<String>,
    /// `databaseVersion`, default `POSTGRES_15`.
    pub database_version: Option<String>,
    /// `legacy` or `cas` (default).
    pub ca_mode: Option<String>,
    /// Fixed public IP.
    pub public_ip: Option<String>,
    /// `auto` (a random loopback address) or a fixed IP: the instance also has a
    /// private IP.
    pub private_ip: Option<String>,
    /// Advertise and answer the metadata exchange (`mdxProtocolSupport`); default false.
    pub mdx: Option<bool>,
    /// Private Service Connect (`pscEnabled` and a PSC DNS name); default false.
    pub psc: Option<bool>,
    /// Cloud SQL only: the one TLS 1.3 cipher suite the proxy offers.
    pub tls_suite: Option<String>,
}

impl FileInstance {
    /// Splits a command-line SPEC (`NAME,KEY=VALUE,...`) into the fields of a config-file
    /// entry.
    pub fn from_cli(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or_default();
        let mut fields = Self {
            name: name.to_string(),
            ..Self::default()
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("instance spec field {part:?} is not KEY=VALUE"))?;
            let text = Some(value.to_string());
            match key {
                "backend" => fields.backend = text,
                "version" | "database_version" => fields.database_version = text,
                "ca" | "ca_mode" => fields.ca_mode = text,
                "public-ip" | "public_ip" => fields.public_ip = text,
                "private-ip" | "private_ip" => fields.private_ip = text,
                "mdx" => fields.mdx = Some(parse_bool(key, value)?),
                "psc" => fields.psc = Some(parse_bool(key, value)?),
                "tls-suite" | "tls_suite" => fields.tls_suite = text,
                other => return Err(format!("unknown instance spec field {other:?}")),
            }
        }
        Ok(fields)
    }

    /// The backend, which every instance needs, checked.
    pub(crate) fn required_backend(&self) -> Result<String, String> {
        let backend = self
            .backend
            .clone()
            .ok_or_else(|| format!("instance {}: backend=HOST:PORT is required", self.name))?;
        check_backend(&self.name, &backend)?;
        Ok(backend)
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "instance spec field {key}={other:?} is not true or false"
        )),
    }
}
