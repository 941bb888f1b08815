//! Instances named by a DNS name the app controls (`orders-db.example.com`),
//! as Google's connectors resolve them: CNAMEs followed, then the TXT
//! records, sorted, the first that is an instance name winning (Go's
//! `resolver.go`, Python's `resolver.py`); Cloud SQL's own instance DNS names
//! go to the Admin API instead (`crate::cloudsql::dns_name`).
//!
//! `wasi:sockets` looks up addresses only, so the records come by
//! DNS-over-HTTPS (RFC 8484) through `wasi:http`: [`message`] builds the
//! query and reads the answer (sans-IO, fuzzed), [`doh`] carries it,
//! [`resolve`] follows the chain, and [`names`] keeps what a name resolved
//! to (in memory and in the host store) and notices when it moves.

pub(crate) mod doh;
pub(crate) mod message;
pub(crate) mod names;
pub(crate) mod resolve;

use std::fmt;

/// A domain name the caller gave as an instance name: lower case, without
/// the trailing dot, of the form Google's connectors accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DomainName(String);

impl DomainName {
    /// `name` if it is a domain name as Google's connectors define one
    /// (`^(?:[_a-z0-9](?:[_a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)?$`,
    /// a trailing dot allowed), in any case: DNS names are case-insensitive.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.is_empty() || trimmed.len() > 253 {
            return None;
        }
        let labels: Vec<&str> = trimmed.split('.').collect();
        // Google's form: at least one dot, so `localhost` or `db` is not one.
        if labels.len() < 2 {
            return None;
        }
        let (last, first) = labels.split_last()?;
        let ok = first.iter().all(|l| label_ok(l, true)) && label_ok(last, false);
        ok.then(|| Self(trimmed.to_string()))
    }

    /// The name, lower case, without the trailing dot.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// One label: 1 to 63 of `[a-z0-9-]` (and `_` outside the top label),
/// neither starting nor ending with `-`; the top label starts with a letter.
fn label_ok(label: &str, inner: bool) -> bool {
    let b = label.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    let body =
        |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || (inner && c == b'_');
    let first_ok = if inner {
        first.is_ascii_lowercase() || first.is_ascii_digit() || first == b'_'
    } else {
        first.is_ascii_lowercase()
    };
    b.len() <= 63
        && first_ok
        && (b.len() == 1 || last.is_ascii_lowercase() || last.is_ascii_digit())
        && b.iter().all(|&c| body(c))
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_as_google_accepts_them() {
        for (name, want) in [
            ("orders-db.example.com", Some("orders-db.example.com")),
            ("Orders-DB.Example.com.", Some("orders-db.example.com")),
            ("_db.example.com", Some("_db.example.com")),
            ("a.b", Some("a.b")),
            ("1.example.org", Some("1.example.org")),
            ("localhost", None),
            ("db", None),
            ("", None),
            (".", None),
            ("a..b", None),
            ("-a.example.com", None),
            ("a-.example.com", None),
            ("a.example.1com", None),
            ("a.exa_mple", None),
            ("p:r:i", None),
            ("projects/p/locations/r/clusters/c/instances/i", None),
            ("a b.example.com", None),
        ] {
            assert_eq!(
                DomainName::parse(name).as_ref().map(DomainName::as_str),
                want,
                "{name:?}"
            );
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(DomainName::parse(&long).is_none());
        let ok = format!("{}.com", "a".repeat(63));
        assert!(DomainName::parse(&ok).is_some());
        let too_long = format!("{}com", "abcdefghi.".repeat(26));
        assert!(DomainName::parse(&too_long).is_none());
    }
}
