//! The connection to Redis, the script, the circuit breaker, and how failures are classified.

use core::fmt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The decision script (every algorithm, one or several limits, all or nothing).
pub(crate) const SCRIPT: &str = include_str!("decide.lua");

/// How many cluster redirections (`MOVED`, `ASK`) one decision follows before it fails as
/// [`FailureClass::NotExecuted`]. One covers a finished slot move and a slot being migrated;
/// a second covers a move that completes while the first redirection is followed.
pub const MAX_REDIRECTS: u32 = 2;

/// The first wait after a `TRYAGAIN` reply (keys of one decision split by a slot migration);
/// each further wait doubles, up to [`TRYAGAIN_MAX_WAIT`].
const TRYAGAIN_FIRST_WAIT: Duration = Duration::from_millis(2);
const TRYAGAIN_MAX_WAIT: Duration = Duration::from_millis(50);

/// How a call to Redis failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureClass {
    /// The script certainly did not run: the connection was refused, or the server answered
    /// with an error (`NOSCRIPT` twice, `OOM`, `READONLY`, `LOADING`, `BUSY`, a redirection after
    /// [`MAX_REDIRECTS`] followed, `TRYAGAIN` when the budget leaves no room to wait, …).
    NotExecuted,
    /// It may or may not have run: the time budget ran out, or the connection broke, after the
    /// request could have been sent. Never retried automatically: a retry could count the
    /// request twice.
    Indeterminate,
    /// Nothing was sent: the circuit breaker is open after repeated failures.
    CircuitOpen,
}

/// A failed call to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub(crate) class: FailureClass,
    pub(crate) retry_after: Duration,
    pub(crate) cause: String,
}

impl Unavailable {
    /// How it failed.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// When trying again is worthwhile (the breaker's open time, or its remainder).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The underlying error, as text.
    pub fn cause(&self) -> &str {
        &self.cause
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            FailureClass::NotExecuted => "not executed",
            FailureClass::Indeterminate => "indeterminate",
            FailureClass::CircuitOpen => "circuit open",
        };
        write!(f, "redis unavailable ({class}): {}", self.cause)
    }
}

impl std::error::Error for Unavailable {}

/// Options of a [`RedisBackend`].
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Consecutive failures after which the circuit breaker opens (default 3).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call may go through (default 500 ms).
    pub breaker_open_for: Duration,
    /// The longest a (re)connection attempt may take (default 1 s). Each decision is also
    /// bounded by its limiter's own time budget.
    pub connect_timeout: Duration,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            breaker_failures: 3,
            breaker_open_for: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection to Redis (standalone, or a Redis Cluster) shared by any number of
/// [`RedisRateLimiter`](super::RedisRateLimiter)s. Clones share the connection and the
/// circuit breaker.
///
/// The standalone connection is redis-rs' `ConnectionManager`, which reconnects on its own; the
/// cluster connection follows the cluster's slot map and reconnects to nodes. Neither retries a
/// command: a request whose fate is unknown is never sent twice (see [`FailureClass`]).
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    hash: String,
    breaker: Breaker,
    reloads: AtomicU64,
    sent: AtomicU64,
    redirects: AtomicU64,
    cluster_waits: AtomicU64,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.conn {
            Conn::Single(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisBackend")
            .field("kind", &kind)
            .field("script", &self.inner.hash)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connect to a standalone server (`redis://host:port/db`), now: fails if it cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Self::connect_with(url, BackendOptions::default()).await
    }

    /// [`connect`](Self::connect) with options.
    pub async fn connect_with(url: &str, options: BackendOptions) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, manager_config(&options)).await?;
        Ok(Self::new(Conn::Single(conn), options))
    }

    /// A standalone connection made on first use, so that a service can start while Redis is
    /// down (its limiters then follow their failure policy). Fails only on a malformed URL.
    pub fn connect_lazy(url: &str, options: BackendOptions) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config(&options))?;
        Ok(Self::new(Conn::Single(conn), options))
    }

    /// Connect to a Redis Cluster through any of its nodes (`redis://host:port`).
    ///
    /// The client is built without command retries of its own, so that a request whose fate is
    /// unknown is never repeated. Redirections during resharding are followed here instead:
    /// a `MOVED` or `ASK` reply says the script did not run on that node, so the decision is
    /// sent to the node named in the reply (after `ASKING` for `ASK`), at most
    /// [`MAX_REDIRECTS`] times within the limiter's time budget; a `TRYAGAIN` reply (the
    /// decision's keys split between two nodes mid-migration) is waited out within the budget.
    /// A `MOVED` reply also makes the client refresh its slot map for later calls.
    pub async fn cluster<I, S>(nodes: I, options: BackendOptions) -> Result<Self, RedisError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let client = redis::cluster::ClusterClient::builder(nodes)
            .retries(0)
            .connection_timeout(options.connect_timeout)
            .build()?;
        let conn = client.get_async_connection().await?;
        Ok(Self::new(Conn::Cluster(conn), options))
    }

    fn new(conn: Conn, options: BackendOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                hash: redis::Script::new(SCRIPT).get_hash().to_owned(),
                breaker: Breaker::new(options.breaker_failures, options.breaker_open_for),
                reloads: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                redirects: AtomicU64::new(0),
                cluster_waits: AtomicU64::new(0),
            }),
        }
    }

    /// The SHA1 of the decision script (what `EVALSHA` names).
    pub fn script_hash(&self) -> &str {
        &self.inner.hash
    }

    /// How many times the script was missing (`NOSCRIPT`) and was sent again with `EVAL`.
    pub fn script_reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// How many script commands (`EVALSHA` and `EVAL`) this backend has sent.
    pub fn commands_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// How many cluster redirections (`MOVED`, `ASK`) this backend has followed.
    pub fn redirects_followed(&self) -> u64 {
        self.inner.redirects.load(Ordering::Relaxed)
    }

    /// How many times a decision waited and tried again after a `TRYAGAIN` reply (a slot
    /// migration had split its keys between two nodes).
    pub fn cluster_waits(&self) -> u64 {
        self.inner.cluster_waits.load(Ordering::Relaxed)
    }

    /// Whether the circuit breaker is open (calls fail at once without reaching Redis).
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// How many times the circuit breaker has opened.
    pub fn breaker_trips(&self) -> u64 {
        self.inner.breaker.trips.load(Ordering::Relaxed)
    }

    pub(crate) fn same(&self, other: &RedisBackend) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn breaker_open_for(&self) -> Duration {
        self.inner.breaker.open_for
    }

    /// Run the script once within `budget`: `EVALSHA`, and on `NOSCRIPT` one `EVAL` of the
    /// body (which also caches it on that node); on a cluster, a `MOVED` or `ASK` reply is
    /// followed to the node it names (up to [`MAX_REDIRECTS`]), and after `TRYAGAIN` the call
    /// waits (2 ms, doubling up to 50 ms) and is made again while the budget leaves room.
    /// These replies all say that the script did not run; nothing whose fate is unknown is
    /// ever sent again.
    pub(crate) async fn eval(
        &self,
        keys: &[Vec<u8>],
        args: &[i64],
        budget: Duration,
    ) -> Result<Vec<i64>, Unavailable> {
        let b = &self.inner.breaker;
        if let Some(wait) = b.refuse() {
            return Err(Unavailable {
                class: FailureClass::CircuitOpen,
                retry_after: wait,
                cause: "circuit breaker open after repeated failures".to_owned(),
            });
        }
        let deadline = tokio::time::Instant::now() + budget;
        let call = async {
            let mut conn = self.inner.conn.clone();
            let mut to = Target::Slot;
            let mut followed = 0;
            let mut wait = TRYAGAIN_FIRST_WAIT;
            loop {
                let e = match self.run_script(&mut conn, &to, keys, args).await {
                    Err(e) if matches!(conn, Conn::Cluster(_)) => e,
                    other => return other,
                };
                if e.kind() == ErrorKind::Server(ServerErrorKind::TryAgain) {
                    // A migration has split the declared keys between two nodes: nothing ran.
                    // Wait for it while the budget leaves room for the wait and another try.
                    if tokio::time::Instant::now() + 2 * wait > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (2 * wait).min(TRYAGAIN_MAX_WAIT);
                    self.inner.cluster_waits.fetch_add(1, Ordering::Relaxed);
                    to = Target::Slot;
                    continue;
                }
                match Target::redirect(&e) {
                    Some(next) if followed < MAX_REDIRECTS => {
                        followed += 1;
                        self.inner.redirects.fetch_add(1, Ordering::Relaxed);
                        to = next;
                    }
                    _ => return Err(e),
                }
            }
        };
        let result = match tokio::time::timeout(budget, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Unavailable {
                class: classify(&e),
                retry_after: b.open_for,
                cause: e.to_string(),
            }),
            Err(_) => Err(Unavailable {
                class: FailureClass::Indeterminate,
                retry_after: b.open_for,
                cause: format!("no reply within the time budget of {budget:?}"),
            }),
        };
        match &result {
            Ok(_) => b.success(),
            Err(_) => b.failure(),
        }
        result
    }
}

impl RedisBackend {
    /// `EVALSHA` at `to`, and on `NOSCRIPT` one `EVAL` there.
    async fn run_script(
        &self,
        conn: &mut Conn,
        to: &Target,
        keys: &[Vec<u8>],
        args: &[i64],
    ) -> Result<Vec<i64>, RedisError> {
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
        match run(
            conn,
            to,
            script_cmd("EVALSHA", &self.inner.hash, keys, args),
        )
        .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.inner.reloads.fetch_add(1, Ordering::Relaxed);
                self.inner.sent.fetch_add(1, Ordering::Relaxed);
                run(conn, to, script_cmd("EVAL", SCRIPT, keys, args)).await
            }
            other => other,
        }
    }
}

/// Where a script command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Where the connection routes it: the key's slot on a cluster.
    Slot,
    /// The node a `MOVED` reply named.
    Moved { host: String, port: u16 },
    /// The node an `ASK` reply named, preceded by `ASKING` on the same connection.
    Ask { host: String, port: u16 },
}

impl Target {
    /// The target a `MOVED` or `ASK` reply names; `None` for any other error.
    fn redirect(e: &RedisError) -> Option<Target> {
        let (addr, _slot) = e.redirect_node()?;
        let (host, port) = addr.rsplit_once(':')?;
        let (host, port) = (host.to_owned(), port.parse().ok()?);
        match e.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => Some(Target::Moved { host, port }),
            ErrorKind::Server(ServerErrorKind::Ask) => Some(Target::Ask { host, port }),
            _ => None,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn manager_config(options: &BackendOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(500))
}

fn script_cmd(command: &str, script: &str, keys: &[Vec<u8>], args: &[i64]) -> redis::Cmd {
    let mut cmd = redis::cmd(command);
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}

async fn run(conn: &mut Conn, to: &Target, cmd: redis::Cmd) -> Result<Vec<i64>, RedisError> {
    let (c, node, asking) = match (conn, to) {
        (conn, Target::Slot) => return cmd.query_async(conn).await,
        (Conn::Cluster(c), Target::Moved { host, port }) => (c, node(host, *port), false),
        (Conn::Cluster(c), Target::Ask { host, port }) => (c, node(host, *port), true),
        // Redirections are only followed on a cluster connection.
        (Conn::Single(c), _) => return cmd.query_async(c).await,
    };
    let reply = if asking {
        let mut p = redis::pipe();
        p.cmd("ASKING").add_command(cmd);
        // The reply of the second command only.
        let mut replies = c.route_pipeline(p, 1, 1, node).await?;
        replies.pop().unwrap_or(redis::Value::Nil)
    } else {
        c.route_command(cmd, RoutingInfo::SingleNode(node)).await?
    };
    Ok(redis::from_redis_value(reply)?)
}

fn node(host: &str, port: u16) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    }
}

/// Whether the script can have run: a reply from the server (even an error) or a refused
/// connection says it did not; a broken connection or a garbled reply leaves it unknown.
fn classify(e: &RedisError) -> FailureClass {
    if e.is_connection_refusal() {
        return FailureClass::NotExecuted;
    }
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::ClusterConnectionNotFound => {
            FailureClass::NotExecuted
        }
        _ => FailureClass::Indeterminate,
    }
}

/// Opens after `threshold` consecutive failures; after `open_for`, lets one probe through
/// (half-open): its success closes the breaker, its failure opens it again.
struct Breaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Nanoseconds since `epoch` until which calls are refused; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    trips: AtomicU64,
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// `Some(wait)` if a call must not be made now.
    fn refuse(&self) -> Option<Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = self.now();
        if now < until {
            return Some(Duration::from_nanos(until - now));
        }
        // Half-open: exactly one caller probes; the others keep failing fast.
        if self.probing.swap(true, Ordering::AcqRel) {
            Some(self.open_for)
        } else {
            None
        }
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    fn failure(&self) {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n >= self.threshold || self.probing.load(Ordering::Acquire) {
            let until = self
                .now()
                .saturating_add(u64::try_from(self.open_for.as_nanos()).unwrap_or(u64::MAX));
            if self.open_until.swap(until.max(1), Ordering::AcqRel) == 0 {
                self.trips.fetch_add(1, Ordering::Relaxed);
            }
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_probes_once() {
        let b = Breaker::new(2, Duration::from_millis(30));
        assert!(b.refuse().is_none());
        b.failure();
        assert!(b.refuse().is_none(), "one failure is below the threshold");
        b.failure();
        assert!(b.is_open());
        assert!(b.refuse().is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            b.refuse().is_none(),
            "the first caller after the open time probes"
        );
        assert!(b.refuse().is_some(), "a second caller waits for the probe");
        b.failure();
        assert!(b.refuse().is_some(), "a failed probe opens it again");
        assert_eq!(b.trips.load(Ordering::Relaxed), 1, "still open: one trip");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.refuse().is_none());
        b.success();
        assert!(!b.is_open());
        assert!(b.refuse().is_none() && b.refuse().is_none());
    }
}
