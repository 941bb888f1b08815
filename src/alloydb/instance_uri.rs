//! AlloyDB instance URIs:
//! `projects/PROJECT/locations/REGION/clusters/CLUSTER/instances/INSTANCE`,
//! where the project may be domain-scoped (`example.com:project`).

use std::fmt;

use crate::error::Error;
use crate::ids::check_id;

/// A checked AlloyDB instance URI.
///
/// Google's connectors match `projects/([^:]+(:[^:]+)?)/locations/([^:]+)/clusters/([^:]+)/instances/([^:]+)`;
/// that lets a `/` slip into a part, so the URI is split on `/` instead and
/// must have exactly the eight segments, each part limited to the characters
/// Google allows in IDs (so it can be placed in an Admin API URL unescaped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlloyDbInstanceUri {
    project: String,
    region: String,
    cluster: String,
    instance: String,
}

/// The URI form, for error messages.
pub(crate) const EXPECTED: &str =
    "projects/PROJECT/locations/REGION/clusters/CLUSTER/instances/INSTANCE";
/// What a URI is called, for error messages.
const WHAT: &str = "AlloyDB instance URI";

impl AlloyDbInstanceUri {
    /// Parses `projects/P/locations/R/clusters/C/instances/I`.
    pub fn parse(uri: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::invalid_instance_name(uri, WHAT, reason, EXPECTED);
        let segments: Vec<&str> = uri.split('/').collect();
        let [projects, project, locations, region, clusters, cluster, instances, instance] =
            segments.as_slice()
        else {
            return Err(invalid(format!(
                "it has {} '/'-separated segments; an AlloyDB instance URI has 8",
                segments.len()
            )));
        };
        for (got, want) in [
            (projects, "projects"),
            (locations, "locations"),
            (clusters, "clusters"),
            (instances, "instances"),
        ] {
            if got != &want {
                return Err(invalid(format!("found {got:?} where {want:?} belongs")));
            }
        }
        if project.matches(':').count() > 1 {
            return Err(invalid("the project has more than one ':'".into()));
        }
        for (what, part) in [
            ("project", project),
            ("region", region),
            ("cluster", cluster),
            ("instance", instance),
        ] {
            check_id(what, part, what == "project").map_err(invalid)?;
        }
        Ok(Self {
            project: project.to_string(),
            region: region.to_string(),
            cluster: cluster.to_string(),
            instance: instance.to_string(),
        })
    }

    /// The project ID, domain included when domain-scoped.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The region (AlloyDB's "location").
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The cluster ID.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The instance ID.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `projects/P/locations/R/clusters/C`: the parent of
    /// generateClientCertificate.
    pub fn cluster_path(&self) -> String {
        format!(
            "projects/{}/locations/{}/clusters/{}",
            self.project, self.region, self.cluster
        )
    }
}

impl fmt::Display for AlloyDbInstanceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/instances/{}", self.cluster_path(), self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let u = AlloyDbInstanceUri::parse(
            "projects/my-proj/locations/us-central1/clusters/my-cluster/instances/my-inst",
        )
        .unwrap();
        assert_eq!(
            (u.project(), u.region(), u.cluster(), u.instance()),
            ("my-proj", "us-central1", "my-cluster", "my-inst")
        );
        assert_eq!(
            u.cluster_path(),
            "projects/my-proj/locations/us-central1/clusters/my-cluster"
        );
        assert_eq!(
            u.to_string(),
            "projects/my-proj/locations/us-central1/clusters/my-cluster/instances/my-inst"
        );

        let d =
            AlloyDbInstanceUri::parse("projects/example.com:p/locations/r/clusters/c/instances/i")
                .unwrap();
        assert_eq!(d.project(), "example.com:p");
    }

    #[test]
    fn rejects_malformed_uris_with_a_reason() {
        for (bad, why) in [
            ("projects/p/locations/r/clusters/c", "6 '/'-separated"),
            (
                "/projects/p/locations/r/clusters/c/instances/i",
                "9 '/'-separated",
            ),
            (
                "projects/p/locations/r/clusters/c/instances/i/",
                "9 '/'-separated",
            ),
            (
                "projects/p/regions/r/clusters/c/instances/i",
                "\"regions\" where \"locations\"",
            ),
            (
                "project/p/locations/r/clusters/c/instances/i",
                "\"project\" where \"projects\"",
            ),
            (
                "projects//locations/r/clusters/c/instances/i",
                "project is empty",
            ),
            (
                "projects/p/locations/r/clusters//instances/i",
                "cluster is empty",
            ),
            (
                "projects/p/locations/r/clusters/c/instances/",
                "instance is empty",
            ),
            (
                "projects/a:b:c/locations/r/clusters/c/instances/i",
                "more than one ':'",
            ),
            (
                "projects/:p/locations/r/clusters/c/instances/i",
                "project is empty",
            ),
            (
                "projects/p/locations/r/clusters/c:x/instances/i",
                "cluster contains ':'",
            ),
            (
                "projects/p/locations/r/clusters/c/instances/i?x",
                "instance contains '?'",
            ),
            (
                "projects/p/locations/r/clusters/c/instances/i%2F",
                "instance contains '%'",
            ),
            (
                "projects/p/locations/r/clusters/../instances/i",
                "cluster is \"..\", a path segment",
            ),
        ] {
            let e = AlloyDbInstanceUri::parse(bad).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::ErrorKind::InvalidInstanceName,
                "{bad:?}"
            );
            assert_eq!(e.instance(), Some(bad));
            assert!(e.message().contains(why), "{bad:?}: {e:?} lacks {why:?}");
        }
    }
}
