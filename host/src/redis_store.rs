//! The host's shared store on a Redis server, for several host processes
//! (on several machines) serving one app, as a real deployment does: Spin's
//! runtime config offers Redis for its key-value stores for the same reason.
//!
//! **Key layout.** The value of `key` in bucket `bucket` is the Redis string
//! at `<prefix>:<bucket>:<key>` (prefix [`DEFAULT_PREFIX`] unless configured),
//! holding the bytes exactly as the guest wrote them. Bucket names are the
//! configured ones (as with the in-memory store, [`DEFAULT_BUCKETS`] by
//! default) and may not contain `:`, so no two buckets' keys can meet; the
//! key itself may hold anything. `increment` is Redis's atomic `INCRBY`, so a
//! counter (the connector's lease) is one across every process; `list-keys`
//! is a `SCAN` of `<prefix>:<bucket>:*`.
//!
//! **Failures.** The connection is made on first use (a host starts while
//! Redis is down) and again after it breaks. Every connect and every command
//! has a timeout ([`RedisOptions::connect_timeout`],
//! [`RedisOptions::response_timeout`]); Redis being down, refusing, or slow
//! is a [`KeyValueError::Backend`], which reaches the guest as the WIT
//! `error::other` and never traps it. After a failed connect, a broken
//! connection or a timeout, the store answers that error at once for
//! [`RETRY_AFTER`] instead of trying again on every call, so a server that is
//! gone or hung costs a request about one timeout, not one per call. Errors
//! name the server by host and port, never with the URL's password.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, RedisError};
use tokio::sync::Mutex;

use crate::memory_store::{KeyValueError, DEFAULT_BUCKETS};

/// The key prefix unless configured otherwise: `gcp-db-host:<bucket>:<key>`.
pub const DEFAULT_PREFIX: &str = "gcp-db-host";

/// How long a connect may take unless configured otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a command may wait for its answer unless configured otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// After a failed connect, a broken connection or a timeout, how long calls
/// fail at once before the next connect.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: u32 = 1000;

/// How to use the Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The first part of every key ([`DEFAULT_PREFIX`]): hosts serving one
    /// app share it; other apps on the same server take another.
    pub prefix: String,
    /// The buckets, as with the in-memory store ([`DEFAULT_BUCKETS`]).
    pub buckets: Vec<String>,
    /// The limit of one connect ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// The limit of one command's answer ([`DEFAULT_RESPONSE_TIMEOUT`]).
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            buckets: DEFAULT_BUCKETS.map(str::to_string).to_vec(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

/// Buckets on a Redis server (see the [module docs](self) for the layout).
///
/// A cheap handle: clones share one connection. It needs a tokio runtime
/// (the connection's reader runs on it); a connection made on a runtime that
/// has since stopped is noticed as broken and made again.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `redis://host:port/db`, without credentials: for messages.
    endpoint: String,
    prefix: String,
    buckets: BTreeSet<String>,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    response_timeout: Duration,
    link: Mutex<Link>,
}

/// The connection, or when the last connect failed.
#[derive(Default)]
struct Link {
    connection: Option<MultiplexedConnection>,
    retry_at: Option<Instant>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.prefix)
            .field("buckets", &self.inner.buckets)
            .finish()
    }
}

impl RedisStore {
    /// A store on the server at `url` (`redis://[user:password@]host:port[/db]`
    /// or `redis+unix:///path`). Nothing is connected yet: the first call
    /// connects, so a host starts even while Redis is down.
    ///
    /// Errors: a URL that does not parse, an empty prefix, no bucket, or a
    /// bucket name that is empty or holds `:`. The message never repeats
    /// the URL (it may hold a password).
    pub fn open(url: &str, options: RedisOptions) -> Result<RedisStore, String> {
        if url.starts_with("rediss://") {
            return Err(
                "TLS (rediss://) is not built in: reach Redis over a private \
                        network or a local TLS tunnel, with redis://"
                    .into(),
            );
        }
        let client = Client::open(url).map_err(|e| {
            format!(
                "not a Redis URL ({}): expected redis://[user:password@]host:port[/db]",
                e.category()
            )
        })?;
        if options.prefix.is_empty() {
            return Err("the Redis key prefix is empty".into());
        }
        if options.buckets.is_empty() {
            return Err("no bucket: name at least one".into());
        }
        if let Some(bad) = options
            .buckets
            .iter()
            .find(|b| b.is_empty() || b.contains(':'))
        {
            return Err(format!(
                "bucket {bad:?}: a bucket on Redis needs a name without ':'"
            ));
        }
        let info = client.get_connection_info();
        let endpoint = format!("redis://{}/{}", info.addr(), info.redis_settings().db());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                endpoint,
                prefix: options.prefix,
                buckets: options.buckets.into_iter().collect(),
                config,
                connect_timeout: options.connect_timeout,
                response_timeout: options.response_timeout,
                link: Mutex::new(Link::default()),
            }),
        })
    }

    /// The server, as `redis://host:port/db` (no credentials).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The configured bucket names, sorted.
    pub fn bucket_names(&self) -> Vec<String> {
        self.inner.buckets.iter().cloned().collect()
    }

    /// Whether a bucket called `name` is configured (what `open` checks,
    /// without asking Redis).
    pub fn has_bucket(&self, name: &str) -> bool {
        self.inner.buckets.contains(name)
    }

    /// The Redis key holding `key` of `bucket`: `<prefix>:<bucket>:<key>`.
    pub fn redis_key(&self, bucket: &str, key: &str) -> Result<String, KeyValueError> {
        if !self.has_bucket(bucket) {
            return Err(KeyValueError::NoSuchStore {
                bucket: bucket.into(),
            });
        }
        Ok(format!("{}:{bucket}:{key}", self.inner.prefix))
    }

    /// Whether the server answers a `PING` (a check for start-up messages;
    /// the store works without it).
    pub async fn ping(&self) -> Result<(), KeyValueError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        match pong.as_str() {
            "PONG" => Ok(()),
            other => Err(self.backend(format!("answered PING with {other:?}"))),
        }
    }

    /// The value of `key` in `bucket`, if set.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        let k = self.redis_key(bucket, key)?;
        self.query(redis::cmd("GET").arg(k)).await
    }

    /// Sets `key` in `bucket` to `value`, replacing any earlier value.
    pub async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), KeyValueError> {
        let k = self.redis_key(bucket, key)?;
        self.query(redis::cmd("SET").arg(k).arg(value)).await
    }

    /// Removes `key` from `bucket`; absent keys are no error.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), KeyValueError> {
        let k = self.redis_key(bucket, key)?;
        let _removed: u64 = self.query(redis::cmd("DEL").arg(k)).await?;
        Ok(())
    }

    /// Whether `key` is set in `bucket`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KeyValueError> {
        let k = self.redis_key(bucket, key)?;
        let n: u64 = self.query(redis::cmd("EXISTS").arg(k)).await?;
        Ok(n > 0)
    }

    /// The keys of `bucket`, sorted.
    pub async fn keys(&self, bucket: &str) -> Result<Vec<String>, KeyValueError> {
        let head = self.redis_key(bucket, "")?;
        let pattern = format!("{}*", glob_escape(&head));
        let mut keys = BTreeSet::new();
        let mut cursor = 0u64;
        // SCAN ends (cursor 0) after a full pass, whatever happens to the
        // keys meanwhile; each step is a command with its own timeout.
        loop {
            let (next, found): (u64, Vec<Vec<u8>>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            // A guest's key is a string; anything else was not written
            // through this store and is left out.
            keys.extend(found.into_iter().filter_map(|k| {
                let k = String::from_utf8(k).ok()?;
                Some(k.strip_prefix(&head)?.to_string())
            }));
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Atomically adds `delta` to the number at `key` (absent counts as 0)
    /// and returns the sum: Redis's `INCRBY`, one counter across every
    /// process on the server.
    ///
    /// A value Redis does not take as a decimal integer is
    /// [`KeyValueError::NotANumber`], and so is a negative sum (set by hand:
    /// Redis counts in i64); passing `i64::MAX` is [`KeyValueError::Overflow`].
    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        delta: u64,
    ) -> Result<u64, KeyValueError> {
        let k = self.redis_key(bucket, key)?;
        let overflow = || KeyValueError::Overflow { key: key.into() };
        let not_a_number = || KeyValueError::NotANumber { key: key.into() };
        let delta = i64::try_from(delta).map_err(|_| overflow())?;
        let sum: i64 = match self.call(redis::cmd("INCRBY").arg(k).arg(delta)).await {
            Ok(sum) => sum,
            // Redis's words for the two refusals (t_string.c).
            Err(Failure::Refused(err)) => {
                let detail = err.detail().unwrap_or("");
                return Err(if detail.contains("overflow") {
                    overflow()
                } else if detail.contains("not an integer") {
                    not_a_number()
                } else {
                    self.backend(describe(&err))
                });
            }
            Err(Failure::Other(what)) => return Err(self.backend(what)),
        };
        u64::try_from(sum).map_err(|_| not_a_number())
    }

    /// Deletes every key under this store's prefix, in every bucket (for
    /// tests and benchmarks that reuse a server).
    pub async fn clear(&self) -> Result<(), KeyValueError> {
        for bucket in self.bucket_names() {
            for key in self.keys(&bucket).await? {
                self.delete(&bucket, &key).await?;
            }
        }
        Ok(())
    }

    /// [`RedisStore::call`], its failure as the store's error.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KeyValueError> {
        self.call(cmd).await.map_err(|failure| match failure {
            Failure::Refused(err) => self.backend(describe(&err)),
            Failure::Other(what) => self.backend(what),
        })
    }

    /// Runs `cmd` on the connection (made first if need be), within the
    /// response timeout; a broken connection is dropped for the next call
    /// to replace.
    async fn call<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Failure> {
        let mut connection = self.connection().await.map_err(Failure::Other)?;
        let limit = self.inner.response_timeout;
        match tokio::time::timeout(limit, cmd.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            // The server's own refusals leave the connection usable.
            Ok(Err(err)) if matches!(err.kind(), ErrorKind::Server(_)) => {
                Err(Failure::Refused(err))
            }
            Ok(Err(err)) => {
                self.forget().await;
                Err(Failure::Other(describe(&err)))
            }
            Err(_elapsed) => {
                self.forget().await;
                Err(Failure::Other(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )))
            }
        }
    }

    /// The shared connection, connecting if there is none (one connect at a
    /// time: concurrent callers wait for it, at most the connect timeout).
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut link = self.inner.link.lock().await;
        if let Some(connection) = &link.connection {
            return Ok(connection.clone());
        }
        if let Some(at) = link.retry_at {
            if Instant::now() < at {
                return Err(format!(
                    "failed at the last try; trying again after a {} ms pause",
                    RETRY_AFTER.as_millis()
                ));
            }
        }
        let limit = self.inner.connect_timeout;
        let connecting = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&self.inner.config);
        let failure = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(connection)) => {
                link.connection = Some(connection.clone());
                link.retry_at = None;
                return Ok(connection);
            }
            Ok(Err(err)) => format!("cannot connect: {}", describe(&err)),
            Err(_elapsed) => format!("cannot connect within {} ms", limit.as_millis()),
        };
        link.retry_at = Some(Instant::now() + RETRY_AFTER);
        Err(failure)
    }

    /// Drops a connection that broke or went silent, and pauses like a
    /// failed connect: a server that stopped answering costs the calls
    /// after it nothing.
    async fn forget(&self) {
        let mut link = self.inner.link.lock().await;
        link.connection = None;
        link.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    fn backend(&self, what: String) -> KeyValueError {
        KeyValueError::Backend {
            reason: format!("Redis at {}: {what}", self.inner.endpoint),
        }
    }
}

/// Why a command failed.
enum Failure {
    /// The server answered with an error (the connection is fine).
    Refused(RedisError),
    /// No answer: not connected, the connection broke, or the timeout.
    Other(String),
}

/// What went wrong, in words that hold no credential or value: the server's
/// error code and message, or the kind of failure.
fn describe(err: &RedisError) -> String {
    match err.kind() {
        ErrorKind::Server(_) => {
            let code = err.code().unwrap_or("ERR");
            match err.detail() {
                Some(detail) => format!("refused the command: {code} {detail}"),
                None => format!("refused the command: {code}"),
            }
        }
        _ if err.is_connection_refusal() => "connection refused".into(),
        _ if err.is_timeout() => "timed out".into(),
        _ if err.is_connection_dropped() => "connection lost".into(),
        _ => err.category().to_string(),
    }
}

/// `text` with Redis's glob characters escaped, for a `MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A throwaway `redis-server` on a free loopback port, for tests and
/// benchmarks: no persistence (`--save '' --appendonly no`), its files in a
/// temporary directory, killed on drop.
///
/// The binary is `$GCPDB_REDIS_SERVER`, else `redis-server` on the `PATH`
/// (Debian's `redis-server` package; scripts/common.sh installs it).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts a server and waits (at most 10 s) until it answers.
    pub fn start() -> std::io::Result<RedisServer> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "gcpdb-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            child: None,
            port,
            dir,
        };
        server.restart()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing is saved),
    /// and waits (at most 10 s) until it answers.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let binary =
            std::env::var_os("GCPDB_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let child = std::process::Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {}: {e} (install Debian's redis-server, as \
                         scripts/common.sh does)",
                        std::path::Path::new(&binary).display()
                    ),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.answers_ping() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} exited with {status}",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "redis-server did not answer on port {} within 10 s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw `PING` on a new connection, with short timeouts (no runtime
    /// needed).
    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` of each test's own (scripts/test
    //! installs it; a plain `cargo test` lists these as ignored).

    use super::*;
    use crate::shared_store::SharedStore;

    fn options(prefix: &str) -> RedisOptions {
        RedisOptions {
            prefix: prefix.into(),
            ..RedisOptions::default()
        }
    }

    fn server() -> RedisServer {
        RedisServer::start().expect("redis-server (scripts/test installs it)")
    }

    /// The raw value at `key`, read with a client of the test's own.
    async fn raw_get(url: &str, key: &str) -> Option<Vec<u8>> {
        let client = Client::open(url).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    #[tokio::test]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn values_are_kept_as_written_under_prefix_bucket_key() {
        let redis = server();
        let store = RedisStore::open(&redis.url(), options("app")).unwrap();
        let value = vec![0u8, 0xff, b'\n', b'x'];
        let key = "gcp-db-connector/v3/ab/p:r:i/native";
        store.set("default", key, value.clone()).await.unwrap();
        assert_eq!(store.get("default", key).await, Ok(Some(value.clone())));
        assert_eq!(
            raw_get(&redis.url(), &format!("app:default:{key}")).await,
            Some(value)
        );
        assert_eq!(store.get("gcp-db-connector", key).await, Ok(None));
        assert_eq!(store.exists("default", key).await, Ok(true));
        store.set("default", "a*b", b"1".to_vec()).await.unwrap();
        assert_eq!(
            store.keys("default").await,
            Ok(vec!["a*b".to_string(), key.to_string()])
        );
        store.delete("default", key).await.unwrap();
        store.delete("default", "never-set").await.unwrap();
        assert_eq!(store.exists("default", key).await, Ok(false));
        assert_eq!(store.keys("default").await, Ok(vec!["a*b".to_string()]));
        assert_eq!(store.keys("gcp-db-connector").await, Ok(vec![]));
        store.clear().await.unwrap();
        assert_eq!(store.keys("default").await, Ok(vec![]));
    }

    #[tokio::test]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn the_wit_glue_works_the_same_on_redis() {
        let redis = server();
        let store = RedisStore::open(&redis.url(), options("glue")).unwrap();
        crate::keyvalue::tests::views_share_one_store(&SharedStore::Redis(store.clone())).await;
        assert_eq!(store.keys("default").await, Ok(vec!["n".to_string()]));
    }

    #[tokio::test]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn prefixes_and_buckets_keep_apart() {
        let redis = server();
        // Glob characters in the prefix match only themselves in SCAN.
        let one = RedisStore::open(&redis.url(), options("a*[x]")).unwrap();
        let two = RedisStore::open(&redis.url(), options("ab")).unwrap();
        one.set("default", "k", b"one".to_vec()).await.unwrap();
        two.set("default", "k", b"two".to_vec()).await.unwrap();
        two.set("default", "only-two", b"2".to_vec()).await.unwrap();
        assert_eq!(one.get("default", "k").await, Ok(Some(b"one".to_vec())));
        assert_eq!(one.keys("default").await, Ok(vec!["k".to_string()]));
        assert_eq!(two.keys("default").await.unwrap().len(), 2);

        let err = one.get("nope", "k").await.unwrap_err();
        assert_eq!(
            err,
            KeyValueError::NoSuchStore {
                bucket: "nope".into()
            }
        );
        assert!(!one.has_bucket("nope"));
        assert_eq!(one.bucket_names(), ["default", "gcp-db-connector"]);

        let custom = RedisOptions {
            buckets: vec!["cache".into()],
            ..options("c")
        };
        let custom = RedisStore::open(&redis.url(), custom).unwrap();
        assert!(custom.has_bucket("cache") && !custom.has_bucket("default"));
        for bad in [
            RedisOptions {
                buckets: vec!["a:b".into()],
                ..options("p")
            },
            RedisOptions {
                buckets: vec![],
                ..options("p")
            },
            RedisOptions {
                buckets: vec!["".into()],
                ..options("p")
            },
            options(""),
        ] {
            assert!(
                RedisStore::open(&redis.url(), bad.clone()).is_err(),
                "{bad:?}"
            );
        }
        for url in ["rediss://h:1", "http://h:1", "not a url"] {
            let err = RedisStore::open(url, options("p")).unwrap_err();
            assert!(!err.contains(url), "{err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn increments_from_separate_connections_lose_nothing() {
        let redis = server();
        // Two stores, two connections: as two host processes.
        let stores = [
            RedisStore::open(&redis.url(), options("n")).unwrap(),
            RedisStore::open(&redis.url(), options("n")).unwrap(),
        ];
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        store.increment("default", "n", 1).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            stores[0].get("default", "n").await,
            Ok(Some(b"1600".to_vec()))
        );
        assert_eq!(stores[1].increment("default", "n", 0).await, Ok(1600));
        assert_eq!(stores[1].increment("default", "fresh", 7).await, Ok(7));
    }

    #[tokio::test]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn increment_refuses_non_numbers_and_overflow() {
        let redis = server();
        let store = RedisStore::open(&redis.url(), options("i")).unwrap();
        for bad in [&b"abc"[..], b"1.5", b" 7", b"", &[0xff, 0xfe]] {
            store.set("default", "n", bad.to_vec()).await.unwrap();
            let err = store.increment("default", "n", 1).await.unwrap_err();
            assert_eq!(err, KeyValueError::NotANumber { key: "n".into() });
            assert_eq!(store.get("default", "n").await, Ok(Some(bad.to_vec())));
        }
        store
            .set("default", "max", i64::MAX.to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(
            store.increment("default", "max", 1).await,
            Err(KeyValueError::Overflow { key: "max".into() })
        );
        assert_eq!(
            store.increment("default", "other", u64::MAX).await,
            Err(KeyValueError::Overflow {
                key: "other".into()
            })
        );
        assert_eq!(store.get("default", "other").await, Ok(None));
        // Redis counts in i64: a negative sum is no u64.
        store.set("default", "neg", b"-5".to_vec()).await.unwrap();
        assert_eq!(
            store.increment("default", "neg", 1).await,
            Err(KeyValueError::NotANumber { key: "neg".into() })
        );
    }

    #[tokio::test]
    #[ignore = "needs redis-server: scripts/test runs it"]
    async fn a_stopped_server_is_a_store_error_until_it_is_back() {
        let mut redis = server();
        let url = format!("redis://:hunter2-not-used@127.0.0.1:{}", redis.port());
        let store = RedisStore::open(&redis.url(), options("down")).unwrap();
        store.set("default", "k", b"v".to_vec()).await.unwrap();
        redis.stop();
        for _ in 0..3 {
            match store.get("default", "k").await {
                Err(KeyValueError::Backend { reason }) => {
                    assert!(
                        reason.contains(&format!("127.0.0.1:{}", redis.port())),
                        "{reason}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(store.increment("default", "n", 1).await.is_err());
        // A password in the URL is in no message.
        let with_password = RedisStore::open(&url, options("down")).unwrap();
        let err = with_password.get("default", "k").await.unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{with_password:?}").contains("hunter2"));

        // Back (empty: nothing is saved), and the same handle reconnects.
        redis.restart().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.set("default", "k", b"again".to_vec()).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no reconnect within 10 s: {e}"),
            }
        }
        assert_eq!(store.get("default", "k").await, Ok(Some(b"again".to_vec())));
    }

    /// A server that accepts and never answers: every call ends in a store
    /// error, bounded by the timeouts, and the next calls fail at once
    /// rather than waiting again.
    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepted connections are held open and never answered.
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        let store = RedisStore::open(
            &format!("redis://127.0.0.1:{port}"),
            RedisOptions {
                connect_timeout: Duration::from_millis(200),
                response_timeout: Duration::from_millis(200),
                ..options("silent")
            },
        )
        .unwrap();
        let started = Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(10), store.get("default", "k"))
            .await
            .expect("the store's own timeout ends the call");
        match first {
            Err(KeyValueError::Backend { reason }) => assert!(
                reason.contains("cannot connect") || reason.contains("no answer"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        eprintln!(
            "a silent server: first call failed after {:?}",
            started.elapsed()
        );
        let again = tokio::time::timeout(Duration::from_secs(10), store.get("default", "k"))
            .await
            .expect("the retry pause answers at once");
        match again {
            Err(KeyValueError::Backend { reason }) => {
                assert!(reason.contains("ms pause"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!held.lock().unwrap().is_empty(), "the store did connect");
    }
}
