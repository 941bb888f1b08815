//! AlloyDB instance names and configuration: the instance URI
//! `projects/P/locations/R/clusters/C/instances/I` (spec §1) and the `--instance` fields
//! an AlloyDB instance takes.

use std::fmt;

use crate::spec::{AddressChoice, FileInstance};

/// What every AlloyDB instance URI starts with; how the configuration tells the two kinds
/// of instance apart.
pub const URI_PREFIX: &str = "projects/";

/// A checked AlloyDB instance URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceUri {
    /// Project id, possibly domain-scoped (`example.com:proj`).
    pub project: String,
    /// Region (`locations/…`).
    pub region: String,
    /// Cluster id.
    pub cluster: String,
    /// Instance id.
    pub instance: String,
}

impl InstanceUri {
    /// Parses `projects/P/locations/R/clusters/C/instances/I`. Strict, like the Java
    /// connector: exactly eight `/`-separated segments, none empty, at most one `:` in the
    /// project (a domain scope) and none elsewhere.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid AlloyDB instance URI {s:?}, expected \
                 projects/<PROJECT>/locations/<REGION>/clusters/<CLUSTER>/instances/<INSTANCE>"
            )
        };
        let segs: Vec<&str> = s.split('/').collect();
        let ["projects", project, "locations", region, "clusters", cluster, "instances", instance] =
            segs.as_slice()
        else {
            return Err(bad());
        };
        if !valid_project(project) || !valid_id(region) || !valid_id(cluster) || !valid_id(instance)
        {
            return Err(bad());
        }
        Ok(Self {
            project: project.to_string(),
            region: region.to_string(),
            cluster: cluster.to_string(),
            instance: instance.to_string(),
        })
    }

    /// `projects/P/locations/R/clusters/C`: the parent of `generateClientCertificate`.
    pub fn cluster_parent(&self) -> String {
        cluster_parent(&self.project, &self.region, &self.cluster)
    }
}

/// A project id: not empty, no `/`, at most one `:` (a domain scope) with text either side.
pub fn valid_project(p: &str) -> bool {
    !p.contains('/') && p.matches(':').count() <= 1 && p.split(':').all(|x| !x.is_empty())
}

/// A region, cluster or instance id: not empty, no `/` or `:`.
pub fn valid_id(x: &str) -> bool {
    !x.is_empty() && !x.contains(['/', ':'])
}

/// `projects/P/locations/R/clusters/C`.
pub fn cluster_parent(project: &str, region: &str, cluster: &str) -> String {
    format!("projects/{project}/locations/{region}/clusters/{cluster}")
}

impl fmt::Display for InstanceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/instances/{}", self.cluster_parent(), self.instance)
    }
}

/// One emulated AlloyDB instance as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlloyDbSpec {
    /// Its URI.
    pub uri: InstanceUri,
    /// `HOST:PORT` of the PostgreSQL the proxy relays to.
    pub backend: String,
    /// The private IP (`ipAddress`), which every AlloyDB instance has.
    pub private_ip: AddressChoice,
    /// A public IP (`publicIpAddress`), if enabled.
    pub public_ip: Option<AddressChoice>,
    /// Private Service Connect (`pscDnsName` and its own address).
    pub psc: bool,
}

impl AlloyDbSpec {
    /// Parses an AlloyDB command-line SPEC:
    /// `projects/P/locations/R/clusters/C/instances/I,backend=HOST:PORT[,private-ip=auto|IP][,public-ip=auto|IP][,psc=true|false]`.
    pub fn parse_cli(spec: &str) -> Result<Self, String> {
        Self::from_file(FileInstance::from_cli(spec)?)
    }

    /// Validates a config-file (or command-line) entry named by an AlloyDB URI.
    pub fn from_file(f: FileInstance) -> Result<Self, String> {
        let uri = InstanceUri::parse(&f.name)?;
        let name = &f.name;
        for (given, field) in [
            (f.database_version.is_some(), "version (database_version)"),
            (f.ca_mode.is_some(), "ca (ca_mode)"),
            (f.mdx.is_some(), "mdx"),
            (f.tls_suite.is_some(), "tls-suite"),
        ] {
            if given {
                return Err(format!(
                    "instance {name}: {field} is a Cloud SQL setting; AlloyDB instances take \
                     only backend, private-ip, public-ip and psc (AlloyDB always runs the \
                     metadata exchange)"
                ));
            }
        }
        let backend = f.required_backend()?;
        let private_ip = match f.private_ip.as_deref() {
            None => AddressChoice::Random,
            Some(v) => AddressChoice::parse(name, "private ip", v)?,
        };
        let public_ip = f
            .public_ip
            .as_deref()
            .map(|v| AddressChoice::parse(name, "public ip", v))
            .transpose()?;
        Ok(Self {
            uri,
            backend,
            private_ip,
            public_ip,
            psc: f.psc.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "projects/p/locations/us-central1/clusters/c/instances/i";

    #[test]
    fn parses_uris() {
        let u = InstanceUri::parse(URI).unwrap();
        assert_eq!(
            (
                u.project.as_str(),
                u.region.as_str(),
                u.cluster.as_str(),
                u.instance.as_str()
            ),
            ("p", "us-central1", "c", "i")
        );
        assert_eq!(u.to_string(), URI);
        assert_eq!(
            u.cluster_parent(),
            "projects/p/locations/us-central1/clusters/c"
        );
        let d = InstanceUri::parse("projects/example.com:proj/locations/r/clusters/c/instances/i")
            .unwrap();
        assert_eq!(d.project, "example.com:proj");
        for bad in [
            "",
            "projects/p",
            "/projects/p/locations/r/clusters/c/instances/i",
            "projects/p/locations/r/clusters/c/instances/i/",
            "projects/p/locations/r/clusters/c/instances/",
            "projects//locations/r/clusters/c/instances/i",
            "projects/p/regions/r/clusters/c/instances/i",
            "projects/a:b:c/locations/r/clusters/c/instances/i",
            "projects/:p/locations/r/clusters/c/instances/i",
            "projects/p/locations/r:x/clusters/c/instances/i",
            "projects/p/locations/r/clusters/c/instances/i:x",
            "projects/p/locations/r/clusters/c/instances/i/extra",
        ] {
            assert!(InstanceUri::parse(bad).is_err(), "{bad}");
        }
    }

    fn alloydb(spec: &str) -> Result<AlloyDbSpec, String> {
        AlloyDbSpec::parse_cli(spec)
    }

    #[test]
    fn parses_cli_specs_with_defaults() {
        let s = alloydb(&format!("{URI},backend=127.0.0.1:5432")).unwrap();
        assert_eq!(s.uri.to_string(), URI);
        assert_eq!(s.backend, "127.0.0.1:5432");
        assert_eq!(s.private_ip, AddressChoice::Random);
        assert_eq!(s.public_ip, None);
        assert!(!s.psc);

        let s = alloydb(&format!(
            "{URI},backend=h:1,private-ip=127.0.0.5,public-ip=auto,psc=true"
        ))
        .unwrap();
        assert_eq!(
            s.private_ip,
            AddressChoice::Fixed("127.0.0.5".parse().unwrap())
        );
        assert_eq!(s.public_ip, Some(AddressChoice::Random));
        assert!(s.psc);
        let s = alloydb(&format!("{URI},backend=h:1,public-ip=127.0.0.6")).unwrap();
        assert_eq!(
            s.public_ip,
            Some(AddressChoice::Fixed("127.0.0.6".parse().unwrap()))
        );
    }

    #[test]
    fn rejects_bad_and_cloudsql_only_fields() {
        assert!(alloydb(URI)
            .unwrap_err()
            .contains("backend=HOST:PORT is required"));
        assert!(alloydb(&format!("{URI},backend=nope")).is_err());
        assert!(alloydb(&format!("{URI},backend=h:1,public-ip=x")).is_err());
        assert!(alloydb(&format!("{URI},backend=h:1,private-ip=x")).is_err());
        assert!(alloydb(&format!("{URI},backend=h:1,psc=maybe")).is_err());
        for field in ["version=POSTGRES_15", "ca=cas", "mdx=true", "mdx=false"] {
            let e = alloydb(&format!("{URI},backend=h:1,{field}")).unwrap_err();
            assert!(e.contains("is a Cloud SQL setting"), "{field}: {e}");
        }
    }
}
