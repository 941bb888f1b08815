//! Cloud SQL instance names and configuration: the connection name
//! `project:region:name` and the `--instance` fields a Cloud SQL instance takes.

use std::net::IpAddr;

use crate::spec::{AddressChoice, FileInstance, TlsSuite};

/// Which server CA hierarchy an instance uses (`serverCaMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaMode {
    /// `GOOGLE_MANAGED_INTERNAL_CA`: one self-signed root, leaf with CN `project:instance`.
    Legacy,
    /// `GOOGLE_MANAGED_CAS_CA`: root + intermediate, leaf with a SAN DNS name and no CN.
    Cas,
}

impl CaMode {
    /// Parses `legacy` or `cas`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "legacy" => Ok(Self::Legacy),
            "cas" => Ok(Self::Cas),
            other => Err(format!(
                "unknown ca mode {other:?} (expected legacy or cas)"
            )),
        }
    }

    /// The short name used on the command line and in the ready line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Cas => "cas",
        }
    }

    /// The value of `serverCaMode` in connectSettings.
    pub fn server_ca_mode(self) -> &'static str {
        match self {
            Self::Legacy => "GOOGLE_MANAGED_INTERNAL_CA",
            Self::Cas => "GOOGLE_MANAGED_CAS_CA",
        }
    }
}

/// One emulated Cloud SQL instance as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Project id, possibly domain-scoped (`example.com:proj`).
    pub project: String,
    /// Region, e.g. `us-central1`.
    pub region: String,
    /// Instance name.
    pub name: String,
    /// `HOST:PORT` of the database the proxy forwards to.
    pub backend: String,
    /// `databaseVersion`, e.g. `POSTGRES_15`.
    pub database_version: String,
    /// Server CA mode.
    pub ca_mode: CaMode,
    /// Fixed public IP, or `None` to pick a random loopback address.
    pub public_ip: Option<IpAddr>,
    /// A private IP too (`connectSettings` type `PRIVATE`), served by the same
    /// proxy on its own loopback address.
    pub private_ip: Option<AddressChoice>,
    /// Whether the instance advertises and answers the metadata exchange (spec §6.6).
    pub mdx: bool,
    /// Private Service Connect: `pscEnabled` and a PSC DNS name, served by the
    /// same proxy on its own loopback address.
    pub psc: bool,
    /// The one TLS 1.3 cipher suite the proxy offers (`tls-suite=…`, for the
    /// benchmark's cipher comparison); `None`: all of them, client's order.
    pub tls_suite: Option<TlsSuite>,
}

impl InstanceSpec {
    /// `project:region:name`.
    pub fn connection_name(&self) -> String {
        format!("{}:{}:{}", self.project, self.region, self.name)
    }

    /// `project:name`, the key the Admin API paths (and the counters) use.
    pub fn api_key(&self) -> String {
        format!("{}:{}", self.project, self.name)
    }

    /// Parses a Cloud SQL command-line SPEC:
    /// `project:region:name,backend=HOST:PORT[,version=V][,ca=legacy|cas][,public-ip=IP][,private-ip=auto|IP][,mdx=true|false][,psc=true|false][,tls-suite=aes128gcm|aes256gcm|chacha20poly1305]`.
    pub fn parse_cli(spec: &str) -> Result<Self, String> {
        Self::from_file(FileInstance::from_cli(spec)?)
    }

    /// Validates a config-file (or command-line) entry named `project:region:name` and
    /// applies defaults.
    pub fn from_file(f: FileInstance) -> Result<Self, String> {
        let (project, region, name) = split_connection_name(&f.name)?;
        let backend = f.required_backend()?;
        let ca_mode = match f.ca_mode {
            Some(m) => CaMode::parse(&m)?,
            None => CaMode::Cas,
        };
        let public_ip = match f.public_ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|e| format!("instance {}: bad public ip {ip:?}: {e}", f.name))?,
            ),
            None => None,
        };
        let private_ip = f
            .private_ip
            .as_deref()
            .map(|ip| AddressChoice::parse(&f.name, "private ip", ip))
            .transpose()?;
        Ok(Self {
            project,
            region,
            name,
            backend,
            private_ip,
            database_version: f
                .database_version
                .unwrap_or_else(|| "POSTGRES_15".to_string()),
            ca_mode,
            public_ip,
            mdx: f.mdx.unwrap_or(false),
            psc: f.psc.unwrap_or(false),
            tls_suite: f.tls_suite.as_deref().map(TlsSuite::parse).transpose()?,
        })
    }
}

/// Splits `project:region:name`: the last part is the name, the second-to-last the region and
/// everything before that the project (so domain-scoped projects keep their colon).
pub fn split_connection_name(s: &str) -> Result<(String, String, String), String> {
    let bad =
        || format!("invalid instance connection name {s:?}, expected PROJECT:REGION:INSTANCE");
    let (rest, name) = s.rsplit_once(':').ok_or_else(bad)?;
    let (project, region) = rest.rsplit_once(':').ok_or_else(bad)?;
    // The official regex allows at most one colon inside the project (domain scope).
    if project.is_empty()
        || region.is_empty()
        || name.is_empty()
        || project.matches(':').count() > 1
        || project.split(':').any(str::is_empty)
    {
        return Err(bad());
    }
    Ok((project.to_string(), region.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_suite_narrows_a_cloud_sql_proxy_only() {
        let spec =
            InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:5432,tls-suite=chacha20poly1305")
                .unwrap();
        assert_eq!(spec.tls_suite, Some(TlsSuite::Chacha20Poly1305));
        assert_eq!(
            InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:5432")
                .unwrap()
                .tls_suite,
            None
        );
        let err =
            InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:5432,tls-suite=rc4").unwrap_err();
        assert!(err.contains("\"rc4\""), "{err}");
    }

    #[test]
    fn splits_plain_and_domain_scoped_names() {
        assert_eq!(
            split_connection_name("p:r:i").unwrap(),
            ("p".into(), "r".into(), "i".into())
        );
        assert_eq!(
            split_connection_name("example.com:proj:us-central1:db").unwrap(),
            ("example.com:proj".into(), "us-central1".into(), "db".into())
        );
        for bad in [
            "p:r",
            "p",
            "",
            "p::i",
            ":r:i",
            "p:r:",
            "a:b:c:d:e",
            ":b:c:d",
        ] {
            assert!(split_connection_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_cli_spec_with_defaults() {
        let s = InstanceSpec::parse_cli("example.com:proj:us-central1:db,backend=127.0.0.1:5432")
            .unwrap();
        assert_eq!(s.project, "example.com:proj");
        assert_eq!(s.region, "us-central1");
        assert_eq!(s.name, "db");
        assert_eq!(s.backend, "127.0.0.1:5432");
        assert_eq!(s.database_version, "POSTGRES_15");
        assert_eq!(s.ca_mode, CaMode::Cas);
        assert_eq!(s.public_ip, None);
        assert!(!s.mdx);
        assert_eq!(s.connection_name(), "example.com:proj:us-central1:db");
        assert_eq!(s.api_key(), "example.com:proj:db");
    }

    #[test]
    fn parses_cli_spec_with_all_fields() {
        let s = InstanceSpec::parse_cli(
            "p:r:i,backend=localhost:3306,version=MYSQL_8_0,ca=legacy,public-ip=127.0.0.2,mdx=true",
        )
        .unwrap();
        assert!(s.mdx);
        assert_eq!(s.database_version, "MYSQL_8_0");
        assert_eq!(s.ca_mode, CaMode::Legacy);
        assert_eq!(s.public_ip, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.private_ip, None);
    }

    #[test]
    fn private_ip_is_auto_or_fixed() {
        let auto = InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:1,private-ip=auto").unwrap();
        assert_eq!(auto.private_ip, Some(AddressChoice::Random));
        let fixed =
            InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:1,private-ip=127.0.0.7").unwrap();
        assert_eq!(
            fixed.private_ip,
            Some(AddressChoice::Fixed("127.0.0.7".parse().unwrap()))
        );
        assert!(InstanceSpec::parse_cli("p:r:i,backend=127.0.0.1:1,private-ip=nope").is_err());
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(
            InstanceSpec::parse_cli("p:r:i").is_err(),
            "backend required"
        );
        assert!(InstanceSpec::parse_cli("p:r:i,backend=nope").is_err());
        assert!(InstanceSpec::parse_cli("p:r:i,backend=h:1,ca=other").is_err());
        assert!(InstanceSpec::parse_cli("p:r:i,backend=h:1,colour=red").is_err());
        assert!(InstanceSpec::parse_cli("p:r:i,backend=h:1,public-ip=x").is_err());
        assert!(InstanceSpec::parse_cli("p:r:i,backend=h:1,mdx=yes").is_err());
        assert!(
            !InstanceSpec::parse_cli("p:r:i,backend=h:1,mdx=false")
                .unwrap()
                .mdx
        );
    }
}
