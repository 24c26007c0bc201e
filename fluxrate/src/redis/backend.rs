//! [`RedisBackend`]: the shared connection, its circuit breaker, and the call budget: one script
//! call bounded by a time budget, its failure classified, its outcome told to the breaker.

use super::breaker::Breaker;
use super::connection::{manager_config, Conn, Counts};
use super::error::{FailureClass, Unavailable};
use super::script::SCRIPT;
use core::fmt;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
    counts: Counts,
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being made; nothing is sent but
    /// the handshake.
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Self::connect_with(url, BackendOptions::default()).await
    }

    /// [`connect`](Self::connect) with options.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being made; nothing is sent but
    /// the handshake.
    pub async fn connect_with(url: &str, options: BackendOptions) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let conn =
            ConnectionManager::new_with_config(client, manager_config(options.connect_timeout))
                .await?;
        Ok(Self::new(Conn::Single(conn), options))
    }

    /// A standalone connection made on first use, so that a service can start while Redis is
    /// down (its limiters then follow their failure policy). Fails only on a malformed URL.
    pub fn connect_lazy(url: &str, options: BackendOptions) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_lazy_with_config(
            client,
            manager_config(options.connect_timeout),
        )?;
        Ok(Self::new(Conn::Single(conn), options))
    }

    /// Connect to a Redis Cluster through any of its nodes (`redis://host:port`).
    ///
    /// The client is built without command retries of its own, so that a request whose fate is
    /// unknown is never repeated. Redirections during resharding are followed here instead:
    /// a `MOVED` or `ASK` reply says the script did not run on that node, so the decision is
    /// sent to the node named in the reply (after `ASKING` for `ASK`), at most
    /// [`MAX_REDIRECTS`](super::MAX_REDIRECTS) times within the limiter's time budget; a `TRYAGAIN` reply (the
    /// decision's keys split between two nodes mid-migration) is waited out within the budget.
    /// A `MOVED` reply also makes the client refresh its slot map for later calls.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being made; nothing is sent but
    /// the handshake.
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
                counts: Counts::default(),
            }),
        }
    }

    /// The SHA1 of the decision script (what `EVALSHA` names).
    pub fn script_hash(&self) -> &str {
        &self.inner.hash
    }

    /// How many times the script was missing (`NOSCRIPT`) and was sent again with `EVAL`.
    pub fn script_reloads(&self) -> u64 {
        self.inner.counts.reloads.load(Ordering::Relaxed)
    }

    /// How many script commands (`EVALSHA` and `EVAL`) this backend has sent.
    pub fn commands_sent(&self) -> u64 {
        self.inner.counts.sent.load(Ordering::Relaxed)
    }

    /// How many cluster redirections (`MOVED`, `ASK`) this backend has followed.
    pub fn redirects_followed(&self) -> u64 {
        self.inner.counts.redirects.load(Ordering::Relaxed)
    }

    /// How many times a decision waited and tried again after a `TRYAGAIN` reply (a slot
    /// migration had split its keys between two nodes).
    pub fn cluster_waits(&self) -> u64 {
        self.inner.counts.cluster_waits.load(Ordering::Relaxed)
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
        self.inner.breaker.open_for()
    }

    /// Run the script once within `budget` ([`Conn::eval`]: `EVALSHA`, one `EVAL` after
    /// `NOSCRIPT`, cluster redirections followed, `TRYAGAIN` waited out while the budget leaves
    /// room), past the circuit breaker; the failure is classified, and the outcome told to the
    /// breaker. Nothing whose fate is unknown is ever sent again.
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
        let inner = &*self.inner;
        let call = inner
            .conn
            .eval(&inner.hash, keys, args, deadline, &inner.counts);
        let result = match tokio::time::timeout(budget, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Unavailable {
                class: classify(&e),
                retry_after: b.open_for(),
                cause: e.to_string(),
            }),
            Err(_) => Err(Unavailable {
                class: FailureClass::Indeterminate,
                retry_after: b.open_for(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            !backend.inner.breaker.probing(),
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
}
