//! Which key-value interfaces the host links, over its one shared store:
//! checked against a component's imports before it is instantiated, so a
//! missing `--keyvalue` is named instead of wasmtime's generic link error.

use std::fmt;

use crate::{keyvalue, spin_key_value};

/// The interfaces this host provides, as a component names its imports:
/// `wasi:keyvalue` ([`keyvalue`](crate::keyvalue)) and Spin's
/// `spin:key-value` ([`spin_key_value`](crate::spin_key_value)), all over the
/// one store.
pub const PROVIDED_INTERFACES: [&str; 3] = [
    keyvalue::INTERFACES[0],
    keyvalue::INTERFACES[1],
    spin_key_value::INTERFACE,
];

/// Whether `import` names a key-value interface (one this host may or may
/// not provide): `wasi:keyvalue/*` or `spin:key-value/*`.
fn is_keyvalue_import(import: &str) -> bool {
    import.starts_with("wasi:keyvalue/") || import.starts_with("spin:key-value/")
}

/// Why a component's key-value imports (`wasi:keyvalue`, `spin:key-value`)
/// cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyValueImportError {
    /// The component imports the store but this use did not enable it.
    NotEnabled {
        /// The import, e.g. `wasi:keyvalue/store@0.2.0-draft`.
        import: String,
    },
    /// The component imports a `wasi:keyvalue` interface this host does not
    /// provide (only [`PROVIDED_INTERFACES`] are).
    Unsupported {
        /// The import, e.g. `wasi:keyvalue/batch@0.2.0-draft`.
        import: String,
    },
}

impl fmt::Display for KeyValueImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValueImportError::NotEnabled { import } => write!(
                f,
                "the component imports {import}, but the shared key-value store is not enabled \
                 (set `keyvalue` in the options, or pass --keyvalue)"
            ),
            KeyValueImportError::Unsupported { import } => write!(
                f,
                "the component imports {import}; this host provides only {}",
                PROVIDED_INTERFACES.join(", ")
            ),
        }
    }
}

impl std::error::Error for KeyValueImportError {}

/// Checks a component's import names against what the host will link:
/// with the store `enabled`, [`PROVIDED_INTERFACES`]; without it, no
/// `wasi:keyvalue` or `spin:key-value` interface at all.
///
/// Run before instantiating so the failure names the fix instead of
/// wasmtime's generic "no matching implementation was found".
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    enabled: bool,
) -> Result<(), KeyValueImportError> {
    for import in imports {
        if !is_keyvalue_import(import) {
            continue;
        }
        if !enabled {
            return Err(KeyValueImportError::NotEnabled {
                import: import.into(),
            });
        }
        if !PROVIDED_INTERFACES.contains(&import) {
            return Err(KeyValueImportError::Unsupported {
                import: import.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_checked_against_what_is_enabled() {
        let wasi = ["wasi:cli/environment@0.2.12", "wasi:io/streams@0.2.12"];
        assert_eq!(check_imports(wasi, false), Ok(()));
        assert_eq!(check_imports(wasi, true), Ok(()));
        let kv = [PROVIDED_INTERFACES[0], PROVIDED_INTERFACES[1]];
        assert_eq!(check_imports(kv, true), Ok(()));
        let err = check_imports(kv, false).unwrap_err();
        assert_eq!(
            err,
            KeyValueImportError::NotEnabled {
                import: PROVIDED_INTERFACES[0].into()
            }
        );
        assert!(err.to_string().contains("--keyvalue"), "{err}");
        // Spin's store is a key-value import too, behind the same switch.
        let spin = ["spin:key-value/key-value@3.0.0"];
        assert_eq!(check_imports(spin, true), Ok(()));
        assert!(matches!(
            check_imports(spin, false),
            Err(KeyValueImportError::NotEnabled { .. })
        ));
        assert!(matches!(
            check_imports(["spin:key-value/key-value@2.0.0"], true),
            Err(KeyValueImportError::Unsupported { .. })
        ));
        let batch = ["wasi:keyvalue/batch@0.2.0-draft"];
        assert!(matches!(
            check_imports(batch, true),
            Err(KeyValueImportError::Unsupported { .. })
        ));
    }
}
