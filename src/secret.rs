//! Secrets (tokens, refresh tokens, client secrets) that never show
//! themselves in `Debug` output.

use std::fmt;

/// A secret string that never shows itself in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: String) -> Self {
        Self(secret)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_it() {
        let s = Secret::new("ya29.secret".into());
        assert!(!format!("{s:?}").contains("ya29"));
        assert_eq!(s.expose(), "ya29.secret");
    }
}
