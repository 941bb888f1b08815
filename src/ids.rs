//! Google resource IDs as they appear in instance names: the characters
//! Google allows, so that a checked name goes into an Admin API URL path
//! unescaped.

/// Checks one part of a name: not empty, and only the characters Google
/// allows in IDs, so it can go into a URL path unescaped. A project may be
/// domain-scoped (`domain:project`, `allow_colon`), each side non-empty.
pub(crate) fn check_id(what: &str, part: &str, allow_colon: bool) -> Result<(), String> {
    if part.is_empty() || (allow_colon && part.split(':').any(str::is_empty)) {
        return Err(format!("the {what} is empty"));
    }
    if let Some(c) = part.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || (allow_colon && c == ':'))
    }) {
        return Err(format!("the {what} contains {c:?}"));
    }
    // "." and ".." are path segments: in an Admin API URL they would name
    // another resource than the one written.
    if part.split(':').any(|side| side.chars().all(|c| c == '.')) {
        return Err(format!("the {what} is {part:?}, a path segment, not an ID"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_path_safe() {
        assert!(check_id("project", "example.com:my-proj", true).is_ok());
        assert!(check_id("region", "us-central1", false).is_ok());
        assert_eq!(
            check_id("region", "us:central1", false).unwrap_err(),
            "the region contains ':'"
        );
        assert_eq!(
            check_id("project", "a:", true).unwrap_err(),
            "the project is empty"
        );
        assert_eq!(
            check_id("instance", "", false).unwrap_err(),
            "the instance is empty"
        );
        for bad in ["a/b", "a?b", "a b", "a%2F", ".", "..", "..."] {
            assert!(check_id("instance", bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            check_id("instance", "..", false).unwrap_err(),
            "the instance is \"..\", a path segment, not an ID"
        );
        assert!(check_id("project", "example.com:..", true).is_err());
        assert!(check_id("project", "..:proj", true).is_err());
        assert!(check_id("instance", "db.v2", false).is_ok());
    }
}
