//! Which address of an instance to dial.

use std::fmt;
use std::str::FromStr;

/// Which address of the instance to dial. Unless told, Cloud SQL dials
/// public (Google's default there) and AlloyDB private (AlloyDB's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpType {
    /// The public IP (Cloud SQL's `PRIMARY`, AlloyDB's `publicIpAddress`).
    Public,
    /// The private IP (AlloyDB's `ipAddress`).
    Private,
    /// The Private Service Connect DNS name.
    Psc,
}

impl fmt::Display for IpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Psc => "PSC",
        })
    }
}

impl FromStr for IpType {
    type Err = InvalidIpType;

    /// `public` (or `primary`), `private`, `psc`; any case.
    fn from_str(s: &str) -> Result<Self, InvalidIpType> {
        match s.to_ascii_lowercase().as_str() {
            "public" | "primary" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "psc" => Ok(Self::Psc),
            _ => Err(InvalidIpType(s.to_string())),
        }
    }
}

/// A string that names no [`IpType`]; as an [`Error`](crate::Error), of
/// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIpType(String);

impl fmt::Display for InvalidIpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IP type {:?} is not one of public, private, psc", self.0)
    }
}

impl std::error::Error for InvalidIpType {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_googles_primary() {
        assert_eq!("PUBLIC".parse::<IpType>().unwrap(), IpType::Public);
        assert_eq!("primary".parse::<IpType>().unwrap(), IpType::Public);
        assert_eq!("Psc".parse::<IpType>().unwrap(), IpType::Psc);
        let e = "vpc".parse::<IpType>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"IP type "vpc" is not one of public, private, psc"#
        );
    }
}
