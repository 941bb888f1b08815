//! Instance names: which service a name is for, and Cloud SQL instance
//! connection names `project:region:instance`, where the project may be
//! domain-scoped (`example.com:project`). AlloyDB URIs are parsed in
//! `alloydb::instance_uri`.

use std::fmt;

use crate::{AlloyDbInstanceUri, Error};

/// An instance of either service; the name tells which.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instance {
    /// A Cloud SQL instance, `project:region:instance`.
    CloudSql(InstanceName),
    /// An AlloyDB instance,
    /// `projects/P/locations/R/clusters/C/instances/I`.
    AlloyDb(AlloyDbInstanceUri),
}

impl Instance {
    /// A name starting with `projects/` is an AlloyDB instance URI; anything
    /// else a Cloud SQL connection name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.starts_with("projects/") {
            AlloyDbInstanceUri::parse(name).map(Self::AlloyDb)
        } else {
            InstanceName::parse(name).map(Self::CloudSql)
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CloudSql(n) => n.fmt(f),
            Self::AlloyDb(u) => u.fmt(f),
        }
    }
}

/// A checked Cloud SQL instance connection name.
///
/// Parsing follows Google's connectors (`([^:]+(:[^:]+)?):([^:]+):([^:]+)`,
/// matched in full), and further limits each part to the characters Google
/// allows in project, region and instance IDs, so a name can be placed in an
/// Admin API URL path without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceName {
    project: String,
    region: String,
    instance: String,
}

impl InstanceName {
    /// Parses `project:region:instance` or `domain:project:region:instance`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidInstanceName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = name.split(':').collect();
        let (project, region, instance) = match parts.as_slice() {
            [p, r, i] => ((*p).to_string(), *r, *i),
            [d, p, r, i] => (format!("{d}:{p}"), *r, *i),
            _ if name.trim().is_empty() => return Err(invalid("it is empty")),
            _ if parts.len() < 3 => return Err(invalid("it has too few ':'-separated parts")),
            _ => return Err(invalid("it has too many ':'-separated parts")),
        };
        for (what, part) in [
            ("project", project.as_str()),
            ("region", region),
            ("instance", instance),
        ] {
            check_id(what, part, what == "project").map_err(|r| invalid(&r))?;
        }
        Ok(Self {
            project,
            region: region.to_string(),
            instance: instance.to_string(),
        })
    }

    /// The project ID, domain included when domain-scoped.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The region, as given in the name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The instance ID.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `project:instance`, the CN of a legacy server certificate.
    pub(crate) fn legacy_common_name(&self) -> String {
        format!("{}:{}", self.project, self.instance)
    }
}

/// Checks one part of a name: not empty, and only the characters Google
/// allows in IDs, so it can go into a URL path unescaped. A project may be
/// domain-scoped (`domain:project`, `allow_colon`), each side non-empty.
pub(crate) fn check_id(what: &str, part: &str, allow_colon: bool) -> Result<(), String> {
    if part.is_empty() || (allow_colon && part.split(':').any(str::is_empty)) {
        return Err(format!("the {what} is empty"));
    }
    match part.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || (allow_colon && c == ':'))
    }) {
        Some(c) => Err(format!("the {what} contains {c:?}")),
        None => Ok(()),
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.project, self.region, self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_names() {
        let n = InstanceName::parse("my-proj:us-central1:my-db").unwrap();
        assert_eq!(n.project(), "my-proj");
        assert_eq!(n.region(), "us-central1");
        assert_eq!(n.instance(), "my-db");
        assert_eq!(n.to_string(), "my-proj:us-central1:my-db");
        assert_eq!(n.legacy_common_name(), "my-proj:my-db");
    }

    #[test]
    fn parses_domain_scoped_names() {
        let n = InstanceName::parse("example.com:my-proj:europe-west1:db").unwrap();
        assert_eq!(n.project(), "example.com:my-proj");
        assert_eq!(n.region(), "europe-west1");
        assert_eq!(n.instance(), "db");
        assert_eq!(n.legacy_common_name(), "example.com:my-proj:db");
    }

    #[test]
    fn rejects_malformed_names_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("proj", "too few"),
            ("proj:region", "too few"),
            ("a:b:c:d:e", "too many"),
            (":region:inst", "project is empty"),
            ("proj::inst", "region is empty"),
            ("proj:region:", "instance is empty"),
            (":proj:region:inst", "project is empty"),
            ("proj:region:inst/../x", "contains '/'"),
            ("proj:region:in st", "contains ' '"),
            ("proj:region:inst?x=1", "contains '?'"),
        ] {
            match InstanceName::parse(bad) {
                Err(Error::InvalidInstanceName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(reason.contains(why), "{bad:?}: {reason:?} lacks {why:?}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn error_message_tells_the_expected_form() {
        let e = InstanceName::parse("nope").unwrap_err().to_string();
        assert!(e.contains("PROJECT:REGION:INSTANCE"), "{e}");
        let e = Instance::parse("projects/p").unwrap_err().to_string();
        assert!(e.contains("projects/PROJECT/locations/REGION"), "{e}");
    }

    #[test]
    fn the_name_tells_the_service() {
        assert!(matches!(
            Instance::parse("p:r:i"),
            Ok(Instance::CloudSql(_))
        ));
        let a = Instance::parse("projects/p/locations/r/clusters/c/instances/i").unwrap();
        assert!(matches!(a, Instance::AlloyDb(_)));
        assert_eq!(
            a.to_string(),
            "projects/p/locations/r/clusters/c/instances/i"
        );
        // Not AlloyDB's prefix: parsed (and refused) as a Cloud SQL name.
        assert!(matches!(
            Instance::parse("project/p/locations/r"),
            Err(Error::InvalidInstanceName { reason, .. }) if reason.contains("too few")
        ));
    }
}
