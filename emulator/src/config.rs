//! Command line and JSON configuration: which instances to emulate and where. A Cloud SQL
//! instance is named `project:region:name` (see `cloudsql::spec`); an AlloyDB instance by
//! its URI `projects/P/locations/R/clusters/C/instances/I` (see `alloydb::spec`). The
//! fields both take are parsed by `spec`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::alloydb::spec::{AlloyDbSpec, URI_PREFIX};
use crate::cloudsql::spec::InstanceSpec;
use crate::dns::{add_records, split_flag, DnsZone, FileDnsEntry};
use crate::spec::FileInstance;

/// Default access-token lifetime, the same as Google's.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// The longest `--cert-lifetime-secs`: AlloyDB's longest certificate, 24 hours.
pub const MAX_CERT_LIFETIME_SECS: u64 = 24 * 3600;

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
        Self::from_file(FileInstance::from_cli(spec)?)
    }

    /// Validates a config-file (or command-line) entry of either kind and applies defaults.
    pub fn from_file(f: FileInstance) -> Result<Self, String> {
        if f.name.starts_with(URI_PREFIX) {
            AlloyDbSpec::from_file(f).map(Self::AlloyDb)
        } else {
            InstanceSpec::from_file(f).map(Self::CloudSql)
        }
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

/// The JSON config file: `{"instances":[...],"dns":[...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Instances to emulate.
    #[serde(default)]
    pub instances: Vec<FileInstance>,
    /// The DNS-over-HTTPS resolver's records:
    /// `{"name":"orders.example.com","txt":["p:r:i"],"cname":null,"ttl":30}`.
    #[serde(default)]
    pub dns: Vec<FileDnsEntry>,
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
    /// Client-certificate lifetime in seconds (`--cert-lifetime-secs`), a test knob:
    /// `None` issues what Google does (Cloud SQL's `generateEphemeralCert` 1 hour,
    /// AlloyDB's `generateClientCertificate` the `certDuration` asked, 1 min to 24 h,
    /// 1 hour when none); `Some(n)`: Cloud SQL's last `n` seconds, AlloyDB's at most
    /// `n`. Either is still cut at an IAM login token's expiry, as Google does.
    pub cert_lifetime_secs: Option<u64>,
    /// The DNS-over-HTTPS resolver's records at start (`--dns`, `--dns-cname`, the
    /// config file's `dns`).
    pub dns: DnsZone,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            state_dir: None,
            ready_file: None,
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            cert_lifetime_secs: None,
            dns: DnsZone::new(),
        }
    }
}

/// Usage text for `--help` and errors.
pub const USAGE: &str = "usage: gcp-emulator [--config FILE.json] [--instance SPEC]... \
[--state-dir DIR] [--ready-file FILE] [--token-lifetime-secs N] [--cert-lifetime-secs N]
  [--dns NAME=TXT-VALUE]... [--dns-cname NAME=TARGET]...
  --cert-lifetime-secs N (1 to 86400), a test knob: client certificates last N seconds,
    Cloud SQL's generateEphemeralCert N, AlloyDB's generateClientCertificate at most N
    (a shorter certDuration wins). Default: Google's 1 hour (AlloyDB: the certDuration
    asked, 1 min to 24 h); Google never issues shorter ones.
  SPEC (Cloud SQL, proxy on port 3307):
    project:region:name,backend=HOST:PORT[,version=POSTGRES_15][,ca=legacy|cas][,public-ip=IP]\
[,private-ip=auto|IP][,mdx=true|false][,psc=true|false]
  SPEC (AlloyDB, proxy on port 5433, backend a PostgreSQL):
    projects/P/locations/R/clusters/C/instances/I,backend=HOST:PORT[,private-ip=auto|IP]\
[,public-ip=auto|IP][,psc=true|false]
    (a private IP is always there, auto by default; public IP and PSC only when asked for)
  Every auto address is a random 127.x.y.z.
  DNS over HTTPS (RFC 8484, GET ?dns= or POST application/dns-message) at dns_endpoint,
    {admin_endpoint}/dns-query, answering like a recursive resolver (CNAME chains followed,
    TTL 30 s): --dns NAME=VALUE adds a TXT record (repeat for more), --dns-cname
    NAME=TARGET a CNAME; the config file takes \"dns\":[{\"name\",\"txt\":[…],\"cname\",\"ttl\"}].
  Credentials (in the state dir; the ready line names each): service-account.json
    (connector-sa), authorized-user.json (dev-user@example.com), impersonated-sa.json and
    impersonated-user.json (impersonated_service_account of target-sa, the second through
    delegate-sa), external-account-file.json (workload identity federation, subject token
    from subject-token.jwt, impersonating target-sa) and external-account-url.json
    (subject token from a URL, STS client auth, no impersonation).
  Service accounts: connector-sa, target-sa, delegate-sa @emulator-project.iam.gserviceaccount.com.
  IAM policy of generateAccessToken (who may impersonate whom, one link of a delegate chain
  each): connector-sa -> target-sa, delegate-sa; dev-user@example.com -> delegate-sa;
  delegate-sa -> target-sa; principal://iam.googleapis.com/projects/428716093512/locations/
  global/workloadIdentityPools/emulator-pool/subject/wasm-workload -> target-sa.
  Nobody else; a token from generateAccessToken stands for the target, IAM database
  logins included. The APIs also take connector-sa's self-signed JWT as a bearer token,
  as Google's do (key file's key, iss = sub = its email, a scope claim or the API's
  audience https://SERVICE/, at most an hour).
  Test controls (under control_endpoint; more in the README), stalls among them:
    POST /faults {\"method\":M,\"body\":\"stall\",\"count\":N}: the next N answers of M
      (connectSettings, generateEphemeralCert, connectionInfo, generateClientCertificate,
      sts, generateAccessToken, token = the OAuth2 token endpoint; none: any) send their
      status and headers (Content-Length too), then no body until the client gives up.
    POST /faults {\"method\":M,\"body\":\"trickle\",\"delay_ms\":D,\"count\":N}: the
      same, but the body comes one byte every D ms.
    POST /instances/{name}/proxy {\"mode\":\"trickle-server-flight\",\"delay_ms\":D}: the
      proxy answers each ClientHello with its whole server flight one byte every D ms,
      then holds the connection without finishing the handshake (\"normal\" restores it).
    POST /dns {\"name\":N,\"txt\":[…],\"cname\":T,\"ttl\":S} replaces a name's records
      (\"delete\":true removes it); POST /dns/faults {\"name\":N,\"answer\":\"servfail\"|
      \"nxdomain\"|\"empty\"|\"malformed\"|\"slow\"|\"http-500\",\"delay_ms\":D,\"count\":C}
      answers that name's next C DoH queries so (no count: until reset).
    POST /faults/reset drops the fault queues (DNS faults too; /dns/faults/reset only those).";

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
                    opts.instances.push(Spec::from_file(inst)?);
                }
                for d in file.dns {
                    add_records(&mut opts.dns, &d.name, &d.txt, d.cname.as_deref(), d.ttl)
                        .map_err(|e| format!("bad config {path}: {e}"))?;
                }
            }
            "--instance" => opts.instances.push(Spec::parse_cli(&value()?)?),
            "--dns" => {
                let v = value()?;
                let (name, txt) = split_flag("--dns", &v)?;
                add_records(&mut opts.dns, name, &[txt.to_string()], None, None)?;
            }
            "--dns-cname" => {
                let v = value()?;
                let (name, target) = split_flag("--dns-cname", &v)?;
                add_records(&mut opts.dns, name, &[], Some(target), None)?;
            }
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
            "--cert-lifetime-secs" => {
                let v = value()?;
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_CERT_LIFETIME_SECS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "bad --cert-lifetime-secs {v:?}: seconds, 1 to {MAX_CERT_LIFETIME_SECS}"
                        )
                    })?;
                opts.cert_lifetime_secs = Some(n);
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
    use crate::cloudsql::spec::CaMode;

    const URI: &str = "projects/p/locations/us-central1/clusters/c/instances/i";

    #[test]
    fn a_tls_suite_is_a_cloud_sql_setting() {
        let alloydb = FileInstance {
            name: "projects/p/locations/r/clusters/c/instances/i".into(),
            backend: Some("127.0.0.1:5432".into()),
            tls_suite: Some("aes128gcm".into()),
            ..FileInstance::default()
        };
        assert!(Spec::from_file(alloydb).unwrap_err().contains("tls-suite"));
    }

    #[test]
    fn cert_lifetime_is_optional_and_bounded() {
        let run = |args: &[&str]| match parse_args(args.iter().map(|s| s.to_string())) {
            Ok(Command::Run(o)) => Ok(o.cert_lifetime_secs),
            Ok(Command::Help) => panic!("not a run"),
            Err(e) => Err(e),
        };
        assert_eq!(run(&[]), Ok(None), "Google's lifetime by default");
        assert_eq!(run(&["--cert-lifetime-secs", "200"]), Ok(Some(200)));
        assert_eq!(run(&["--cert-lifetime-secs=1"]), Ok(Some(1)));
        assert_eq!(run(&["--cert-lifetime-secs", "86400"]), Ok(Some(86_400)));
        for bad in ["0", "86401", "-5", "1h", ""] {
            let e = run(&["--cert-lifetime-secs", bad]).unwrap_err();
            assert!(e.contains("bad --cert-lifetime-secs"), "{bad}: {e}");
        }
        assert!(run(&["--cert-lifetime-secs"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(USAGE.contains("--cert-lifetime-secs N"));
        // The IAM policy it documents is the one enforced.
        let workload =
            crate::workload_identity::principal(crate::workload_identity::DEFAULT_SUBJECT);
        let (pool, subject) = workload.split_once("global/").unwrap();
        assert!(
            USAGE.contains(pool) && USAGE.contains(subject),
            "{workload}"
        );
    }

    #[test]
    fn dns_records_come_from_flags_and_the_file() {
        let dir = std::env::temp_dir().join(format!("gcp-emu-dns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(
            &file,
            r#"{"dns":[{"name":"Orders.Example.com.","txt":["p:r:i"],"ttl":5},
                       {"name":"alias.example","cname":"orders.example.com"}]}"#,
        )
        .unwrap();
        let args = [
            "--config",
            file.to_str().unwrap(),
            "--dns",
            "orders.example.com=v=2",
            "--dns=other.example=x",
            "--dns-cname",
            "loop.example=loop.example",
        ];
        let Command::Run(o) = parse_args(args.iter().map(|s| s.to_string())).unwrap() else {
            panic!("expected run");
        };
        let orders = &o.dns["orders.example.com"];
        assert_eq!(orders.txt, ["p:r:i", "v=2"]);
        assert_eq!(orders.ttl, 5);
        assert_eq!(
            o.dns["alias.example"].cname.as_deref(),
            Some("orders.example.com")
        );
        assert_eq!(o.dns["other.example"].ttl, crate::dns::DEFAULT_TTL);
        assert_eq!(o.dns["loop.example"].cname.as_deref(), Some("loop.example"));
        for bad in [
            &["--dns", "no-value"][..],
            &["--dns", "a..b=x"],
            &["--dns-cname", "a=b", "--dns-cname", "a=c"],
            &["--dns-cname", "a=bad target"],
        ] {
            assert!(
                parse_args(bad.iter().map(|s| s.to_string())).is_err(),
                "{bad:?}"
            );
        }
        std::fs::write(
            &file,
            r#"{"dns":[{"name":"a","txt":["x"],"colour":"red"}]}"#,
        )
        .unwrap();
        let args = ["--config".to_string(), file.display().to_string()];
        assert!(parse_args(args).unwrap_err().contains("bad config"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tells_alloydb_uris_apart() {
        let e = Spec::parse_cli("projects/p/locations/r/clusters/c,backend=h:1").unwrap_err();
        assert!(e.contains("invalid AlloyDB instance URI"), "{e}");
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

    #[test]
    fn mixes_with_cloudsql_in_args_and_files() {
        let dir = std::env::temp_dir().join(format!("gcp-emu-adb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(
            &file,
            format!(r#"{{"instances":[{{"name":"{URI}","backend":"127.0.0.1:1","psc":true}}]}}"#),
        )
        .unwrap();
        let args = [
            "--instance".to_string(),
            "p:r:i,backend=h:2".to_string(),
            "--config".to_string(),
            file.display().to_string(),
        ];
        let Command::Run(o) = parse_args(args).unwrap() else {
            panic!("expected run");
        };
        assert!(matches!(o.instances[0], Spec::CloudSql(_)));
        let Spec::AlloyDb(a) = &o.instances[1] else {
            panic!("expected AlloyDB");
        };
        assert!(a.psc);
        let bad = r#"{"instances":[{"name":"projects/p/locations/r/clusters/c/instances/i","backend":"h:1","ca_mode":"cas"}]}"#;
        std::fs::write(&file, bad).unwrap();
        let args = ["--config".to_string(), file.display().to_string()];
        assert!(parse_args(args).unwrap_err().contains("Cloud SQL setting"));
        std::fs::remove_dir_all(&dir).unwrap();

        let dup = [
            "--instance".to_string(),
            format!("{URI},backend=h:1"),
            "--instance".to_string(),
            format!("{URI},backend=h:2"),
        ];
        assert!(parse_args(dup).unwrap_err().contains("given twice"));
        // The same instance id in another cluster is another instance.
        let two = [
            "--instance".to_string(),
            format!("{URI},backend=h:1"),
            "--instance".to_string(),
            "projects/p/locations/us-central1/clusters/d/instances/i,backend=h:1".to_string(),
        ];
        assert!(parse_args(two).is_ok());
    }
}
