//! The connection to Redis (standalone or cluster) and one script call on it: `EVALSHA`, one
//! `EVAL` after `NOSCRIPT`, cluster redirections followed and `TRYAGAIN` waited out.

use super::script::SCRIPT;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many cluster redirections (`MOVED`, `ASK`) one decision follows before it fails as
/// [`FailureClass::NotExecuted`](super::FailureClass::NotExecuted). One covers a finished slot
/// move and a slot being migrated; a second covers a move that completes while the first
/// redirection is followed.
pub const MAX_REDIRECTS: u32 = 2;

/// The first wait after a `TRYAGAIN` reply (keys of one decision split by a slot migration);
/// each further wait doubles, up to [`TRYAGAIN_MAX_WAIT`].
const TRYAGAIN_FIRST_WAIT: Duration = Duration::from_millis(2);
const TRYAGAIN_MAX_WAIT: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What the script calls of one backend did (read by its accessors).
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// `NOSCRIPT` replies answered with an `EVAL`.
    pub(super) reloads: AtomicU64,
    /// `EVALSHA` and `EVAL` commands sent.
    pub(super) sent: AtomicU64,
    /// `MOVED` and `ASK` redirections followed.
    pub(super) redirects: AtomicU64,
    /// Waits after a `TRYAGAIN` reply.
    pub(super) cluster_waits: AtomicU64,
}

impl Conn {
    /// Run the script named `hash` once: on a cluster, a `MOVED` or `ASK` reply is followed to
    /// the node it names (up to [`MAX_REDIRECTS`]), and after `TRYAGAIN` the call waits (2 ms,
    /// doubling up to 50 ms) and is made again while `deadline` leaves room for the wait and
    /// another try. These replies all say that the script did not run; nothing whose fate is
    /// unknown is ever sent again. The caller bounds the whole by its time budget.
    pub(super) async fn eval(
        &self,
        hash: &str,
        keys: &[Vec<u8>],
        args: &[i64],
        deadline: tokio::time::Instant,
        counts: &Counts,
    ) -> Result<Vec<i64>, RedisError> {
        let mut conn = self.clone();
        let mut to = Target::Slot;
        let mut followed = 0;
        let mut wait = TRYAGAIN_FIRST_WAIT;
        loop {
            let e = match run_script(&mut conn, &to, hash, keys, args, counts).await {
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
                counts.cluster_waits.fetch_add(1, Ordering::Relaxed);
                to = Target::Slot;
                continue;
            }
            match Target::redirect(&e) {
                Some(next) if followed < MAX_REDIRECTS => {
                    followed += 1;
                    counts.redirects.fetch_add(1, Ordering::Relaxed);
                    to = next;
                }
                _ => return Err(e),
            }
        }
    }
}

/// `EVALSHA` at `to`, and on `NOSCRIPT` one `EVAL` there.
async fn run_script(
    conn: &mut Conn,
    to: &Target,
    hash: &str,
    keys: &[Vec<u8>],
    args: &[i64],
    counts: &Counts,
) -> Result<Vec<i64>, RedisError> {
    counts.sent.fetch_add(1, Ordering::Relaxed);
    match run(conn, to, script_cmd("EVALSHA", hash, keys, args)).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            counts.reloads.fetch_add(1, Ordering::Relaxed);
            counts.sent.fetch_add(1, Ordering::Relaxed);
            run(conn, to, script_cmd("EVAL", SCRIPT, keys, args)).await
        }
        other => other,
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

/// The standalone connection's reconnection settings.
pub(super) fn manager_config(connect_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
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
