//! Command line and JSON configuration: which instances to emulate and where. A Cloud SQL
//! instance is named `project:region:name`; an AlloyDB instance by its URI
//! `projects/P/locations/R/clusters/C/instances/I` (see `alloydb::spec`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::alloydb::spec::{AlloyDbSpec, URI_PREFIX};

/// Default access-token lifetime, the same as Google's.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;

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

/// One emulated instance as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A Cloud SQL instance.
    CloudSql(InstanceSpec),
    /// An AlloyDB instance.
    AlloyDb(AlloyDbSpec),
}

impl Spec {
    /// Parses a command-line SPEC of either kind (AlloyDB URIs start with `projects/`).
    pub fn parse_cli(spec: &str) -> Result<Self, String> {
        file_instance_from_cli(spec)?.into_spec()
    }

    /// What must be unique among the instances: `project:name` (Cloud SQL, as the Admin
    /// API addresses them) or the URI (AlloyDB).
    pub fn key(&self) -> String {
        match self {
            Self::CloudSql(s) => s.api_key(),
            Self::AlloyDb(s) => s.uri.to_string(),
        }
    }

    /// The name users give: `project:region:name` or the URI.
    pub fn display_name(&self) -> String {
        match self {
            Self::CloudSql(s) => s.connection_name(),
            Self::AlloyDb(s) => s.uri.to_string(),
        }
    }
}

/// Checks that `backend` is `HOST:PORT`.
pub(crate) fn check_backend(instance: &str, backend: &str) -> Result<(), String> {
    match backend.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "instance {instance}: bad backend {backend:?} (expected HOST:PORT)"
        )),
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
        file_instance_from_cli(spec)?.into_cloudsql()
    }
}

/// Splits a command-line SPEC (`NAME,KEY=VALUE,...`) into the fields of a config-file entry.
fn file_instance_from_cli(spec: &str) -> Result<FileInstance, String> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or_default();
    let mut fields = FileInstance {
        name: name.to_string(),
        ..FileInstance::default()
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

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "instance spec field {key}={other:?} is not true or false"
        )),
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
    /// Validates the fields and applies defaults, for either kind of instance.
    pub fn into_spec(self) -> Result<Spec, String> {
        if self.name.starts_with(URI_PREFIX) {
            AlloyDbSpec::from_file(self).map(Spec::AlloyDb)
        } else {
            self.into_cloudsql().map(Spec::CloudSql)
        }
    }

    /// Validates the fields of a Cloud SQL instance and applies defaults.
    pub fn into_cloudsql(self) -> Result<InstanceSpec, String> {
        let (project, region, name) = split_connection_name(&self.name)?;
        let backend = self
            .backend
            .ok_or_else(|| format!("instance {}: backend=HOST:PORT is required", self.name))?;
        check_backend(&self.name, &backend)?;
        let ca_mode = match self.ca_mode {
            Some(m) => CaMode::parse(&m)?,
            None => CaMode::Cas,
        };
        let public_ip = match self.public_ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|e| format!("instance {}: bad public ip {ip:?}: {e}", self.name))?,
            ),
            None => None,
        };
        let private_ip = self
            .private_ip
            .as_deref()
            .map(|ip| AddressChoice::parse(&self.name, "private ip", ip))
            .transpose()?;
        Ok(InstanceSpec {
            project,
            region,
            name,
            backend,
            private_ip,
            database_version: self
                .database_version
                .unwrap_or_else(|| "POSTGRES_15".to_string()),
            ca_mode,
            public_ip,
            mdx: self.mdx.unwrap_or(false),
            psc: self.psc.unwrap_or(false),
            tls_suite: self.tls_suite.as_deref().map(TlsSuite::parse).transpose()?,
        })
    }
}

/// The JSON config file: `{"instances":[...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Instances to emulate.
    #[serde(default)]
    pub instances: Vec<FileInstance>,
}

/// Everything the emulator needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Instances to emulate, in the order given.
    pub instances: Vec<Spec>,
    /// Where credential files go; `None` = a fresh temporary directory.
    pub state_dir: Option<PathBuf>,
    /// Where to also write the ready line.
    pub ready_file: Option<PathBuf>,
    /// Access-token lifetime in seconds.
    pub token_lifetime_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            state_dir: None,
            ready_file: None,
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
        }
    }
}

/// Usage text for `--help` and errors.
pub const USAGE: &str = "usage: gcp-emulator [--config FILE.json] [--instance SPEC]... \
[--state-dir DIR] [--ready-file FILE] [--token-lifetime-secs N]
  SPEC (Cloud SQL, proxy on port 3307):
    project:region:name,backend=HOST:PORT[,version=POSTGRES_15][,ca=legacy|cas][,public-ip=IP]\
[,private-ip=auto|IP][,mdx=true|false][,psc=true|false]
  SPEC (AlloyDB, proxy on port 5433, backend a PostgreSQL):
    projects/P/locations/R/clusters/C/instances/I,backend=HOST:PORT[,private-ip=auto|IP]\
[,public-ip=auto|IP][,psc=true|false]
    (a private IP is always there, auto by default; public IP and PSC only when asked for)
  Every auto address is a random 127.x.y.z.";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the emulator.
    Run(Options),
    /// Print usage and exit.
    Help,
}

/// Parses the command line (without the program name). Accepts `--flag value` and `--flag=value`.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--config" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read config {path}: {e}"))?;
                let file: FileConfig =
                    serde_json::from_str(&text).map_err(|e| format!("bad config {path}: {e}"))?;
                for inst in file.instances {
                    opts.instances.push(inst.into_spec()?);
                }
            }
            "--instance" => opts.instances.push(Spec::parse_cli(&value()?)?),
            "--state-dir" => opts.state_dir = Some(PathBuf::from(value()?)),
            "--ready-file" => opts.ready_file = Some(PathBuf::from(value()?)),
            "--token-lifetime-secs" => {
                let v = value()?;
                opts.token_lifetime_secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 2)
                    .ok_or_else(|| format!("bad --token-lifetime-secs {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for inst in &opts.instances {
        if !seen.insert(inst.key()) {
            return Err(format!("instance {} given twice", inst.display_name()));
        }
    }
    Ok(Command::Run(opts))
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
        let alloydb = FileInstance {
            name: "projects/p/locations/r/clusters/c/instances/i".into(),
            backend: Some("127.0.0.1:5432".into()),
            tls_suite: Some("aes128gcm".into()),
            ..FileInstance::default()
        };
        assert!(alloydb.into_spec().unwrap_err().contains("tls-suite"));
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

    #[test]
    fn parses_args_and_file() {
        let dir = std::env::temp_dir().join(format!("gcp-emu-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(
            &file,
            r#"{"instances":[{"name":"a:b:c","backend":"127.0.0.1:1","ca_mode":"legacy","public_ip":"127.0.0.9","mdx":true}]}"#,
        )
        .unwrap();
        let args = [
            "--config",
            file.to_str().unwrap(),
            "--instance=p:r:i,backend=h:2",
            "--token-lifetime-secs",
            "120",
            "--state-dir",
            "/tmp/x",
        ];
        let Command::Run(o) = parse_args(args.iter().map(|s| s.to_string())).unwrap() else {
            panic!("expected run");
        };
        assert_eq!(o.instances.len(), 2);
        let cloudsql = |s: &Spec| match s {
            Spec::CloudSql(c) => c.clone(),
            Spec::AlloyDb(a) => panic!("not Cloud SQL: {a:?}"),
        };
        assert_eq!(cloudsql(&o.instances[0]).ca_mode, CaMode::Legacy);
        assert!(cloudsql(&o.instances[0]).mdx);
        assert!(!cloudsql(&o.instances[1]).mdx);
        assert_eq!(o.token_lifetime_secs, 120);
        assert_eq!(o.state_dir, Some(PathBuf::from("/tmp/x")));
        assert!(parse_args(["--bogus".to_string()]).is_err());
        let dup = [
            "--instance",
            "p:r:i,backend=h:2",
            "--instance",
            "p:r2:i,backend=h:3",
        ];
        assert!(parse_args(dup.iter().map(|s| s.to_string())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
