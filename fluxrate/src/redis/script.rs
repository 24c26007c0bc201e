//! The protocol of `decide.lua`, in one typed place: its codes, a limit in the script's terms,
//! the arguments a call sends, and the reply, decoded once.

use super::error::{RedisConfigError, RedisDenied};
use crate::{Admitted, Algorithm, InsufficientCapacity, Quota, RateLimited, Snapshot};
use core::fmt;
use std::time::Duration;

/// The decision script (every algorithm, one or several limits, all or nothing).
pub(crate) const SCRIPT: &str = include_str!("decide.lua");

/// The largest time, emission interval × burst, or window × 3 × limit the script accepts, in
/// microseconds: Lua numbers are doubles, exact for integers up to 2^53.
pub const MAX_MICROS: u64 = 1 << 52;

/// The script's algorithm codes (`decide.lua`: `TOKEN_BUCKET` … `SLIDING_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum ScriptAlgorithm {
    /// GCRA: `t` is the emission interval, `cap` the burst.
    TokenBucket = 1,
    /// GCRA reserving a place in the queue: `t` is the emission interval, `cap` the queue.
    LeakyBucket = 2,
    /// `t` is the window, `cap` the calls per window (and so for the next two).
    FixedWindow = 3,
    /// The two-window estimate.
    SlidingWindowCounter = 4,
    /// A sorted set of admission times, with an auxiliary key for its member sequence.
    SlidingLog = 5,
}

impl ScriptAlgorithm {
    /// The script's code for `algorithm`.
    pub(crate) const fn of(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::TokenBucket => Self::TokenBucket,
            Algorithm::LeakyBucket => Self::LeakyBucket,
            Algorithm::FixedWindow => Self::FixedWindow,
            Algorithm::SlidingWindowCounter => Self::SlidingWindowCounter,
            Algorithm::SlidingLog => Self::SlidingLog,
        }
    }

    /// The last part of a state key's name (`prefix:{k}:id:tb`).
    pub(crate) const fn key_suffix(self) -> &'static str {
        match self {
            Self::TokenBucket => "tb",
            Self::LeakyBucket => "lb",
            Self::FixedWindow => "fw",
            Self::SlidingWindowCounter => "swc",
            Self::SlidingLog => "log",
        }
    }

    /// Whether the state has an auxiliary key of its own (the sliding log's member sequence).
    /// The others name their state key twice, so that every key a script declares exists
    /// together: on a cluster, a slot being migrated refuses a script whose keys are only
    /// partly present (`TRYAGAIN`).
    pub(crate) fn has_aux_key(self) -> bool {
        self == Self::SlidingLog
    }

    /// How long a plain check (not a reservation) may wait: a leaky bucket queues the request
    /// (any wait its queue holds), the others admit only now.
    pub(crate) fn check_wait(self) -> MaxWait {
        match self {
            Self::LeakyBucket => MaxWait::Any,
            _ => MaxWait::Micros(0),
        }
    }

    /// Token or leaky bucket: `t` is an emission interval, and a REFUND can give back.
    fn is_bucket(self) -> bool {
        matches!(self, Self::TokenBucket | Self::LeakyBucket)
    }
}

/// What a call asks the script to do (`decide.lua`: `DECIDE` … `REFUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Mode {
    /// Decide every limit and write, all or none.
    Decide = 0,
    /// Decide without writing.
    DryRun = 1,
    /// The state: what one more unit request would get.
    Snapshot = 2,
    /// Delete the state.
    Reset = 3,
    /// Token and leaky bucket: give back `n` if the stored TAT is still the admission's.
    Refund = 4,
}

/// How long a reservation may wait for its turn (the script's `max_wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxWait {
    /// Any wait (the leaky bucket's queue still bounds it).
    Any,
    /// At most this many microseconds (0: admit only now).
    Micros(u64),
}

impl MaxWait {
    /// At most `d`, in whole microseconds (rounded down).
    pub(crate) fn up_to(d: Duration) -> Self {
        Self::Micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    fn encode(self) -> i64 {
        match self {
            Self::Any => -1,
            Self::Micros(us) => i64::try_from(us).unwrap_or(i64::MAX),
        }
    }
}

/// The script's `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Now {
    /// The server's `TIME`.
    Server,
    /// Microseconds, below [`MAX_MICROS`].
    Micros(u64),
}

/// The emission interval `⌈period / calls⌉` in whole microseconds: the script's `t` for the
/// token and leaky bucket (the core's [`Quota::emission_interval`] is in nanoseconds).
pub(crate) fn emission_interval_us(quota: &Quota) -> u64 {
    let period_us = u64::try_from(quota.period().as_micros()).unwrap_or(u64::MAX);
    period_us.div_ceil(quota.calls().max(1))
}

/// One limit in the script's terms: its code, `t` (the emission interval of the buckets, the
/// window of the others, µs) and `cap` (the burst or queue, or the calls per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) algorithm: ScriptAlgorithm,
    pub(crate) t: u64,
    pub(crate) cap: u64,
}

impl Params {
    /// Check `quota` as `algorithm` in-process ([`Algorithm::validate`]) and in the script's
    /// integer microseconds (products below [`MAX_MICROS`]). Allocates nothing.
    pub(crate) fn new(quota: &Quota, algorithm: Algorithm) -> Result<Self, RedisConfigError> {
        // The in-process checks first: zero calls, zero period, burst 0, per-algorithm limits.
        algorithm.validate(quota)?;
        let period_ns = quota.period().as_nanos();
        if period_ns % 1000 != 0 {
            return Err(RedisConfigError::NotMicroseconds { period_ns });
        }
        let period_us = u64::try_from(period_ns / 1000)
            .ok()
            .filter(|&p| p < MAX_MICROS)
            .ok_or(RedisConfigError::NotRepresentable { what: "the period" })?;
        let calls = quota.calls();
        let algorithm = ScriptAlgorithm::of(algorithm);
        if algorithm.is_bucket() {
            if calls > period_us {
                return Err(RedisConfigError::TooFast { calls, period_us });
            }
            let t = emission_interval_us(quota);
            let b = quota.burst();
            if t.checked_mul(b).map_or(true, |bt| bt >= MAX_MICROS) {
                return Err(RedisConfigError::NotRepresentable {
                    what: "burst × emission interval",
                });
            }
            return Ok(Self {
                algorithm,
                t,
                cap: b,
            });
        }
        if period_us
            .checked_mul(calls)
            .and_then(|x| x.checked_mul(3))
            .map_or(true, |x| x >= MAX_MICROS)
        {
            return Err(RedisConfigError::NotRepresentable {
                what: "3 × calls × window",
            });
        }
        Ok(Self {
            algorithm,
            t: period_us,
            cap: calls,
        })
    }
}

/// The `ARGV` of one call: `now, mode, m, ttl_extra`, then six integers per limit
/// (`algorithm, t, cap, n, max_wait, extra`); `m` counts the limits pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args(Vec<i64>);

impl Args {
    /// The header of a call at `now` in `mode`, every TTL lengthened by `ttl_extra_ms`.
    pub(crate) fn new(now: Now, mode: Mode, ttl_extra_ms: u64) -> Self {
        let now = match now {
            Now::Server => -1,
            Now::Micros(us) => i64::try_from(us).unwrap_or(i64::MAX),
        };
        let ttl_extra = i64::try_from(ttl_extra_ms).unwrap_or(i64::MAX);
        Self(vec![now, mode as i64, 0, ttl_extra])
    }

    /// One limit: `n` units of `limit`, waiting at most `max_wait`; `refund_tat` is the TAT
    /// (µs) a REFUND compares the stored one with, 0 in the other modes.
    pub(crate) fn push(&mut self, limit: &Params, n: u64, max_wait: MaxWait, refund_tat: u64) {
        self.0[2] += 1;
        self.0.extend([
            limit.algorithm as i64,
            limit.t as i64,
            limit.cap as i64,
            i64::try_from(n).unwrap_or(i64::MAX),
            max_wait.encode(),
            i64::try_from(refund_tat).unwrap_or(i64::MAX),
        ]);
    }

    /// How many limits were pushed.
    pub(crate) fn limits(&self) -> usize {
        self.0[2] as usize
    }

    /// The integers to send.
    pub(crate) fn as_slice(&self) -> &[i64] {
        &self.0
    }
}

/// What the script says of one limit (`decide.lua`: `ADMITTED`, `LIMITED`, `NEVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Status {
    /// Admitted (DECIDE, DRY_RUN); always, for SNAPSHOT and RESET; given back, for REFUND.
    Admitted = 1,
    /// Refused for now; not given back, for REFUND.
    Limited = 0,
    /// `n` is above the capacity: never admitted.
    Never = -1,
}

/// One limit's row of the reply: five integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) status: Status,
    /// Admitted: the delay (a reservation's wait); limited or SNAPSHOT: the retry time; µs.
    pub(crate) wait: i64,
    /// Unit requests admissible after this decision (SNAPSHOT: now).
    pub(crate) remaining: i64,
    /// Until the state is empty again, µs.
    pub(crate) reset_after: i64,
    /// Admitted by a bucket: the TAT it left (what a REFUND names), µs; 0 otherwise.
    pub(crate) tat_after: i64,
}

/// The script's reply, decoded: `{now, all admitted, then five per limit}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The script's `now`, µs.
    pub(crate) now: i64,
    /// One per limit sent, in order.
    pub(crate) rows: Vec<Row>,
}

/// A reply that is not what the script returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadReply(String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Reply {
    /// Decode the reply to a call of `limits` limits: its length is checked here, once.
    pub(crate) fn decode(out: Vec<i64>, limits: usize) -> Result<Self, BadReply> {
        let [now, _all, rest @ ..] = &out[..] else {
            return Err(BadReply(format!(
                "unexpected reply of {} integers",
                out.len()
            )));
        };
        if rest.len() != 5 * limits {
            return Err(BadReply(format!(
                "unexpected reply of {} integers",
                out.len()
            )));
        }
        let rows = rest
            .chunks_exact(5)
            .map(|r| {
                let status = match r[0] {
                    1 => Status::Admitted,
                    0 => Status::Limited,
                    -1 => Status::Never,
                    other => return Err(BadReply(format!("unexpected status {other} in a reply"))),
                };
                Ok(Row {
                    status,
                    wait: r[1],
                    remaining: r[2],
                    reset_after: r[3],
                    tat_after: r[4],
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { now: *now, rows })
    }

    /// The row of a call of one limit.
    pub(crate) fn only(&self) -> Row {
        self.rows[0]
    }
}

impl Row {
    /// A DECIDE or DRY_RUN row as the core's result types: `n` units of a limit of capacity
    /// `cap`, decided at `now`.
    pub(crate) fn decision(&self, now: i64, n: u64, cap: u64) -> Result<Admitted, RedisDenied> {
        match self.status {
            Status::Admitted => Ok(Admitted::from_remote(
                ns(now.saturating_add(self.wait)),
                ns(self.wait),
                count(self.remaining),
                cap,
                ns(self.reset_after),
                n,
                ns(self.tat_after),
            )),
            Status::Limited => Err(RedisDenied::Limited(RateLimited::from_remote(
                ns(now),
                ns(self.wait).max(1),
                cap,
                ns(self.reset_after),
            ))),
            Status::Never => Err(RedisDenied::Never(InsufficientCapacity::new(n, cap))),
        }
    }

    /// A SNAPSHOT row, taken at `now`, of a limit of capacity `cap`.
    pub(crate) fn snapshot(&self, now: i64, cap: u64) -> Snapshot {
        Snapshot::from_remote(
            ns(now),
            count(self.remaining),
            cap,
            ns(self.wait),
            ns(self.reset_after),
        )
    }

    /// A REFUND row: whether the admission was given back.
    pub(crate) fn given_back(&self) -> bool {
        self.status == Status::Admitted
    }
}

/// The script's µs as the core's ns (negative: 0).
fn ns(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).saturating_mul(1000)
}

fn count(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

#[cfg(test)]
mod tests;
