//! [`DirectoryStore`]: the cross-request [`Store`] over a directory, for hosts
//! whose own key-value store dies with each request (plain `wasmtime serve`,
//! whose `-S keyvalue` is in memory per instance) but that can preopen a
//! directory (`wasmtime serve --dir ./cache::/cache`). Natively any directory
//! works.
//!
//! Each key is one file in the directory, named by `file_name`: every byte
//! outside `[a-z0-9_-]`, and a `.` at either end, is escaped as `%XX`, so a
//! name cannot leave the directory, never starts with `.` (the store's own
//! temporary and lock files do), and stays distinct on case-insensitive file
//! systems too. A name that would be too long for a file system is shortened
//! to a prefix and the key's SHA-256.
//!
//! Writes are atomic: the value goes to a fresh temporary file that is then
//! renamed over the key's file, so a reader sees the old value or the new one,
//! never part of one. They are not synced to disk: this is a cache, and a file
//! torn by a power cut reads as an entry that does not decode, which the cache
//! refreshes over (or as a counter at 0).
//!
//! `increment` is atomic across threads, processes and component instances
//! sharing the directory: a lock file per key, created exclusively, guards the
//! read-modify-write (`set` and `delete` take it too, so they order with
//! increments). The lock holds the time it goes stale; a waiter breaks a
//! stale lock, left by a holder that crashed, by renaming it aside first, so
//! that only one waiter breaks it, and puts back what it renamed if that turns
//! out to be a live lock created after it looked.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::Store;
use crate::error::Error;

/// The largest value `get` reads and `set` writes ([`super::MAX_VALUE`]).
const MAX_VALUE: u64 = super::MAX_VALUE as u64;
/// A counter is at most 20 digits: a bigger file is not a counter.
const MAX_COUNTER: u64 = 64;
/// A lock file holds a deadline and a token.
const MAX_LOCK: u64 = 256;
/// How long a lock may be held before it is stale, in milliseconds.
const STALE_MS: u64 = 2_000;
/// How long a lock may be held before it is stale.
const STALE: Duration = Duration::from_millis(STALE_MS);
/// How long an operation waits for a lock. Longer than [`STALE`], so that the
/// lock of a crashed holder is broken by a waiter instead of timing all out.
const WAIT: Duration = Duration::from_millis(2_500);
/// A holder past this gives up rather than write: its lock is about to be
/// breakable, and a write after that could lose another's update.
const HOLD: Duration = Duration::from_millis(1_500);
/// Longest escaped name kept whole (file names stop at 255 bytes, and a lock's
/// name adds a prefix).
const MAX_NAME: usize = 200;
/// How much of the escaped key a shortened name keeps, for people reading the
/// directory.
const SHORT_PREFIX: usize = 120;

const TMP_PREFIX: &str = ".tmp-";
const LOCK_PREFIX: &str = ".lock-";
const BROKEN_PREFIX: &str = ".broken-";
const PROBE_PREFIX: &str = ".probe-";

/// A [`Store`] over a directory: one file per key, atomic writes, and
/// [`increment`](Store::increment) made atomic with lock files, so that
/// connectors in separate processes or component instances sharing the
/// directory share the cross-request cache.
///
/// The files hold what the cache stores, private keys included (unless
/// `store_private_key` is off): the directory must be as private as the app's
/// own secrets. Natively on unix the files are created with mode `0o600`.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    dir: PathBuf,
}

impl DirectoryStore {
    /// The store over `dir`, which must already exist, as a host's preopened
    /// directory does (under WASI: `wasmtime serve --dir ./cache::/cache`, then
    /// `DirectoryStore::open("/cache")`), and be writable, which is checked by
    /// creating and removing a probe file.
    ///
    /// Errors are of kind [`InvalidConfig`](crate::ErrorKind::InvalidConfig)
    /// and say what to do.
    pub fn open(dir: impl AsRef<Path>) -> Result<DirectoryStore, Error> {
        let dir = dir.as_ref();
        let shown = dir.display();
        let grant = "create it, and under WASI grant it to the component at that path \
                     (e.g. `wasmtime serve --dir ./cache::/cache`)";
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid_config(format!(
                    "the store directory {shown} is not a directory: {grant}"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::invalid_config(format!(
                    "the store directory {shown} does not exist: {grant}"
                ))
                .with_source(e))
            }
            Err(e) => {
                return Err(Error::invalid_config(format!(
                    "the store directory {shown} cannot be read ({e}): {grant}"
                ))
                .with_source(e))
            }
        }
        let store = DirectoryStore {
            dir: dir.to_path_buf(),
        };
        store.probe().map_err(|e| {
            Error::invalid_config(format!(
                "the store directory {shown} is not writable ({e}): make it writable \
                 (under WASI, grant it read-write, e.g. `wasmtime serve --dir ./cache::/cache`)"
            ))
            .with_source(e)
        })?;
        Ok(store)
    }

    /// The directory the store is over.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates, writes and removes a file: a read-only directory or preopen
    /// fails here, at configuration, rather than on every request.
    fn probe(&self) -> io::Result<()> {
        let path = self.dir.join(format!("{PROBE_PREFIX}{}", token()));
        let mut file = create_new_private(&path)?;
        let written = file.write_all(b"probe");
        drop(file);
        let removed = fs::remove_file(&path);
        written.and(removed)
    }

    /// Writes `value` to `target` through a temporary file renamed over it,
    /// unless `lock` has been held too long by then.
    fn write_atomic(&self, target: &Path, value: &[u8], lock: &Lock) -> io::Result<()> {
        let (temp, mut file) = self.create_temp()?;
        let written = file.write_all(value).and_then(|()| file.flush());
        // Closed before the rename, which some systems require.
        drop(file);
        let renamed = written
            .and_then(|()| lock.check_held())
            .and_then(|()| fs::rename(&temp, target));
        if renamed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        renamed
    }

    /// A new temporary file. Its name is unique unless randomness failed (see
    /// [`token`]); exclusive creation makes sure, with a few more names.
    fn create_temp(&self) -> io::Result<(PathBuf, File)> {
        let mut attempts = 0;
        loop {
            let path = self.dir.join(format!("{TMP_PREFIX}{}", token()));
            match create_new_private(&path) {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the lock of the key file `name`, waiting at most [`WAIT`] and
    /// breaking it if stale.
    fn lock(&self, name: &str) -> Result<Lock, String> {
        let path = self.dir.join(format!("{LOCK_PREFIX}{name}"));
        let start = Instant::now();
        loop {
            // Taken before the deadline is computed, so that the holder's own
            // clock runs out no later than the deadline others read.
            let acquired = Instant::now();
            let stale_at = unix_ms(SystemTime::now()).saturating_add(STALE_MS);
            let content = format!("{stale_at} {}\n", token());
            match create_new_private(&path) {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(content.as_bytes()) {
                        drop(file);
                        let _ = fs::remove_file(&path);
                        return Err(format!("cannot write the lock {}: {e}", path.display()));
                    }
                    return Ok(Lock {
                        path,
                        content,
                        acquired,
                        released: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!("cannot create the lock {}: {e}", path.display()));
                }
            }
            let retry_now = match lock_state(&path, start) {
                LockState::Gone => true,
                LockState::Stale => self.break_lock(&path, start),
                LockState::Live => false,
            };
            // Checked on every turn: a lock path that exists but never reads
            // as there (a dangling link) must not loop forever.
            if start.elapsed() >= WAIT {
                return Err(format!(
                    "timed out after {WAIT:?} waiting for the lock {}",
                    path.display()
                ));
            }
            if !retry_now {
                std::thread::sleep(backoff());
            }
        }
    }

    /// Breaks the stale lock at `path`. Renaming it aside first means that of
    /// several waiters that found it stale only one gets it; what it got is
    /// judged again, since it may be a live lock created after the look, and
    /// then is put back. Whether to try again at once: true unless what it
    /// renamed was live or the rename failed for another reason than the
    /// lock being gone.
    fn break_lock(&self, path: &Path, waiting_since: Instant) -> bool {
        let aside = self.dir.join(format!("{BROKEN_PREFIX}{}", token()));
        if let Err(e) = fs::rename(path, &aside) {
            // Gone already (released, or broken by another waiter): try again.
            return e.kind() == io::ErrorKind::NotFound;
        }
        let live = lock_state(&aside, waiting_since) == LockState::Live;
        if live {
            if let Ok(Contents::Bytes(content)) = read_bounded(&aside, MAX_LOCK) {
                // Fails if another lock was taken meanwhile; both holders then
                // find out on release, which checks the lock is still theirs.
                if let Ok(mut file) = create_new_private(path) {
                    let _ = file.write_all(&content);
                }
            }
        }
        let _ = fs::remove_file(&aside);
        !live
    }
}

impl Store for DirectoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.dir.join(file_name(key)?);
        match read_bounded(&path, MAX_VALUE) {
            Ok(Contents::Absent) => Ok(None),
            Ok(Contents::Bytes(bytes)) => Ok(Some(bytes)),
            Ok(Contents::TooLarge(len)) => Err(format!(
                "get {}: {len} bytes, over the {MAX_VALUE}-byte bound",
                path.display()
            )),
            Err(e) => Err(format!("get {}: {e}", path.display())),
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let name = file_name(key)?;
        let path = self.dir.join(&name);
        let len = u64::try_from(value.len()).unwrap_or(u64::MAX);
        if len > MAX_VALUE {
            return Err(format!(
                "set {}: {len} bytes, over the {MAX_VALUE}-byte bound",
                path.display()
            ));
        }
        let lock = self
            .lock(&name)
            .map_err(|e| format!("set {}: {e}", path.display()))?;
        self.write_atomic(&path, value, &lock)
            .map_err(|e| format!("set {}: {e}", path.display()))?;
        lock.release()
            .map_err(|e| format!("set {}: {e}", path.display()))
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        let name = file_name(key)?;
        let path = self.dir.join(&name);
        let lock = self
            .lock(&name)
            .map_err(|e| format!("delete {}: {e}", path.display()))?;
        let removed = lock.check_held().and_then(|()| fs::remove_file(&path));
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("delete {}: {e}", path.display())),
        }
        lock.release()
            .map_err(|e| format!("delete {}: {e}", path.display()))
    }

    fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
        let name = file_name(key)?;
        let path = self.dir.join(&name);
        let failed = |e: &dyn std::fmt::Display| format!("increment {}: {e}", path.display());
        let lock = self.lock(&name).map_err(|e| failed(&e))?;
        let current = match read_bounded(&path, MAX_COUNTER) {
            Ok(Contents::Bytes(bytes)) => parse_u64(&bytes).unwrap_or(0),
            // Not a counter: counts as 0, as an unparsable one does.
            Ok(Contents::Absent | Contents::TooLarge(_)) => 0,
            Err(e) => return Err(failed(&e)),
        };
        let value = current
            .checked_add(delta)
            .ok_or_else(|| failed(&format_args!("{current} + {delta} overflows")))?;
        self.write_atomic(&path, value.to_string().as_bytes(), &lock)
            .map_err(|e| failed(&e))?;
        lock.release().map_err(|e| failed(&e))?;
        Ok(Some(value))
    }
}

/// A held lock file, removed on release (or drop) if it is still this one.
struct Lock {
    path: PathBuf,
    /// What this holder wrote: its deadline and a unique token.
    content: String,
    acquired: Instant,
    released: bool,
}

impl Lock {
    /// An error once the lock has been held so long that others may break it.
    fn check_held(&self) -> io::Result<()> {
        let held = self.acquired.elapsed();
        if held >= HOLD {
            return Err(io::Error::other(format!(
                "held the lock {} for {held:?}, too close to its going stale",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Removes the lock; an error if it is no longer this one, as then
    /// another may have run at the same time.
    fn release(mut self) -> Result<(), String> {
        self.released = true;
        self.remove()
    }

    fn remove(&self) -> Result<(), String> {
        let shown = self.path.display();
        match read_bounded(&self.path, MAX_LOCK) {
            Ok(Contents::Bytes(bytes)) if bytes == self.content.as_bytes() => {
                fs::remove_file(&self.path)
                    .map_err(|e| format!("cannot remove the lock {shown}: {e}"))
            }
            Ok(_) => Err(format!("the lock {shown} was broken while held")),
            Err(e) => Err(format!("cannot read the lock {shown}: {e}")),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.remove();
        }
    }
}

/// What a lock file found in the way is.
#[derive(Debug, PartialEq, Eq)]
enum LockState {
    /// Gone since: try again at once.
    Gone,
    /// Held: wait.
    Live,
    /// Left by a holder that crashed (or overran): break it.
    Stale,
}

/// Judges the lock file at `path` by the deadline in it, or, when that is
/// missing (its holder has not written it yet, or died first) or beyond any
/// holder's (a clock stepped back), by its age; when the age is unknown too,
/// by how long this waiter has waited since `waiting_since`.
fn lock_state(path: &Path, waiting_since: Instant) -> LockState {
    let now = SystemTime::now();
    let deadline = match read_bounded(path, MAX_LOCK) {
        Ok(Contents::Absent) => return LockState::Gone,
        Ok(Contents::Bytes(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.split_whitespace().next())
            .and_then(|first| first.parse::<u64>().ok()),
        Ok(Contents::TooLarge(_)) | Err(_) => None,
    };
    let now_ms = unix_ms(now);
    match deadline {
        Some(stale_at) if stale_at <= now_ms => return LockState::Stale,
        Some(stale_at) if stale_at <= now_ms.saturating_add(STALE_MS) => return LockState::Live,
        _ => {}
    }
    let age = fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok());
    let age = age.unwrap_or_else(|| waiting_since.elapsed());
    if age >= STALE {
        LockState::Stale
    } else {
        LockState::Live
    }
}

/// The file name of `key`, inside the directory and unlike any other key's
/// and the store's own files': bytes outside `[a-z0-9_-]` become `%XX`
/// (uppercase letters too, so that case-insensitive file systems keep keys
/// apart), as does a `.` first (no `.`, `..` or hidden names) or last (which
/// Windows drops). Since `%` is escaped, the mapping is one-to-one. A name
/// over [`MAX_NAME`] bytes becomes a prefix, `+` (never in an escaped name)
/// and the key's SHA-256.
fn file_name(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("the empty key has no file".to_owned());
    }
    let bytes = key.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let mut name = String::with_capacity(bytes.len());
    for (i, &byte) in bytes.iter().enumerate() {
        let keep = matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')
            || (byte == b'.' && i != 0 && i != last);
        if keep {
            name.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(name, "%{byte:02X}");
        }
    }
    if name.len() <= MAX_NAME {
        return Ok(name);
    }
    let mut short = String::with_capacity(SHORT_PREFIX + 1 + 64);
    // The escaped name is ASCII, so any index is a char boundary.
    short.push_str(name.get(..SHORT_PREFIX).unwrap_or_default());
    short.push('+');
    for byte in Sha256::digest(bytes) {
        let _ = write!(short, "{byte:02x}");
    }
    Ok(short)
}

/// A file's bytes, read only if within a bound.
enum Contents {
    Absent,
    TooLarge(u64),
    Bytes(Vec<u8>),
}

/// The bytes of the regular file at `path` if at most `limit`; a bigger file
/// is not read, but for the byte past `limit` should it grow meanwhile.
fn read_bounded(path: &Path, limit: u64) -> io::Result<Contents> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::Absent),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > limit {
        return Ok(Contents::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limit {
        return Ok(Contents::TooLarge(read));
    }
    Ok(Contents::Bytes(bytes))
}

/// Creates `path`, failing if it exists; private to the app on unix (under
/// WASI the host decides).
fn create_new_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A decimal counter, surrounding whitespace allowed.
fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// A name part no other writer uses at the same time: a random number per
/// process or component instance, and a counter. Not the process id:
/// `std::process::id` panics under WASI, and instances in one host process
/// must be told apart anyway.
fn token() -> String {
    static NONCE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        getrandom::u64().unwrap_or_else(|_| {
            // No randomness: the clock, and exclusive creation catches clashes.
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() ^ (u64::from(d.subsec_nanos()) << 32))
        })
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nonce:016x}-{n}")
}

/// A short wait for a held lock, jittered so waiters do not retry in step.
fn backoff() -> Duration {
    let jitter = getrandom::u32().unwrap_or(0) % 2_000;
    Duration::from_micros(500 + u64::from(jitter))
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::error::ErrorKind;

    /// A fresh directory under the system's temporary one, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "gcp-db-connector-directory-store-{test}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn lock_path(dir: &Path, key: &str) -> PathBuf {
        dir.join(format!("{LOCK_PREFIX}{}", file_name(key).unwrap()))
    }

    #[test]
    fn set_get_delete_round_trip() {
        let dir = TempDir::new("round-trip");
        let store = DirectoryStore::open(&dir.0).unwrap();
        assert_eq!(store.path(), dir.0);
        let key = "gcp-db-connector/v3/ab12cd/proj:us-central1:db/iam";
        assert_eq!(store.get(key).unwrap(), None);
        store.delete(key).unwrap();
        store.set(key, b"a longer first value").unwrap();
        assert_eq!(store.get(key).unwrap().unwrap(), b"a longer first value");
        store.set(key, b"short").unwrap();
        assert_eq!(store.get(key).unwrap().unwrap(), b"short");
        store.set(key, b"").unwrap();
        assert_eq!(store.get(key).unwrap().unwrap(), b"");
        // One file, no temporary or lock left behind.
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.0.join(file_name(key).unwrap()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        store.delete(key).unwrap();
        assert_eq!(store.get(key).unwrap(), None);
        assert_eq!(names(&dir.0), Vec::<String>::new());
        assert!(store.get("").is_err());
        assert!(store.set("", b"x").is_err());
    }

    #[test]
    fn file_names_escape_everything_outside_the_safe_set() {
        assert_eq!(
            file_name("gcp-db-connector/v3/ab12cd/proj:us-central1:db/iam").unwrap(),
            "gcp-db-connector%2Fv3%2Fab12cd%2Fproj%3Aus-central1%3Adb%2Fiam"
        );
        assert_eq!(file_name(".").unwrap(), "%2E");
        assert_eq!(file_name("..").unwrap(), "%2E%2E");
        assert_eq!(file_name("...").unwrap(), "%2E.%2E");
        assert_eq!(file_name("a.b").unwrap(), "a.b");
        assert_eq!(file_name(".a").unwrap(), "%2Ea");
        assert_eq!(file_name("A@b").unwrap(), "%41%40b");
        assert_eq!(file_name("%41").unwrap(), "%2541");
        let long = file_name(&"x/".repeat(300)).unwrap();
        assert!(long.len() <= MAX_NAME, "{}", long.len());
        assert!(long.contains('+'));
        assert!(file_name("").is_err());
    }

    #[test]
    fn keys_map_to_distinct_files_inside_the_directory() {
        let dir = TempDir::new("distinct");
        let inner = dir.0.join("store");
        fs::create_dir(&inner).unwrap();
        let store = DirectoryStore::open(&inner).unwrap();
        let keys = [
            "a/b",
            "a:b",
            "a@b",
            "a%2Fb",
            "a%2fb",
            "A/B",
            "..",
            ".",
            "...",
            "./x",
            "../escape",
            "../../escape",
            "/abs",
            ".hidden",
            ".lock-a",
            ".tmp-a",
            "a.",
            "a",
            "A",
            "a/../b",
            "proj:us-central1:db",
            "projects/p/locations/l/clusters/c/instances/i",
            &"x".repeat(300),
            &format!("{}y", "x".repeat(300)),
            &"Y/".repeat(150),
        ];
        for (i, key) in keys.iter().enumerate() {
            store.set(key, i.to_string().as_bytes()).unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(store.get(key).unwrap().unwrap(), i.to_string().as_bytes());
        }
        let files = names(&inner);
        assert_eq!(files.len(), keys.len(), "{files:?}");
        for file in &files {
            assert!(!file.starts_with('.'), "{file}");
            assert!(!file.contains(['/', '\\']), "{file}");
            assert!(file.len() <= MAX_NAME, "{file}");
        }
        // Distinct ignoring case too.
        let mut folded: Vec<String> = files.iter().map(|f| f.to_lowercase()).collect();
        folded.sort();
        folded.dedup();
        assert_eq!(folded.len(), keys.len());
        // Nothing escaped the store's directory.
        assert_eq!(names(&dir.0), ["store"]);
    }

    #[test]
    fn values_over_the_bound_are_refused() {
        let dir = TempDir::new("bound");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "big/value";
        let max = usize::try_from(MAX_VALUE).unwrap();
        fs::write(dir.0.join(file_name(key).unwrap()), vec![b'x'; max + 1]).unwrap();
        let err = store.get(key).unwrap_err();
        assert!(err.contains(&file_name(key).unwrap()), "{err}");
        assert!(err.contains("bound"), "{err}");
        let err = store.set(key, &vec![b'y'; max + 1]).unwrap_err();
        assert!(err.contains("bound"), "{err}");
        store.set(key, &vec![b'z'; max]).unwrap();
        assert_eq!(store.get(key).unwrap().unwrap().len(), max);
    }

    #[test]
    fn readers_never_see_a_torn_value() {
        let dir = TempDir::new("torn");
        let store = Arc::new(DirectoryStore::open(&dir.0).unwrap());
        let key = "torn/value";
        let long = vec![b'a'; 3000];
        let short = vec![b'b'; 100];
        store.set(key, &long).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, done, long, short) =
                (store.clone(), done.clone(), long.clone(), short.clone());
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let value = if i % 2 == 0 { &short } else { &long };
                    store.set(key, value).unwrap();
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut reads = 0u64;
        let mut seen = (false, false);
        while !done.load(Ordering::SeqCst) {
            let value = store.get(key).unwrap().unwrap();
            if value == long {
                seen.0 = true;
            } else if value == short {
                seen.1 = true;
            } else {
                panic!("a torn read of {} bytes", value.len());
            }
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
        eprintln!("{reads} reads, saw long {} short {}", seen.0, seen.1);
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn concurrent_increments_count_exactly() {
        let dir = TempDir::new("increments");
        let store = Arc::new(DirectoryStore::open(&dir.0).unwrap());
        let key = "counter/lease";
        let threads = 50;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.increment(key, 1).unwrap().unwrap()
                })
            })
            .collect();
        let mut values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        values.sort_unstable();
        let expected: Vec<u64> = (1..=u64::try_from(threads).unwrap()).collect();
        assert_eq!(values, expected);
        assert_eq!(store.get(key).unwrap().unwrap(), b"50");
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn increments_from_separate_stores_count_exactly() {
        let dir = TempDir::new("increments-many");
        let key = "counter/many";
        let (threads, each) = (8, 25);
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let store = DirectoryStore::open(&dir.0).unwrap();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..each)
                        .map(|_| store.increment(key, 1).unwrap().unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut values: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        values.sort_unstable();
        let total = u64::try_from(threads * each).unwrap();
        assert_eq!(values, (1..=total).collect::<Vec<u64>>());
        let store = DirectoryStore::open(&dir.0).unwrap();
        assert_eq!(
            store.get(key).unwrap().unwrap(),
            total.to_string().as_bytes()
        );
    }

    #[test]
    fn increment_counts_absent_or_unparsable_as_zero() {
        let dir = TempDir::new("increment-values");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "counter";
        assert_eq!(store.increment(key, 1).unwrap(), Some(1));
        assert_eq!(store.increment(key, 5).unwrap(), Some(6));
        assert_eq!(store.get(key).unwrap().unwrap(), b"6");
        store.set(key, b"not a number").unwrap();
        assert_eq!(store.increment(key, 2).unwrap(), Some(2));
        store.set(key, &[b'9'; 100]).unwrap();
        assert_eq!(store.increment(key, 3).unwrap(), Some(3));
        store.set(key, u64::MAX.to_string().as_bytes()).unwrap();
        let err = store.increment(key, 1).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        assert_eq!(
            store.get(key).unwrap().unwrap(),
            u64::MAX.to_string().as_bytes()
        );
        store.delete(key).unwrap();
        assert_eq!(store.increment(key, 1).unwrap(), Some(1));
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn a_lock_past_its_deadline_is_broken() {
        let dir = TempDir::new("stale-deadline");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "counter/stale";
        let stale_at = unix_ms(SystemTime::now()) - 10_000;
        fs::write(
            lock_path(&dir.0, key),
            format!("{stale_at} crashed-holder\n"),
        )
        .unwrap();
        // Broken, not waited out: a lock wait that ran out is an error.
        assert_eq!(store.increment(key, 1).unwrap(), Some(1));
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn an_old_lock_without_a_deadline_is_broken() {
        let dir = TempDir::new("stale-age");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "counter/stale-age";
        let file = File::create(lock_path(&dir.0, key)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        drop(file);
        // Broken, not waited out: a lock wait that ran out is an error.
        assert_eq!(store.increment(key, 1).unwrap(), Some(1));
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn an_old_lock_with_a_bogus_deadline_is_broken() {
        let dir = TempDir::new("stale-bogus");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "counter/stale-bogus";
        let far = unix_ms(SystemTime::now()) + 3_600_000;
        let path = lock_path(&dir.0, key);
        fs::write(&path, format!("{far} clock-went-back\n")).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        // Broken, not waited out: a lock wait that ran out is an error.
        assert_eq!(store.increment(key, 1).unwrap(), Some(1));
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn a_live_lock_is_waited_for_until_its_deadline() {
        let dir = TempDir::new("live");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let key = "counter/live";
        let start = Instant::now();
        let stale_at = unix_ms(SystemTime::now()) + 1_000;
        fs::write(lock_path(&dir.0, key), format!("{stale_at} slow-holder\n")).unwrap();
        let result = store.increment(key, 1);
        let took = start.elapsed();
        assert_eq!(result.unwrap(), Some(1));
        // It waited for the holder (slack for the deadline's rounding to a
        // millisecond and for the wall clock against the monotonic one)
        // before taking over.
        assert!(took >= Duration::from_millis(990), "{took:?}");
        assert_eq!(names(&dir.0), [file_name(key).unwrap()]);
    }

    #[test]
    fn a_held_lock_is_live_and_release_notices_a_takeover() {
        let dir = TempDir::new("takeover");
        let store = DirectoryStore::open(&dir.0).unwrap();
        let name = file_name("counter/held").unwrap();
        let lock = store.lock(&name).unwrap();
        assert_eq!(lock_state(&lock.path, Instant::now()), LockState::Live);
        let path = lock.path.clone();
        // While it is held nobody else creates it.
        let second = create_new_private(&path).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AlreadyExists);
        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(content, lock.content);
        let stale_at: u64 = content.split_whitespace().next().unwrap().parse().unwrap();
        assert!(stale_at > unix_ms(SystemTime::now()));
        // Someone else's lock in its place: release must say so and leave it.
        fs::write(&path, "0 someone-else\n").unwrap();
        let err = lock.release().unwrap_err();
        assert!(err.contains("broken while held"), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn open_refuses_a_missing_directory_or_a_file() {
        let dir = TempDir::new("open");
        let missing = dir.0.join("missing");
        let err = DirectoryStore::open(&missing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("--dir"), "{err}");
        assert!(!missing.exists());
        let file = dir.0.join("file");
        fs::write(&file, b"not a directory").unwrap();
        let err = DirectoryStore::open(&file).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("not a directory"), "{err}");
        // The probe leaves nothing behind.
        DirectoryStore::open(&dir.0).unwrap();
        assert_eq!(names(&dir.0), ["file"]);
    }
}
