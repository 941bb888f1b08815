//! Cloud SQL instance connection names `project:region:instance`, where the
//! project may be domain-scoped (`example.com:project`).

use std::fmt;

use crate::error::Error;
use crate::ids::check_id;

/// The form of a name, for error messages.
pub(crate) const EXPECTED: &str = "PROJECT:REGION:INSTANCE";
/// What a name is called, for error messages.
const WHAT: &str = "instance connection name";

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
        let invalid = |reason: &str| Error::invalid_instance_name(name, WHAT, reason, EXPECTED);
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

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.project, self.region, self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
            ("proj:region:..", "instance is \"..\", a path segment"),
            ("proj:.:inst", "region is \".\", a path segment"),
        ] {
            let e = InstanceName::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInstanceName, "{bad:?}");
            assert_eq!(e.instance(), Some(bad));
            assert!(e.message().contains(why), "{bad:?}: {e:?} lacks {why:?}");
        }
    }

    #[test]
    fn error_message_tells_the_expected_form() {
        let e = InstanceName::parse("nope").unwrap_err().to_string();
        assert!(e.contains("PROJECT:REGION:INSTANCE"), "{e}");
    }
}
