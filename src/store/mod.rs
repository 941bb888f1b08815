//! The host store the cross-request cache lives in (`cache::store`), and
//! [`DirectoryStore`](directory::DirectoryStore), one over a directory for
//! hosts without a persistent key-value store.

pub mod directory;

/// The largest value the cache reads or writes: entries are a few KiB, so
/// anything bigger is not the cache's and would only cost memory.
pub const MAX_VALUE: usize = 1 << 20;

/// A host key-value store that outlives a component instance. Keys are at
/// most a few hundred bytes of `[A-Za-z0-9:/._@-]`; values a few KiB.
pub trait Store: Send + Sync {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Sets `key` to `value`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key` (absent is fine).
    fn delete(&self, key: &str) -> Result<(), String>;
    /// Atomically adds `delta` to the counter at `key` (absent counts as 0)
    /// and returns the new value; `Ok(None)` if the store has no atomics.
    fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
        let _ = (key, delta);
        Ok(None)
    }
}
