//! The connection to Redis, the script, the circuit breaker, and how failures are classified.

use crate::{Clock, MonotonicClock};
use core::fmt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        self.inner.breaker.trips()
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
        // The ticket lives in this future from here to the end: every await below (the
        // script commands, redirections, `TRYAGAIN` sleeps, all inside `timeout`) is a point
        // where the caller may drop it, and dropping a half-open probe's ticket re-opens the
        // breaker instead of leaving the probe slot taken.
        let ticket = match b.admit() {
            Ok(ticket) => ticket,
            Err(wait) => {
                return Err(Unavailable {
                    class: FailureClass::CircuitOpen,
                    retry_after: wait,
                    cause: "circuit breaker open after repeated failures".to_owned(),
                })
            }
        };
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
            Ok(_) => ticket.success(),
            Err(_) => ticket.failure(),
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

/// The circuit breaker: opens after `threshold` consecutive failures; `open_for` later it lets
/// one probe through (half-open): the probe's success closes it, its failure opens it again.
///
/// States, as the model test in this module spells them out:
/// * **closed** (`open_until == 0`): every call is admitted; a success resets the failure
///   count, the `threshold`-th consecutive failure opens the breaker (a trip).
/// * **open** (`now < open_until`): calls are refused at once, told to wait the remainder.
/// * **half-open** (`open_until <= now`): the first caller to take the probe slot (`probing`)
///   is the probe; every other caller is refused (told to wait `open_for`) while it is in flight.
///
/// Whatever the state, any success closes the breaker (Redis answered) and any failure while
/// open re-arms `open_until = now + open_for`. A probe's failure opens the breaker even if a
/// late success of another call closed it meanwhile.
///
/// # Invariant: the probe slot is never lost
///
/// `probing` is set only by [`admit`](Self::admit), for the [`Ticket`] it returns, and cleared
/// only through that ticket: by its success, by its failure, or by its `Drop` when the call's
/// future is abandoned (a client disconnect, an outer timeout, `select!`), which counts as a
/// failure of the probe: the breaker re-opens for `open_for`, and the next caller after that
/// probes. No other call touches the slot, so at most one probe is ever in flight.
///
/// `RedisBackend::eval` takes the ticket before its first await and holds it until the outcome
/// is known, and it wraps every await in between (the script commands, redirections,
/// `TRYAGAIN` sleeps) in the time budget (`tokio::time::timeout`). A probe therefore ends
/// within one budget of being polled, or when its future is dropped; a probe cannot hang past
/// its budget. Hence the liveness property the model test checks: after any history, once
/// calls succeed (and keep arriving), the breaker is closed within `open_for` + one budget.
/// The one thing it cannot cover: a future that is kept alive but never polled again holds the
/// probe slot until it is polled (and times out) or dropped.
///
/// Time comes from `C`: the monotonic clock in production (read only when the breaker is
/// open, so a closed breaker costs one atomic load per call), a `ManualClock` in the tests.
struct Breaker<C: Clock = MonotonicClock> {
    threshold: u32,
    open_for: Duration,
    open_for_ns: u64,
    clock: C,
    failures: AtomicU32,
    /// Nanoseconds of `clock` until which calls are refused; 0 when closed.
    open_until: AtomicU64,
    /// The probe slot: taken by the half-open probe's [`Ticket`], and only released by it.
    probing: AtomicBool,
    trips: AtomicU64,
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration) -> Self {
        Self::with_clock(threshold, open_for, MonotonicClock::new())
    }
}

impl<C: Clock> Breaker<C> {
    fn with_clock(threshold: u32, open_for: Duration, clock: C) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            open_for_ns: u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX),
            clock,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        }
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// A ticket for a call that may be made now (the half-open probe's ticket holds the probe
    /// slot), or how long to wait.
    #[inline]
    fn admit(&self) -> Result<Ticket<'_, C>, Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Ticket {
                breaker: self,
                probe: false,
            });
        }
        self.admit_open(until)
    }

    #[cold]
    fn admit_open(&self, until: u64) -> Result<Ticket<'_, C>, Duration> {
        let now = self.clock.now();
        if now < until {
            return Err(Duration::from_nanos(until - now));
        }
        // Half-open: exactly one caller probes; the others keep failing fast.
        if self.probing.swap(true, Ordering::AcqRel) {
            return Err(self.open_for);
        }
        // The slot is ours. A probe that ended between the load above and the swap re-armed
        // or closed the breaker before it released the slot: look again.
        match self.open_until.load(Ordering::Acquire) {
            0 => {
                self.probing.store(false, Ordering::Release);
                Ok(Ticket {
                    breaker: self,
                    probe: false,
                })
            }
            until if now < until => {
                self.probing.store(false, Ordering::Release);
                Err(Duration::from_nanos(until - now))
            }
            _ => Ok(Ticket {
                breaker: self,
                probe: true,
            }),
        }
    }

    fn success(&self, probe: bool) {
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    fn failure(&self, probe: bool) {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if probe || n >= self.threshold || self.open_until.load(Ordering::Acquire) != 0 {
            let until = self.clock.now().saturating_add(self.open_for_ns).max(1);
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                self.trips.fetch_add(1, Ordering::Relaxed);
            }
        }
        // After `open_until`: whoever takes the slot next sees the re-armed time.
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }
}

/// A call the [`Breaker`] let through. Report its outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); a probe's ticket dropped without either (its future was
/// abandoned at an await) counts as a failure of the probe and releases the probe slot.
#[must_use = "a call's outcome must be reported to the breaker"]
struct Ticket<'a, C: Clock = MonotonicClock> {
    breaker: &'a Breaker<C>,
    /// Whether this call holds the probe slot (and has not reported yet).
    probe: bool,
}

impl<C: Clock> Ticket<'_, C> {
    fn success(mut self) {
        self.breaker.success(std::mem::take(&mut self.probe));
    }

    fn failure(mut self) {
        self.breaker.failure(std::mem::take(&mut self.probe));
    }
}

impl<C: Clock> Drop for Ticket<'_, C> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.failure(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn manual(threshold: u32, open_for: Duration) -> (Breaker<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (
            Breaker::with_clock(threshold, open_for, clock.clone()),
            clock,
        )
    }

    #[test]
    fn breaker_opens_after_threshold_and_probes_once() {
        let (b, clock) = manual(2, Duration::from_millis(30));
        b.admit().unwrap().failure();
        b.admit()
            .expect("one failure is below the threshold")
            .failure();
        assert!(b.is_open());
        assert_eq!(b.admit().err(), Some(Duration::from_millis(30)));
        clock.advance(Duration::from_millis(40));
        let probe = b
            .admit()
            .expect("the first caller after the open time probes");
        assert!(probe.probe);
        assert_eq!(
            b.admit().err(),
            Some(Duration::from_millis(30)),
            "a second caller waits for the probe"
        );
        probe.failure();
        assert!(b.admit().is_err(), "a failed probe opens it again");
        assert_eq!(b.trips(), 1, "still open: one trip");
        clock.advance(Duration::from_millis(40));
        b.admit().unwrap().success();
        assert!(!b.is_open());
        let (x, y) = (b.admit().unwrap(), b.admit().unwrap());
        assert!(!x.probe && !y.probe, "closed: no probes");
    }

    /// Issue 11, defect 2, at the breaker: an abandoned probe re-opens the breaker for
    /// `open_for`, after which the next caller probes again.
    #[test]
    fn breaker_abandoned_probe_reopens_and_probes_again() {
        let (b, clock) = manual(1, Duration::from_millis(50));
        b.admit().unwrap().failure();
        clock.advance(Duration::from_millis(60));
        let probe = b.admit().unwrap();
        assert!(probe.probe);
        drop(probe);
        assert!(b.is_open());
        assert_eq!(
            b.admit().err(),
            Some(Duration::from_millis(50)),
            "re-armed from the drop"
        );
        clock.advance(Duration::from_millis(50));
        let again = b.admit().expect("a new probe after open_for");
        assert!(again.probe);
        again.success();
        assert!(!b.is_open());
        assert_eq!(b.trips(), 1);
        // A call admitted while closed and dropped reports nothing: no evidence either way.
        drop(b.admit().unwrap());
        assert!(!b.is_open() && b.failures.load(Ordering::Relaxed) == 0);
    }

    /// The same through `RedisBackend::eval`'s real future, without a Redis server: a
    /// listener that accepts connections and never answers. The breaker opens on one timed-out
    /// call; the probe is dropped by an outer timeout in the middle of its await; `open_for`
    /// later a call reaches the wire again instead of being refused forever.
    #[tokio::test]
    async fn breaker_probe_dropped_inside_eval_releases_the_slot() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let open_for = Duration::from_millis(20);
        let options = BackendOptions {
            breaker_failures: 1,
            breaker_open_for: open_for,
            ..BackendOptions::default()
        };
        let backend = RedisBackend::connect_lazy(&url, options).unwrap();
        let (keys, args) = (vec![b"k".to_vec()], vec![0]);
        let e = backend
            .eval(&keys, &args, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.class(), FailureClass::Indeterminate, "{e}");
        assert!(backend.breaker_open());
        tokio::time::sleep(open_for + Duration::from_millis(5)).await;
        let sent = backend.commands_sent();
        let probe = backend.eval(&keys, &args, Duration::from_secs(10));
        assert!(
            tokio::time::timeout(Duration::from_millis(5), probe)
                .await
                .is_err(),
            "the probe is pending at an await, then dropped"
        );
        assert_eq!(backend.commands_sent(), sent + 1, "the probe was sent");
        let b = &backend.inner.breaker;
        assert!(
            !b.probing.load(Ordering::Acquire),
            "the dropped probe released the slot"
        );
        assert!(backend.breaker_open(), "and re-opened the breaker");
        tokio::time::sleep(open_for + Duration::from_millis(5)).await;
        let e = backend
            .eval(&keys, &args, Duration::from_millis(5))
            .await
            .unwrap_err();
        assert_eq!(
            e.class(),
            FailureClass::Indeterminate,
            "a new probe reached the wire: {e}"
        );
        assert_eq!(backend.commands_sent(), sent + 2);
    }

    /// The reference model: the breaker's specification, one step at a time.
    #[derive(Debug, Clone)]
    struct Model {
        threshold: u32,
        open_for: u64,
        mode: Mode,
        probe_in_flight: bool,
        trips: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Closed {
            failures: u32,
        },
        /// Refusing until `until`, half-open from then on.
        Open {
            until: u64,
        },
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Start {
        Refused(Duration),
        Call,
        Probe,
    }

    /// How an admitted call ends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum End {
        Success,
        Failure,
        /// Its future was dropped at an await.
        Abandoned,
    }

    impl Model {
        fn new(threshold: u32, open_for: u64) -> Self {
            Self {
                threshold: threshold.max(1),
                open_for,
                mode: Mode::Closed { failures: 0 },
                probe_in_flight: false,
                trips: 0,
            }
        }

        fn is_open(&self) -> bool {
            matches!(self.mode, Mode::Open { .. })
        }

        fn start(&mut self, now: u64) -> Start {
            match self.mode {
                Mode::Closed { .. } => Start::Call,
                Mode::Open { until } if now < until => {
                    Start::Refused(Duration::from_nanos(until - now))
                }
                Mode::Open { .. } if self.probe_in_flight => {
                    Start::Refused(Duration::from_nanos(self.open_for))
                }
                Mode::Open { .. } => {
                    self.probe_in_flight = true;
                    Start::Probe
                }
            }
        }

        fn end(&mut self, probe: bool, end: End, now: u64) {
            let failed = match end {
                End::Success => false,
                End::Failure => true,
                // A dropped call tells nothing about Redis; a dropped probe counts as failed.
                End::Abandoned if probe => true,
                End::Abandoned => return,
            };
            if probe {
                self.probe_in_flight = false;
            }
            if !failed {
                self.mode = Mode::Closed { failures: 0 };
                return;
            }
            let reopen = Mode::Open {
                until: now.saturating_add(self.open_for).max(1),
            };
            self.mode = match self.mode {
                Mode::Closed { failures } if !probe && failures + 1 < self.threshold => {
                    Mode::Closed {
                        failures: failures + 1,
                    }
                }
                Mode::Closed { .. } => {
                    self.trips += 1;
                    reopen
                }
                Mode::Open { .. } => reopen,
            };
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start,
        /// End the `pick`-th call in flight (modulo their number).
        End(usize, End),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let end = prop_oneof![
            2 => Just(End::Success),
            3 => Just(End::Failure),
            2 => Just(End::Abandoned),
        ];
        prop_oneof![
            4 => Just(Op::Start),
            4 => (any::<usize>(), end).prop_map(|(i, e)| Op::End(i, e)),
            1 => Just(Op::Advance(0)),
            2 => (1..3 * MS).prop_map(Op::Advance),
            2 => (1..400 * MS).prop_map(Op::Advance),
        ]
    }

    /// Drives the real breaker and the model with the same steps; returns a description of the
    /// first disagreement.
    struct Run<'a> {
        b: &'a Breaker<ManualClock>,
        clock: ManualClock,
        model: Model,
        /// Calls in flight: the real ticket and whether the model admitted it as the probe.
        calls: Vec<(Ticket<'a, ManualClock>, bool)>,
    }

    impl<'a> Run<'a> {
        /// Start a call in both; whether it was admitted.
        fn start(&mut self) -> Result<bool, String> {
            let now = self.clock.now();
            let want = self.model.start(now);
            let got = match self.b.admit() {
                Err(wait) => Start::Refused(wait),
                Ok(t) => {
                    let s = if t.probe { Start::Probe } else { Start::Call };
                    self.calls.push((t, want == Start::Probe));
                    s
                }
            };
            if got != want {
                return Err(format!("start at {now}: breaker {got:?}, model {want:?}"));
            }
            Ok(!matches!(got, Start::Refused(_)))
        }

        fn end(&mut self, i: usize, end: End) {
            let (t, probe) = self.calls.swap_remove(i);
            self.model.end(probe, end, self.clock.now());
            match end {
                End::Success => t.success(),
                End::Failure => t.failure(),
                End::Abandoned => drop(t),
            }
        }

        fn check(&self) -> Result<(), String> {
            let b = self.b;
            let probes = self.calls.iter().filter(|(t, _)| t.probe).count();
            let (open, trips) = (b.is_open(), b.trips());
            let probing = b.probing.load(Ordering::Acquire);
            let m = &self.model;
            if probes > 1 {
                return Err(format!("{probes} probes in flight"));
            }
            if open != m.is_open() || trips != m.trips || probing != m.probe_in_flight {
                return Err(format!(
                    "at {}: breaker open {open} trips {trips} probing {probing}, model {m:?}",
                    self.clock.now()
                ));
            }
            Ok(())
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One history, then the liveness phase: from `t0`, every call in flight succeeds within
    /// one `budget`, and new calls arrive every `gap` and succeed within one `budget`. The
    /// breaker must be closed from `t0 + open_for + budget + gap` on (`gap`: a probe needs a
    /// caller).
    fn run_history(
        threshold: u32,
        open_for: u64,
        budget: u64,
        gap: u64,
        ops: &[Op],
        seed: u64,
    ) -> Result<(), String> {
        let clock = ManualClock::new();
        let b = Breaker::with_clock(threshold, Duration::from_nanos(open_for), clock.clone());
        let mut run = Run {
            b: &b,
            clock,
            model: Model::new(threshold, open_for),
            calls: Vec::new(),
        };
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Start => {
                    run.start().map_err(|e| format!("step {step}: {e}"))?;
                }
                Op::End(i, end) => {
                    if !run.calls.is_empty() {
                        let i = i % run.calls.len();
                        run.end(i, end);
                    }
                }
                Op::Advance(d) => run.clock.advance_ns(d),
            }
            run.check()
                .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
        }
        // Liveness.
        let mut rng = XorShift(seed | 1);
        let t0 = run.clock.now();
        let closed_by = t0 + open_for + budget + gap;
        let mut done_at: Vec<u64> = run
            .calls
            .iter()
            .map(|_| t0 + rng.below(budget + 1))
            .collect();
        let mut arrival = t0;
        loop {
            let next = done_at
                .iter()
                .enumerate()
                .min_by_key(|(_, &d)| d)
                .map(|(i, &d)| (i, d));
            let now = match next {
                Some((_, d)) if d <= arrival => d,
                _ => arrival,
            };
            if now > closed_by + gap {
                break;
            }
            run.clock.set(now);
            match next {
                Some((i, d)) if d == now => {
                    done_at.swap_remove(i);
                    run.end(i, End::Success);
                }
                _ => {
                    if run.start().map_err(|e| format!("liveness: {e}"))? {
                        done_at.push(now + rng.below(budget + 1));
                    }
                    arrival += gap;
                }
            }
            run.check().map_err(|e| format!("liveness: {e}"))?;
            if now >= closed_by && b.is_open() {
                return Err(format!(
                    "still open at {now}, {} ns after the calls began to succeed \
                     (bound: open_for {open_for} + budget {budget} + gap {gap}); model {:?}",
                    now - t0,
                    run.model
                ));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// The breaker agrees with its reference model on every step of random histories
        /// (calls admitted, refused or probing, successes, failures, calls abandoned at an
        /// await, time passing): refused or not and for how long, open or not, trips, the probe
        /// slot; never more than one probe in flight; and after any history, once calls
        /// succeed, it is closed within `open_for` + one budget.
        #[test]
        fn breaker_agrees_with_its_model_and_always_closes_again(
            threshold in 1u32..5,
            open_for in prop_oneof![Just(0u64), 1..200 * MS],
            budget in 1..300 * MS,
            gap in prop_oneof![MS / 10..MS, MS..5 * MS],
            ops in prop::collection::vec(op(), 0..120),
            seed in any::<u64>(),
        ) {
            if let Err(e) = run_history(threshold, open_for, budget, gap, &ops, seed) {
                return Err(TestCaseError::fail(e));
            }
        }
    }
}
