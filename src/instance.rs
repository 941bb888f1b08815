//! Which service an instance name is for: the one place that decides.
//! `projects/P/locations/R/clusters/C/instances/I` is AlloyDB, anything else
//! a Cloud SQL `project:region:instance`; [`Instance::service`] hands the
//! rest of a connect that service's part.

use std::fmt;

use crate::alloydb::instance_uri::{self, AlloyDbInstanceUri};
use crate::cloudsql::instance_name::{self, InstanceName};
use crate::error::Error;
use crate::service::Service;

/// An instance of either service; the name tells which.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instance {
    /// A Cloud SQL instance, `project:region:instance`.
    CloudSql(InstanceName),
    /// An AlloyDB instance,
    /// `projects/P/locations/R/clusters/C/instances/I`.
    AlloyDb(AlloyDbInstanceUri),
}

/// AlloyDB's URIs start with this; Cloud SQL names never do.
const ALLOYDB_PREFIX: &str = "projects/";

impl Instance {
    /// A name starting with `projects/` is an AlloyDB instance URI; anything
    /// else a Cloud SQL connection name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.starts_with(ALLOYDB_PREFIX) {
            AlloyDbInstanceUri::parse(name).map(Self::AlloyDb)
        } else {
            InstanceName::parse(name).map(Self::CloudSql).map_err(|e| {
                e.expecting(format!(
                    "{} (Cloud SQL) or {} (AlloyDB)",
                    instance_name::EXPECTED,
                    instance_uri::EXPECTED
                ))
            })
        }
    }

    /// The instance's service.
    pub(crate) fn service(&self) -> &dyn Service {
        match self {
            Self::CloudSql(n) => n,
            Self::AlloyDb(u) => u,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::ip_type::IpType;

    #[test]
    fn the_name_tells_the_service() {
        let sql = Instance::parse("p:r:i").unwrap();
        assert!(matches!(sql, Instance::CloudSql(_)));
        assert_eq!(sql.service().default_ip_type(), IpType::Public);
        let a = Instance::parse("projects/p/locations/r/clusters/c/instances/i").unwrap();
        assert!(matches!(a, Instance::AlloyDb(_)));
        assert_eq!(a.service().default_ip_type(), IpType::Private);
        assert_eq!(
            a.to_string(),
            "projects/p/locations/r/clusters/c/instances/i"
        );
        // Not AlloyDB's prefix: parsed (and refused) as a Cloud SQL name.
        let e = Instance::parse("project/p/locations/r").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInstanceName);
        assert!(e.message().contains("too few"), "{e}");
    }

    #[test]
    fn error_message_tells_both_forms() {
        let e = Instance::parse("nope").unwrap_err().to_string();
        assert!(
            e.contains("PROJECT:REGION:INSTANCE (Cloud SQL) or projects/PROJECT/locations/REGION"),
            "{e}"
        );
        let e = Instance::parse("projects/p").unwrap_err().to_string();
        assert!(e.contains("invalid AlloyDB instance URI"), "{e}");
        assert!(e.contains("projects/PROJECT/locations/REGION"), "{e}");
    }
}
