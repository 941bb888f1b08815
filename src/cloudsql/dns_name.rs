//! Cloud SQL's own instance DNS names (`<id>.<id>.<region>.sql.goog`, and
//! the `sql-psa` and `sql-psc` forms of private services access and Private
//! Service Connect): not looked up in DNS but resolved by the Admin API's
//! `resolveConnectSettings`, as Google's Python connector 1.22+ does
//! (`resolver.py`, `client.py`). The global names of Enterprise Plus write
//! endpoints (`….global.sql.goog`) are ordinary DNS names (CNAMEs to the
//! primary's name).

use std::time::Instant;

use serde::Deserialize;

use super::instance_name::InstanceName;
use super::ADMIN_SCOPE;
use crate::credentials::TokenSource;
use crate::error::Error;
use crate::google_api::{self, ApiClient};
use crate::http::Transport;

/// The region of `name` (lower case, no trailing dot) if it is a Cloud SQL
/// instance DNS name: exactly `<label>.<label>.<region>.(sql|sql-psa|sql-psc).goog`,
/// the region not `global`.
pub(crate) fn region_of(name: &str) -> Option<&str> {
    let labels: Vec<&str> = name.split('.').collect();
    let [a, b, region, kind, "goog"] = labels.as_slice() else {
        return None;
    };
    let label = |l: &str| {
        let bytes = l.as_bytes();
        !l.is_empty()
            && l.len() <= 63
            && bytes
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = matches!(*kind, "sql" | "sql-psa" | "sql-psc")
        && [a, b, region].iter().all(|l| label(l))
        && *region != "global";
    ok.then_some(*region)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveAnswer {
    connection_name: Option<String>,
}

/// The instance whose DNS name `name` is, in `region`: `GET
/// {endpoint}/sql/v1beta4/locations/{region}/dns/{name}.:resolveConnectSettings`
/// (the name with its trailing dot, as Python sends it).
pub(crate) fn resolve(
    name: &str,
    region: &str,
    api: &ApiClient,
    tokens: &TokenSource,
    transport: &dyn Transport,
    deadline: Instant,
) -> Result<InstanceName, Error> {
    let token = tokens.token(ADMIN_SCOPE, deadline)?;
    let path = format!("sql/v1beta4/locations/{region}/dns/{name}.:resolveConnectSettings");
    let req = api.get(&path, token.secret.expose());
    let pending = transport.start(&req, deadline)?;
    let resp = google_api::finish(pending, &req, transport, deadline, || {
        format!("resolveConnectSettings for {name}")
    })?;
    let answer: ResolveAnswer = serde_json::from_slice(&resp.body).map_err(|e| {
        Error::instance_metadata(format!(
            "resolveConnectSettings for {name} is not valid JSON: {e}"
        ))
    })?;
    let connection_name = answer.connection_name.unwrap_or_default();
    InstanceName::parse(&connection_name).map_err(|e| {
        Error::instance_metadata(format!(
            "resolveConnectSettings for {name} answered {connection_name:?}, not an instance \
             connection name: {}",
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_dns_names_as_python_tells_them() {
        for (name, want) in [
            (
                "42cfcd3545f4.2imj07zrx20yw.us-west1.sql.goog",
                Some("us-west1"),
            ),
            ("a.b.europe-north2.sql-psa.goog", Some("europe-north2")),
            ("a.b.us-central1.sql-psc.goog", Some("us-central1")),
            ("a.b.global.sql.goog", None),
            ("a.b.global.sql-psc.goog", None),
            ("b.us-central1.sql.goog", None),
            ("x.a.b.us-central1.sql.goog", None),
            ("a.b.us-central1.sql.goog.example.com", None),
            ("a.b.us-central1.sql-other.goog", None),
            ("a.-b.us-central1.sql.goog", None),
            ("orders.example.com", None),
        ] {
            assert_eq!(region_of(name), want, "{name}");
        }
    }
}
